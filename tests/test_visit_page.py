"""The visit-time page end to end: a rescheduled job's customer gets a signed link by email or SMS, the page
shows the old and the proposed time in their language without changing anything, and a POST confirms or
refuses through core as the request's customer user. Bad, tampered, outdated, expired and reused links get
a clear page and change nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html import unescape

import httpx
import pytest
from sqlalchemy import select, update

from core.clock import FrozenClock
from core.container import Core
from core.db.models import Customer, OutboxEvent, RepairOrder, RepairOrderChange, User
from core.errors import Conflict, InvalidTransition, NotFound
from core.links import VISIT_LINK_LIFETIME, LinkSigner, VisitLinks, base36
from core.schemas import RepairActionIn, RepairOrderIn, ServiceRequestIn
from core.services.surveys import SurveyLinks
from crmbot.app import create_app
from notifier.dispatcher import Notifier
from notifier.routing import Message, reschedule_proposed, routing_with
from notifier.templates import Templates
from notifier.types import ALL_CHANNELS, EMAIL, SMS, Outgoing
from tests.notify import Recorder
from tests.test_notifier_templates import sms_parts
from tests.world import World

ADMIN_TOKEN = "test-admin-token"
TZ = "Asia/Shanghai"
PLANNED = datetime(2026, 6, 15, 6, 0, tzinfo=UTC)  # Mon 15 Jun 14:00 in Shanghai
FRIDAY_2PM = datetime(2026, 6, 19, 6, 0, tzinfo=UTC)
SATURDAY_10AM = datetime(2026, 6, 20, 2, 0, tzinfo=UTC)
LINK = re.compile(r"http://127\.0\.0\.1:8080/visit/([0-9a-z]+\.[0-9a-z]+\.[0-9a-z]+\.[A-Za-z0-9_-]{22})")


@pytest.fixture
def senders() -> dict[str, Recorder]:
    return {name: Recorder(name) for name in ("email", "sms", "telegram", "slack")}


@pytest.fixture
def notifier(core: Core, senders: dict[str, Recorder]) -> Notifier:
    return Notifier(core, senders)


@pytest.fixture
async def web(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(core, ADMIN_TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def accepted_job(core: Core, world: World) -> str:
    """An ACME job opened by the desk (so the requester is staff), dispatched for Monday 14:00, accepted."""
    opened = await core.service_desk.open_request(
        world.agent,
        ServiceRequestIn(
            customer_code="ACME", subject="Leaking <b>badly</b>", serial_number=world.acme_serial
        ),
    )
    order = await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=opened.ref, technician="tech.north", scheduled_at=PLANNED)
    )
    await core.service_desk.act_on_repair(world.tech_north, order.ref, RepairActionIn(action="accept"))
    return order.ref


async def propose(core: Core, world: World, reference: str, when: datetime = FRIDAY_2PM) -> None:
    """The technician proposes a new visit time."""
    await core.service_desk.act_on_repair(
        world.tech_north, reference, RepairActionIn(action="reschedule", scheduled_at=when)
    )


async def order_row(core: Core) -> RepairOrder:
    async with core.uow() as uow:
        return (await uow.session.execute(select(RepairOrder))).scalar_one()


async def events(core: Core, event_type: str) -> list[OutboxEvent]:
    async with core.uow() as uow:
        query = select(OutboxEvent).where(OutboxEvent.event_type == event_type).order_by(OutboxEvent.id)
        return list((await uow.session.execute(query)).scalars())


async def last_change(core: Core) -> RepairOrderChange:
    async with core.uow() as uow:
        query = select(RepairOrderChange).order_by(RepairOrderChange.id.desc()).limit(1)
        return (await uow.session.execute(query)).scalar_one()


async def user_id(core: Core, username: str) -> int:
    async with core.uow() as uow:
        return int((await uow.session.execute(select(User.id).where(User.username == username))).scalar_one())


async def set_user(core: Core, username: str, **values: object) -> None:
    async with core.uow() as uow:
        await uow.session.execute(update(User).where(User.username == username).values(**values))
        await uow.commit()


async def routed_proposal(core: Core) -> list[Message]:
    """What the notifier's route makes of the latest proposal."""
    proposed = (await events(core, "RepairRescheduleProposed"))[-1]
    async with core.uow() as uow:
        with routing_with(core.settings):
            return await reschedule_proposed(uow.session, proposed)


def links(core: Core) -> VisitLinks:
    return VisitLinks.from_settings(core.settings)


def token_of(message: Message) -> str:
    """The visit token of a routed proposal's link."""
    found = LINK.fullmatch(message.context["link"])
    assert found is not None, message.context
    return found.group(1)


