"""Drive the assistant in tests: a scripted NLU (fakes over mocks) and a chat helper per person."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace

from bot.assistant import Assistant
from bot.messages import IncomingMessage, Reply
from bot.nlu.embedded import EmbeddedNlu, TrainConfig
from bot.nlu.lang import detect_lang
from bot.nlu.service import DEFAULT_DATA_DIR
from bot.nlu.types import Entity, ParseContext, ParseResult
from bot.nlu.yaml_data import load_nlu_data
from core.container import Core


@dataclass
class ScriptedNlu:
    """Returns the parse a test queued for the next message; unqueued text parses as nlu_fallback.

    Tests of dialogue logic say exactly what the NLU 'understood', so they do not depend on the model.
    """

    queued: list[ParseResult] = field(default_factory=list)
    seen: list[tuple[str, ParseContext]] = field(default_factory=list)

    def expect(
        self,
        intent: str,
        confidence: float = 0.97,
        ranking: tuple[tuple[str, float], ...] = (),
        **entities: str,
    ) -> None:
        """Queue what the next message will parse as."""
        self.queued.append(
            ParseResult(
                text="",
                intent=intent,
                confidence=confidence,
                entities=tuple(
                    Entity(entity=name, value=value, start=0, end=0) for name, value in entities.items()
                ),
                ranking=ranking or ((intent, confidence),),
            )
        )

    async def parse(self, text: str, context: ParseContext) -> ParseResult:
        """The queued parse, with this text."""
        self.seen.append((text, context))
        if not self.queued:
            return ParseResult(
                text=text,
                intent="nlu_fallback",
                confidence=0.2,
                lang=detect_lang(text),
                ranking=(("nlu_fallback", 0.2),),
            )
        queued = self.queued.pop(0)
        return ParseResult(
            text=text,
            intent=queued.intent,
            confidence=queued.confidence,
            entities=queued.entities,
            ranking=queued.ranking,
            lang=detect_lang(text),
        )


@dataclass
class Chat:
    """One person talking to the assistant on one channel."""

    assistant: Assistant
    nlu: ScriptedNlu
    channel: str
    sender: str
    counter: int = 0

    async def say(
        self, text: str, intent: str | None = None, confidence: float = 0.97, **entities: str
    ) -> list[Reply]:
        """Send `text`; if `intent` is given, that is what the NLU understands."""
        queued = len(self.nlu.queued)
        if intent is not None:
            self.nlu.expect(intent, confidence, **entities)
        self.counter += 1
        replies = await self.assistant.handle(
            IncomingMessage(channel=self.channel, sender_id=self.sender, text=text)
        )
        # A typed button label or a payload is understood without the NLU: its scripted parse is unused.
        del self.nlu.queued[queued:]
        return replies

    async def text(self, text: str, intent: str | None = None, **entities: str) -> str:
        """Send and return all reply texts joined (for simple asserts)."""
        return "\n".join(reply.text for reply in await self.say(text, intent, **entities))


def make_chat(core: Core, nlu: ScriptedNlu, sender: str, channel: str = "rest") -> Chat:
    """A chat for an identity that must already be linked (see tests/world.py: rest:acme-buyer)."""
    return Chat(assistant=Assistant(core, nlu), nlu=nlu, channel=channel, sender=sender)


def nlu_for(intents: Collection[str]) -> EmbeddedNlu:
    """The real engine trained on the shipped data of just these intents (a small model trains fast)."""
    data = load_nlu_data(DEFAULT_DATA_DIR)
    engine, _report = EmbeddedNlu.train(
        replace(data, examples=[item for item in data.examples if item.intent in intents]),
        TrainConfig(folds=3),
    )
    return engine
