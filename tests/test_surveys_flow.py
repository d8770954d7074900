"""Satisfaction surveys end to end with a moved clock: created once after the delay by the sweep, sent in
chat with score buttons and by email/SMS with a signed link, answered in chat (then a comment), on the
survey page or through the API, low scores opening a follow-up task, expiry, and CSAT figures by scope."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from html import unescape
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from bot.assistant import Assistant, RateLimit
from bot.messages import Reply
from core.auth import SYSTEM, Actor
from core.clock import FrozenClock
from core.container import Core, build_core
from core.db.models import OutboxEvent, Survey, Task, User
from core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from core.schemas import RepairActionIn, RepairOrderIn, ServiceRequestIn, TransitionIn
from core.services.surveys import SurveyLinks
from core.settings import Settings
from crmbot.app import create_app
from notifier import survey_flow
from notifier.dispatcher import Notifier
from notifier.scheduler import Scheduler
from notifier.templates import MAX_PAYLOAD_BYTES, Templates
from notifier.types import ALL_CHANNELS, CHAT_CHANNELS, EMAIL, SMS, Outgoing
from tests.chat import Chat, ScriptedNlu
from tests.notify import Recorder
from tests.test_notifier_templates import sms_parts
from tests.world import World

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DELAY = timedelta(hours=2)
LINK = re.compile(r"http://127\.0\.0\.1:8080/survey/([0-9a-z]+\.[0-9a-z]+\.[A-Za-z0-9_-]{22})")




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


def chat_as(core: Core, sender: str) -> Chat:
    nlu = ScriptedNlu()
    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=1000, per_second=1000))
    return Chat(assistant=assistant, nlu=nlu, channel="rest", sender=sender)


def texts(replies: list[Reply]) -> str:
    return "\n".join(reply.text for reply in replies)


async def repaired(
    core: Core, world: World, customer: Actor, serial: str, technician: str = "tech.north"
) -> str:
    """A request fixed in the field: dispatched, accepted, started and completed (so resolved)."""
    opened = await core.service_desk.open_request(
        customer,
        ServiceRequestIn(subject="Leaking <b>badly</b>", description="leaking", serial_number=serial),
    )
    order = await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=opened.ref, technician=technician)
    )
    tech = world.tech_north if technician == "tech.north" else world.tech_south
    for action in ("accept", "start"):
        await core.service_desk.act_on_repair(tech, order.ref, RepairActionIn(action=action))
    await core.service_desk.act_on_repair(
        tech, order.ref, RepairActionIn(action="complete", work_summary="Replaced the door seal")
    )
    return opened.ref


async def surveys(core: Core) -> list[Survey]:
    async with core.uow() as uow:
        return list((await uow.session.execute(select(Survey).order_by(Survey.id))).scalars())


async def events(core: Core, event_type: str) -> list[OutboxEvent]:
    async with core.uow() as uow:
        query = select(OutboxEvent).where(OutboxEvent.event_type == event_type).order_by(OutboxEvent.id)
        return list((await uow.session.execute(query)).scalars())


async def tasks(core: Core) -> list[Task]:
    async with core.uow() as uow:
        return list((await uow.session.execute(select(Task).order_by(Task.id))).scalars())


async def user_id(core: Core, username: str) -> int:
    async with core.uow() as uow:
        return (await uow.session.execute(select(User.id).where(User.username == username))).scalar_one()


async def sweep(core: Core) -> int:
    return await survey_flow.sweep_surveys(core, core.clock.now())


def base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    return digits[number] if number < 36 else base36(number // 36) + digits[number % 36]


def token_in(message: Outgoing) -> str:
    found = LINK.search(message.content.text)
    assert found is not None, message.content.text
    return found.group(1)


# --- creation: once, after the delay ------------------------------------------------------------


async def test_resolving_and_closing_produce_exactly_one_survey_after_the_delay(
    core: Core, world: World, clock: FrozenClock, settings: Settings
) -> None:
    ticket = await repaired(core, world, world.acme_customer, world.acme_serial)
    clock.advance(DELAY - timedelta(minutes=1))
    assert await sweep(core) == 0 and await surveys(core) == []
    # Closing the resolved case does not start the delay again, nor make a second survey.
    await core.service_desk.transition(world.acme_customer, ticket, TransitionIn(action="close"))
    clock.advance(timedelta(minutes=1))
    assert await sweep(core) == 1
    assert await sweep(core) == 0
    # Two schedulers (two processes with their own connections) at the very same moment.
    other = build_core(settings, clock=clock)
    try:
        results = await asyncio.gather(
            Scheduler(core, survey_flow.SWEEPS).run_due(), Scheduler(other, survey_flow.SWEEPS).run_due()
        )
    finally:
        await other.close()
    assert results == [{"surveys": 0}, {"surveys": 0}]
    [survey] = await surveys(core)
    assert (survey.status, survey.recipient_id) == ("sent", await user_id(core, "acme.buyer"))
    assert survey.due_at == clock.now()  # resolved at the start, plus the delay
    assert survey.technician_id == await user_id(core, "tech.north") and survey.repair_order_id is not None
    assert survey.expires_at == clock.now() + timedelta(days=settings.survey_lifetime_days)
    [due] = await events(core, "SurveyDue")
    assert due.aggregate_id == survey.id and due.payload["service_request_id"] == int(ticket[3:])
    assert due.payload["expires_at"] == survey.expires_at.isoformat()


async def test_a_race_at_the_same_moment_still_makes_one_survey(
    core: Core, world: World, clock: FrozenClock, settings: Settings
) -> None:
    first = await repaired(core, world, world.acme_customer, world.acme_serial)
    await core.service_desk.transition(world.agent, first, TransitionIn(action="close"))
    second = await repaired(core, world, world.globex_customer, world.globex_serial, "tech.south")
    clock.advance(DELAY)
    other = build_core(settings, clock=clock)
    try:
        done = await asyncio.gather(sweep(core), sweep(other), sweep(core))
    finally:
        await other.close()
    assert sum(done) == 2
    assert sorted(s.service_request_id for s in await surveys(core)) == [int(first[3:]), int(second[3:])]
    assert len(await events(core, "SurveyDue")) == 2


async def test_old_cases_are_not_surveyed_and_open_surveys_expire(
    core: Core, world: World, clock: FrozenClock, settings: Settings
) -> None:
    await repaired(core, world, world.acme_customer, world.acme_serial)
    # The scheduler was off for longer than a survey lives: that case is not surveyed any more.
    clock.advance(DELAY + timedelta(days=settings.survey_lifetime_days, minutes=1))
    assert await sweep(core) == 0 and await surveys(core) == []
    # A survey staff created by hand goes out at the next sweep, and expires at its end.
    ticket = await repaired(core, world, world.acme_customer, world.acme_old_serial)
    await core.surveys.create_for_request(world.agent, ticket)
    assert await sweep(core) == 1
    [survey] = await surveys(core)
    assert survey.expires_at is not None
    clock.set(survey.expires_at)
    assert await sweep(core) == 1
    assert [(s.status, s.score) for s in await surveys(core)] == [("expired", None)]
    said = texts(
        await chat_as(core, "acme-buyer").say(
            f"rate {ticket} 5", "rate_service", ticket_id=ticket, rating="5"
        )
    )
    assert said == f"The survey for {ticket} has expired. Thank you anyway!"


# --- delivery -------------------------------------------------------------------------------------


async def test_the_survey_arrives_in_chat_with_buttons_and_by_email_with_a_link(
    core: Core, world: World, clock: FrozenClock, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    await core.org.link_identity(SYSTEM, "acme.buyer", "telegram:5001")
    acme = await repaired(core, world, world.acme_customer, world.acme_serial)
    globex = await repaired(core, world, world.globex_customer, world.globex_serial, "tech.south")
    await notifier.run_once()
    for sender in senders.values():
        sender.sent.clear()
    clock.advance(DELAY)
    assert await sweep(core) == 2
    await notifier.run_once()
    [chat] = senders["telegram"].sent
    assert (
        chat.user_id == await user_id(core, "acme.buyer")
        and chat.content.subject == f"{acme}: how did we do?"
    )
    payloads = [button.payload for button in chat.content.buttons]
    assert payloads == [f'/rate_service{{"ticket_id":"{acme}","rating":"{n}"}}' for n in range(1, 6)]
    assert all(len(payload.encode()) <= MAX_PAYLOAD_BYTES for payload in payloads)
    assert [button.title for button in chat.content.buttons] == ["⭐1", "⭐2", "⭐3", "⭐4", "⭐5"]
    [mail] = senders["email"].sent
    assert mail.address == "globex.buyer@example.com" and globex in mail.content.subject
    token = token_in(mail)
    assert mail.content.html is not None and f"/survey/{token}?score=5" in mail.content.html
    claims = SurveyLinks.from_settings(core.settings).read(token)
    [_, globex_survey] = await surveys(core)
    assert claims is not None and claims.survey_id == globex_survey.id
    assert claims.expires_at == globex_survey.expires_at
    # Routing again sends nothing more.
    assert await notifier.run_once() == (0, 0)
    assert senders["sms"].sent == [] and len(senders["telegram"].sent) == 1


async def test_a_survey_answered_before_it_is_routed_is_not_sent(
    core: Core, world: World, clock: FrozenClock, notifier: Notifier, senders: dict[str, Recorder]
) -> None:
    ticket = await repaired(core, world, world.acme_customer, world.acme_serial)
    await notifier.run_once()
    senders["email"].sent.clear()
    clock.advance(DELAY)
    await sweep(core)
    await core.surveys.answer(world.acme_customer, ticket, 5)
    await notifier.run_once()
    assert senders["email"].sent == []


async def test_links_point_at_the_public_url_and_are_signed_with_the_notifiers_settings(
    core: Core, world: World, clock: FrozenClock, senders: dict[str, Recorder]
) -> None:
    # A `crmbot run --role worker` process routes events it did not sweep: the links come from the
    # settings the notifier was built with, nothing global.
    core.settings = core.settings.model_copy(update={"public_url": "https://crm.example.com/"})
    await repaired(core, world, world.globex_customer, world.globex_serial, "tech.south")
    clock.advance(DELAY)
    await core.surveys.sweep(clock.now(), delay=DELAY)
    await Notifier(core, senders).run_once()
    mail = next(m for m in senders["email"].sent if m.content.subject.endswith("how did we do?"))
    link = re.search(r"https://crm\.example\.com/survey/(\S+)", mail.content.text)
    assert link is not None
    claims = SurveyLinks.from_settings(core.settings).read(link.group(1))
    assert claims is not None and claims.survey_id == (await surveys(core))[0].id


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_survey_message_renders_everywhere_and_its_sms_fits(lang: str) -> None:
    templates = Templates()
    link = "https://service.example-company.com.cn/survey/2n9c.tfmjkw.AbCdEfGhIjKlMnOpQrStUv"
    for subject, product, technician in (
        ("Washer leaks <under> the door at spin", "WM-1000 washing machine", "Tom Li"),
        ("洗衣机脱水时剧烈晃动，噪音很大，门封处一直漏水，显示屏反复报错E13，请尽快上门", "", ""),
    ):
        context = {
            "ticket": "SR-123456",
            "subject": subject,
            "product": product,
            "technician_name": technician,
            "customer_name": "Acme Corp",
            "link": link,
            "expires_at": "2026-06-29T04:00:00+00:00",
            "recipient_name": "阿卜杜热合曼·买买提",
        }
        for channel in ALL_CHANNELS:
            rendered = templates.render("survey_invite", channel, lang, context, "Asia/Shanghai")
            assert "SR-123456" in rendered.subject and "None" not in rendered.text
            if channel == SMS:
                assert link in rendered.text and sms_parts(rendered.text) <= 2, rendered.text
                assert rendered.text.startswith("【crmbot】") == (lang == "zh")
            elif channel == EMAIL:
                assert rendered.html is not None and link in rendered.html and link in rendered.text
                assert "<under>" not in rendered.html  # escaped: the subject is the customer's text
                assert ("&lt;under&gt;" in rendered.html) == ("<under>" in subject)
                assert ("29 Jun 2026" if lang == "en" else "2026年6月29日") in rendered.text
            else:
                assert channel in CHAT_CHANNELS and len(rendered.buttons) == 5
                assert all(len(b.payload.encode()) <= MAX_PAYLOAD_BYTES for b in rendered.buttons)


# --- answering in chat ----------------------------------------------------------------------------


async def test_a_chat_rating_asks_for_a_comment_and_keeps_it(
    core: Core, world: World, clock: FrozenClock
) -> None:
    first = await repaired(core, world, world.acme_customer, world.acme_serial)
    second = await repaired(core, world, world.acme_customer, world.acme_old_serial)
    third = await repaired(core, world, world.acme_customer, world.acme_serial)
    clock.advance(DELAY)
    assert await sweep(core) == 3
    chat = chat_as(core, "acme-buyer")
    # The survey's button, pressed in the chat.
    rated = await chat.say(f'/rate_service{{"ticket_id":"{first}","rating":"5"}}')
    assert rated[0].text == f"Thank you! You rated {first} ⭐⭐⭐⭐⭐."
    assert rated[1].text.startswith(f"Anything you'd like to add about {first}?")
    assert [(b.title, b.payload) for b in rated[1].buttons] == [("No comment", "/deny")]
    thanks = texts(await chat.say("Quick and friendly, thanks"))
    assert thanks.startswith("Thank you! I've added your comment")
    # A low score: the question asks what went wrong; "No comment" ends it.
    low = await chat.say(f'/rate_service{{"ticket_id":"{second}","rating":"2"}}')
    assert "service manager" in low[0].text and low[1].text.startswith(f"What went wrong with {second}?")
    assert texts(await chat.say("/deny")) == "No problem. Thanks again for your rating!"
    # Waiting for a comment, another survey's button is a rating, not a comment.
    await chat.say(f'/rate_service{{"ticket_id":"{third}","rating":"4"}}')
    again = await chat.say(f'/rate_service{{"ticket_id":"{first}","rating":"1"}}')
    assert texts(again) == f"{first} is already rated — thank you!"
    done = {s.service_request_id: (s.status, s.score, s.comment) for s in await surveys(core)}
    assert done == {
        int(first[3:]): ("answered", 5, "Quick and friendly, thanks"),
        int(second[3:]): ("answered", 2, None),
        int(third[3:]): ("answered", 4, None),
    }
    # The score-2 follow-up exists once, for the technician's manager.
    [task] = await tasks(core)
    assert task.title.startswith(f"{second} rated 2/5 by Acme Corp")
    assert task.assignee_id == await user_id(core, "north.manager")
    assert [e.payload["score"] for e in await events(core, "SurveyAnswered")] == [5, 2, 4]


async def test_a_comment_joins_the_follow_up_and_another_request_is_not_taken_for_one(
    core: Core, world: World, clock: FrozenClock
) -> None:
    first = await repaired(core, world, world.acme_customer, world.acme_serial)
    second = await repaired(core, world, world.acme_customer, world.acme_old_serial)
    clock.advance(DELAY)
    await sweep(core)
    chat = chat_as(core, "acme-buyer")
    await chat.say(f'/rate_service{{"ticket_id":"{first}","rating":"1"}}')
    await chat.say("The technician came three hours late and left a mess on the floor")
    [task] = await tasks(core)
    assert task.title.endswith("— “The technician came three hours late and left a mess on the floor”")
    with pytest.raises(Conflict, match="already a comment"):
        await core.surveys.add_comment(world.acme_customer, first, "again")
    # Rated, the comment question left unanswered: a clear request that follows is done, not kept as one.
    await chat.say(f'/rate_service{{"ticket_id":"{second}","rating":"4"}}')
    status = texts(await chat.say(f"what's the status of {first}?", "check_request_status", ticket_id=first))
    assert first in status and "comment" not in status
    assert [(s.score, s.comment) for s in await surveys(core)] == [
        (1, "The technician came three hours late and left a mess on the floor"),
        (4, None),
    ]


# --- answering on the page ------------------------------------------------------------------------


async def test_answering_1_on_the_page_opens_the_follow_up_and_raises_survey_answered(
    core: Core,
    world: World,
    clock: FrozenClock,
    notifier: Notifier,
    senders: dict[str, Recorder],
    web: httpx.AsyncClient,
) -> None:
    ticket = await repaired(core, world, world.acme_customer, world.acme_serial)
    await notifier.run_once()
    senders["email"].sent.clear()
    # Resolved on a Friday afternoon: the follow-up is due on Monday.
    clock.set(datetime(2026, 6, 19, 7, 0, tzinfo=UTC))
    await sweep(core)
    await notifier.run_once()
    [mail] = senders["email"].sent
    token = token_in(mail)
    page = await web.get(f"/survey/{token}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
    html = page.text
    assert ticket in html and "<script" not in html and html.count('type="radio"') == 5
    assert "Leaking &lt;b&gt;badly&lt;/b&gt;" in html and "<b>badly</b>" not in html
    assert "Washing machine WM-2023" in html and "Tech North took care of it" in html
    # Opening a score link from the email only preselects it (mail scanners open links too).
    preselected = await web.get(f"/survey/{token}", params={"score": "1"})
    assert 'value="1" required checked' in preselected.text
    assert [s.status for s in await surveys(core)] == ["sent"]
    missing = await web.post(f"/survey/{token}", data={"comment": "no score"})
    assert missing.status_code == 422 and "Please choose a score from 1 to 5." in missing.text
    assert ">no score</textarea>" in missing.text
    answered = await web.post(
        f"/survey/{token}", data={"score": "1", "comment": "  Two hours late <again>  "}
    )
    assert answered.status_code == 200
    assert f"You rated {ticket} 1/5" in answered.text and "service manager" in answered.text
    [survey] = await surveys(core)
    assert (survey.status, survey.score, survey.comment) == ("answered", 1, "Two hours late <again>")
    assert survey.answered_at == clock.now()
    [event] = await events(core, "SurveyAnswered")
    assert event.aggregate_id == survey.id and event.payload["score"] == 1
    assert event.payload["actor_id"] == await user_id(core, "acme.buyer")
    assert event.payload["technician_id"] == await user_id(core, "tech.north")
    [task] = await tasks(core)
    assert (task.kind, task.status, task.service_request_id) == ("follow_up", "open", int(ticket[3:]))
    assert task.title == f"{ticket} rated 1/5 by Acme Corp: call them back — “Two hours late <again>”"
    assert task.assignee_id == await user_id(core, "north.manager")
    assert task.due_at == datetime(2026, 6, 22, 10, 0, tzinfo=UTC)  # Monday 18:00 in Shanghai
    [created] = await events(core, "TaskCreated")
    assert created.aggregate_id == task.id and created.payload["kind"] == "follow_up"
    # Sent again (a double click, the back button): said clearly, nothing recorded twice.
    again = await web.post(f"/survey/{token}", data={"score": "5"})
    assert again.status_code == 409 and f"{ticket} was already rated 1/5" in again.text
    later = await web.get(f"/survey/{token}")
    assert later.status_code == 200 and "Already answered" in later.text and "<form" not in later.text
    assert len(await events(core, "SurveyAnswered")) == 1 and len(await tasks(core)) == 1


async def test_the_page_speaks_the_customers_language(
    core: Core, world: World, clock: FrozenClock, web: httpx.AsyncClient
) -> None:
    async with core.uow() as uow:
        await uow.session.execute(update(User).where(User.username == "acme.buyer").values(lang="zh"))
        await uow.commit()
    await repaired(core, world, world.acme_customer, world.acme_serial)
    clock.advance(DELAY)
    await sweep(core)
    [survey] = await surveys(core)
    assert survey.expires_at is not None
    token = SurveyLinks.from_settings(core.settings).token(survey.id, survey.expires_at)
    page = await web.get(f"/survey/{token}")
    assert "您对这次服务满意吗？" in page.text and 'lang="zh-CN"' in page.text
    english = await web.get(f"/survey/{token}", params={"lang": "en"})
    assert "How satisfied are you with our service?" in english.text
    done = await web.post(f"/survey/{token}", data={"score": "4", "lang": "zh"})
    assert "打了 4 分" in done.text


async def test_tampered_and_expired_links_are_refused_clearly_and_change_nothing(
    core: Core, world: World, clock: FrozenClock, web: httpx.AsyncClient
) -> None:
    await repaired(core, world, world.acme_customer, world.acme_serial)
    await repaired(core, world, world.globex_customer, world.globex_serial, "tech.south")
    clock.advance(DELAY)
    await sweep(core)
    acme, globex = await surveys(core)
    assert acme.expires_at is not None and globex.expires_at is not None
    links = SurveyLinks.from_settings(core.settings)
    token = links.token(acme.id, acme.expires_at)
    body, _, signature = token.rpartition(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    other_id = ".".join([base36(globex.id), *token.split(".")[1:]])
    longer = links.token(acme.id, acme.expires_at + timedelta(days=365)).split(".")
    stretched = f"{token.split('.')[0]}.{longer[1]}.{signature}"
    forged = SurveyLinks("another-server-token", "http://x").token(globex.id, globex.expires_at)
    for bad in (f"{body}.{flipped}", other_id, stretched, forged, str(acme.id), "x" * 300, "a.b.c"):
        shown = await web.get(f"/survey/{bad}")
        assert shown.status_code == 404 and "This link doesn't work" in unescape(shown.text), bad
        posted = await web.post(f"/survey/{bad}", data={"score": "1"})
        assert posted.status_code == 404 and "Traceback" not in posted.text
    # Past its end the real link says the survey has closed, and records nothing.
    clock.set(acme.expires_at + timedelta(seconds=1))
    closed = await web.get(f"/survey/{token}")
    assert closed.status_code == 410 and "This survey has closed" in closed.text
    posted = await web.post(f"/survey/{token}", data={"score": "1"})
    assert posted.status_code == 410
    assert [(s.status, s.score) for s in await surveys(core)] == [("sent", None), ("sent", None)]
    assert await events(core, "SurveyAnswered") == [] and await tasks(core) == []


async def test_a_customer_cannot_answer_another_customers_survey(
    core: Core, world: World, clock: FrozenClock, web: httpx.AsyncClient
) -> None:
    ticket = await repaired(core, world, world.acme_customer, world.acme_serial)
    clock.advance(DELAY)
    await sweep(core)
    with pytest.raises(NotFound):
        await core.surveys.answer(world.globex_customer, ticket, 1)
    with pytest.raises(NotFound):
        await core.surveys.answer(world.rep_north, ticket, 1)
    token = await core.org.issue_api_token(SYSTEM, "globex.buyer")
    refused = await web.post(
        f"/api/v1/service-requests/{ticket}/survey",
        headers={"Authorization": f"Bearer {token}"},
        json={"score": 1},
    )
    assert refused.status_code == 404
    # The Acme survey's button, replayed by Globex's person in their chat.
    said = texts(
        await chat_as(core, "globex.buyer").say(f'/rate_service{{"ticket_id":"{ticket}","rating":"1"}}')
    )
    assert said == f"I couldn't find request {ticket}. Please check the number (it looks like SR-12)."
    assert [(s.status, s.score) for s in await surveys(core)] == [("sent", None)]
    assert await events(core, "SurveyAnswered") == []


# --- CSAT -------------------------------------------------------------------------------------------


async def _answered(core: Core, world: World, clock: FrozenClock, scores: list[tuple[str, int]]) -> None:
    """Cases fixed by the given technicians, each answered with its score, a day apart."""
    for technician, score in scores:
        customer, serial = (
            (world.acme_customer, world.acme_serial)
            if technician == "tech.north"
            else (world.globex_customer, world.globex_serial)
        )
        ticket = await repaired(core, world, customer, serial, technician)
        clock.advance(DELAY)
        await sweep(core)
        await core.surveys.answer(customer, ticket, score)
        clock.advance(timedelta(days=1))


async def test_csat_by_technician_team_and_month_within_each_managers_scope(
    core: Core, world: World, clock: FrozenClock, web: httpx.AsyncClient
) -> None:
    # June: north 5, 4, 2; south 3. July: north 5; south 1, 4.
    await _answered(
        core, world, clock, [("tech.north", 5), ("tech.north", 4), ("tech.north", 2), ("tech.south", 3)]
    )
    clock.set(datetime(2026, 7, 1, 2, 0, tzinfo=UTC))
    await _answered(core, world, clock, [("tech.north", 5), ("tech.south", 1), ("tech.south", 4)])

    def rows(report: Any) -> list[tuple[str, int, float, float]]:
        return [(row.group, row.count, row.average, row.csat_percent) for row in report.rows]

    everything = await core.surveys.csat(world.admin, by="technician")
    assert rows(everything) == [("tech.north", 4, 4.0, 75.0), ("tech.south", 3, 2.67, 33.3)]
    assert (everything.overall.count, everything.overall.average, everything.overall.csat_percent) == (
        7,
        3.43,
        57.1,
    )
    teams = await core.surveys.csat(world.director, by="team")
    assert [(row.group, row.name, row.count) for row in teams.rows] == [
        ("NORTH-SVC", "North service", 4),
        ("SOUTH", "South branch", 3),
    ]
    months = await core.surveys.csat(world.admin, by="month")
    assert rows(months) == [("2026-06", 4, 3.5, 50.0), ("2026-07", 3, 3.33, 66.7)]
    july = await core.surveys.csat(world.admin, by="technician", since=date(2026, 7, 1))
    assert rows(july) == [("tech.north", 1, 5.0, 100.0), ("tech.south", 2, 2.5, 50.0)]
    june = await core.surveys.csat(world.admin, by="month", since=date(2026, 6, 1), until=date(2026, 6, 30))
    assert rows(june) == [("2026-06", 4, 3.5, 50.0)]
    # A manager sees their own people only; reps, technicians and customers see nothing.
    north = await core.surveys.csat(world.north_manager, by="technician")
    assert rows(north) == [("tech.north", 4, 4.0, 75.0)] and north.overall.count == 4
    south = await core.surveys.csat(world.south_manager, by="team")
    assert [(row.group, row.count) for row in south.rows] == [("SOUTH", 3)]
    for refused in (world.rep_north, world.acme_customer, world.tech_north):
        with pytest.raises(PermissionDenied):
            await core.surveys.csat(refused, by="technician")
    with pytest.raises(ValidationFailed):
        await core.surveys.csat(world.admin, by="month", since=date(2026, 7, 2), until=date(2026, 7, 1))
    with pytest.raises(ValidationFailed):
        await core.surveys.csat(world.admin, by="planet")

    # The same through the API, with personal tokens.
    async def as_user(username: str, **params: str) -> httpx.Response:
        token = await core.org.issue_api_token(SYSTEM, username)
        return await web.get(
            "/api/v1/surveys/csat", params=params, headers={"Authorization": f"Bearer {token}"}
        )

    listed = await as_user("north.manager", by="month", since="2026-06-01", until="2026-07-31")
    assert listed.status_code == 200
    assert [
        (row["group"], row["count"], row["average"], row["csat_percent"]) for row in listed.json()["rows"]
    ] == [
        ("2026-06", 3, 3.67, 66.7),
        ("2026-07", 1, 5.0, 100.0),
    ]
    for username in ("rep.north", "acme.buyer"):
        assert (await as_user(username)).status_code == 403
    assert (await web.get("/api/v1/surveys/csat", params={"by": "planet"}, headers=ADMIN)).status_code == 422
    reversed_range = await web.get(
        "/api/v1/surveys/csat", params={"since": "2026-07-02", "until": "2026-07-01"}, headers=ADMIN
    )
    assert reversed_range.status_code == 422
    admin = (await web.get("/api/v1/surveys/csat", params={"by": "team"}, headers=ADMIN)).json()
    assert admin["overall"]["count"] == 7 and admin["by"] == "team"
