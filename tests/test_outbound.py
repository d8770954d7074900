"""The send-to-user API: a Reply reaches the person's account on a channel, or a typed error says why not."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bot.channels.base import RecipientBlocked, UnknownRecipient
from bot.messages import Button, Reply
from bot.outbound import Outbound
from core.auth import SYSTEM
from core.container import Core
from tests.world import World


@dataclass
class RecordingSender:
    """A channel stand-in that records what it delivers (a fake, not a mock)."""

    channel: str
    blocked: set[str] = field(default_factory=set)
    sent: list[tuple[str, Reply]] = field(default_factory=list)

    async def send(self, external_id: str, reply: Reply) -> str:
        if external_id in self.blocked:
            raise RecipientBlocked("bot was blocked by the user")
        self.sent.append((external_id, reply))
        return f"msg-{len(self.sent)}"


async def test_reply_goes_to_the_newest_linked_account(core: Core, world: World) -> None:
    telegram = RecordingSender("telegram")
    outbound = Outbound(core, {"telegram": telegram})
    await core.org.link_identity(SYSTEM, "tech.north", "telegram:111")
    await core.org.link_identity(SYSTEM, "tech.north", "telegram:222")
    card = Reply(text="New job RO-1", buttons=(Button("Accept", '/accept_job{"job_id":"RO-1"}'),))
    assert world.tech_north.user_id is not None
    delivery = await outbound.send_to_user(world.tech_north.user_id, "telegram", card)
    assert delivery == "msg-1"
    assert telegram.sent == [("222", card)]


async def test_typed_errors_when_it_cannot_be_delivered(core: Core, world: World) -> None:
    telegram = RecordingSender("telegram", blocked={"333"})
    outbound = Outbound(core, {"telegram": telegram})
    assert world.rep_north.user_id is not None and world.tech_south.user_id is not None
    with pytest.raises(UnknownRecipient, match="no telegram account"):
        await outbound.send_to_user(world.rep_north.user_id, "telegram", Reply(text="x"))
    with pytest.raises(UnknownRecipient, match="not connected"):
        await outbound.send_to_user(world.rep_north.user_id, "slack", Reply(text="x"))
    await core.org.link_identity(SYSTEM, "tech.south", "telegram:333")
    with pytest.raises(RecipientBlocked):
        await outbound.send_to_user(world.tech_south.user_id, "telegram", Reply(text="x"))
    assert telegram.sent == []
    assert outbound.channels == ["telegram"]
