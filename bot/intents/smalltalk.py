"""Greetings, help, stray yes/no, and what to say when the message was not understood."""

from __future__ import annotations

from bot.dialogue import Handler, Turn
from bot.messages import Reply
from bot.nlu.types import FALLBACK_INTENT

# Intents offered as "did you mean" buttons must be ones a person can start from a button.
NOT_SUGGESTED = frozenset({"out_of_scope", FALLBACK_INTENT, "affirm", "deny", "cancel", "greet", "goodbye"})
OFFER_HUMAN_AFTER = 2


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
        """The role's list of things to try."""
        role = turn.actor.role.value
        text = "\n".join(
            [turn.t("help.intro", name=display_name(turn)), turn.t(f"help.{role}"), turn.t("help.footer")]
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


async def fallback(turn: Turn) -> list[Reply]:
    """Not understood: ask to rephrase with the two likeliest intents as buttons; after repeated
    failures, offer a person."""
    turn.state.fallbacks += 1
    if turn.state.fallbacks > OFFER_HUMAN_AFTER:
        turn.state.fallbacks = 0
        return [turn.say("fallback.offer_human", turn.button("fallback.human_button", "/human_handoff"))]
    suggestions = [name for name, _score in turn.parse.ranking if name not in NOT_SUGGESTED][:2]
    if not suggestions:
        return [turn.say("fallback.rephrase_plain")]
    return [
        turn.say(
            "fallback.rephrase", *(turn.button(f"intent_names.{name}", f"/{name}") for name in suggestions)
        )
    ]
