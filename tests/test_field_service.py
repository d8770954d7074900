"""Field service (J7) through the real assistant, core and notifier routes: dispatch from chat with suggested
technicians, "on my way" with an ETA, new visit times the customer confirms, completion with warranty
exclusions and short stock, the survey after it, and a manager's team board."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select

from bot.assistant import Assistant, RateLimit
from bot.i18n import keys, t
from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import Core
from core.db.models import (
    OutboxEvent,
    RepairOrder,
    RepairOrderChange,
    RepairPart,
    ServiceRequest,
    Survey,
)
from core.domain.enums import Role
from core.errors import InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from core.schemas import (
    CustomerPatch,
    KbArticleIn,
    RepairActionIn,
    RepairOrderIn,
    ServiceRequestIn,
    TransitionIn,
    UserIn,
)
from core.settings import Settings
from notifier import survey_flow
from notifier.registry import event_routes
from notifier.routing import Message, routing_with
from notifier.templates import Templates
from tests.chat import Chat, ScriptedNlu
from tests.world import World

TZ = "Asia/Shanghai"
TOMORROW_9 = "2026-06-16T09:00:00+08:00"
FRIDAY_2PM = "2026-06-19T14:00:00+08:00"


def chat(core: Core, nlu: ScriptedNlu, sender: str) -> Chat:
    """A chat with every handler (and no rate limit in the way of long scripts)."""
    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=1000, per_second=1000))
    return Chat(assistant=assistant, nlu=nlu, channel="rest", sender=sender)


async def add_technician(
    core: Core,
    username: str,
    name: str,
    *,
    manager: str = "north.manager",
    station: str = "ST-N",
    department: str = "NORTH-SVC",
    skills: tuple[str, ...] = (),
) -> None:
    """One more technician, based at a station, with skills."""
    await core.org.add_user(
        SYSTEM,
        UserIn(
            username=username,
            role=Role.TECHNICIAN,
            name=name,
            email=f"{username}@example.com",
            manager=manager,
            department=department,
            identities=[f"rest:{username}"],
        ),
    )
    await core.service_desk.assign_station(SYSTEM, technician=username, station_code=station)
    if skills:
        await core.service_desk.set_skills(SYSTEM, technician=username, skills=list(skills))


async def crew(core: Core) -> None:
    """Two Toms (for ambiguity) and a Chinese-named technician in the north; the south keeps its own."""
    await add_technician(core, "tom.baker", "Tom Baker", skills=("dishwasher",))
    await add_technician(core, "tom.li", "Tom Li")
    await add_technician(core, "zhang.wei", "Zhang Wei 张伟", skills=("WM-2023", "washing_machine"))
    await core.service_desk.set_skills(SYSTEM, technician="tech.south", skills=["WM-2023"])


async def open_request(
    core: Core,
    world: World,
    serial: str = "WM2023-00917",
    *,
    subject: str = "Not draining",
    description: str = "",
    preferred: datetime | None = None,
) -> str:
    """A repair request for an ACME unit, opened by the service desk."""
    request = await core.service_desk.open_request(
        world.agent,
        ServiceRequestIn(
            customer_code="ACME",
            subject=subject,
            description=description,
            serial_number=serial,
            preferred_time=preferred,
        ),
    )
    return request.ref


async def events(core: Core, event_type: str) -> list[OutboxEvent]:
    """Outbox events of one type, oldest first."""
    async with core.uow() as uow:
        query = select(OutboxEvent).where(OutboxEvent.event_type == event_type).order_by(OutboxEvent.id)
        return list((await uow.session.execute(query)).scalars())


async def routed(core: Core, event: OutboxEvent) -> list[Message]:
    """What the notifier's route makes of an event (who hears what, with which facts)."""
    async with core.uow() as uow:
        with routing_with(core.settings):
            return await event_routes()[event.event_type](uow.session, event)


async def user_id(core: Core, username: str) -> int:
    """A user's id."""
    from core.db.models import User

    async with core.uow() as uow:
        return int((await uow.session.execute(select(User.id).where(User.username == username))).scalar_one())


async def orders(core: Core) -> list[RepairOrder]:
    """Every repair order row."""
    async with core.uow() as uow:
        return list((await uow.session.execute(select(RepairOrder).order_by(RepairOrder.id))).scalars())


async def history(core: Core, number: int) -> list[tuple[str, str]]:
    """(action, comment) of a repair order's history."""
    async with core.uow() as uow:
        rows = await uow.session.execute(
            select(RepairOrderChange.action, RepairOrderChange.comment)
            .where(RepairOrderChange.repair_order_id == number)
            .order_by(RepairOrderChange.id)
        )
        return [(action, comment) for action, comment in rows.tuples()]


def render(message: Message, lang: str = "en", channel: str = "telegram") -> Any:
    """The message as its recipient would read it."""
    return Templates().render(message.kind, channel, lang, {"recipient_name": "", **message.context}, TZ)


