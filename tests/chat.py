"""Drive the assistant in tests: a scripted NLU (fakes over mocks) and a chat helper per person."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from bot.assistant import Assistant, RateLimit
from bot.messages import IncomingMessage, Reply
from bot.nlu.embedded import EmbeddedNlu, TrainConfig
from bot.nlu.lang import detect_lang
from bot.nlu.service import DEFAULT_DATA_DIR
from bot.nlu.types import Entity, NluEngine, ParseContext, ParseResult
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


async def say_over_rest(
    client: httpx.AsyncClient, sender: str, message: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    """Post one message to the REST channel as `rest:<sender>`; its replies, addressed to the sender."""
    response = await client.post(
        "/webhooks/rest/webhook", json={"sender": sender, "message": message}, headers=headers
    )
    assert response.status_code == 200, response.text
    replies: list[dict[str, Any]] = response.json()
    assert replies, f"no reply to {message!r}"
    assert all(reply["recipient_id"] == sender for reply in replies)
    return replies


@asynccontextmanager
async def rest_client(core: Core, nlu: NluEngine, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP app as `crmbot run` builds it over this core and NLU, with a rate limit no test reaches."""
    from crmbot.app import create_app

    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=100, per_second=100))
    app = create_app(core, token, assistant=assistant, nlu=nlu)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield http
