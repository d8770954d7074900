"""Proactive messages: deliver a Reply to a CRM user on a given channel (the notifier's way out)."""

from __future__ import annotations

from collections.abc import Mapping

from bot.channels.base import ChannelSender, UnknownRecipient
from bot.messages import Reply
from core.container import Core


class Outbound:
    """Finds the person's account on the channel and hands the reply to that channel's sender."""

    def __init__(self, core: Core, senders: Mapping[str, ChannelSender]) -> None:
        self._core = core
        self._senders = dict(senders)

    @property
    def channels(self) -> list[str]:
        """Channels this process can deliver to."""
        return sorted(self._senders)

    async def send_to_user(self, user_id: int, channel: str, reply: Reply) -> str:
        """Deliver to the user's newest account on `channel`; returns the platform's delivery id.

        Raises UnknownRecipient when the channel is not running here or the user has no account on it,
        and the sender's typed errors (RecipientBlocked, RateLimited, …) otherwise.
        """
        sender = self._senders.get(channel)
        if sender is None:
            raise UnknownRecipient(f"channel {channel!r} is not connected in this process")
        accounts = await self._core.org.identities_of(user_id, channel)
        if not accounts:
            raise UnknownRecipient(f"user {user_id} has no {channel} account linked")
        return await sender.send(accounts[0], reply)
