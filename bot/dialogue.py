"""Dialogue: forms with typed, versioned state; every message is read first, whatever question is pending.

Reading order for a message while a form waits for an answer (docs/dialogue.md):
1. a control (cancel, help, continue or drop a kept form) acts at once;
2. a new value for any slot of the form (also at the confirmation: "change the time to 3pm") updates it,
   and the next question or the card is shown again;
3. an answer fills the question;
4. a different request (a question, a command) is served, and the unfinished form is kept and offered back.
A command is never taken as an answer; after three answers the form cannot use, it offers help or a person.
"""

from __future__ import annotations

import copy
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

from rapidfuzz import fuzz

from bot.i18n import keys, t
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
# An answer that does not fit, from words the NLU leans this much towards another request, is that request.
LEANING_CONFIDENCE = 0.25
CUED_LEANING_CONFIDENCE = 0.1
NOT_REQUESTS = ("affirm", "deny", "cancel", "help", "out_of_scope", FALLBACK_INTENT)
# A description or summary is prose that may look like an intent: past this length it stays the answer.
FREE_TEXT_SWITCH_LENGTH = 25
# Entities remembered between turns so "and its warranty?" knows which serial.
CONTEXT_ENTITIES = ("serial_number", "ticket_id", "job_id", "customer", "deal")
# The stored state's shape; older versions are read and upgraded, newer ones are not trusted.
STATE_VERSION = 2
# Unfinished forms kept while the person asks something else (the newest is offered back).
MAX_KEPT_FORMS = 2
# Button-only intents that steer kept forms; they need no training.
RESUME_INTENT = "resume_form"
DROP_INTENT = "drop_form"
# Buttons remembered from the last reply so a typed label acts like the button.
MAX_REMEMBERED_BUTTONS = 25
# Where a form's refused corrections wait to be explained (a slot name no form declares).
REFUSED_CORRECTIONS = "_corrections_refused"
# Where notes wait for the next question, and a stop for the next step (slot names no form declares).
NOTES_KEY = "_notes"
STOP_KEY = "_stop"
# Typed labels this similar to a button's (0-100, after normalising) press it; short labels must match.
BUTTON_LABEL_SIMILARITY = 88
BUTTON_FUZZY_MIN_LENGTH = 5
# Slots of these entity kinds are also set by the other one: "后天" changes a visit time's day.
ENTITY_FAMILIES: dict[str, tuple[str, ...]] = {"time": ("time", "date"), "date": ("date", "time")}


def cue(english: str, other: str = "") -> re.Pattern[str]:
    """Words that cue something, whatever the case: English alternatives (a regex) as whole words, then
    `other` (Chinese phrases, punctuation) matched anywhere."""
    words = rf"\b(?:{english})\b"
    return re.compile(f"{words}|{other}" if other else words, re.IGNORECASE)


# Words that say "I am changing what I said", in either language: with them a message that looks like
# another request ("change the time to 3pm" reads like rescheduling) corrects the form instead.
CORRECTION_CUE = cue(
    r"change|changed|make it|instead|actually|rather|correction|i meant|i mean|not\b.{1,30}\bbut|"
    r"switch (it|that) to|set (it|that) to|update (it|that) to|move (it|that) to|oops|sorry|no wait|"
    r"how about|what about",
    "改成|改为|改到|换成|换到|改一下|改下|不是|不对|应该是|其实|我是说|更正|调整为|调成|重新|那就改|要不",
)
# Words that ask for something (a question, a verb of a request) rather than name a value, in either language.
COMMAND_CUE = cue(
    r"show|list|check|status|what|where|when|who|how|why|find|search|tell|give|send|open|update|mark|move|"
    r"assign|dispatch|create|new|log|book|pipeline|warranty|cancel|help|"
    # A problem described is a request of its own ("error E13 on my dishwasher"), not an appliance named.
    r"error|broken|leak\w*|noise|noisy|fault\w*|not working|doesn'?t work|won'?t|[a-z]\d{1,3}",
    "[?？]|看看|查|显示|列出|帮我|怎么|多少|进度|哪|什么|吗|派|更新|新建|保修|漏斗|给我|有没有"
    "|故障|坏|漏水|不工作|不转|异响|报错|错误|代码",
)
# A sales person asking for their follow-up tasks rather than their visits.
FOLLOW_UPS_CUE = cue(r"follow[- ]?ups?|to-?dos?|tasks?|reminders?", "待办|跟进|任务|提醒")
# What may stand around a value in a bare answer ("it's Acme", "就是张伟吧") without making it a command.
ANSWER_FILLERS = cue(
    r"it'?s|it is|the|a|an|is|for|to|please|pls|ok|okay|yes|no|um|uh|just|maybe|i think|that'?s",
    "就是|是|吧|呢|啊|呀|的|好的|嗯|请|那个|这个|可能|应该",
)


