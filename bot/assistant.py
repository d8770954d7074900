"""The bot pipeline: de-duplicate, identify, rate-limit, detect language, parse, converse, remember."""

from __future__ import annotations

import json
import logging
import re
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from bot.dialogue import CONTEXT_ENTITIES, MAX_REMEMBERED_BUTTONS, Dialogue, State, Turn, pressed_button
from bot.i18n import t
from bot.intents import build_dialogue
from bot.linking import LinkingFlow
from bot.messages import IncomingMessage, Reply
from bot.nlu.lang import detect_lang, reply_lang
from bot.nlu.types import Entity, NluEngine, ParseContext, ParseResult
from core.auth import Actor
from core.container import Core
from core.errors import DomainError

log = logging.getLogger("crmbot.assistant")

MAX_TEXT = 4000
# A button payload in Rasa's form: /intent or /intent{"entity": "value", ...}
PENDING_FILES = "pending_attachments"
SELF_LINKING_CHANNELS = frozenset({"telegram", "web"})
IDENTIFIER = re.compile(r"(?=.*[0-9#_/-])[A-Za-z0-9._/#+-]{1,32}")
PAYLOAD = re.compile(r"^/([a-z_]{2,40})(\{.{0,1000}\})?$", re.DOTALL)


@dataclass
class RateLimit:
    """Token bucket per sender: `burst` messages at once, then `per_second` sustained."""

    burst: float = 12.0
    per_second: float = 1.0


class SenderLimiter:
    """In-process token buckets, bounded in size (least recently seen senders are dropped)."""

    def __init__(self, limit: RateLimit, max_senders: int = 50_000) -> None:
        self._limit = limit
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_senders

    def allow(self, key: str, now: float | None = None) -> bool:
        """Take a token for `key` if one is left."""
        moment = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self._limit.burst, moment))
        tokens = min(self._limit.burst, tokens + (moment - last) * self._limit.per_second)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, moment)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return allowed


def _state_key(message: IncomingMessage) -> str:
    """Whose state in a chat: each person in a group chat has their own."""
    return f"{message.channel}:{message.sender_id}"


def clean_text(text: str) -> str:
    """Drop control characters and surrounding blanks; cap the length (a chat message, not a file)."""
    cleaned = "".join(
        char for char in text[: MAX_TEXT * 2] if char in "\n\t" or unicodedata.category(char)[0] != "C"
    )
    return cleaned.strip()[:MAX_TEXT]


def parse_payload(text: str, lang: str) -> ParseResult | None:
    """A button payload becomes a certain parse: `/affirm`, `/search_knowledge{"query": "E13"}`."""
    match = PAYLOAD.match(text)
    if match is None:
        return None
    entities: list[Entity] = []
    if match.group(2):
        try:
            values = json.loads(match.group(2))
        except json.JSONDecodeError:
            return None
        if not isinstance(values, dict):
            return None
        entities = [
            Entity(entity=str(key)[:40], value=str(value)[:500], start=0, end=0, extractor="payload")
            for key, value in values.items()
        ]
    return ParseResult(text=text, intent=match.group(1), confidence=1.0, entities=tuple(entities), lang=lang)


