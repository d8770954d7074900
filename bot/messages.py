"""The two shapes every channel translates to and from: IncomingMessage in, Reply out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Button:
    """A choice shown to the person; sending `payload` back as a message selects it."""

    title: str
    payload: str


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file the person sent (photo, document), already fetched by the channel."""

    kind: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One message from a person on a channel, platform details stripped away."""

    channel: str
    sender_id: str
    text: str
    chat_id: str = ""
    message_id: str | None = None
    received_at: datetime | None = None
    attachments: tuple[Attachment, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def conversation_id(self) -> str:
        """The chat the message belongs to (a private chat is the sender itself)."""
        return self.chat_id or self.sender_id


@dataclass(frozen=True, slots=True)
class Reply:
    """What the assistant says back: text, optional buttons and an optional PNG image."""

    text: str
    buttons: tuple[Button, ...] = ()
    image: bytes | None = None
    image_alt: str = ""