class SlotInvalid(Exception):
    """An answer that does not fit the slot; `hint` says how to answer."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


@dataclass
class KeptForm:
    """An unfinished form put aside while the person asked something else."""

    intent: str
    slots: dict[str, Any]
    awaiting: str | None
    offered: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {
            "intent": self.intent, "slots": self.slots, "awaiting": self.awaiting, "offered": self.offered
        }

    @classmethod
    def from_json(cls, data: Any) -> KeptForm | None:
        """Rebuild one kept form; anything malformed is dropped rather than trusted."""
        if not isinstance(data, dict) or not isinstance(data.get("intent"), str):
            return None
        slots = data.get("slots")
        awaiting = data.get("awaiting")
        return cls(
            intent=data["intent"],
            slots=slots if isinstance(slots, dict) else {},
            awaiting=awaiting if isinstance(awaiting, str) else None,
            offered=bool(data.get("offered")),
        )


@dataclass
class State:
    """What the conversation remembers between messages (stored as JSON, versioned)."""

    active: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    awaiting: str | None = None
    attempts: int = 0
    context: dict[str, str] = field(default_factory=dict)
    fallbacks: int = 0
    lang: str | None = None
    kept: list[KeptForm] = field(default_factory=list)
    buttons: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        """Rebuild from storage: version 1 (no version key) upgrades; a newer version starts afresh."""
        version = data.get("version", 1)
        if not isinstance(version, int) or version > STATE_VERSION:
            log.warning("conversation state version %r is newer than %d: starting afresh",
                        version, STATE_VERSION)
            return cls()
        simple = ("active", "slots", "awaiting", "attempts", "context", "fallbacks", "lang")
        # A copy: the caller compares the stored dict with the new state to skip writes that change nothing.
        state = cls(**{name: copy.deepcopy(data[name]) for name in simple if name in data})
        state.kept = [form for item in data.get("kept") or [] if (form := KeptForm.from_json(item))]
        state.buttons = [
            (str(pair[0]), str(pair[1]))
            for pair in data.get("buttons") or []
            if isinstance(pair, list | tuple) and len(pair) == 2
        ]
        return state

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {
            "version": STATE_VERSION,
            "active": self.active,
            "slots": self.slots,
            "awaiting": self.awaiting,
            "attempts": self.attempts,
            "context": self.context,
            "fallbacks": self.fallbacks,
            "lang": self.lang,
            "kept": [form.to_json() for form in self.kept],
            "buttons": [list(pair) for pair in self.buttons],
        }

    def finish(self) -> None:
        """Forget the form in progress (context, kept forms and language stay)."""
        self.active, self.slots, self.awaiting, self.attempts = None, {}, None, 0

    def keep(self) -> None:
        """Put the form in progress aside (the newest kept form is the one offered back)."""
        if self.active is None:
            return
        self.kept = [form for form in self.kept if form.intent != self.active]
        self.kept.append(KeptForm(intent=self.active, slots=self.slots, awaiting=self.awaiting))
        self.kept = self.kept[-MAX_KEPT_FORMS:]
        self.finish()

    def resume(self) -> KeptForm | None:
        """Take the newest kept form back into progress (the one in progress, if any, is kept instead)."""
        if not self.kept:
            return None
        form = self.kept.pop()
        self.keep()
        self.active, self.slots, self.awaiting, self.attempts = form.intent, form.slots, form.awaiting, 0
        return form


def _normalised_label(text: str) -> str:
    """A label as people type it: case, blanks, punctuation, symbols and emoji do not matter."""
    kept = (char for char in unicodedata.normalize("NFKC", text).casefold()
            if unicodedata.category(char)[0] not in "PSZC")
    return "".join(kept)


def pressed_button(buttons: Sequence[tuple[str, str]], text: str) -> str | None:
    """The payload of the offered button whose label the person typed (typos tolerated on long labels)."""
    typed = _normalised_label(text)
    if not typed:
        return None
    labels = [(_normalised_label(title), payload) for title, payload in buttons]
    exact = [payload for label, payload in labels if label and label == typed]
    if exact:
        return exact[0]
    if len(typed) < BUTTON_FUZZY_MIN_LENGTH:
        return None
    scored = [
        (fuzz.ratio(label, typed), payload)
        for label, payload in labels
        if len(label) >= BUTTON_FUZZY_MIN_LENGTH
    ]
    best = max(scored, default=(0.0, ""))
    close = [payload for score, payload in scored if score >= BUTTON_LABEL_SIMILARITY]
    # Two labels about as close as each other ("Accept RO-1" / "Accept RO-7") are no answer: not a press.
    return best[1] if len(close) == 1 else None


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

    def says_any(self, kinds: Sequence[str]) -> bool:
        """Whether this message carries an entity of one of these kinds."""
        return any(self.parse.entity(kind) is not None for kind in kinds)

    def remainder(self) -> str:
        """The message without its entities and filler words: what is left says what the person wants."""
        text = ANSWER_FILLERS.sub(" ", self.without_entities())
        return " ".join(_normalised_label(word) for word in text.split() if _normalised_label(word))

    def without_entities(self) -> str:
        """The message with the text of its entities blanked out."""
        text = self.text
        spans = sorted(
            ((item.start, item.end) for item in self.parse.entities
             if 0 <= item.start < item.end <= len(text)),
            reverse=True,
        )
        for start, end in spans:
            text = text[:start] + " " + text[end:]
        for item in self.parse.entities:
            # Extractors that do not report offsets (a scripted parse, a remote engine) still name the text.
            for said in (item.text, item.value):
                if said and len(said) > 1:
                    text = re.sub(re.escape(said), " ", text, flags=re.IGNORECASE)
        return text


@dataclass(frozen=True)
class Slot:
    """Something a handler needs before it can act.

    `entity` fills it from NLU entities; `remember` also from the conversation context; `free_text`
    takes the whole answer when asked; `correctable` lets a later message change it ("make it 3pm").
    """

    name: str
    prompt: str
    entity: str | None = None
    required: bool = True
    free_text: bool = False
    remember: bool = False
    correctable: bool = True

    @property
    def entity_kinds(self) -> tuple[str, ...]:
        """The entity kinds that can give this slot a value."""
        if self.entity is None:
            return ()
        return ENTITY_FAMILIES.get(self.entity, (self.entity,))


class Handler:
    """Base of intent handlers (forms): slots, extract/validate/ask per slot, confirm, then act via core.

    Per-slot behaviour lives in methods the base class dispatches to by name — `extract_<slot>(turn)`,
    `validate_<slot>(turn, raw)`, `ask_<slot>(turn)`, `needs_<slot>(turn)` — so a form reads as one method
    per question. `note` explains something with the next question; `stop` ends the task with a message.
    """

    intent: ClassVar[str] = ""
    roles: ClassVar[frozenset[Role] | None] = None
    slots: ClassVar[tuple[Slot, ...]] = ()
    needs_confirmation: ClassVar[bool] = False
    # Asked (never answered) when a stop is pending: `ask` says the stop's message and ends the task.
    STOP: ClassVar[Slot] = Slot(STOP_KEY, "staff.stopped", required=False)

    def slot(self, name: str) -> Slot | None:
        """The declared slot called `name`."""
        return next((item for item in self.slots if item.name == name), None)

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
        """The value an answer gives for `slot` (`extract_<slot>`, else its entity, else the text itself)."""
        extract = getattr(self, f"extract_{slot.name}", None)
        if extract is not None:
            return await extract(turn)
        return await self.plain_answer(turn, slot)

    async def plain_answer(self, turn: Turn, slot: Slot) -> Any:
        """The answer read the default way: the slot's entity, else the text, then `validate`."""
        raw: str | None = turn.entity(slot.entity) if slot.entity else None
        if raw is None:
            raw = turn.text.strip()
        if not raw:
            raise SlotInvalid(turn.t("dialogue.empty_answer"))
        return await self.validate(turn, slot, raw)

    async def validate(self, turn: Turn, slot: Slot, raw: str) -> Any:
        """Check and convert a raw value (`validate_<slot>`); raise SlotInvalid with a hint. Default: text."""
        check = getattr(self, f"validate_{slot.name}", None)
        if check is not None:
            return await check(turn, raw)
        return raw.strip()[:2000]

    @staticmethod
    def note(turn: Turn, text: str) -> None:
        """Say this together with the next question."""
        turn.slots.setdefault(NOTES_KEY, []).append(text)

    @staticmethod
    def notes(turn: Turn) -> list[str]:
        """The notes waiting to be said, taken once (for a reply that is no question: a card, a result)."""
        taken: list[str] = turn.slots.pop(NOTES_KEY, [])
        return taken

    @staticmethod
    def stop(turn: Turn, text: str, *buttons: Button) -> None:
        """End the task with this message instead of asking anything."""
        turn.slots[STOP_KEY] = {"text": text, "buttons": [[item.title, item.payload] for item in buttons]}

    async def ask(self, turn: Turn, slot: Slot) -> list[Reply]:
        """The question, preceded by any notes; or the stop message, which ends the task."""
        stop = turn.slots.get(STOP_KEY)
        if stop is not None:
            turn.state.finish()
            buttons = tuple(Button(title, data) for title, data in stop["buttons"])
            return [Reply(text=stop["text"], buttons=buttons)]
        notes = self.notes(turn)
        replies = await self.question(turn, slot)
        if notes and replies:
            # Joined into the question itself: an explanation on its own reads as the assistant's last word.
            replies[0] = replace(replies[0], text="\n".join([*notes, replies[0].text]))
        return replies

    async def question(self, turn: Turn, slot: Slot) -> list[Reply]:
        """The question for a missing slot (`ask_<slot>`, else the slot's prompt)."""
        question = getattr(self, f"ask_{slot.name}", None)
        if question is not None:
            replies: list[Reply] = await question(turn)
            return replies
        return [turn.say(slot.prompt)]

    async def correct(self, turn: Turn) -> list[str]:
        """Take the values this message gives for slots other than the one asked; the names of those changed.

        Said now beats said before. A new value that does not fit is explained and the old one kept; a
        slot not filled yet simply stays to be asked ("leaking since yesterday" is no visit time), except at
        the confirmation, where the value was meant for the card.
        """
        changed: list[str] = []
        for slot in self.slots:
            asked_now = slot.name == turn.state.awaiting
            if not slot.correctable or asked_now or not turn.says_any(slot.entity_kinds):
                continue
            had = slot.name in turn.slots
            before = turn.slots.get(slot.name)
            try:
                value = await self.fill_from_answer(turn, slot)
            except SlotInvalid as invalid:
                if had:
                    turn.slots[slot.name] = before
                else:
                    turn.slots.pop(slot.name, None)
                if had or turn.state.awaiting == CONFIRM:
                    # At the card nothing else is asked: a value that does not fit ("SR-3", not theirs) is
                    # explained, never met with "please answer yes or no".
                    turn.slots.setdefault(REFUSED_CORRECTIONS, []).append(invalid.hint)
                continue
            turn.slots[slot.name] = value
            if not had or value != before:
                changed.append(slot.name)
        return changed

    async def confirmation(self, turn: Turn) -> Reply:
        """The summary shown before acting."""
        raise NotImplementedError

    async def card_question(self, turn: Turn) -> list[Reply]:
        """The answer to a question about the card shown ("what's the probability now?"); none by default."""
        return []

    async def execute(self, turn: Turn) -> list[Reply]:
        """Do it through core services and say what happened."""
        raise NotImplementedError

    def missing(self, turn: Turn) -> Slot | None:
        """A pending stop first, then the first slot without a value that is needed (`needs_<slot>`, else
        whether it is required)."""
        if STOP_KEY in turn.slots:
            return self.STOP
        unfilled = (slot for slot in self.slots if slot.name not in turn.slots)
        return next((slot for slot in unfilled if self.needs(turn, slot)), None)

    def needs(self, turn: Turn, slot: Slot) -> bool:
        """Whether `slot` is asked now (`needs_<slot>`, else whether it is required)."""
        needed = getattr(self, f"needs_{slot.name}", None)
        return bool(needed(turn)) if needed is not None else slot.required

    def title(self, turn: Turn) -> str:
        """What this form is, for "shall we go on with …?"."""
        key = f"intent_names.{self.intent}"
        return turn.t(key) if key in keys(turn.lang) or key in keys("en") else self.intent


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


