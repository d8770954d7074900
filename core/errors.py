"""Typed domain errors whose messages can be shown to the person who caused them."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the core raises on purpose; `code` is stable, `message` is for people."""

    code = "domain_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(DomainError):
    """The thing does not exist, or the actor may not know that it exists."""

    code = "not_found"


class PermissionDenied(DomainError):
    """The actor is known but may not do this."""

    code = "forbidden"


class ValidationFailed(DomainError):
    """Input is malformed or out of range."""

    code = "validation_failed"


class InvalidTransition(DomainError):
    """A state machine refused the move."""

    code = "invalid_transition"


class Conflict(DomainError):
    """The change collides with existing data (duplicate key, stale state)."""

    code = "conflict"


class InsufficientStock(DomainError):
    """A part is not in stock at the station in the quantity asked."""

    code = "insufficient_stock"
