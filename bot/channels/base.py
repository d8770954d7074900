"""What every channel offers the rest of the system: sending a Reply to a person proactively."""

from __future__ import annotations

from typing import Protocol

from bot.messages import Reply


class DeliveryError(Exception):
    """A message could not be delivered; `permanent` says whether retrying can help."""

    permanent = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RecipientBlocked(DeliveryError):
    """The person blocked the bot or left: retrying will not help."""

    permanent = True


class UnknownRecipient(DeliveryError):
    """No such chat or user on the platform."""

    permanent = True


class RateLimited(DeliveryError):
    """The platform asked us to slow down; `retry_after` seconds."""


class ChannelSender(Protocol):
    """Delivers replies to a person's account on one channel (the notifier uses this)."""

    channel: str

    async def send(self, external_id: str, reply: Reply) -> str:
        """Deliver `reply` to the account `external_id`; return the platform's message id."""
        ...