def moment_of(value: str) -> datetime:
    """An ISO time from JSON."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def payloads(reply: Any) -> list[str]:
    """The button payloads of a reply."""
    return [button.payload for button in reply.buttons]


# --- dispatch ----------------------------------------------------------------------


async def test_agent_dispatches_by_name_and_time_with_a_confirmation_card(core: Core, world: World) -> None:
    await crew(core)
    await core.customers.update(
        world.rep_north, "ACME", CustomerPatch(address="88 Harbour Road", phone="+8613800138000")
    )
    ticket = await open_request(core, world)
    nlu = ScriptedNlu()
    agent = chat(core, nlu, "agent")
    [card] = await agent.say(
        f"assign {ticket} to Tom Baker tomorrow 9am", "dispatch_job", ticket_id=ticket, time=TOMORROW_9
    )
    assert card.text == f"Send Tom Baker to {ticket} (Acme Corp, “Not draining”) — Tue 16 Jun 09:00?"
    assert payloads(card) == ["/affirm", "/deny"]
    assert await orders(core) == []
    done = await agent.text("yes", "affirm")
    assert done == f"Dispatched RO-1 for {ticket} to Tom Baker, Tue 16 Jun 09:00. They get the job card now."
    [order] = await orders(core)
    assert (order.status, order.technician_id, order.scheduled_at) == (
        "dispatched",
        await user_id(core, "tom.baker"),
        datetime(2026, 6, 16, 1, 0, tzinfo=UTC),
    )
    [dispatched] = await events(core, "RepairDispatched")
    [card_message] = await routed(core, dispatched)
    assert card_message.kind == "dispatch_card" and card_message.target.user_id == await user_id(
        core, "tom.baker"
    )
    facts = card_message.context
    assert (facts["address"], facts["phone"], facts["serial"], facts["warranty"]) == (
        "88 Harbour Road",
        "+8613800138000",
        "WM2023-00917",
        "in",
    )


async def test_ambiguous_name_asks_with_buttons_then_takes_the_preferred_time(
    core: Core, world: World
) -> None:
    await crew(core)
    preferred = datetime(2026, 6, 17, 6, 0, tzinfo=UTC)  # Wed 14:00 in Shanghai
    ticket = await open_request(core, world, preferred=preferred)
    nlu = ScriptedNlu()
    manager = chat(core, nlu, "north.manager")
    [question] = await manager.say(f"send Tom to {ticket}", "dispatch_job", ticket_id=ticket)
    assert question.text == "Which technician do you mean?"
    assert payloads(question) == ['/dispatch_job{"tech":"tom.baker"}', '/dispatch_job{"tech":"tom.li"}']
    # The customer's preferred time is used when none is said.
    [card] = await manager.say('/dispatch_job{"tech":"tom.li"}')
    assert card.text == f"Send Tom Li to {ticket} (Acme Corp, “Not draining”) — Wed 17 Jun 14:00?"
    assert "Dispatched RO-1" in await manager.text("yes", "affirm")
    [order] = await orders(core)
    assert order.technician_id == await user_id(core, "tom.li") and order.scheduled_at == preferred


async def test_who_can_take_it_suggests_three_with_reasons_and_asks_the_time(
    core: Core, world: World
) -> None:
    await crew(core)
    busy = await open_request(core, world, "DW500-00001", subject="Noisy")
    await core.service_desk.dispatch(
        world.agent,
        RepairOrderIn(
            service_request=busy, technician="zhang.wei", scheduled_at=datetime(2026, 6, 16, 2, 0, tzinfo=UTC)
        ),
    )
    ticket = await open_request(core, world)
    nlu = ScriptedNlu()
    agent = chat(core, nlu, "agent")
    [suggested] = await agent.say(f"who can take {ticket}?", "dispatch_job", ticket_id=ticket)
    lines = suggested.text.splitlines()
    assert lines[0] == f"Who could take {ticket}, best first:"
    # Same region first, then who knows the model, then the lightest day: Zhang Wei knows the WM-2023 but has
    # a job tomorrow; the south technician knows it too but is in another region.
    assert lines[1] == "1. Zhang Wei 张伟 — same region, knows this model, 0 jobs that day, 1 open"
    assert lines[2].startswith("2. Tech North — same region, 0 jobs that day, 0 open")
    assert len(lines) == 4 and "Tech South" not in suggested.text
    assert payloads(suggested)[0] == '/dispatch_job{"tech":"zhang.wei"}'
    [when] = await agent.say('/dispatch_job{"tech":"zhang.wei"}')
    assert when.text == "When should Zhang Wei 张伟 go?"
    assert [button.title for button in when.buttons] == ["Tue 16 Jun 09:00", "No time yet"]
    card = await agent.text('/dispatch_job{"when":"none"}')
    assert card.endswith("— time to be agreed?")
    await agent.say("yes", "affirm")
    assert [(order.id, order.scheduled_at is None) for order in await orders(core)] == [(1, False), (2, True)]

    # The same ranking through the API, with the reasons.
    from crmbot.app import create_app

    app = create_app(core, "test-admin-token")
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get(
            f"/api/v1/service-requests/{busy}/technician-suggestions",
            params={"limit": 5},
            headers={"Authorization": "Bearer test-admin-token"},
        )
    assert response.status_code == 200
    ranked = response.json()
    assert [item["username"] for item in ranked][:2] == ["tom.baker", "tech.north"]
    assert ranked[0]["skill_match"] == "category" and ranked[0]["same_region"] is True
    assert "skilled in dishwasher" in ranked[0]["reasons"]


async def test_chinese_dispatch_with_name_and_time(core: Core, world: World) -> None:
    await crew(core)
    ticket = await open_request(core, world)
    nlu = ScriptedNlu()
    agent = chat(core, nlu, "agent")
    card = await agent.text(
        f"把{ticket}派给张伟，明天上午9点", "dispatch_job", ticket_id=ticket, time=TOMORROW_9
    )
    assert (
        card == f"派Zhang Wei 张伟处理 {ticket}（Acme Corp，“Not draining”），时间：6月16日（周二） 09:00？"
    )
    assert (await agent.text("是", "affirm")).startswith("已派单 RO-1")
    [order] = await orders(core)
    assert order.technician_id == await user_id(core, "zhang.wei")


async def test_dispatch_bad_input_changes_nothing(core: Core, world: World) -> None:
    await crew(core)
    ticket = await open_request(core, world)
    nlu = ScriptedNlu()
    agent = chat(core, nlu, "agent")
    # A name nobody has; a rep is not a technician: both read as unknown, nothing listed.
    [unknown] = await agent.say(f"assign {ticket} to Bob", "dispatch_job", ticket_id=ticket)
    assert unknown.text == (
        "I don't know a technician called “Bob” among those you can dispatch. Nothing was changed."
    )
    assert payloads(unknown) == [f'/dispatch_job{{"sr":"{ticket}"}}']
    rep = await agent.text(f"assign {ticket} to rep.north", "dispatch_job", ticket_id=ticket)
    assert "rep.north" in rep and "don't know a technician" in rep
    # An unknown request; a time in the past.
    assert await agent.text("dispatch SR-99 to Tom Li", "dispatch_job", ticket_id="SR-99") == (
        "I couldn't find request SR-99."
    )
    [past] = await agent.say(
        f"assign {ticket} to Tom Li yesterday 9am",
        "dispatch_job",
        ticket_id=ticket,
        time="2026-06-14T09:00:00+08:00",
    )
    assert (
        past.text.startswith("Sun 14 Jun 09:00 is already in the past.")
        and "When should Tom Li go?" in past.text
    )
    assert await agent.text("cancel", "cancel") != ""
    # A resolved request.
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="assign", assignee="agent"))
    await core.service_desk.transition(
        world.agent, ticket, TransitionIn(action="resolve", resolution="Fixed on the phone")
    )
    assert await agent.text(f"dispatch {ticket} to Tom Li", "dispatch_job", ticket_id=ticket) == (
        f"{ticket} is resolved: reopen it before sending a technician."
    )
    # A manager of another branch: the request is out of scope (reported as not found); so are their techs.
    other = await open_request(core, world)
    south = chat(core, nlu, "south.manager")
    assert await south.text(f"assign {other} to Tom Li", "dispatch_job", ticket_id=other) == (
        f"I couldn't find request {other}."
    )
    with pytest.raises(NotFound):
        await core.service_desk.dispatch(
            world.south_manager, RepairOrderIn(service_request=other, technician="tom.li")
        )
    # The north manager cannot send the south's technician: unknown to them, and refused by the core.
    north = chat(core, nlu, "north.manager")
    assert "don't know a technician called “Tech South”" in await north.text(
        f"assign {other} to Tech South", "dispatch_job", ticket_id=other
    )
    with pytest.raises(NotFound):
        await core.service_desk.dispatch(
            world.north_manager, RepairOrderIn(service_request=other, technician="tech.south")
        )
    # Technicians cannot dispatch.
    tech = await chat(core, nlu, "tech.north").text(
        f"assign {other} to Tom Li", "dispatch_job", ticket_id=other
    )
    assert "technician" in tech.casefold()
    assert await orders(core) == []
    with pytest.raises(ValidationFailed):
        await core.service_desk.dispatch(
            world.agent, RepairOrderIn(service_request=other, technician="rep.north")
        )


async def test_dispatch_card_matches_the_symptom_in_the_knowledge_base(core: Core, world: World) -> None:
    for code, title, symptoms in (
        ("KB-WM-E21", "Washer shows E21: drain blocked", "Error E21, water not draining, drum full of water"),
        ("KB-WM-DOOR", "Door won't open", "The door stays locked after the cycle"),
        ("KB-WM-NOISE", "Loud noise on spin", "Banging and rattling noise during spin"),
        ("KB-WM-SEAL", "Door seal leaks", "Water on the floor under the door seal"),
    ):
        await core.knowledge.upsert(
            SYSTEM,
            KbArticleIn(
                code=code,
                title=title,
                category="washing_machine/errors",
                product_code="WM-2023",
                symptoms=symptoms,
                solution="See the service manual.",
            ),
        )
    ticket = await open_request(
        core, world, subject="Washer problem", description="Loud banging noise when it spins"
    )
    await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=ticket, technician="tech.north")
    )
    [dispatched] = await events(core, "RepairDispatched")
    [card] = await routed(core, dispatched)
    codes = [article["code"] for article in card.context["articles"]]
    assert codes[0] == "KB-WM-NOISE" and len(codes) == 3
    assert "KB-WM-NOISE — Loud noise on spin" in render(card).text


# --- on my way ----------------------------------------------------------------------


async def accepted(
    core: Core,
    world: World,
    serial: str = "WM2023-00917",
    technician: str = "tech.north",
    at: datetime | None = datetime(2026, 6, 15, 6, 0, tzinfo=UTC),
) -> str:
    """A job the technician has accepted."""
    ticket = await open_request(core, world, serial)
    order = await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=ticket, technician=technician, scheduled_at=at)
    )
    actor = await core.org.actor_for_username(technician)
    await core.service_desk.act_on_repair(actor, order.ref, RepairActionIn(action="accept"))
    return order.ref


async def test_on_my_way_with_minutes_tells_the_customer_the_arrival(core: Core, world: World) -> None:
    reference = await accepted(core, world)
    nlu = ScriptedNlu()
    tech = chat(core, nlu, "tech.north")
    reply = await tech.text(f"on my way to {reference}, 20 minutes", "on_my_way", job_id=reference)
    assert reply == f"Told Acme Corp you're on the way, arriving about 10:20 ({reference}). Drive safely!"
    [order] = await orders(core)
    assert (order.status, order.eta_at, order.departed_at) == (
        "in_progress",
        datetime(2026, 6, 15, 2, 20, tzinfo=UTC),
        datetime(2026, 6, 15, 2, 0, tzinfo=UTC),
    )
    assert ("depart", "on the way, arriving about 2026-06-15T02:20:00+00:00") in await history(core, 1)
    async with core.uow() as uow:
        request = (await uow.session.execute(select(ServiceRequest))).scalar_one()
    assert request.status == "in_progress"
    [departed] = await events(core, "RepairDeparted")
    [message] = await routed(core, departed)
    assert message.kind == "job_on_the_way" and message.target.user_id == world.acme_customer.user_id
    assert message.urgent
    assert (
        "Tech North is on the way for your request SR-1 (job RO-1), arriving about 10:20."
        in render(message).text
    )
    assert "预计 10:20 左右到达" in render(message, "zh").text


async def test_on_my_way_by_customer_name_with_a_clock_time_and_in_chinese(core: Core, world: World) -> None:
    await accepted(core, world)
    nlu = ScriptedNlu()
    tech = chat(core, nlu, "tech.north")
    reply = await tech.text("heading to the Acme job, there by 10:30", "on_my_way")
    assert reply.startswith("Told Acme Corp you're on the way, arriving about 10:30 (RO-1)")
    # A second departure (stuck in traffic) updates the arrival, in Chinese this time.
    zh = await tech.text("在路上了，大概半小时到", "on_my_way")
    assert zh == "已通知Acme Corp您在路上，预计 10:30 左右到达（RO-1）。路上注意安全！"
    assert len(await events(core, "RepairDeparted")) == 2


async def test_on_my_way_asks_the_eta_and_refuses_without_an_active_job(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    tech = chat(core, nlu, "tech.north")
    assert await tech.text("on my way", "on_my_way") == (
        'You have no accepted job to be on your way to. "my jobs" lists them.'
    )
    reference = await accepted(core, world)
    [question] = await tech.say("on my way", "on_my_way")
    assert question.text == "How long until you get there?"
    assert payloads(question)[1] == '/on_my_way{"minutes":"30"}'
    assert "arriving about 10:30" in await tech.text('/on_my_way{"minutes":"30"}')
    # Someone else's job reads like one that does not exist; a past arrival is refused.
    south = chat(core, nlu, "tech.south")
    assert await south.text(f"on my way to {reference}", "on_my_way", job_id=reference) == (
        f"I couldn't find job {reference} among yours."
    )
    with pytest.raises(ValidationFailed):
        await core.service_desk.act_on_repair(
            world.tech_north,
            reference,
            RepairActionIn(action="depart", eta=datetime(2026, 6, 15, 1, 0, tzinfo=UTC)),
        )
    # A job not accepted yet must be accepted first.
    ticket = await open_request(core, world, "DW500-00001")
    fresh = await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=ticket, technician="tech.north")
    )
    [refused] = await tech.say(f"on my way to {fresh.ref}", "on_my_way", job_id=fresh.ref)
    assert refused.text == f"{fresh.ref} hasn't been accepted yet: accept it first."
    assert payloads(refused) == [f'/accept_job{{"job_id":"{fresh.ref}"}}']
    assert len(await events(core, "RepairDeparted")) == 1


# --- reschedule ----------------------------------------------------------------------


async def test_reschedule_is_confirmed_by_the_customer_with_a_button(core: Core, world: World) -> None:
    reference = await accepted(core, world)
    nlu = ScriptedNlu()
    tech = chat(core, nlu, "tech.north")
    [card] = await tech.say(
        f"reschedule {reference} to Friday 2pm", "reschedule_job", job_id=reference, time=FRIDAY_2PM
    )
    assert card.text == (
        f"Propose Fri 19 Jun 14:00 for {reference} (Acme Corp), instead of Mon 15 Jun 14:00? "
        "The customer will be asked to confirm."
    )
    assert await tech.text("yes", "affirm") == (
        f"Asked Acme Corp to confirm Fri 19 Jun 14:00 for {reference}. "
        "The visit moves when they say yes; you'll hear either way."
    )
    [order] = await orders(core)
    assert (order.scheduled_at, order.proposed_at) == (
        datetime(2026, 6, 15, 6, 0, tzinfo=UTC),
        datetime(2026, 6, 19, 6, 0, tzinfo=UTC),
    )
    assert "— new time Fri 19 Jun 14:00 waiting for the customer" in await tech.text("my jobs", "my_jobs")
    [proposed] = await events(core, "RepairRescheduleProposed")
    [ask] = await routed(core, proposed)
    assert ask.kind == "job_time_proposed" and ask.target.user_id == world.acme_customer.user_id
    shown = render(ask)
    assert [button.title for button in shown.buttons] == ["Confirm", "Another time"]
    assert "from Mon 15 Jun 2026, 14:00 to Fri 19 Jun 2026, 14:00 with Tech North" in shown.text
    assert "answer in our chat or call" in render(ask, channel="sms").text.casefold()

    # The customer taps Confirm (the notification's button payload goes through the normal dialogue).
    customer = chat(core, nlu, "acme-buyer")
    assert await customer.text(shown.buttons[0].payload) == (
        f"Thank you! The visit for {reference} is confirmed for Fri 19 Jun 14:00."
    )
    [order] = await orders(core)
    assert (order.scheduled_at, order.proposed_at) == (datetime(2026, 6, 19, 6, 0, tzinfo=UTC), None)
    assert [action for action, _ in await history(core, 1)][-2:] == ["reschedule", "confirm_time"]
    [answered] = await events(core, "RepairRescheduleAnswered")
    [told] = await routed(core, answered)
    assert told.kind == "job_time_confirmed" and told.target.user_id == world.tech_north.user_id
    assert "Acme Corp confirmed the new visit time for job RO-1" in render(told).text
    # Nothing is waiting any more.
    assert (
        await customer.text(shown.buttons[0].payload) == "There's no new visit time waiting for your answer."
    )


async def test_customer_refuses_by_typing_no_and_gives_a_time(core: Core, world: World) -> None:
    reference = await accepted(core, world)
    nlu = ScriptedNlu()
    agent = chat(core, nlu, "agent")
    await agent.say(f"{reference}改到周五下午两点", "reschedule_job", job_id=reference, time=FRIDAY_2PM)
    assert (await agent.text("是", "affirm")).startswith(
        f"已请Acme Corp确认 {reference} 改到 6月19日（周五） 14:00"
    )
    customer = chat(core, nlu, "acme-buyer")
    assert await customer.text("no, that doesn't work", "deny") == (
        'Sorry about that. Which time would suit you instead? For example "Saturday 10am".'
    )
    reply = await customer.text("Saturday 10am", "inform", time="2026-06-20T10:00:00+08:00")
    assert (
        reply
        == "Thanks, we've passed on Sat 20 Jun 10:00 to your technician. They will confirm a time with you."
    )
    [order] = await orders(core)
    assert (order.scheduled_at, order.proposed_at) == (datetime(2026, 6, 15, 6, 0, tzinfo=UTC), None)
    async with core.uow() as uow:
        request = (await uow.session.execute(select(ServiceRequest))).scalar_one()
    assert request.preferred_time == datetime(2026, 6, 20, 2, 0, tzinfo=UTC)
    [answered] = await events(core, "RepairRescheduleAnswered")
    told = await routed(core, answered)
    # The technician, and the agent who proposed it (also the dispatcher): once each.
    assert sorted((message.kind, message.target.user_id) for message in told) == sorted(
        [("job_time_refused", world.tech_north.user_id), ("job_time_refused", world.agent.user_id)]
    )
    assert "They suggest Sat 20 Jun 2026, 10:00 instead." in render(told[0]).text
    # A bare "yes" now (nothing pending) is the usual answer.
    assert await customer.text("yes that works", "affirm") == t("en", "smalltalk.affirm_alone")


async def test_customer_yes_confirms_and_reschedule_bad_input(core: Core, world: World) -> None:
    reference = await accepted(core, world)
    nlu = ScriptedNlu()
    tech = chat(core, nlu, "tech.north")
    # A time in the past is refused and asked again; nothing is proposed.
    [past] = await tech.say(
        f"reschedule {reference} to yesterday",
        "reschedule_job",
        job_id=reference,
        time="2026-06-14T14:00:00+08:00",
    )
    assert past.text.startswith("Sun 14 Jun 14:00 is already in the past.")
    assert "To when should RO-1 move?" in past.text
    assert await tech.text("cancel", "cancel") != ""
    with pytest.raises(ValidationFailed):
        await core.service_desk.act_on_repair(
            world.tech_north,
            reference,
            RepairActionIn(action="reschedule", scheduled_at=datetime(2026, 6, 14, 6, 0, tzinfo=UTC)),
        )
    # Another technician's job; a job that does not exist.
    south = chat(core, nlu, "tech.south")
    assert (
        await south.text(
            f"reschedule {reference} to Friday 2pm", "reschedule_job", job_id=reference, time=FRIDAY_2PM
        )
        == f"I couldn't find job {reference} among yours."
    )
    # Customers cannot propose; they answer.
    with pytest.raises(PermissionDenied):
        await core.service_desk.act_on_repair(
            world.acme_customer,
            reference,
            RepairActionIn(action="reschedule", scheduled_at=datetime(2026, 6, 19, 6, 0, tzinfo=UTC)),
        )
    with pytest.raises(InvalidTransition):
        await core.service_desk.act_on_repair(
            world.acme_customer, reference, RepairActionIn(action="confirm_time")
        )
    assert [order.proposed_at for order in await orders(core)] == [None]
    # Proposed, then the customer types "yes that works" (the NLU's affirm).
    await tech.say(
        f"reschedule {reference} to Friday 2pm", "reschedule_job", job_id=reference, time=FRIDAY_2PM
    )
    await tech.say("yes", "affirm")
    customer = chat(core, nlu, "acme-buyer")
    assert await customer.text("yes that works", "affirm") == (
        f"Thank you! The visit for {reference} is confirmed for Fri 19 Jun 14:00."
    )
    # Another customer's people see nothing of it.
    with pytest.raises(NotFound):
        await core.service_desk.act_on_repair(
            world.globex_customer, reference, RepairActionIn(action="confirm_time")
        )


async def propose(core: Core, world: World, reference: str, when: str = FRIDAY_2PM) -> None:
    """The technician proposes a new visit time for a job."""
    action = RepairActionIn(action="reschedule", scheduled_at=datetime.fromisoformat(when))
    await core.service_desk.act_on_repair(world.tech_north, reference, action)


async def test_customer_answers_a_proposed_time_in_words_whatever_they_parse_as(
    core: Core, world: World
) -> None:
    reference = await accepted(core, world)
    await propose(core, world, reference)
    nlu = ScriptedNlu()
    customer = chat(core, nlu, "acme-buyer")
    # "Friday 2pm works" reads as rescheduling, which customers cannot do: it is their answer.
    assert await customer.text("Friday 2pm works", "reschedule_job", time=FRIDAY_2PM) == (
        f"Thank you! The visit for {reference} is confirmed for Fri 19 Jun 14:00."
    )
    [order] = await orders(core)
    assert (order.scheduled_at, order.proposed_at) == (datetime(2026, 6, 19, 6, 0, tzinfo=UTC), None)
    # Their own time instead, in words the NLU could not place: passed on, the visit stays.
    await propose(core, world, reference, "2026-06-22T14:00:00+08:00")
    [said] = await customer.say("Saturday 10am would suit me better", "nlu_fallback", 0.3,
                                time="2026-06-20T10:00:00+08:00")
    assert said.text.startswith("Thanks, we've passed on Sat 20 Jun 10:00 to your technician.")
    [order] = await orders(core)
    assert (order.scheduled_at, order.proposed_at) == (datetime(2026, 6, 19, 6, 0, tzinfo=UTC), None)
    # "doesn't work" with the proposed day and hour named is a no without a time of their own.
    await propose(core, world, reference, "2026-06-23T14:00:00+08:00")
    asked = await customer.text("Tuesday 2pm doesn't work", "reschedule_job",
                                time="2026-06-23T14:00:00+08:00")
    assert asked.startswith("Sorry about that. Which time would suit you instead?")
    # Nothing proposed: a customer cannot move a visit, and is offered a person (not "not for customers").
    await customer.say("/confirm_visit{\"decision\":\"no\",\"when\":\"none\"}")
    [nothing] = await customer.say("move my visit to Monday", "reschedule_job",
                                   time="2026-06-22T10:00:00+08:00")
    assert nothing.text.startswith("There's no new visit time waiting for your answer.")
    assert payloads(nothing) == ["/human_handoff"]


async def test_two_proposals_pending_a_yes_asks_which(core: Core, world: World) -> None:
    first = await accepted(core, world)
    second = await accepted(core, world, "DW500-00001")
    await propose(core, world, first)
    await propose(core, world, second, "2026-06-20T10:00:00+08:00")
    nlu = ScriptedNlu()
    customer = chat(core, nlu, "acme-buyer")
    [which] = await customer.say("好的", "affirm")
    assert which.text == t("zh", "field.visit.ask_job")
    assert [button.payload for button in which.buttons] == [
        f'/confirm_visit{{"job_id":"{first}"}}', f'/confirm_visit{{"job_id":"{second}"}}']
    assert (await customer.text(which.buttons[1].payload)).startswith(f"谢谢！{second} 的上门时间已确认")


# --- completion ----------------------------------------------------------------------


async def test_completion_with_customer_damage_is_charged_and_a_survey_follows(
    core: Core, world: World, clock: FrozenClock, settings: Settings
) -> None:
    reference = await accepted(core, world)  # the unit is in warranty
    nlu = ScriptedNlu()
    tech = chat(core, nlu, "tech.north")
    card = (
        await tech.say(
            f"{reference} done, replaced pump, part P-100, 45 min, customer damage, dropped",
            "complete_job",
            job_id=reference,
            part="P-100",
        )
    )[-1]
    assert card.text.splitlines()[-1] == (
        "Warranty: not covered (customer damage), parts and labour are charged"
    )
    assert await tech.text("yes", "affirm") == (
        f"Completed {reference}. Charge: ¥320.00: parts ¥180.00 + labour ¥140.00 "
        "(damage not covered by the warranty)."
    )
    [order] = await orders(core)
    assert (order.in_warranty, order.total_charge) == (True, Decimal("320.00"))
    [completed] = await events(core, "RepairCompleted")
    [summary] = await routed(core, completed)
    assert summary.kind == "job_completed" and summary.target.user_id == world.acme_customer.user_id
    text = render(summary).text
    assert "What was done: replaced pump, part P-100, 45 min, customer damage, dropped" in text
    assert "Charge for what the warranty doesn't cover: CNY 320.00" in text
    async with core.uow() as uow:
        request = (await uow.session.execute(select(ServiceRequest))).scalar_one()
    assert request.status == "resolved"
    # The survey sweep raises the survey once the delay has passed, not before.
    assert await survey_flow.sweep_surveys(core, clock.now()) == 0
    clock.advance(timedelta(hours=settings.survey_delay_hours, minutes=1))
    assert await survey_flow.sweep_surveys(core, clock.now()) == 1
    async with core.uow() as uow:
        [survey] = list((await uow.session.execute(select(Survey))).scalars())
    assert (survey.technician_id, survey.repair_order_id) == (world.tech_north.user_id, 1)
    # The desk opened the request for the customer: the survey still goes to the customer's people.
    [due] = await events(core, "SurveyDue")
    [invite] = await routed(core, due)
    assert (invite.kind, invite.target.user_id) == ("survey_invite", world.acme_customer.user_id)


async def test_declining_in_words_whatever_the_words_parse_as(core: Core, world: World) -> None:
    ticket = await open_request(core, world)
    new = await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=ticket, technician="tech.north"))
    nlu = ScriptedNlu()
    tech = chat(core, nlu, "tech.north")
    # Read as completing: asked why, then declined (never "what did you do?").
    assert (await tech.text(f"decline {new.ref}", "complete_job", job_id=new.ref)).startswith(
        f"Why can't you take {new.ref}?")
    assert await tech.text("fully booked that day", "nlu_fallback") == (
        f"Declined {new.ref}. The dispatcher has been told and will find someone else.")
    again = await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=ticket, technician="tech.north"))
    # Read as accepting ("我不接" holds 接): declined, with the reason said, nothing accepted.
    assert await tech.text(f"{again.ref}我不接，明天请假", "accept_job", job_id=again.ref) == (
        f"已拒接 {again.ref}，已通知调度员重新派单。")
    assert [comment for action, comment in await history(core, 1) if action == "decline"][-1] == "明天请假"
    assert [order.status for order in await orders(core)] == ["open"]


async def test_completion_card_takes_corrections_and_a_part_typed_with_a_letter_o(
    core: Core, world: World
) -> None:
    reference = await accepted(core, world)
    nlu = ScriptedNlu()
    tech = chat(core, nlu, "tech.north")
    card = await tech.text(f"{reference} done, replaced the drain pump, part P-10O, 45 minutes",
                           "complete_job", job_id=reference)
    assert "Parts: 1 × P-100 Drain pump (3 at ST-N)" in card and "Labour: 45 min" in card
    # "actually" says it is a change, whatever the words parse as.
    updated, card = await tech.say("actually 60 minutes", "on_my_way", 0.86)
    assert updated.text == "Updated." and "Labour: 60 min" in card.text
    more = await tech.text("用了两个P-100", "complete_job", part="P-100")
    assert "2 × P-100" in more and "工时：60 分钟" in more
    await tech.say("是", "affirm")
    [order] = await orders(core)
    assert (order.status, order.labour_minutes) == ("completed", 60)


async def test_chinese_exclusion_and_short_stock_never_goes_negative(core: Core, world: World) -> None:
    reference = await accepted(core, world)
    nlu = ScriptedNlu()
    tech = chat(core, nlu, "tech.north")
    card = (
        await tech.say(
            f"{reference}完工，换了排水泵，用了配件P-100，30分钟，人为损坏，不在保修范围",
            "complete_job",
            job_id=reference,
            part="P-100",
        )
    )[-1]
    assert "保修：不在保修范围（人为损坏），配件和工时照常收费" in card.text
    await tech.text("取消", "cancel")
    # Short stock: the station has 3; asking for 5 is flagged before any card, and changes nothing.
    short = await tech.text(
        f"{reference} done, replaced pump, 5x P-100, 30 min", "complete_job", job_id=reference, part="P-100"
    )
    assert short.startswith("ST-N holds only 3 × P-100 (Drain pump); you named 5.")
    # "yes" is no answer to which parts: asked again, still nothing taken.
    assert "ST-N holds only 3 × P-100" in await tech.text("yes", "affirm")
    assert "Cancelled" in await tech.text("cancel", "cancel")
    # An unknown part.
    unknown = await tech.text(
        f"{reference} done, replaced pump, part P-777, 30 min", "complete_job", job_id=reference, part="P-777"
    )
    assert unknown.startswith("There is no part P-777 in the catalogue.")
    assert "Cancelled" in await tech.text("cancel", "cancel")
    # Someone else's job.
    south = chat(core, nlu, "tech.south")
    assert await south.text(f"{reference} done, replaced pump, 30 min", "complete_job", job_id=reference) == (
        f"I couldn't find job {reference} among yours."
    )
    [order] = await orders(core)
    assert (order.status, order.total_charge) == ("accepted", Decimal("0.00"))
    async with core.uow() as uow:
        assert list((await uow.session.execute(select(RepairPart))).scalars()) == []
    assert await core.service_desk.stock_level(SYSTEM, "ST-N", "P-100") == 3


# --- boards ----------------------------------------------------------------------


async def test_manager_board_groups_the_team_and_technicians_see_their_own(core: Core, world: World) -> None:
    await crew(core)
    await core.customers.update(world.rep_north, "ACME", CustomerPatch(address="88 Harbour Road"))
    await accepted(core, world, at=datetime(2026, 6, 15, 6, 0, tzinfo=UTC))
    await accepted(
        core, world, "DW500-00001", technician="zhang.wei", at=datetime(2026, 6, 15, 3, 0, tzinfo=UTC)
    )
    await accepted(
        core, world, "DW500-00001", technician="tom.li", at=datetime(2026, 6, 16, 1, 0, tzinfo=UTC)
    )
    nlu = ScriptedNlu()
    board = await chat(core, nlu, "north.manager").text("my jobs today", "my_jobs")
    assert board.splitlines() == [
        "Your team's jobs today (Mon 15 Jun): 2",
        "Tech North — tech.north",
        "  • 14:00 RO-1 Acme Corp — 88 Harbour Road — Washing machine WM-2023 (WM2023-00917) — Not draining"
        " — accepted",
        "Zhang Wei 张伟 — zhang.wei",
        "  • 11:00 RO-2 Acme Corp — 88 Harbour Road — Dishwasher DW-500 (DW500-00001) — Not draining"
        " — accepted",
    ]
    week = await chat(core, nlu, "north.manager").text("team jobs this week", "my_jobs")
    assert "Tom Li — tom.li" in week and "Tue 16 Jun 09:00 RO-3" in week
    # The south manager's board has none of the north's jobs; a technician sees only their own.
    assert await chat(core, nlu, "south.manager").text("my jobs", "my_jobs") == (
        "Your team has no open jobs today (Mon 15 Jun)."
    )
    mine = await chat(core, nlu, "zhang.wei").text("my jobs", "my_jobs")
    assert "RO-2" in mine and "RO-1" not in mine
    # The job list of the API carries who and where.
    first = await core.service_desk.get_repair_order(world.agent, "RO-1")
    assert (first.customer_name, first.address, first.product_name, first.serial_number) == (
        "Acme Corp",
        "88 Harbour Road",
        "Washing machine WM-2023",
        "WM2023-00917",
    )


def test_field_catalog_has_every_key_in_both_languages() -> None:
    en = {key for key in keys("en") if key.startswith("field.")}
    zh = {key for key in keys("zh") if key.startswith("field.")}
    assert en == zh and len(en) > 50


# --- API ----------------------------------------------------------------------------------------------------


async def test_api_suggestions_scope_and_depart_reschedule_answer_actions(core: Core, world: World) -> None:
    await crew(core)
    from crmbot.app import create_app

    app = create_app(core, "test-admin-token")
    tokens = {
        name: await core.org.issue_api_token(SYSTEM, name)
        for name in ("agent", "south.manager", "tech.north", "acme.buyer")
    }

    async def call(who: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {tokens[who]}"}
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
            return await client.request(method, f"/api/v1{path}", json=body, headers=headers)

    ticket = await open_request(core, world)
    ranked = await call("agent", "GET", f"/service-requests/{ticket}/technician-suggestions")
    assert [item["username"] for item in ranked.json()] == ["zhang.wei", "tech.north", "tom.baker"]
    # Another branch's manager: the request does not exist for them; naive times are refused.
    assert (
        await call("south.manager", "GET", f"/service-requests/{ticket}/technician-suggestions")
    ).status_code == 404
    naive = await call(
        "agent", "GET", f"/service-requests/{ticket}/technician-suggestions?at=2026-06-16T09:00:00"
    )
    assert naive.status_code == 422
    created = await call(
        "agent",
        "POST",
        "/repair-orders",
        {"service_request": ticket, "technician": "tech.north", "scheduled_at": "2026-06-15T14:00:00+08:00"},
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["customer_name"], body["product_name"], body["serial_number"]) == (
        "Acme Corp",
        "Washing machine WM-2023",
        "WM2023-00917",
    )
    reference = body["ref"]
    # Depart before accepting is a conflict; after it the arrival is stored.
    early = await call(
        "tech.north",
        "POST",
        f"/repair-orders/{reference}/actions",
        {"action": "depart", "eta": "2026-06-15T10:30:00+08:00"},
    )
    assert early.status_code == 409
    await call("tech.north", "POST", f"/repair-orders/{reference}/actions", {"action": "accept"})
    departed = await call(
        "tech.north",
        "POST",
        f"/repair-orders/{reference}/actions",
        {"action": "depart", "eta": "2026-06-15T10:30:00+08:00"},
    )
    assert (departed.status_code, departed.json()["status"]) == (200, "in_progress")
    assert moment_of(departed.json()["eta_at"]) == datetime(2026, 6, 15, 2, 30, tzinfo=UTC)
    # The desk proposes a new time; the customer answers through the API.
    past = await call(
        "agent",
        "POST",
        f"/repair-orders/{reference}/actions",
        {"action": "reschedule", "scheduled_at": "2026-06-14T14:00:00+08:00"},
    )
    assert past.status_code == 422
    proposed = await call(
        "agent",
        "POST",
        f"/repair-orders/{reference}/actions",
        {"action": "reschedule", "scheduled_at": FRIDAY_2PM},
    )
    assert moment_of(proposed.json()["proposed_at"]) == datetime(2026, 6, 19, 6, 0, tzinfo=UTC)
    assert (
        await call("tech.north", "POST", f"/repair-orders/{reference}/actions", {"action": "confirm_time"})
    ).status_code == 403
    confirmed = await call(
        "acme.buyer", "POST", f"/repair-orders/{reference}/actions", {"action": "confirm_time"}
    )
    assert (confirmed.json()["scheduled_at"], confirmed.json()["proposed_at"]) == (
        "2026-06-19T06:00:00Z",
        None,
    )
    again = await call("acme.buyer", "POST", f"/repair-orders/{reference}/actions", {"action": "refuse_time"})
    assert again.status_code == 409


async def test_a_declined_job_goes_back_and_is_dispatched_again_as_the_same_order(
    core: Core, world: World
) -> None:
    await crew(core)
    ticket = await open_request(core, world)
    await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=ticket, technician="tech.north")
    )
    nlu = ScriptedNlu()
    tech = chat(core, nlu, "tech.north")
    assert "Why can't you take RO-1?" in await tech.text('/accept_job{"job_id":"RO-1","decision":"decline"}')
    assert (await tech.text("fully booked that day", "inform")).startswith("Declined RO-1.")
    [declined] = await events(core, "RepairDeclined")
    [alert] = await routed(core, declined)
    assert (alert.kind, alert.target.user_id) == ("job_declined", world.agent.user_id)
    suggest = render(alert).buttons[-1]
    assert (suggest.title, suggest.payload) == ("Suggest a technician", f'/dispatch_job{{"sr":"{ticket}"}}')
    agent = chat(core, nlu, "agent")
    [ranked] = await agent.say(suggest.payload)
    assert ranked.text.startswith(f"Who could take {ticket}, best first:")
    await agent.say('/dispatch_job{"tech":"zhang.wei"}')
    assert "Zhang Wei" in await agent.text(f'/dispatch_job{{"when":"{TOMORROW_9}"}}')
    assert (await agent.text("yes", "affirm")).startswith(f"Dispatched RO-1 for {ticket} to Zhang Wei")
    [order] = await orders(core)
    assert (order.status, order.technician_id) == ("dispatched", await user_id(core, "zhang.wei"))
    assert [action for action, _ in await history(core, 1)] == ["dispatch", "decline", "dispatch"]
    # The technician who declined no longer sees the job or the request.
    assert (
        await tech.text("accept RO-1", "accept_job", job_id="RO-1") == "I couldn't find job RO-1 among yours."
    )
    async with core.uow() as uow:
        request = (await uow.session.execute(select(ServiceRequest))).scalar_one()
    assert request.assignee_id == await user_id(core, "zhang.wei")


async def test_on_my_way_with_two_jobs_asks_which_and_the_desk_must_name_a_job(
    core: Core, world: World
) -> None:
    first = await accepted(core, world)
    second = await accepted(core, world, "DW500-00001", at=datetime(2026, 6, 15, 8, 0, tzinfo=UTC))
    nlu = ScriptedNlu()
    tech = chat(core, nlu, "tech.north")
    [which] = await tech.say("on my way, 15 min", "on_my_way")
    assert which.text == "Which job are you on your way to?"
    assert payloads(which) == [f'/on_my_way{{"job_id":"{first}"}}', f'/on_my_way{{"job_id":"{second}"}}']
    assert "arriving about 10:15 (RO-2)" in await tech.text(payloads(which)[1])
    assert [order.status for order in await orders(core)] == ["accepted", "in_progress"]
    # The desk has no "my" job: it is asked for the number, and a wrong one is refused.
    agent = chat(core, nlu, "agent")
    assert await agent.text("reschedule the visit to Friday 2pm", "reschedule_job", time=FRIDAY_2PM) == (
        "Which job should move? Give its number, like RO-12."
    )
    assert "couldn't find job RO-9" in await agent.text("RO-9")
    card = await agent.text("RO-1")
    assert card.startswith("Propose Fri 19 Jun 14:00 for RO-1 (Acme Corp)")
