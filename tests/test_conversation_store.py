"""The conversation store (core/services/conversations.py): who is talking and what they left, on both
databases."""

from __future__ import annotations

from sqlalchemy import update

from core.container import Core
from core.db.models import User
from tests.world import World


async def test_a_turn_opens_with_the_actor_and_their_state_read_together(core: Core, world: World) -> None:
    store = core.conversations
    assert await store.open_turn("rest", "nobody", "nobody", "rest:nobody") == (None, {})
    buyer = ("rest", "acme-buyer", "acme-buyer", "rest:acme-buyer")
    assert await store.open_turn(*buyer) == (world.acme_customer, {})

    await store.save("rest", "acme-buyer", "rest:acme-buyer", {"lang": "zh"})
    assert await store.open_turn(*buyer) == (world.acme_customer, {"lang": "zh"})


async def test_a_deactivated_account_opens_no_turn_and_reads_no_state(core: Core, world: World) -> None:
    await core.conversations.save("rest", "acme-buyer", "rest:acme-buyer", {"lang": "zh"})
    async with core.uow() as uow:  # there is no way to deactivate a user through core yet
        await uow.session.execute(update(User).where(User.username == "acme.buyer").values(active=False))
        await uow.commit()
    assert await core.conversations.open_turn("rest", "acme-buyer", "acme-buyer", "rest:acme-buyer") == (
        None,
        {},
    )


async def test_saving_replaces_the_state_and_an_empty_one_forgets_it(core: Core, world: World) -> None:
    store = core.conversations
    await store.save("web", "chat-1", "web:alice", {"active": {"intent": "check_warranty"}})
    await store.save("web", "chat-1", "web:alice", {"lang": "en"})
    await store.save("web", "chat-1", "web:bob", {"lang": "zh"})  # another person in the same chat
    assert await store.load("web", "chat-1", "web:alice") == {"lang": "en"}

    await store.save("web", "chat-1", "web:alice", {})
    assert await store.load("web", "chat-1", "web:alice") == {}
    assert await store.load("web", "chat-1", "web:bob") == {"lang": "zh"}
    await store.save("web", "chat-1", "web:nobody", {})  # forgetting what was never there is fine
