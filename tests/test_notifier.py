"""The notifier's routing and dispatcher against the real database, with recording senders as the
providers (the real SMTP/SMS/chat senders have their own tests)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select, update

from core.auth import SYSTEM, Actor
from core.clock import FrozenClock
from core.container import Core
from core.db.models import Notification, NotificationPreference, OutboxEvent, User
from core.errors import InvalidTransition, PermissionDenied
from core.schemas import RepairOrderIn, ServiceRequestIn, TransitionIn
from crmbot.app import create_app
from notifier.dispatcher import Notifier
from notifier.types import DeliveryError, InvalidAddress, Outgoing, RateLimited, RecipientBlocked
from tests.notify import Recorder
from tests.world import World


@pytest.fixture
def senders() -> dict[str, Recorder]:
    return {name: Recorder(name) for name in ("email", "sms", "telegram", "slack")}


@pytest.fixture
def notifier(core: Core, senders: dict[str, Recorder]) -> Notifier:
    return Notifier(core, senders)


async def rows(core: Core, **where: Any) -> list[Notification]:
    async with core.uow() as uow:
        query = select(Notification).order_by(Notification.id)
        for name, value in where.items():
            query = query.where(getattr(Notification, name) == value)
        return list((await uow.session.execute(query)).scalars())


async def set_preference(core: Core, user_id: int | None, **values: Any) -> None:
    async with core.uow() as uow:
        preference = await uow.session.get(NotificationPreference, user_id)
        if preference is None:
            preference = NotificationPreference(user_id=user_id, channel_order=[], muted_kinds=[])
            uow.session.add(preference)
        for name, value in values.items():
            setattr(preference, name, value)
        await uow.commit()


async def link_telegram(core: Core, username: str, chat: str) -> None:
    await core.org.link_identity(SYSTEM, username, f"telegram:{chat}")


async def open_request(core: Core, actor: Actor, serial: str, **extra: Any) -> str:
    data = ServiceRequestIn(subject="Leaking at the bottom", serial_number=serial, **extra)
    return (await core.service_desk.open_request(actor, data)).ref


# --- routing ------------------------------------------------------------------------------------


async def test_a_request_opened_in_chat_is_acknowledged_by_email_once(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    await link_telegram(core, "acme.buyer", "5001")
    ticket = await open_request(core, world.acme_customer, world.acme_serial, channel="telegram")
    routed, delivered = await notifier.run_once()
    assert routed > 0 and delivered == 1
    [mail] = senders["email"].sent
    assert mail.address == "acme.buyer@example.com" and mail.content.subject.startswith(ticket)
    assert ticket in mail.content.text and mail.content.html is not None
    # The chat reply already acknowledged it there: no second message in the chat.
    assert senders["telegram"].sent == []
    [row] = await rows(core)
    assert (row.status, row.kind, row.channel, row.attempts) == ("sent", "request_acknowledged", "email", 1)
    assert row.provider_id == "email-1" and row.sent_at is not None and row.last_error is None
    # Every outbox event is routed once; running again sends nothing.
    assert await notifier.run_once() == (0, 0)


async def test_a_request_opened_through_the_api_is_acknowledged_by_email_and_in_chat(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    await link_telegram(core, "acme.buyer", "5001")
    await core.org.link_identity(SYSTEM, "acme.buyer", "slack:U5001")
    await open_request(core, world.acme_customer, world.acme_serial, channel="api")
    await notifier.run_once()
    assert len(senders["email"].sent) == 1
    # One chat is enough: the newest linked account's channel.
    assert [len(senders["telegram"].sent), len(senders["slack"].sent)] == [0, 1]


async def test_routing_an_event_twice_creates_no_second_message(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    await open_request(core, world.acme_customer, world.acme_serial)
    await notifier.route()
    # A crash after the notifications were written but before the outbox row was marked: it is routed again.
    async with core.uow() as uow:
        await uow.session.execute(update(OutboxEvent).values(processed_at=None))
        await uow.commit()
    await notifier.route()
    await notifier.run_once()
    assert len(await rows(core)) == 1 and len(senders["email"].sent) == 1


async def test_status_changes_reach_the_customer_and_the_assignee_hears_of_the_case(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    ticket = await open_request(core, world.acme_customer, world.acme_serial)
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="assign", assignee="agent"))
    await core.service_desk.transition(
        world.north_manager, ticket, TransitionIn(action="assign", assignee="agent")
    )
    await core.service_desk.transition(
        world.agent, ticket, TransitionIn(action="resolve", resolution="Hose refitted")
    )
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="close"))
    await notifier.run_once()
    sent = await rows(core, status="sent")
    to_customer = [row for row in sent if row.address == "acme.buyer@example.com"]
    assert [row.kind for row in to_customer] == [
        "request_acknowledged",
        "request_status",
        "request_status",
        "request_status",
        "request_status",
    ]
    assert [row.context["to_status"] for row in to_customer[1:]] == [
        "assigned",
        "assigned",
        "resolved",
        "closed",
    ]
    texts = {message.notification_id: message.content.text for message in senders["email"].sent}
    assert "Hose refitted" in texts[to_customer[3].id]
    # Assigning oneself tells nobody new; the manager assigning the agent tells the agent.
    [to_agent] = [row for row in sent if row.kind == "request_assigned"]
    assert to_agent.address == "agent@example.com"


async def test_the_technician_gets_a_dispatch_card_with_an_accept_button(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    await link_telegram(core, "tech.north", "7001")
    ticket = await open_request(core, world.acme_customer, world.acme_serial)
    order = await core.service_desk.dispatch(
        world.agent,
        RepairOrderIn(
            service_request=ticket,
            technician="tech.north",
            scheduled_at=datetime.fromisoformat("2026-06-16T09:00:00+08:00"),
        ),
    )
    await notifier.run_once()
    [card] = senders["telegram"].sent
    assert card.user_id == world.tech_north.user_id
    assert order.ref in card.content.text and world.acme_serial in card.content.text
    assert any(button.payload == f'/accept_job{{"job_id":"{order.ref}"}}' for button in card.content.buttons)
    # The dispatch card covers the assignment: no separate "assigned to you" to the technician.
    assert not await rows(core, kind="request_assigned")

    await core.service_desk.act_on_repair(world.tech_north, order.ref, _action("accept"))
    await notifier.run_once()
    accepted = await rows(core, kind="job_accepted")
    assert [row.address for row in accepted] == ["acme.buyer@example.com"]
    assert "Tech North" in senders["email"].sent[-1].content.text


def _action(name: str) -> Any:
    from core.schemas import RepairActionIn

    return RepairActionIn(action=name)


# --- failures -----------------------------------------------------------------------------------


async def test_a_transient_failure_is_retried_with_backoff_then_sent(
    core: Core, world: World, clock: FrozenClock, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    senders["email"].failures.append(DeliveryError("421 try again later"))
    await open_request(core, world.acme_customer, world.acme_serial)
    await notifier.run_once()
    [row] = await rows(core)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "421 try again later")
    wait = (row.next_attempt_at - clock.now()).total_seconds()
    assert 15 <= wait <= 30  # the first backoff: 30 s with jitter
    assert await notifier.run_once() == (0, 0)  # not due yet
    clock.advance(timedelta(seconds=31))
    await notifier.run_once()
    [row] = await rows(core)
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)
    assert len(senders["email"].sent) == 1


async def test_a_rate_limit_waits_at_least_as_long_as_asked(
    core: Core, world: World, clock: FrozenClock, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    await link_telegram(core, "tech.north", "7001")
    senders["telegram"].failures.append(RateLimited("Too Many Requests: retry after 120", retry_after=120))
    ticket = await open_request(core, world.acme_customer, world.acme_serial)
    await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=ticket, technician="tech.north")
    )
    await notifier.run_once()
    [card] = await rows(core, kind="dispatch_card")
    assert card.status == "pending" and card.next_attempt_at >= clock.now() + timedelta(seconds=120)


async def test_a_permanent_refusal_falls_back_to_the_next_channel(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    await link_telegram(core, "tech.north", "7001")
    senders["telegram"].failures.append(RecipientBlocked("Forbidden: bot was blocked by the user"))
    ticket = await open_request(core, world.acme_customer, world.acme_serial)
    await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=ticket, technician="tech.north")
    )
    await notifier.run_once()
    telegram, email = await rows(core, kind="dispatch_card")
    assert telegram.channel == "telegram" and telegram.status == "failed"
    assert telegram.last_error == "Forbidden: bot was blocked by the user → email"
    assert email.channel == "email" and email.status == "sent" and email.address == "tech.north@example.com"
    assert email.dedupe_key == telegram.dedupe_key.replace(":telegram", ":email")


async def test_retries_are_bounded_and_a_dead_letter_can_be_retried(
    core: Core, world: World, clock: FrozenClock, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    attempts = core.settings.notify_max_attempts
    senders["email"].failures.extend(DeliveryError("connection refused") for _ in range(attempts))
    await open_request(core, world.acme_customer, world.acme_serial)
    for _ in range(attempts):
        await notifier.run_once()
        clock.advance(timedelta(hours=1, seconds=1))  # past the longest backoff, before the night
    [row] = await rows(core)
    assert row.status == "dead" and row.attempts == attempts
    assert row.last_error == f"gave up after {attempts} attempts: connection refused"
    stats = await core.notifications.stats(SYSTEM)
    assert stats.counts["dead"] == 1 and [item.id for item in stats.dead] == [row.id]

    with pytest.raises(PermissionDenied):
        await core.notifications.retry(world.agent, row.id)
    again = await core.notifications.retry(SYSTEM, row.id)
    assert again.status == "pending" and again.attempts == 0
    await notifier.run_once()
    [row] = await rows(core)
    assert row.status == "sent" and len(senders["email"].sent) == 1
    with pytest.raises(InvalidTransition):
        await core.notifications.retry(SYSTEM, row.id)


async def test_an_invalid_address_is_dead_at_once(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    senders["email"].failures.append(InvalidAddress("550 5.1.1 no such user"))
    await open_request(core, world.acme_customer, world.acme_serial)
    await notifier.run_once()
    [row] = await rows(core)
    assert (row.status, row.attempts, row.last_error) == ("dead", 1, "550 5.1.1 no such user")


async def test_a_template_error_is_dead_with_its_reason_and_the_worker_goes_on(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    await open_request(core, world.acme_customer, world.acme_serial)
    await open_request(core, world.acme_customer, world.acme_serial)
    await notifier.route()
    first, second = await rows(core)
    async with core.uow() as uow:  # a context the template cannot render
        await uow.session.execute(update(Notification).where(Notification.id == first.id).values(context={}))
        await uow.commit()
    await notifier.run_once()
    first, second = await rows(core)
    assert first.status == "dead" and (first.last_error or "").startswith("template error")
    assert second.status == "sent"


async def test_a_sender_bug_costs_a_retry_not_the_worker(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    senders["email"].failures.append(KeyError("oops"))
    await open_request(core, world.acme_customer, world.acme_serial)
    await notifier.run_once()
    [row] = await rows(core)
    assert row.status == "pending" and row.last_error == "KeyError: 'oops'"


async def test_a_hanging_provider_times_out_and_is_retried(
    core: Core, world: World, senders: dict[str, Recorder]
) -> None:
    class Hanging(Recorder):
        async def send(self, message: Outgoing) -> str:
            await asyncio.sleep(30)
            return "never"

    notifier = Notifier(core, {**senders, "email": Hanging("email")}, send_timeout=0.05)
    await open_request(core, world.acme_customer, world.acme_serial)
    await notifier.run_once()
    [row] = await rows(core)
    assert row.status == "pending" and "no answer from email" in (row.last_error or "")


async def test_nobody_reachable_is_recorded_not_lost(
    core: Core, world: World, senders: dict[str, Recorder]
) -> None:
    notifier = Notifier(core, {"telegram": senders["telegram"]})  # no email, and the customer has no chat
    ticket = await open_request(core, world.acme_customer, world.acme_serial, channel="api")
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="assign", assignee="agent"))
    await notifier.run_once()
    receipt, status = await rows(core)
    assert (receipt.status, receipt.kind) == ("skipped", "request_acknowledged")
    assert (status.status, status.last_error, status.channel) == ("dead", "no reachable channel", "")


# --- the person's wishes ------------------------------------------------------------------------


async def test_quiet_hours_hold_normal_messages_until_morning(
    core: Core, world: World, clock: FrozenClock, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    clock.set(datetime.fromisoformat("2026-06-15T22:30:00+08:00"))
    await open_request(core, world.acme_customer, world.acme_serial)
    await notifier.run_once()
    [row] = await rows(core)
    assert row.status == "pending" and row.attempts == 0 and senders["email"].sent == []
    assert row.next_attempt_at == datetime.fromisoformat("2026-06-16T08:00:00+08:00")
    clock.set(datetime.fromisoformat("2026-06-16T08:00:00+08:00"))
    await notifier.run_once()
    assert len(senders["email"].sent) == 1


async def test_quiet_hours_are_the_persons_own_in_their_timezone(
    core: Core, world: World, clock: FrozenClock, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    await set_preference(
        core,
        world.acme_customer.user_id,
        quiet_from=datetime.strptime("12:00", "%H:%M").time(),
        quiet_to=datetime.strptime("13:00", "%H:%M").time(),
    )
    async with core.uow() as uow:
        await uow.session.execute(
            update(User).where(User.id == world.acme_customer.user_id).values(timezone="Europe/Berlin")
        )
        await uow.commit()
    clock.set(datetime.fromisoformat("2026-06-15T12:15:00+02:00"))  # 18:15 in Shanghai, lunch in Berlin
    await open_request(core, world.acme_customer, world.acme_serial)
    await notifier.run_once()
    [row] = await rows(core)
    assert row.status == "pending" and row.next_attempt_at == datetime.fromisoformat(
        "2026-06-15T13:00:00+02:00"
    )


async def test_channel_preference_and_muting(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    await link_telegram(core, "acme.buyer", "5001")
    await set_preference(
        core, world.acme_customer.user_id, channel_order=["email"], muted_kinds=["request_status"]
    )
    ticket = await open_request(core, world.acme_customer, world.acme_serial, channel="api")
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="assign", assignee="agent"))
    await notifier.run_once()
    kinds = {(row.kind, row.channel, row.status) for row in await rows(core)}
    assert ("request_status", "", "skipped") in kinds
    assert ("request_acknowledged", "email", "sent") in kinds


# --- linking codes ------------------------------------------------------------------------------


async def test_a_linking_code_goes_at_night_and_is_redacted_once_sent(
    core: Core, world: World, clock: FrozenClock, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    clock.set(datetime.fromisoformat("2026-06-15T23:00:00+08:00"))
    await core.linking.request_code("telegram", "777", "acme.buyer@example.com", "zh")
    await notifier.run_once()
    [mail] = senders["email"].sent
    assert mail.lang == "zh" and mail.address == "acme.buyer@example.com"
    [row] = await rows(core)
    assert row.status == "sent" and row.context["code"] == "******" and row.urgent
    async with core.uow() as uow:
        events = (
            await uow.session.execute(select(OutboxEvent).where(OutboxEvent.aggregate == "link_code"))
        ).scalars()
        assert [event.payload["code"] for event in events] == ["******"]


async def test_a_linking_code_that_expired_waiting_is_never_sent(
    core: Core, world: World, clock: FrozenClock, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    senders["email"].failures.append(DeliveryError("421 busy"))
    await core.linking.request_code("telegram", "777", "acme.buyer@example.com", "en")
    await notifier.run_once()
    clock.advance(timedelta(minutes=11))
    await notifier.run_once()
    [row] = await rows(core)
    assert row.status == "dead" and row.last_error == "expired before it could be delivered"
    assert row.context["code"] == "******" and senders["email"].sent == []
    with pytest.raises(InvalidTransition):
        await core.notifications.retry(SYSTEM, row.id)


# --- several workers ----------------------------------------------------------------------------


async def test_two_workers_deliver_every_message_exactly_once(core: Core, world: World) -> None:
    for _ in range(30):
        await open_request(core, world.acme_customer, world.acme_serial)
    first, second = Recorder("email"), Recorder("email")
    one = Notifier(core, {"email": first}, worker_id="one")
    two = Notifier(core, {"email": second}, worker_id="two")
    core.settings.notify_batch = 7
    await asyncio.gather(one.run_once(), two.run_once())
    keys = [message.dedupe_key for message in first.sent + second.sent]
    assert len(keys) == 30 and len(set(keys)) == 30
    assert {row.status for row in await rows(core)} == {"sent"}


async def test_a_dead_workers_claims_are_taken_over_after_the_lease(
    core: Core, world: World, clock: FrozenClock, senders: dict[str, Recorder]
) -> None:
    await open_request(core, world.acme_customer, world.acme_serial)
    crashed = Notifier(core, senders, worker_id="crashed")
    await crashed.route()
    claimed = await crashed._claim(None)  # claimed, then the process died before sending
    assert len(claimed) == 1
    survivor = Notifier(core, senders, worker_id="survivor")
    assert await survivor.run_once() == (0, 0)  # the lease still holds
    clock.advance(timedelta(seconds=core.settings.notify_lease + 1))
    await survivor.run_once()
    [row] = await rows(core)
    assert row.status == "sent" and row.attempts == 2 and len(senders["email"].sent) == 1


async def test_messages_to_one_person_keep_their_order(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    ticket = await open_request(core, world.acme_customer, world.acme_serial)
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="assign", assignee="agent"))
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="start"))
    await notifier.run_once()
    texts = [message.notification_id for message in senders["email"].sent]
    assert texts == sorted(texts) and len(texts) == 3


# --- the admin API ------------------------------------------------------------------------------


async def test_the_api_shows_delivery_status_and_retries_dead_letters(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    senders["email"].failures.append(InvalidAddress("550 no such user"))
    await open_request(core, world.acme_customer, world.acme_serial)
    await open_request(core, world.globex_customer, world.globex_serial)
    await notifier.run_once()
    app = create_app(core, "test-admin-token")
    admin = {"Authorization": "Bearer test-admin-token"}
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        listing = (await client.get("/api/v1/notifications", headers=admin)).json()
        assert listing["total"] == 2
        dead = (await client.get("/api/v1/notifications?status=dead", headers=admin)).json()["items"]
        assert [item["username"] for item in dead] == ["acme.buyer"]
        assert dead[0]["last_error"] == "550 no such user" and "context" not in dead[0]
        stats = (await client.get("/api/v1/notifications/stats", headers=admin)).json()
        assert stats["counts"]["dead"] == 1 and stats["counts"]["sent"] == 1
        bad = await client.get("/api/v1/notifications?status=lost", headers=admin)
        assert bad.status_code == 422 and "error" in bad.json()

        token = await core.org.issue_api_token(SYSTEM, "globex.buyer")
        customer = {"Authorization": f"Bearer {token}"}
        own = (await client.get("/api/v1/notifications", headers=customer)).json()
        assert [item["username"] for item in own["items"]] == ["globex.buyer"]
        hidden = await client.get(f"/api/v1/notifications/{dead[0]['id']}", headers=customer)
        assert hidden.status_code == 404
        refused = await client.post(f"/api/v1/notifications/{dead[0]['id']}/retry", headers=customer)
        assert refused.status_code == 403

        retried = await client.post(f"/api/v1/notifications/{dead[0]['id']}/retry", headers=admin)
        assert retried.status_code == 200 and retried.json()["status"] == "pending"
        again = await client.post(f"/api/v1/notifications/{dead[0]['id']}/retry", headers=admin)
        assert again.status_code == 409
    await notifier.run_once()
    assert {row.status for row in await rows(core)} == {"sent"}


async def test_a_receipt_for_someone_without_email_is_skipped_not_dead(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    async with core.uow() as uow:
        await uow.session.execute(update(User).where(User.username == "acme.buyer").values(email=None))
        await uow.commit()
    await open_request(core, world.acme_customer, world.acme_serial, channel="telegram")
    await notifier.run_once()
    [row] = await rows(core)
    assert (row.status, row.last_error) == ("skipped", "not reachable by email")
    assert (await core.notifications.stats(SYSTEM)).dead == []
