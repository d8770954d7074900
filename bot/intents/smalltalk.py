"""Greetings, help, stray yes/no, and what to say when the message was not understood or is out of scope."""

from __future__ import annotations

import re
from functools import cache

from bot.dialogue import Handler, Turn, role_reading
from bot.messages import Button, Reply
from bot.nlu.types import FALLBACK_INTENT
from core.domain.enums import Role

# Intents offered as "did you mean" buttons must be ones a person can start from a button.
NOT_SUGGESTED = frozenset({
    "out_of_scope", FALLBACK_INTENT, "affirm", "deny", "cancel", "greet", "goodbye", "confirm_visit",
})
# Everyone is answered for these, yet only these roles get anything from them: not suggested to others.
GUESS_ROLES: dict[str, frozenset[Role]] = {"csat_summary": frozenset({Role.MANAGER, Role.ADMIN})}
# A guess below this score is noise, not a reading of the message.
GUESS_MIN_SCORE = 0.1
MAX_GUESSES = 2
OFFER_HUMAN_AFTER = 2
# What each role is offered when a message is out of scope or not understood: (button label, intent).
ROLE_SUGGESTIONS: dict[Role, tuple[tuple[str, str], ...]] = {
    Role.CUSTOMER: (("check_warranty", "check_warranty"), ("report_problem", "open_service_request"),
                    ("my_requests", "check_request_status"), ("search_solutions", "search_knowledge")),
    Role.REP: (("my_deals", "list_deals"), ("log_visit", "log_visit"), ("pipeline", "pipeline_summary"),
               ("my_visits", "list_visits")),
    Role.TECHNICIAN: (("my_jobs", "my_jobs"), ("accept_job", "accept_job"), ("complete_job", "complete_job"),
                      ("on_my_way", "on_my_way")),
    Role.MANAGER: (("pipeline", "pipeline_summary"), ("team_board", "my_jobs"),
                   ("show_customer", "customer_overview"), ("csat", "csat_summary")),
    Role.AGENT: (("dispatch", "dispatch_job"), ("check_request", "check_request_status"),
                 ("search_solutions", "search_knowledge"), ("show_customer", "customer_overview")),
    Role.ADMIN: (("pipeline", "pipeline_summary"), ("show_customer", "customer_overview"),
                 ("check_request", "check_request_status"), ("csat", "csat_summary")),
}
# Asking for a person ("human", "agent", "人工") as opposed to asking about one ("Oliver's phone number").
PERSON_WORDS = re.compile(
    r"\b(?:human|person|people|someone|somebody|agent|operator|representative|rep|staff|real|live|"
    r"manager|supervisor|colleague|support|hotline|customer\s+service)\b|人工|真人|客服|热线|转接|工作人员|"
    r"负责人|经理|主管",
    re.IGNORECASE)
CONTACT_WORDS = re.compile(
    r"\b(?:phone|number|mobile|cell|e-?mail|address|contact|wechat)\b|电话|号码|手机|邮箱|地址|联系方式|微信",
    re.IGNORECASE)
CALL_ME = re.compile(r"\b(?:call|ring|phone)\s+me\b|给我(?:打|回)(?:个)?电话|打(?:我|给我)电话|回电",
                     re.IGNORECASE)


def display_name(turn: Turn) -> str:
    """How to address the person."""
    return turn.actor.name or turn.actor.username


class Greet(Handler):
    """Say hello."""

    intent = "greet"

    async def execute(self, turn: Turn) -> list[Reply]:
        """Greet by name."""
        return [turn.say("smalltalk.greet", name=display_name(turn))]


class Goodbye(Handler):
    """Say goodbye."""

    intent = "goodbye"

    async def execute(self, turn: Turn) -> list[Reply]:
        """Say goodbye by name."""
        return [turn.say("smalltalk.goodbye", name=display_name(turn))]


class Help(Handler):
    """Explain what this person's role can do."""

    intent = "help"

    async def execute(self, turn: Turn) -> list[Reply]:
        """The role's list of things to try (a customer's examples name their own appliance, or none)."""
        role = turn.actor.role.value
        params: dict[str, str] = {}
        if turn.actor.is_customer:
            # Examples with another household's serial would show it to everyone: use the asker's own.
            units = await turn.core.installed.own_units(turn.actor)
            params["serial"] = units[0].serial_number if units else turn.t("help.serial_placeholder")
        text = "\n".join(
            [turn.t("help.intro", name=display_name(turn)), turn.t(f"help.{role}", **params),
             turn.t("help.footer")]
        )
        return [Reply(text=text)]


class Affirm(Handler):
    """A 'yes' with nothing to confirm."""

    intent = "affirm"

    async def execute(self, turn: Turn) -> list[Reply]:
        """Ask what they need."""
        return [turn.say("smalltalk.affirm_alone")]


