"""The shapes passed between the notifier's parts: rendered content, what a sender gets, how it fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Delivery failures are the channels' own typed errors, so a Telegram 429 and an SMTP 421 are judged alike.
from bot.channels.base import DeliveryError, RateLimited, RecipientBlocked, UnknownRecipient
from bot.messages import Button

__all__ = [
    "DeliveryError",
    "InvalidAddress",
    "Outgoing",
    "RateLimited",
    "RecipientBlocked",
    "Rendered",
    "Sender",
    "UnknownRecipient",
]

EMAIL = "email"
SMS = "sms"
TELEGRAM = "telegram"
SLACK = "slack"
WEB = "web"
CHAT_CHANNELS = (TELEGRAM, SLACK, WEB)
ALL_CHANNELS = (TELEGRAM, SLACK, WEB, EMAIL, SMS)


class InvalidAddress(DeliveryError):
    """The email address or phone number is malformed or refused by the provider: retrying cannot help."""

    permanent = True


@dataclass(frozen=True, slots=True)
class Rendered:
    """One notification rendered for one channel in one language.

    `subject` and `html` matter for email; `buttons` for chat; `text` is the body everywhere (for SMS the
    short text already cut to the SMS template).
    """

    subject: str
    text: str
    html: str | None = None
    buttons: tuple[Button, ...] = ()
    # A PNG (a digest's chart) for channels that show images; email attaches it inline.
    image: bytes | None = None
    image_alt: str = ""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What a sender is asked to deliver.

    `address` is the email address or E.164 phone number for email and SMS; for chat channels the
    sender reaches the CRM user `user_id` through the channel's send-to-user API. `dedupe_key` is unique
    per (event, recipient, channel): senders put it where the provider can see it (the email
    Message-ID, an SMS idempotency header) so a re-send after a crash is recognisable as the same message.
    """

    notification_id: int
    dedupe_key: str
    channel: str
    address: str
    user_id: int | None
    lang: str
    content: Rendered


class Sender(Protocol):
    """Delivers to one channel; raises DeliveryError (with `permanent` and `retry_after`) on failure."""

    channel: str

    async def send(self, message: Outgoing) -> str:
        """Deliver `message`; return the provider's id (a Message-ID, an SMS sid, a chat message id)."""
        ...

    async def close(self) -> None:
        """Release connections (the SMTP pool, HTTP clients)."""
        ...