class Assistant:
    """Turns one incoming message into replies, whatever the channel."""

    def __init__(
        self,
        core: Core,
        nlu: NluEngine,
        *,
        rate_limit: RateLimit | None = None,
        dialogue: Dialogue | None = None,
    ) -> None:
        self._core = core
        self._nlu = nlu
        self._dialogue = dialogue or build_dialogue()
        self._limiter = SenderLimiter(rate_limit or RateLimit())
        self._linking = LinkingFlow(core, core.linking)

    async def handle(self, message: IncomingMessage) -> list[Reply]:
        """Answer a message from a channel identity (an unlinked one gets only the linking hint)."""
        if message.message_id and not await self._core.conversations.first_delivery(
            message.channel, message.message_id
        ):
            return []
        key = _state_key(message)
        actor, saved = await self._core.conversations.open_turn(
            message.channel, message.sender_id, message.conversation_id, key
        )
        if actor is None:
            # Only people on Telegram and the web chat link themselves with a code. REST senders are named
            # by the integrator and Slack accounts are matched to staff by profile email: only the hint.
            if message.channel not in SELF_LINKING_CHANNELS:
                lang = detect_lang(message.text) if message.text.strip() else self._core.settings.default_lang
                return [Reply(text=t(lang, "identity.not_linked"))]
            if not self._limiter.allow(f"unlinked:{message.channel}:{message.sender_id}"):
                return [Reply(text=t(self._core.settings.default_lang, "dialogue.slow_down"))]
            return await self._linking.handle(message)
        return await self._answer(actor, message, saved)

    async def handle_as(self, actor: Actor, message: IncomingMessage) -> list[Reply]:
        """Answer a message from a known actor (the terminal chat trusts its local user)."""
        store = self._core.conversations
        saved = await store.load(message.channel, message.conversation_id, _state_key(message))
        return await self._answer(actor, message, saved)

    async def _answer(self, actor: Actor, message: IncomingMessage, saved: dict[str, Any]) -> list[Reply]:
        """One turn over the state the conversation left; the state is written back only if it changed."""
        key = _state_key(message)
        store = self._core.conversations
        state = State.from_json(saved)
        text = clean_text(message.text)
        lang = self._language(text, state, actor)
        if not self._limiter.allow(key):
            return [Reply(text=t(lang, "dialogue.slow_down"))]
        state.lang = lang
        replies = await self._converse(actor, message, state, text, lang)
        if (new_state := state.to_json()) != State.from_json(saved).to_json():
            # Most turns (a greeting, a look-up) change nothing to remember: skip the write.
            await store.save(message.channel, message.conversation_id, key, new_state)
        return replies

    async def _converse(
        self, actor: Actor, message: IncomingMessage, state: State, text: str, lang: str
    ) -> list[Reply]:
        if not text and not message.attachments:
            return [Reply(text=t(lang, "dialogue.empty"))]
        now = self._core.clock.now()
        try:
            notes = await self._keep_attachments(actor, message, state, lang)
            if not text:
                # A photo without a caption: kept, and tied to the request we are talking about (or the next).
                return notes + await self._tie_attachments(actor, state, lang)
            if not PAYLOAD.match(text) and (label := pressed_button(state.buttons, text)) is not None:
                # A button's label typed as text acts like the button (docs/dialogue.md).
                text = label
            parse = parse_payload(text, lang) or await self._nlu.parse(
                text,
                ParseContext(now=now, timezone=actor.timezone or self._core.settings.timezone, lang=lang),
            )
            turn = Turn(
                core=self._core,
                actor=actor,
                lang=lang,
                parse=parse,
                text=text,
                state=state,
                now=now,
                channel=message.channel,
            )
            replies = await self._dialogue.respond(turn)
            for entity in parse.entities:
                if entity.entity in CONTEXT_ENTITIES:
                    state.context[entity.entity] = entity.value
            replies = notes + replies + await self._tie_attachments(actor, state, lang)
            offered = [(button.title, button.payload) for reply in replies for button in reply.buttons]
            state.buttons = offered[:MAX_REMEMBERED_BUTTONS]
            return replies
        except Exception:
            # Never a stack trace to a person: log it, apologise, and drop the half-done task.
            log.exception("turn failed for %s on %s", actor.username, message.channel)
            state.finish()
            state.buttons = []
            return [Reply(text=t(lang, "error.internal"))]

    async def _keep_attachments(
        self, actor: Actor, message: IncomingMessage, state: State, lang: str
    ) -> list[Reply]:
        """Store the files of a message; their ids wait in the context until a request takes them."""
        notes: list[Reply] = []
        pending = [item for item in state.context.get(PENDING_FILES, "").split(",") if item]
        for attachment in message.attachments:
            try:
                stored = await self._core.service_desk.store_attachment(
                    actor,
                    channel=message.channel,
                    filename=attachment.filename,
                    content_type=attachment.content_type,
                    data=attachment.data,
                )
            except DomainError as refused:
                notes.append(Reply(text=t(lang, "error.domain", message=refused.message)))
                continue
            pending.append(str(stored))
        if pending:
            state.context[PENDING_FILES] = ",".join(pending[-20:])
        return notes

    async def _tie_attachments(self, actor: Actor, state: State, lang: str) -> list[Reply]:
        """Tie waiting files to the request in context, unless a question is still open."""
        pending = [int(item) for item in state.context.get(PENDING_FILES, "").split(",") if item.isdigit()]
        if not pending:
            return []
        ticket = state.context.get("ticket_id")
        if ticket is None or state.active is not None:
            return [Reply(text=t(lang, "attachments.kept"))] if not state.active and ticket is None else []
        tied = await self._core.service_desk.attach(actor, ticket, pending)
        state.context.pop(PENDING_FILES, None)
        return [Reply(text=t(lang, "attachments.added", count=tied, ref=ticket))] if tied else []

    def _language(self, text: str, state: State, actor: Actor) -> str:
        """The message's own language when it has words; otherwise the conversation's or the user's.

        A lone token ("OP-2", "ok", "5", a button payload) says nothing about the language: a Chinese
        conversation stays Chinese when the person types a code.
        """
        known = state.lang or actor.lang or self._core.settings.default_lang
        if text.startswith("/") or IDENTIFIER.fullmatch(text) or not any(char.isalpha() for char in text):
            return known
        if state.lang and any(text == payload for _title, payload in state.buttons):
            # A pressed button sends its payload ("none"): the words are ours, not the person's language.
            return known
        return reply_lang(text)