def token_in(message: Outgoing) -> str:
    found = LINK.search(message.content.text)
    assert found is not None, message.content.text
    return found.group(1)


async def link_sent(core: Core, notifier: Notifier, senders: dict[str, Recorder], channel: str) -> str:
    """Deliver what is due and return the visit token of the one proposal message on `channel`."""
    await notifier.run_once()
    [message] = [m for m in senders[channel].sent if "/visit/" in m.content.text]
    return token_in(message)


async def nothing_answered(core: Core, proposed: datetime = FRIDAY_2PM) -> None:
    order = await order_row(core)
    assert (order.scheduled_at, order.proposed_at) == (PLANNED, proposed)
    assert await events(core, "RepairRescheduleAnswered") == []


# --- the message ------------------------------------------------------------------------------------


async def test_the_email_carries_a_link_and_the_page_confirms_as_the_customer(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder], web: httpx.AsyncClient
) -> None:
    reference = await accepted_job(core, world)
    await notifier.run_once()
    for sender in senders.values():
        sender.sent.clear()
    await propose(core, world, reference)
    await notifier.run_once()
    [mail] = senders["email"].sent
    assert (
        mail.address == "acme.buyer@example.com"
        and mail.content.subject == "SR-1: can we come at a new time?"
    )
    assert "Confirm it, or tell us it doesn't, on this page:" in mail.content.text
    token = token_in(mail)
    assert len(token) <= 48  # short enough for an SMS
    claims = links(core).read(token)
    assert claims is not None and (claims.order_id, claims.proposed_at) == (1, FRIDAY_2PM)
    # Three days ahead of Friday the link ends after three days, not at the visit.
    assert claims.expires_at == core.clock.now() + VISIT_LINK_LIFETIME

    # Opening the page (as a mail scanner would) shows the facts and the two answers, and changes nothing.
    for _ in range(2):
        shown = await web.get(f"/visit/{token}")
        assert shown.status_code == 200
        text = unescape(shown.text)
        assert "Can we come at a new time?" in text and "job RO-1" in text and "SR-1" in text
        assert "Mon 15 Jun 2026, 14:00" in text and "Fri 19 Jun 2026, 14:00" in text
        assert "Tech North" in text and "Confirm this time" in text and "This time does not suit me" in text
        assert shown.text.count("<form") == 2 and "Leaking &lt;b&gt;badly&lt;/b&gt;" in shown.text
        assert (
            shown.headers["referrer-policy"] == "no-referrer" and shown.headers["cache-control"] == "no-store"
        )
    await nothing_answered(core)

    done = await web.post(f"/visit/{token}", data={"answer": "confirm", "lang": "en"})
    assert done.status_code == 200 and "Confirmed: Fri 19 Jun 2026, 14:00." in unescape(done.text)
    order = await order_row(core)
    assert (order.scheduled_at, order.proposed_at) == (FRIDAY_2PM, None)
    change = await last_change(core)
    # The request was opened by the desk: the customer's own user answers, not the desk.
    assert (change.action, change.actor_id) == ("confirm_time", await user_id(core, "acme.buyer"))
    [answered] = await events(core, "RepairRescheduleAnswered")
    assert answered.payload["accepted"] is True and answered.payload["actor_id"] == change.actor_id
    await notifier.run_once()
    told = [m for m in senders["email"].sent if m.address == "tech.north@example.com"]
    assert any("confirmed the new visit time for job RO-1" in m.content.text for m in told)

    # Sent again (a double click, the back button) or opened later: already answered, nothing twice.
    again = await web.post(f"/visit/{token}", data={"answer": "refuse"})
    assert again.status_code == 409 and "already confirmed: Fri 19 Jun 2026, 14:00" in unescape(again.text)
    later = await web.get(f"/visit/{token}")
    assert later.status_code == 200 and "Already answered" in later.text and "<form" not in later.text
    assert len(await events(core, "RepairRescheduleAnswered")) == 1
    assert (await order_row(core)).scheduled_at == FRIDAY_2PM