def task_reading(role: Role, intent: str, turn: Turn) -> str:
    """A sales person's "my to-dos" / "我的待办" / "my follow-ups" asks for their follow-up tasks (a rep has
    no jobs; a manager's "jobs today" is the team's board). Only for a request served, never for a guess
    offered: the list has no NLU intent of its own."""
    if (role is Role.REP and intent == "my_jobs") or (
            role in (Role.REP, Role.MANAGER) and intent in ("my_jobs", "list_visits")
            and FOLLOW_UPS_CUE.search(turn.text)):
        return "list_follow_ups"
    return intent


def _offered_back(state: State) -> bool:
    """Whether the last reply asked to go on with a kept form (its buttons continue it or drop it)."""
    payloads = {payload for _title, payload in state.buttons}
    return {f"/{RESUME_INTENT}", f"/{DROP_INTENT}"} <= payloads and bool(state.kept)


class Dialogue:
    """Routes each parsed message to the right form and keeps the form state (see the module docstring)."""

    def __init__(
        self, handlers: Sequence[Handler], fallback: Callable[[Turn], Awaitable[list[Reply]]]
    ) -> None:
        self._handlers = {handler.intent: handler for handler in handlers}
        self._fallback = fallback

    def handler(self, intent: str) -> Handler | None:
        """The handler of an intent."""
        return self._handlers.get(intent)

    async def respond(self, turn: Turn) -> list[Reply]:
        """One step of the conversation, then the offer of a form kept aside if nothing is in progress."""
        replies = await self._read(turn)
        return [*replies, *self._offer_kept(turn)]

    async def _read(self, turn: Turn) -> list[Reply]:
        state, intent = turn.state, turn.parse.intent
        if state.active is None and _offered_back(state) and CORRECTION_CUE.search(turn.text):
            # "见的是王经理，不是李娜" under "Shall we go on?" corrects the kept form: it goes on, corrected
            # (its "不是" is no "no", its "met" no new visit).
            corrected = await self._resume_corrected(turn)
            if corrected:
                return corrected
        if intent in ("affirm", "deny") and state.active is None and _offered_back(state):
            # "Shall we go on?" [Continue] [Drop it] answered "yes" or "no": the answer is the button.
            intent = RESUME_INTENT if intent == "affirm" else DROP_INTENT
        if intent == RESUME_INTENT:
            return await self._resume(turn)
        if intent == DROP_INTENT:
            dropped = state.kept.pop() if state.kept else None
            return [turn.say("dialogue.dropped" if dropped else "dialogue.nothing_to_cancel")]
        active = self._handlers.get(state.active) if state.active else None
        if intent == "cancel":
            if active is None and state.kept:
                state.kept.pop()
                return [turn.say("dialogue.cancelled")]
            state.finish()
            return [turn.say("dialogue.cancelled" if active is not None else "dialogue.nothing_to_cancel")]
        if active is None or not state.awaiting:
            return await self.start(turn, intent)
        if intent == "help":
            helper = self._handlers["help"]
            return [*await helper.execute(turn), *await self._reask(turn, active)]
        filled = set(state.slots)
        changed = await active.correct(turn) if self._may_correct(turn, active) else []
        corrected = [name for name in changed if name in filled]
        refused = [Reply(text=hint) for hint in state.slots.pop(REFUSED_CORRECTIONS, [])]
        if state.awaiting == CONFIRM:
            if changed or refused:
                return [*refused, *self._updated(turn, corrected), *await self._advance(turn, active)]
            if intent == "affirm":
                return await self._run(turn, active)
            if intent == "deny":
                state.finish()
                return [turn.say("dialogue.not_done")]
            if self._is_command(turn, active):
                return await self._interrupt(turn)
            answered = await active.card_question(turn)
            if answered:
                # "what's the probability now?" asks about the card: answered, and the card shown again.
                return [*answered, await active.confirmation(turn)]
            return [turn.say("dialogue.confirm_hint"), await active.confirmation(turn)]
        if changed or refused:
            # "OP-6, lost" answers the stage question and corrects the deal in one message; "make it 3pm"
            # (or "tomorrow 10am" under the knowledge-base offer) says nothing for the question asked, which
            # is simply asked again, with the value kept.
            slot = active.slot(state.awaiting)
            # A correction may have made the question moot (a new appliance: the tip offered was for the
            # old one); then there is nothing left to answer.
            if slot is not None and not self._moot(turn, active, slot) and self._answers_too(turn, slot):
                try:
                    state.slots[slot.name] = await active.fill_from_answer(turn, slot)
                except SlotInvalid as invalid:
                    refused.append(Reply(text=invalid.hint))
            # No "Updated." here: the next question already speaks of the new value (the card says it).
            return [*refused, *await self._advance(turn, active)]
        if self._is_command(turn, active):
            return await self._interrupt(turn)
        if self._confident_other(turn, active):
            # A bare value that parses as another request ("Acme kitchen"): the answer if it fits the
            # question, else the request is served and the form kept.
            slot = active.slot(state.awaiting)
            if slot is not None and slot.free_text:
                # Prose is the answer; a few words of another request ("hello", "my jobs") are not.
                if len(turn.text) > FREE_TEXT_SWITCH_LENGTH:
                    return await self._answer(turn, active)
                return await self._interrupt(turn)
            if slot is not None:
                try:
                    state.slots[slot.name] = await active.fill_from_answer(turn, slot)
                except SlotInvalid:
                    return await self._interrupt(turn)
                state.attempts = 0
                return await self._advance(turn, active)
        return await self._answer(turn, active)

    async def start(self, turn: Turn, intent: str) -> list[Reply]:
        """Begin a handler for `intent` with what this message says."""
        state = turn.state
        intent = task_reading(turn.actor.role, role_reading(turn.actor.role, intent, turn), turn)
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
        # Starting the same form afresh replaces the one kept aside.
        state.kept = [form for form in state.kept if form.intent != intent]
        state.active = intent
        await handler.prefill(turn)
        return await self._advance(turn, handler)

    async def _answer(self, turn: Turn, handler: Handler) -> list[Reply]:
        state = turn.state
        slot = handler.slot(state.awaiting or "")
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
            if self._may_be_command(turn, handler):
                # No answer, and words the NLU leans towards another request with ("show me Northern Star
                # Appliances" while a deal is asked): served, with the form kept, rather than refused.
                return await self._interrupt(turn)
            state.attempts += 1
            if state.attempts >= MAX_SLOT_ATTEMPTS:
                return [Reply(text=invalid.hint), self._stuck(turn)]
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
        slot = handler.slot(state.awaiting or "")
        return await handler.ask(turn, slot) if slot else []

    async def _interrupt(self, turn: Turn) -> list[Reply]:
        """Serve a different request; the unfinished form is kept and offered back once nothing is pending."""
        turn.state.keep()
        return await self.start(turn, turn.parse.intent)

    async def _resume(self, turn: Turn) -> list[Reply]:
        form = turn.state.resume()
        handler = self._handlers.get(form.intent) if form else None
        if handler is None:
            turn.state.finish()
            return [turn.say("dialogue.nothing_kept")]
        turn.state.attempts = 0
        if turn.state.awaiting is None:
            return await self._advance(turn, handler)
        return await self._reask(turn, handler)

    async def _resume_corrected(self, turn: Turn) -> list[Reply]:
        """Take the kept form back when this message corrects it, and show it again; nothing (and nothing
        changed) when the message is no correction of it or another request the NLU is sure of."""
        state = turn.state
        form = state.kept[-1]
        handler = self._handlers.get(form.intent)
        if handler is None or not form.awaiting:
            return []
        if turn.parse.intent not in ("affirm", "deny", form.intent) and self._confident_other(turn, handler):
            return []
        kept = copy.deepcopy(state.kept)
        state.resume()
        filled = set(state.slots)
        changed = await handler.correct(turn)
        refused = [Reply(text=hint) for hint in state.slots.pop(REFUSED_CORRECTIONS, [])]
        if not changed and not refused:
            state.finish()
            state.kept = kept
            return []
        state.attempts = 0
        updated = self._updated(turn, [name for name in changed if name in filled])
        return [*refused, *updated, *await self._advance(turn, handler)]

    def _stuck(self, turn: Turn) -> Reply:
        """Three answers the form could not use: keep it, and offer help, a person, or to try again."""
        turn.state.keep()
        turn.state.kept[-1].offered = True
        return turn.say(
            "dialogue.stuck",
            turn.button("dialogue.try_again", f"/{RESUME_INTENT}"),
            turn.button("dialogue.help_button", "/help"),
            turn.button("fallback.human_button", "/human_handoff"),
            turn.button("dialogue.drop_button", f"/{DROP_INTENT}"),
        )

    def _offer_kept(self, turn: Turn) -> list[Reply]:
        """Once nothing is in progress, offer the newest form kept aside — once."""
        state = turn.state
        if state.active is not None or not state.kept or state.kept[-1].offered:
            return []
        form = state.kept[-1]
        form.offered = True
        handler = self._handlers.get(form.intent)
        if handler is None:
            state.kept.pop()
            return []
        return [turn.say(
            "dialogue.offer_kept",
            turn.button("dialogue.continue_button", f"/{RESUME_INTENT}"),
            turn.button("dialogue.drop_button", f"/{DROP_INTENT}"),
            form=handler.title(turn),
        )]

    @staticmethod
    def _updated(turn: Turn, corrected: list[str]) -> list[Reply]:
        return [turn.say("dialogue.updated")] if corrected else []

    @staticmethod
    def _moot(turn: Turn, active: Handler, slot: Slot) -> bool:
        """Whether a question asked only sometimes (`needs_<slot>`) is no longer needed."""
        return hasattr(active, f"needs_{slot.name}") and not active.needs(turn, slot)

    @staticmethod
    def _answers_too(turn: Turn, slot: Slot) -> bool:
        """Whether a correcting message also answers the question asked (its entity, or words of its own)."""
        if slot.entity and turn.says_any(slot.entity_kinds):
            return True
        return bool(turn.remainder()) and not CORRECTION_CUE.search(turn.text)

    def _may_correct(self, turn: Turn, active: Handler) -> bool:
        """Whether this message may set the form's values: it restates the form, is a bare value or a yes/no
        with one ("no, 3pm"), or says it corrects; a confident other request does not."""
        parse = turn.parse
        if parse.intent in (active.intent, "affirm", "deny"):
            return True
        if CORRECTION_CUE.search(turn.text):
            return True
        if parse.entities and not turn.remainder():
            # A bare value ("后天下午3点") is a value, whatever intent its words resemble.
            return True
        if parse.intent == "out_of_scope":
            # "what's the weather tomorrow?" names a day, yet asks about something else entirely.
            return False
        return not self._confident_other(turn, active)

    def _confident_other(self, turn: Turn, active: Handler) -> bool:
        parse = turn.parse
        if parse.intent in ("affirm", "deny", "out_of_scope", FALLBACK_INTENT, active.intent):
            return False
        return parse.intent in self._handlers and parse.confidence >= SWITCH_CONFIDENCE

    def _may_be_command(self, turn: Turn, active: Handler) -> bool:
        """Whether an answer that did not fit leans towards another request the person can make."""
        parse = turn.parse
        # Below the NLU's threshold the message is "not understood", yet its ranking still leans somewhere.
        intent, confidence = next(
            ((name, score) for name, score in (parse.ranking or ((parse.intent, parse.confidence),))
             if name not in NOT_REQUESTS),
            ("", 0.0),
        )
        if intent == active.intent or parse.intent == active.intent:
            return False
        if confidence >= CUED_LEANING_CONFIDENCE and COMMAND_CUE.search(turn.without_entities()):
            # Words that ask for something, and lean however slightly towards a request: served (or,
            # unsure, "did you mean"); a puzzled "hmm what?" that leans nowhere is no request.
            return True
        if confidence < LEANING_CONFIDENCE:
            return False
        handler = self._handlers.get(role_reading(turn.actor.role, intent, turn))
        if handler is None:
            return False
        allowed = handler.roles is None or turn.actor.is_admin or turn.actor.role in handler.roles
        return allowed and bool(turn.remainder())

    def _is_command(self, turn: Turn, active: Handler) -> bool:
        """A confident different request that asks for something: served, never taken as an answer.

        "Acme kitchen", "仁济医院的" or "45 minutes" may parse as another intent, yet as the answer to the
        question asked they are the value (tried by `_read` next); "show me Northern Star Appliances" or
        "is WM3000-00342 still under warranty?" ask for something, so they are commands.
        """
        if not self._confident_other(turn, active):
            return False
        awaiting = turn.state.awaiting
        slot = active.slot(awaiting) if awaiting and awaiting != CONFIRM else None
        if slot is not None and slot.free_text and len(turn.text) > FREE_TEXT_SWITCH_LENGTH:
            return False
        if awaiting == CONFIRM:
            return True
        return COMMAND_CUE.search(turn.without_entities()) is not None
