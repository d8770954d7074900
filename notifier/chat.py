"""Chat channels as notifier senders: Telegram, Slack and web chat through the channels' send-to-user API."""

from __future__ import annotations

from bot.messages import Reply
from bot.outbound import Outbound
from notifier.types import Outgoing, UnknownRecipient


class ChatSender:
    """Delivers a rendered notification to a CRM user's newest account on one chat channel."""

    def __init__(self, outbound: Outbound, channel: str) -> None:
        self.channel = channel
        self._outbound = outbound

    async def send(self, message: Outgoing) -> str:
        """Hand the text and buttons to the channel; its typed errors say whether to retry."""
        if message.user_id is None:
            raise UnknownRecipient(f"{self.channel} messages go to CRM users, not to bare addresses")
        content = message.content
        reply = Reply(
            text=content.text, buttons=content.buttons, image=content.image, image_alt=content.image_alt
        )
        return await self._outbound.send_to_user(message.user_id, self.channel, reply)

    async def close(self) -> None:
        """The channel owns its connections."""


def chat_senders(outbound: Outbound) -> dict[str, ChatSender]:
    """One sender per chat channel connected in this process."""
    return {channel: ChatSender(outbound, channel) for channel in outbound.channels}