async def test_sms_only_customer_gets_the_link_and_refuses_in_chinese_with_a_note(
    core: Core, world: World, notifier: Notifier, senders: dict[str, Recorder], web: httpx.AsyncClient
) -> None:
    await set_user(core, "acme.buyer", email=None, phone="+8613800000001", lang="zh")
    reference = await accepted_job(core, world)
    await notifier.run_once()
    senders["sms"].sent.clear()
    await propose(core, world, reference)
    await notifier.run_once()
    [sms] = senders["sms"].sent
    assert sms.content.text.startswith(
        "【crmbot】SR-1 的上门时间拟改为 2026年6月19日 周五 14:00，点此确认或拒绝：http"
    )
    assert sms_parts(sms.content.text) <= 2
    token = token_in(sms)

    shown = await web.get(f"/visit/{token}")
    text = unescape(shown.text)
    assert shown.status_code == 200 and 'lang="zh-CN"' in shown.text
    assert "上门时间需要调整" in text and "2026年6月15日 周一 14:00" in text and "确认这个时间" in text
    english = await web.get(f"/visit/{token}", params={"lang": "en"})
    assert "This time does not suit me" in english.text
    await nothing_answered(core)

    note = "周六上午比较方便 <script>alert(1)</script>"
    done = await web.post(f"/visit/{token}", data={"answer": "refuse", "note": note, "lang": "zh"})
    assert done.status_code == 200
    assert "您表示 2026年6月19日 周五 14:00 不方便" in unescape(done.text) and "<script>" not in done.text
    order = await order_row(core)
    assert (order.scheduled_at, order.proposed_at) == (PLANNED, None)
    change = await last_change(core)
    assert (change.action, change.actor_id) == ("refuse_time", await user_id(core, "acme.buyer"))
    [answered] = await events(core, "RepairRescheduleAnswered")
    assert answered.payload["accepted"] is False and answered.payload["comment"] == note
    assert answered.payload["suggested_at"] is None
    # Answered already: the page says so, in Chinese, and records nothing more.
    again = await web.post(f"/visit/{token}", data={"answer": "confirm"})
    assert again.status_code == 409 and "已经回复过了" in again.text
    assert len(await events(core, "RepairRescheduleAnswered")) == 1


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_the_proposal_renders_everywhere_chat_keeps_its_buttons(
    core: Core, world: World, lang: str
) -> None:
    reference = await accepted_job(core, world)
    await propose(core, world, reference)
    [message] = await routed_proposal(core)
    assert message.kind == "job_time_proposed" and message.target.user_id == world.acme_customer.user_id
    link = message.context["link"]
    assert LINK.fullmatch(link)
    templates = Templates()
    for channel in ALL_CHANNELS:
        rendered = templates.render(
            message.kind, channel, lang, {"recipient_name": "", **message.context}, TZ
        )
        assert link in rendered.text, channel
        if channel == SMS:
            assert sms_parts(rendered.text) <= 2 and "\n" not in rendered.text
        elif channel == EMAIL:
            assert rendered.buttons == () and rendered.html is not None and link in rendered.html
        else:
            assert len(rendered.buttons) == 2 and rendered.buttons[0].payload.startswith("/confirm_visit")
    # A customer known only by the email on file cannot use the page: no link, the old wording.
    without = {"recipient_name": "", **message.context, "link": ""}
    sms = templates.render(message.kind, SMS, lang, without, TZ).text
    assert "/visit/" not in sms and ("call your service team" in sms or "致电服务团队" in sms)


# --- links that do not work -------------------------------------------------------------------------


