"""Dialogue: one handler per intent, slot filling with validation, confirmation, cancel and fallback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from bot.i18n import t
from bot.messages import Button, Reply
from bot.nlu.types import FALLBACK_INTENT, ParseResult
from core.auth import Actor
from core.container import Core
from core.domain.enums import Role
from core.errors import DomainError

log = logging.getLogger("crmbot.dialogue")

CONFIRM = "__confirm__"
MAX_SLOT_ATTEMPTS = 3
# A message that clearly starts something else while a question is pending switches to it.
SWITCH_CONFIDENCE = 0.80
# Entities remembered between turns so "and its warranty?" knows which serial.
FREE_TEXT_SWITCH_LENGTH = 25
CONTEXT_ENTITIES = ("serial_number", "ticket_id", "job_id", "customer", "deal")


class SlotInvalid(Exception):
    """An answer that does not fit the slot; `hint` says how to answer."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


@dataclass
class State:
    """What the conversation remembers between messages (stored as JSON)."""

    active: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    awaiting: str | None = None
    attempts: int = 0
    context: dict[str, str] = field(default_factory=dict)
    fallbacks: int = 0
    lang: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        """Rebuild from storage, ignoring unknown keys (older versions)."""
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {
            "active": self.active,
            "slots": self.slots,
            "awaiting": self.awaiting,
            "attempts": self.attempts,
            "context": self.context,
            "fallbacks": self.fallbacks,
            "lang": self.lang,
        }

    def finish(self) -> None:
        """Forget the task in progress (context and language stay)."""
        self.active, self.slots, self.awaiting, self.attempts = None, {}, None, 0


@dataclass
class Turn:
    """Everything a handler needs for one message."""

    core: Core
    actor: Actor
    lang: str
    parse: ParseResult
    text: str
    state: State
    now: datetime
    channel: str

    def t(self, key: str, **params: Any) -> str:
        """A message in the person's language."""
        return t(self.lang, key, **params)

    def say(self, key: str, *buttons: Button, **params: Any) -> Reply:
        """A reply from the catalog."""
        return Reply(text=self.t(key, **params), buttons=tuple(buttons))

    def button(self, key: str, payload: str, **params: Any) -> Button:
        """A button whose title comes from the catalog."""
        return Button(title=self.t(key, **params), payload=payload)

    @property
    def slots(self) -> dict[str, Any]:
        """The values collected so far for the active handler."""
        return self.state.slots

    def entity(self, name: str) -> str | None:
        """A value for `name` from this message's entities."""
        found = self.parse.entity(name)
        return found.value if found else None

    def remembered(self, name: str) -> str | None:
        """A value from this message, else from earlier in the conversation."""
        return self.entity(name) or self.state.context.get(name)


@dataclass(frozen=True)
class Slot:
    """Something a handler needs before it can act.

    `entity` fills it from NLU entities; `remember` also from the conversation context; `free_text`
    takes the whole answer when asked.
    """

    name: str
    prompt: str
    entity: str | None = None
    required: bool = True
    free_text: bool = False
    remember: bool = False


class Handler:
    """Base of intent handlers: declare slots, validate answers, confirm if needed, then act via core."""

    intent: ClassVar[str] = ""
    roles: ClassVar[frozenset[Role] | None] = None
    slots: ClassVar[tuple[Slot, ...]] = ()
    needs_confirmation: ClassVar[bool] = False

    async def prefill(self, turn: Turn) -> None:
        """Take what the first message already says (entities, then remembered context)."""
        for slot in self.slots:
            if slot.name in turn.slots:
                continue
            raw = None
            if slot.entity:
                raw = turn.remembered(slot.entity) if slot.remember else turn.entity(slot.entity)
            if raw is not None:
                try:
                    turn.slots[slot.name] = await self.validate(turn, slot, raw)
                except SlotInvalid:
                    continue

    async def fill_from_answer(self, turn: Turn, slot: Slot) -> Any:
        """The value an answer gives for `slot` (entity of the slot's kind, else the text itself)."""
        raw: str | None = turn.entity(slot.entity) if slot.entity else None
        if raw is None:
            raw = turn.text.strip()
        if not raw:
            raise SlotInvalid(turn.t("dialogue.empty_answer"))
        return await self.validate(turn, slot, raw)

    async def validate(self, turn: Turn, slot: Slot, raw: str) -> Any:
        """Check and convert a raw value; raise SlotInvalid with a hint. Default: accept text."""
        return raw.strip()[:2000]

    async def ask(self, turn: Turn, slot: Slot) -> list[Reply]:
        """The question for a missing slot (override to offer buttons)."""
        return [turn.say(slot.prompt)]

    async def confirmation(self, turn: Turn) -> Reply:
        """The summary shown before acting."""
        raise NotImplementedError

    async def execute(self, turn: Turn) -> list[Reply]:
        """Do it through core services and say what happened."""
        raise NotImplementedError

    def missing(self, turn: Turn) -> Slot | None:
        """The next required slot without a value."""
        return next((slot for slot in self.slots if slot.required and slot.name not in turn.slots), None)


HandlerFactory = Callable[[], Handler]


def role_reading(role: Role, intent: str, turn: Turn) -> str:
    """Read an ambiguous message the way the speaker means it: a customer's "is my job done?" asks
    about their request, a technician's "my tickets?" means their jobs (the words are the same)."""
    if role is Role.CUSTOMER and intent in ("my_jobs", "complete_job"):
        return "check_request_status"
    if role is Role.CUSTOMER and intent == "accept_job":
        return "affirm"
    if role is Role.TECHNICIAN and intent == "check_request_status" and not turn.entity("ticket_id"):
        return "my_jobs"
    return intent