class Deny(Handler):
    """A 'no' with nothing to refuse."""

    intent = "deny"

    async def execute(self, turn: Turn) -> list[Reply]:
        """Offer more help."""
        return [turn.say("smalltalk.deny_alone")]


@cache
def _roles_by_intent() -> dict[str, frozenset[Role] | None]:
    """Which roles each registered intent serves (None: everyone)."""
    # Imported here: the registry imports this module to build the dialogue.
    from bot.intents import all_handlers

    return {handler.intent: handler.roles for handler in all_handlers()}


def usable(turn: Turn, intent: str) -> bool:
    """Whether the person speaking can start `intent` (as their role reads it) and get something from it."""
    if intent in NOT_SUGGESTED:
        return False
    roles_by_intent = _roles_by_intent()
    if intent not in roles_by_intent:
        return False
    role = turn.actor.role
    if turn.actor.is_admin:
        return True
    roles = GUESS_ROLES.get(intent, roles_by_intent[intent])
    return roles is None or role in roles


def guesses(turn: Turn) -> list[str]:
    """The likeliest intents the message may mean that this person can use ("did you mean"), best first."""
    if turn.parse.intent == "out_of_scope":
        # The model recognised small talk or an unrelated request: guessing would only look silly.
        return []
    found: list[str] = []
    for name, score in turn.parse.ranking:
        if score < GUESS_MIN_SCORE:
            continue
        intent = role_reading(turn.actor.role, name, turn)
        if intent not in found and usable(turn, intent):
            found.append(intent)
    return found[:MAX_GUESSES]


def role_buttons(turn: Turn, *, leave_out: tuple[str, ...] = ()) -> tuple[Button, ...]:
    """Buttons for what the person's role can do, each starting its intent."""
    suggestions = ROLE_SUGGESTIONS.get(turn.actor.role, ROLE_SUGGESTIONS[Role.CUSTOMER])
    return tuple(turn.button(f"fallback.buttons.{name}", f"/{intent}")
                 for name, intent in suggestions if intent not in leave_out)


def cannot_help(turn: Turn, key: str = "fallback.cannot_help") -> Reply:
    """A polite "I can't help with that" and what this person can do instead."""
    return turn.say(key, *role_buttons(turn))


def asks_for_a_person(text: str) -> bool:
    """Whether a message asks to talk to a person, not about one ("Oliver Smith的电话是多少" is not)."""
    if PERSON_WORDS.search(text) or CALL_ME.search(text):
        return True
    return not CONTACT_WORDS.search(text)


def not_a_person_request(turn: Turn) -> list[Reply] | None:
    """The answer to a "talk to a person" that only asks about one ("Oliver Smith的电话是多少"); None when the
    message really asks for a person (or is the button)."""
    if turn.text.startswith("/") or asks_for_a_person(turn.text):
        return None
    return [cannot_help(turn, "fallback.no_contact_details")]


async def _answer_pending(turn: Turn) -> list[Reply] | None:
    """Words no intent fits may still answer a question the CRM asked (a customer's "Saturday 10am would suit
    me better" to a proposed visit time)."""
    # Imported here: field service builds on this module's yes/no handlers.
    from bot.intents.field import answer_in_other_words

    return await answer_in_other_words(turn)


async def fallback(turn: Turn) -> list[Reply]:
    """Out of scope or not understood: say so politely, with what the person's role can do as buttons;
    a guess ("did you mean") only when it is something they can use; after repeated misunderstandings a
    customer is offered a person."""
    answered = await _answer_pending(turn)
    if answered is not None:
        return answered
    if turn.parse.intent == "out_of_scope":
        # "Oliver Smith的电话是多少": say why, not only that we can't.
        asks_contact = CONTACT_WORDS.search(turn.text) and not CALL_ME.search(turn.text)
        return [cannot_help(turn, "fallback.no_contact_details") if asks_contact else cannot_help(turn)]
    turn.state.fallbacks += 1
    if turn.state.fallbacks > OFFER_HUMAN_AFTER:
        turn.state.fallbacks = 0
        if turn.actor.role is Role.CUSTOMER:
            return [turn.say("fallback.offer_human", turn.button("fallback.human_button", "/human_handoff")),
                    cannot_help(turn, "fallback.or_try")]
        return [cannot_help(turn, "fallback.still_lost")]
    likely = guesses(turn)
    if not likely:
        return [cannot_help(turn, "fallback.rephrase_plain")]
    return [
        turn.say("fallback.rephrase", *(turn.button(f"intent_names.{name}", f"/{name}") for name in likely)),
        turn.say("fallback.or_try", *role_buttons(turn, leave_out=tuple(likely))),
    ]