async def test_tampered_forged_and_foreign_links_are_refused_clearly_and_change_nothing(
    core: Core, world: World, web: httpx.AsyncClient
) -> None:
    reference = await accepted_job(core, world)
    await propose(core, world, reference)
    [message] = await routed_proposal(core)
    token = token_of(message)
    number, proposed, expires, signature = token.split(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    claims = links(core).read(token)
    assert claims is not None
    longer = links(core).token(1, FRIDAY_2PM, claims.expires_at + timedelta(days=30)).split(".")
    bad_tokens = [
        f"{number}.{proposed}.{expires}.{flipped}",
        f"{base36(2)}.{proposed}.{expires}.{signature}",  # another job
        f"{number}.{proposed}.{longer[2]}.{signature}",  # a longer life
        VisitLinks("another-server-token").token(1, FRIDAY_2PM, claims.expires_at),
        # The survey's key cannot sign a visit link, even with the same numbers.
        LinkSigner(ADMIN_TOKEN, b"crmbot survey link v1\0").sign(1, int(FRIDAY_2PM.timestamp()), 2**31),
        SurveyLinks.from_settings(core.settings).token(1, claims.expires_at),
        links(core).token(99, FRIDAY_2PM, claims.expires_at),  # a job that does not exist
        "1",
        "a.b.c.d",
        "x" * 300,
    ]
    for bad in bad_tokens:
        shown = await web.get(f"/visit/{bad}")
        assert shown.status_code == 404 and "This link doesn't work" in unescape(shown.text), bad
        posted = await web.post(f"/visit/{bad}", data={"answer": "confirm"})
        assert posted.status_code == 404 and "Traceback" not in posted.text, bad
        with pytest.raises(NotFound):
            await core.service_desk.answer_visit_by_token(bad, links(core), accept=True)
    # A form without an answer asks again.
    empty = await web.post(f"/visit/{token}", data={"answer": "maybe"})
    assert empty.status_code == 422 and "Please use one of the two buttons." in empty.text
    await nothing_answered(core)


async def test_a_newer_proposal_outdates_the_old_link_and_only_its_own_link_answers(
    core: Core, world: World, web: httpx.AsyncClient
) -> None:
    reference = await accepted_job(core, world)
    await propose(core, world, reference)
    [first] = await routed_proposal(core)
    old = token_of(first)
    await propose(core, world, reference, SATURDAY_10AM)
    [second] = await routed_proposal(core)
    new = token_of(second)
    assert old != new
    shown = await web.get(f"/visit/{old}")
    assert shown.status_code == 410 and "This proposal has changed" in shown.text
    posted = await web.post(f"/visit/{old}", data={"answer": "confirm"})
    assert posted.status_code == 410
    with pytest.raises(InvalidTransition):
        await core.service_desk.answer_visit_by_token(old, links(core), accept=True)
    # The guard holds inside core's transaction too: an answer for the old time cannot move the visit.
    with pytest.raises(Conflict):
        await core.service_desk.act_on_repair(
            world.acme_customer,
            reference,
            RepairActionIn(action="confirm_time"),
            expect_proposed_at=FRIDAY_2PM,
        )
    await nothing_answered(core, SATURDAY_10AM)
    done = await web.post(f"/visit/{new}", data={"answer": "confirm"})
    assert done.status_code == 200 and "Confirmed: Sat 20 Jun 2026, 10:00." in unescape(done.text)
    assert (await order_row(core)).scheduled_at == SATURDAY_10AM


async def test_expired_past_and_closed_links_say_so_and_change_nothing(
    core: Core, world: World, clock: FrozenClock, web: httpx.AsyncClient
) -> None:
    reference = await accepted_job(core, world)
    soon = clock.now() + timedelta(days=1)
    await propose(core, world, reference, soon)
    [message] = await routed_proposal(core)
    token = token_of(message)
    claims = links(core).read(token)
    assert claims is not None and claims.expires_at == soon  # the visit comes before the three days
    # The link's own end, before the proposed time: refused.
    early = links(core).token(1, soon, clock.now() + timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    for path in (f"/visit/{early}",):
        assert (await web.get(path)).status_code == 410
        posted = await web.post(path, data={"answer": "confirm"})
        assert posted.status_code == 410 and "This link has expired" in posted.text
    # At the proposed time, the real link has expired as well.
    clock.set(soon)
    assert (await web.get(f"/visit/{token}")).status_code == 410
    assert (await web.post(f"/visit/{token}", data={"answer": "refuse"})).status_code == 410
    await nothing_answered(core, soon)
    # A cancelled job: nothing to answer any more.
    clock.set(soon - timedelta(hours=12))
    await core.service_desk.act_on_repair(
        world.agent, reference, RepairActionIn(action="cancel", comment="customer moved away")
    )
    closed = await web.post(f"/visit/{token}", data={"answer": "confirm"})
    assert closed.status_code == 410 and "This visit is no longer planned" in closed.text
    assert await events(core, "RepairRescheduleAnswered") == []


async def test_an_answer_given_in_chat_first_and_a_customer_without_a_user(
    core: Core, world: World, web: httpx.AsyncClient
) -> None:
    reference = await accepted_job(core, world)
    await propose(core, world, reference)
    [message] = await routed_proposal(core)
    token = token_of(message)
    await core.service_desk.act_on_repair(
        world.acme_customer, reference, RepairActionIn(action="confirm_time")
    )
    shown = await web.get(f"/visit/{token}")
    assert shown.status_code == 200 and "already confirmed" in shown.text
    assert (await web.post(f"/visit/{token}", data={"answer": "refuse"})).status_code == 409
    assert len(await events(core, "RepairRescheduleAnswered")) == 1
    # Nobody at the customer can answer as a customer user: no link in the message, and a link (say,
    # from before the user was switched off) leads nowhere.
    await propose(core, world, reference, SATURDAY_10AM)
    [fresh] = await routed_proposal(core)
    fresh_token = token_of(fresh)
    await set_user(core, "acme.buyer", active=False)
    async with core.uow() as uow:
        await uow.session.execute(update(Customer).values(email="desk@acme.example"))
        await uow.commit()
    [bare] = await routed_proposal(core)
    assert bare.target.address == "desk@acme.example" and bare.context["link"] == ""
    assert (await web.get(f"/visit/{fresh_token}")).status_code == 404
    assert (await web.post(f"/visit/{fresh_token}", data={"answer": "confirm"})).status_code == 404
    assert (await order_row(core)).proposed_at == SATURDAY_10AM