class Dialogue:
    """Routes each parsed message to the right handler and keeps the slot-filling state."""

    def __init__(
        self, handlers: Sequence[Handler], fallback: Callable[[Turn], Awaitable[list[Reply]]]
    ) -> None:
        self._handlers = {handler.intent: handler for handler in handlers}
        self._fallback = fallback

    def handler(self, intent: str) -> Handler | None:
        """The handler of an intent."""
        return self._handlers.get(intent)

    async def respond(self, turn: Turn) -> list[Reply]:
        """One step of the conversation."""
        state, intent = turn.state, turn.parse.intent
        active = self._handlers.get(state.active) if state.active else None
        if intent == "cancel":
            had_task = active is not None
            state.finish()
            return [turn.say("dialogue.cancelled" if had_task else "dialogue.nothing_to_cancel")]
        if active is not None and state.awaiting:
            if intent == "help":
                helper = self._handlers["help"]
                return [*await helper.execute(turn), *await self._reask(turn, active)]
            if not self._other_intent(turn, active):
                return await self._answer(turn, active)
            slot = next((item for item in active.slots if item.name == state.awaiting), None)
            if slot is not None and not slot.free_text:
                # "Acme kitchen" may parse as customer_overview, yet it is the customer we asked for:
                # an answer that fits the question wins over a new intent.
                try:
                    state.slots[slot.name] = await active.fill_from_answer(turn, slot)
                except SlotInvalid:
                    pass
                else:
                    state.attempts = 0
                    return await self._advance(turn, active)
            elif slot is not None and len(turn.text) > FREE_TEXT_SWITCH_LENGTH:
                # A description or summary is prose that may look like an intent: keep it as the answer.
                return await self._answer(turn, active)
            state.finish()
        return await self.start(turn, intent)

    async def start(self, turn: Turn, intent: str) -> list[Reply]:
        """Begin a handler for `intent` with what this message says."""
        state = turn.state
        intent = role_reading(turn.actor.role, intent, turn)
        handler = self._handlers.get(intent)
        if handler is None or intent in ("out_of_scope", FALLBACK_INTENT):
            return await self._fallback(turn)
        state.fallbacks = 0
        if handler.roles is not None and not turn.actor.is_admin and turn.actor.role not in handler.roles:
            return [
                turn.say("dialogue.not_for_role", role=turn.t(f"roles.{turn.actor.role.value}")),
                *await self._handlers["help"].execute(turn),
            ]
        state.finish()
        state.active = intent
        await handler.prefill(turn)
        return await self._advance(turn, handler)

    async def _answer(self, turn: Turn, handler: Handler) -> list[Reply]:
        state = turn.state
        if state.awaiting == CONFIRM:
            if turn.parse.intent == "affirm":
                return await self._run(turn, handler)
            if turn.parse.intent == "deny":
                state.finish()
                return [turn.say("dialogue.not_done")]
            return [turn.say("dialogue.confirm_hint"), await handler.confirmation(turn)]
        slot = next((item for item in handler.slots if item.name == state.awaiting), None)
        if slot is None:
            state.finish()
            return await self.start(turn, turn.parse.intent)
        try:
            state.slots[slot.name] = await handler.fill_from_answer(turn, slot)
        except SlotInvalid as invalid:
            if turn.parse.intent == "deny" and turn.parse.confidence >= SWITCH_CONFIDENCE:
                # "no" / "算了" where it is no answer to the question means: stop this.
                state.finish()
                return [turn.say("dialogue.cancelled")]
            state.attempts += 1
            if state.attempts >= MAX_SLOT_ATTEMPTS:
                state.finish()
                return [Reply(text=invalid.hint), turn.say("dialogue.gave_up")]
            return [Reply(text=invalid.hint), *await handler.ask(turn, slot)]
        state.attempts = 0
        return await self._advance(turn, handler)

    async def _advance(self, turn: Turn, handler: Handler) -> list[Reply]:
        state = turn.state
        slot = handler.missing(turn)
        if slot is not None:
            state.awaiting = slot.name
            return await handler.ask(turn, slot)
        if handler.needs_confirmation:
            state.awaiting = CONFIRM
            return [await handler.confirmation(turn)]
        state.awaiting = None
        return await self._run(turn, handler)

    async def _run(self, turn: Turn, handler: Handler) -> list[Reply]:
        try:
            replies = await handler.execute(turn)
        except DomainError as error:
            log.info("domain error in %s: %s", handler.intent, error.message)
            replies = [turn.say("error.domain", message=error.message)]
        if turn.state.active == handler.intent and turn.state.awaiting in (None, CONFIRM):
            turn.state.finish()
        return replies

    async def _reask(self, turn: Turn, handler: Handler) -> list[Reply]:
        state = turn.state
        if state.awaiting == CONFIRM:
            return [await handler.confirmation(turn)]
        slot = next((item for item in handler.slots if item.name == state.awaiting), None)
        return await handler.ask(turn, slot) if slot else []

    def _other_intent(self, turn: Turn, active: Handler) -> bool:
        """Whether a message during a pending question confidently asks for something else."""
        parse = turn.parse
        if parse.intent in ("affirm", "deny", "out_of_scope", FALLBACK_INTENT, active.intent):
            return False
        return parse.intent in self._handlers and parse.confidence >= SWITCH_CONFIDENCE
