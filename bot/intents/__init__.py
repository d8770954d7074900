"""Intent handlers, one module per business area; the registry builds the dialogue from them."""

from __future__ import annotations

from bot.dialogue import Dialogue, Handler
from bot.intents import field, manager, preferences, reports, sales, service, smalltalk


def all_handlers() -> list[Handler]:
    """One instance of every handler."""
    return [
        smalltalk.Greet(),
        smalltalk.Goodbye(),
        smalltalk.Help(),
        # A customer's bare yes/no may answer a visit time we proposed (field service); else as smalltalk.
        field.VisitAffirm(),
        field.VisitDeny(),
        *service.handlers(),
        *sales.handlers(),
        *manager.handlers(),
        *field.handlers(),
        *preferences.handlers(),
        *reports.handlers(),
    ]


def build_dialogue() -> Dialogue:
    """The dialogue with every handler registered."""
    return Dialogue(all_handlers(), smalltalk.fallback)
