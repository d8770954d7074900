"""The managers' morning digest: due once per manager per local day, only their subtree's facts, in EN and
ZH, with the pipeline chart on chat and inline in email."""

from __future__ import annotations

import email
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email import policy
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select, update

from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import Core
from core.db.models import Department, Notification, OutboxEvent, ServiceRequest, Survey, User
from core.domain.enums import OpportunityStage, Severity
from core.errors import PermissionDenied
from core.schemas import OpportunityIn, OpportunityPatch, ServiceRequestIn, TransitionIn
from notifier import digest
from notifier.charts import chart_labels, cjk_font, digest_chart, draw_digest_chart
from notifier.dispatcher import Notifier
from notifier.registry import all_sweeps, event_routes
from notifier.senders.email import build_email_sender
from notifier.templates import Templates
from notifier.types import ALL_CHANNELS, EMAIL, SMS
from tests.notify import Recorder
from tests.world import World

PNG = b"\x89PNG\r\n\x1a\n"




def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


async def set_user(core: Core, username: str, **values: Any) -> None:
    async with core.uow() as uow:
        await uow.session.execute(update(User).where(User.username == username).values(**values))
        await uow.commit()


async def set_department_timezone(core: Core, code: str, timezone: str) -> None:
    async with core.uow() as uow:
        await uow.session.execute(update(Department).where(Department.code == code).values(timezone=timezone))
        await uow.commit()


async def digests_raised(core: Core) -> list[tuple[str, str]]:
    """(username, day) of every DigestDue in the outbox, in order."""
    async with core.uow() as uow:
        rows = await uow.session.execute(
            select(User.username, OutboxEvent.payload)
            .join(User, User.id == OutboxEvent.aggregate_id)
            .where(OutboxEvent.event_type == "DigestDue")
            .order_by(OutboxEvent.id)
        )
        return [(username, payload["day"]) for username, payload in rows.tuples()]


async def sweep(core: Core, clock: FrozenClock, moment: str) -> int:
    clock.set(at(moment))
    [run] = [item.run for item in digest.SWEEPS if item.name == "digest"]
    return await run(core, clock.now())


# --- when it is due ------------------------------------------------------------------------------


async def test_each_manager_gets_one_digest_a_day_at_their_own_local_hour(
    core: Core, world: World, clock: FrozenClock
) -> None:
    assert "digest" in [item.name for item in all_sweeps()]
    assert event_routes()["DigestDue"] is digest.digest_due
    # south.manager works from Berlin; the NORTH department too (north.manager has no timezone of their own);
    # the director follows the company (Shanghai); an admin with a department gets one, a rep never does.
    await set_user(core, "south.manager", timezone="Europe/Berlin")
    await set_department_timezone(core, "NORTH", "Europe/Berlin")
    async with core.uow() as uow:
        group = (
            await uow.session.execute(select(Department.id).where(Department.code == "GRP"))
        ).scalar_one()
        await uow.session.execute(update(User).where(User.username == "admin").values(department_id=group))
        await uow.commit()

    assert await sweep(core, clock, "2026-06-15T07:59:00+08:00") == 0  # 01:59 in Berlin
    assert await sweep(core, clock, "2026-06-15T08:00:00+08:00") == 2
    assert await digests_raised(core) == [("admin", "2026-06-15"), ("director", "2026-06-15")]
    # The scheduler runs every minute, a second one may run too: nothing twice.
    assert await sweep(core, clock, "2026-06-15T08:01:00+08:00") == 0
    assert await sweep(core, clock, "2026-06-15T13:59:00+08:00") == 0  # 07:59 in Berlin
    assert await sweep(core, clock, "2026-06-15T08:00:00+02:00") == 2
    assert await sweep(core, clock, "2026-06-15T08:00:30+02:00") == 0
    assert sorted(await digests_raised(core))[2:] == [
        ("north.manager", "2026-06-15"),
        ("south.manager", "2026-06-15"),
    ]
    # The next day: the scheduler is down at 08:00 and comes back in the afternoon: today's digest then.
    assert await sweep(core, clock, "2026-06-16T07:30:00+08:00") == 0
    assert await sweep(core, clock, "2026-06-16T17:00:00+08:00") == 4  # 11:00 in Berlin
    assert sorted(day for _user, day in (await digests_raised(core))[4:]) == ["2026-06-16"] * 4
    # Down all of the 17th in Berlin and back at 01:30 on the 18th: no stale digest for the 17th, and the
    # 18th's waits for 08:00 there.
    assert await sweep(core, clock, "2026-06-17T09:00:00+08:00") == 2  # Shanghai's 17th only
    assert await sweep(core, clock, "2026-06-18T01:30:00+02:00") == 0
    assert await sweep(core, clock, "2026-06-18T08:00:00+02:00") == 4
    berlin = [day for user, day in await digests_raised(core) if user in ("north.manager", "south.manager")]
    assert "2026-06-17" not in berlin and berlin.count("2026-06-18") == 2
    assert not [user for user, _day in await digests_raised(core) if user.startswith(("rep", "agent"))]


# --- what it says ------------------------------------------------------------------------------


async def build_business(core: Core, world: World, clock: FrozenClock) -> None:
    """North: a request left unanswered, one opened and resolved, deals moved and won, one survey.
    South: an unanswered request, a lost deal and an unhappy survey — none of it north's business."""
    sales, desk = core.sales, core.service_desk
    clock.set(at("2026-06-12T10:00:00+08:00"))
    old = await desk.open_request(
        world.acme_customer, ServiceRequestIn(subject="Drum noisy", serial_number=world.acme_serial)
    )
    renewal = await sales.create_opportunity(
        world.rep_north,
        OpportunityIn(
            customer_code="ACME", name="Renewal", stage=OpportunityStage.PROPOSAL, amount=Decimal(50000)
        ),
    )
    kitchen = await sales.create_opportunity(
        world.rep_north,
        OpportunityIn(
            customer_code="ACME",
            name="Kitchen line",
            stage=OpportunityStage.NEGOTIATION,
            amount=Decimal(120000),
        ),
    )
    await sales.create_opportunity(
        world.rep_north, OpportunityIn(customer_code="ACME", name="Dryers", amount=Decimal(10000))
    )
    hotel = await sales.create_opportunity(
        world.rep_south,
        OpportunityIn(
            customer_code="GLOBEX",
            name="Hotel laundry",
            stage=OpportunityStage.PROPOSAL,
            amount=Decimal(80000),
        ),
    )
    # Inside the window (the 24 hours before 08:00 on the 15th in Shanghai).
    clock.set(at("2026-06-14T11:00:00+08:00"))
    done = await desk.open_request(
        world.acme_customer,
        ServiceRequestIn(subject="Door seal leaks", serial_number=world.acme_serial, severity=Severity.HIGH),
    )
    south = await desk.open_request(
        world.globex_customer,
        ServiceRequestIn(
            subject="Hotel dishwasher dead", serial_number=world.globex_serial, severity=Severity.HIGH
        ),
    )
    await desk.transition(world.agent, done.ref, TransitionIn(action="assign", assignee="agent"))
    await desk.transition(world.agent, done.ref, TransitionIn(action="resolve", resolution="Seal replaced"))
    await sales.update_opportunity(
        world.rep_north,
        renewal.ref,
        OpportunityPatch(stage=OpportunityStage.NEGOTIATION, amount=Decimal(60000)),
    )
    await sales.update_opportunity(
        world.rep_north, kitchen.ref, OpportunityPatch(stage=OpportunityStage.CLOSED_WON)
    )
    await sales.update_opportunity(
        world.rep_south, hotel.ref, OpportunityPatch(stage=OpportunityStage.CLOSED_LOST, lost_reason="price")
    )
    async with core.uow() as uow:
        session = uow.session
        ids = {}
        for ticket in (old.ref, done.ref, south.ref):
            ids[ticket] = (
                await session.execute(
                    select(ServiceRequest.id, ServiceRequest.customer_id).where(
                        ServiceRequest.id == int(ticket.split("-")[1])
                    )
                )
            ).one()
        for ticket, score, answered in (
            (done.ref, 4, "2026-06-14T12:00:00+08:00"),
            (old.ref, 1, "2026-06-05T12:00:00+08:00"),  # more than 7 days before: not counted
            (south.ref, 1, "2026-06-14T12:00:00+08:00"),
        ):
            request_id, customer_id = ids[ticket]
            session.add(
                Survey(
                    service_request_id=request_id,
                    customer_id=customer_id,
                    status="answered",
                    score=score,
                    created_at=at(answered),
                    answered_at=at(answered),
                )
            )
        await uow.commit()


async def route_digests(core: Core, clock: FrozenClock, senders: dict[str, Any], **images: Any) -> Notifier:
    clock.set(at("2026-06-15T08:00:00+08:00"))
    raised = await digest.run_digest_sweep(core, clock.now())
    assert raised == 3  # director, north.manager, south.manager
    notifier = Notifier(core, senders, images=images)
    await notifier.run_once()
    return notifier


async def digest_rows(core: Core) -> dict[str, Notification]:
    async with core.uow() as uow:
        rows = await uow.session.execute(
            select(User.username, Notification)
            .join(User, User.id == Notification.user_id)
            .where(Notification.kind == "digest")
        )
        return {username: row for username, row in rows.tuples()}


async def test_the_digest_holds_only_the_managers_subtree(
    core: Core, world: World, clock: FrozenClock
) -> None:
    await build_business(core, world, clock)
    senders = {name: Recorder(name) for name in ("telegram", "slack", "email", "sms")}
    await route_digests(core, clock, senders)
    rows = await digest_rows(core)
    assert set(rows) == {"director", "north.manager", "south.manager"}
    north = rows["north.manager"].context
    assert north["day"] == "2026-06-15" and north["currency"] == "CNY"
    assert (north["open_requests"], north["breached_count"], north["opened"], north["closed"]) == (1, 1, 1, 1)
    [late] = north["breached"]
    assert (late["ticket"], late["target"], late["customer"]) == ("SR-1", "response", "Acme Corp")
    assert [(deal["deal"], deal["amount"]) for deal in north["won"]] == [("OP-2", "120000.00")]
    assert north["won_amount"] == "120000.00" and north["lost_count"] == 0
    [moved] = north["moves"]
    # The amount as it stood when the deal moved (changed in the same update), from opportunity_history.
    assert (moved["deal"], moved["from_stage"], moved["to_stage"], moved["amount"]) == (
        "OP-1",
        "proposal",
        "negotiation",
        "60000.00",
    )
    assert {stage["stage"]: (stage["count"], stage["amount"]) for stage in north["pipeline"]} == {
        "qualification": (1, "10000.00"),
        "needs_analysis": (0, "0.00"),
        "proposal": (0, "0.00"),
        "negotiation": (1, "60000.00"),
    }
    assert (north["pipeline_count"], north["pipeline_amount"]) == (2, "70000.00")
    assert (north["csat_count"], north["csat_average"]) == (1, "4.0")
    flat = repr(north)
    assert "GLOBEX" not in flat and "Globex" not in flat and "SR-3" not in flat and "OP-4" not in flat

    south = rows["south.manager"].context
    assert [item["ticket"] for item in south["breached"]] == ["SR-3"]
    assert [deal["deal"] for deal in south["lost"]] == ["OP-4"] and south["lost_amount"] == "80000.00"
    assert south["won_count"] == 0 and south["pipeline_count"] == 0
    assert (south["csat_count"], south["csat_average"]) == (1, "1.0")
    assert "Acme" not in repr(south)

    director = rows["director"].context
    assert [item["ticket"] for item in director["breached"]] == ["SR-1", "SR-3"]
    assert (director["won_count"], director["lost_count"], director["csat_count"]) == (1, 1, 2)

    # The service answers the same as the digest, and only for managers.
    summary = await core.digest.summary(world.north_manager, date(2026, 6, 15))
    assert {**digest.digest_context(summary), "recipient_name": north["recipient_name"]} == north
    assert (summary.open_requests, summary.breached_count, summary.csat_count) == (1, 1, 1)
    assert summary.until == at("2026-06-15T08:00:00+08:00") and summary.since == summary.until - timedelta(
        days=1
    )
    with pytest.raises(PermissionDenied):
        await core.digest.summary(world.rep_north)


# --- how it reads --------------------------------------------------------------------------------


async def test_the_digest_goes_out_in_each_managers_language_with_the_chart(
    core: Core, world: World, clock: FrozenClock, settings: Any
) -> None:
    await build_business(core, world, clock)
    await core.org.link_identity(SYSTEM, "north.manager", "telegram:7001")
    await set_user(core, "director", lang="zh")
    await core.org.link_identity(SYSTEM, "director", "telegram:7002")
    await set_user(core, "south.manager", lang="zh")  # no chat account: by email
    await core.sales.create_opportunity(
        world.rep_south, OpportunityIn(customer_code="GLOBEX", name="Spa dryers", amount=Decimal(30000))
    )
    chat = Recorder("telegram")
    mail = build_email_sender(settings)
    notifier = await route_digests(core, clock, {"telegram": chat, "email": mail}, digest=digest_chart)
    await notifier.close()
    rows = await digest_rows(core)
    assert {name: (row.channel, row.status) for name, row in rows.items()} == {
        "north.manager": ("telegram", "sent"),
        "director": ("telegram", "sent"),
        "south.manager": ("email", "sent"),
    }
    by_user = {message.user_id: message for message in chat.sent}
    english = by_user[rows["north.manager"].user_id].content
    assert english.text.startswith("Team digest for 15 Jun 2026: 1 open request, 1 overdue\n")
    assert "SR-1 Acme Corp" in english.text and "Won OP-2 Kitchen line" in english.text
    assert "Average 4.0 out of 5 from 1 answer" in english.text
    chinese = by_user[rows["director"].user_id].content
    assert chinese.text.startswith("2026年6月15日 团队晨报：未结工单 2 个，超时 2 个")
    assert "赢单 OP-2" in chinese.text and "输单 OP-4" in chinese.text
    for content in (english, chinese):
        assert content.image is not None and content.image.startswith(PNG)
        assert len(content.image) < 100_000
        assert Image.open(io.BytesIO(content.image)).size == (800, 450)
    assert english.image_alt.startswith("Open pipeline by stage on 15 Jun 2026")
    assert chinese.image_alt.startswith("2026年6月15日各阶段在手商机")

    # The email (an .eml file: no SMTP host) carries the chart inline, referenced from the HTML.
    [raw] = mails(settings.mail_directory)
    message = email.message_from_bytes(raw, policy=policy.default)
    assert "团队晨报" in str(message["Subject"]) and message["Content-Language"] == "zh-CN"
    images = [part for part in message.walk() if part.get_content_type() == "image/png"]
    [image] = images
    assert image.get_content().startswith(PNG)
    cid = str(image["Content-ID"]).strip("<>")
    related = next(part for part in message.walk() if part.get_content_type() == "multipart/related")
    html = related.get_body(preferencelist=("html",))
    assert html is not None
    body = html.get_content()
    assert f'src="cid:{cid}"' in body and 'alt="2026年6月15日各阶段在手商机' in body
    assert "<!--crmbot:image-->" not in body
    plain = message.get_body(preferencelist=("plain",))
    assert plain is not None and "【销售】" in plain.get_content()


def mails(directory: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(Path(directory).glob("*digest*.eml"))]


def sample_contexts() -> list[dict[str, Any]]:
    busy = {
        "recipient_name": "司马建国",
        "day": "2026-06-15",
        "since": "2026-06-14T00:00:00+00:00",
        "until": "2026-06-15T00:00:00+00:00",
        "currency": "CNY",
        "open_requests": 123,
        "breached_count": 45,
        "breached": [
            {
                "ticket": f"SR-{1000 + n}",
                "subject": "洗衣机脱水时剧烈晃动，噪音很大，门封处一直漏水，显示屏反复报错E13，请尽快上门",
                "customer": "北京华联商厦有限公司",
                "severity": "high",
                "target": "response" if n % 2 else "resolution",
                "due": "2026-06-14T06:00:00+00:00",
                "assignee": "" if n == 3 else "阿卜杜热合曼·买买提",
            }
            for n in range(5)
        ],
        "opened": 17,
        "closed": 12,
        "moves_count": 8,
        "moves": [
            {
                "deal": "OP-77",
                "name": "Renewal <b>2027</b>",
                "customer": "Acme Corp",
                "owner": "Li Lei",
                "from_stage": "proposal",
                "to_stage": "negotiation",
                "amount": "1250000.00",
            }
        ],
        "won_count": 3,
        "won_amount": "98765432.10",
        "won": [
            {
                "deal": "OP-9",
                "name": "Hotel",
                "customer": "Globex",
                "owner": "Li Lei",
                "from_stage": "negotiation",
                "to_stage": "closed_won",
                "amount": "98765432.10",
            }
        ],
        "lost_count": 2,
        "lost_amount": "5000.00",
        "lost": [],
        "pipeline": [
            {"stage": "qualification", "count": 40, "amount": "12345678.90"},
            {"stage": "needs_analysis", "count": 21, "amount": "2345678.00"},
            {"stage": "proposal", "count": 9, "amount": "999999.99"},
            {"stage": "negotiation", "count": 4, "amount": "888888.00"},
        ],
        "pipeline_count": 74,
        "pipeline_amount": "16580244.89",
        "csat_count": 31,
        "csat_average": "4.6",
    }
    quiet = {
        **busy,
        "recipient_name": "",
        "open_requests": 0,
        "breached_count": 0,
        "breached": [],
        "opened": 0,
        "closed": 0,
        "moves_count": 0,
        "moves": [],
        "won_count": 0,
        "won_amount": "0.00",
        "won": [],
        "lost_count": 0,
        "lost_amount": "0.00",
        "pipeline": [{"stage": stage, "count": 0, "amount": "0.00"} for stage in digest_stages()],
        "pipeline_count": 0,
        "pipeline_amount": "0.00",
        "csat_count": 0,
        "csat_average": "",
    }
    return [busy, quiet]


def digest_stages() -> list[str]:
    return ["qualification", "needs_analysis", "proposal", "negotiation"]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_digest_renders_on_every_channel_and_its_sms_fits(lang: str) -> None:
    from tests.test_notifier_templates import CJK, sms_parts

    templates = Templates()
    assert "digest" in templates.kinds("en") and "digest" in templates.kinds("zh")
    assert templates.parts("en")["digest"] == templates.parts("zh")["digest"]
    for context in sample_contexts():
        for channel in ALL_CHANNELS:
            rendered = templates.render("digest", channel, lang, context, "Asia/Shanghai")
            assert rendered.subject.strip() and "\n" not in rendered.subject
            assert "None" not in rendered.text and "Undefined" not in rendered.text
            if lang == "zh":
                assert CJK.search(rendered.subject) and CJK.search(rendered.text)
            if channel == SMS:
                assert "\n" not in rendered.text and sms_parts(rendered.text) <= 2, rendered.text
                assert (
                    rendered.text.startswith("【crmbot】")
                    if lang == "zh"
                    else rendered.text.startswith("crmbot")
                )
            elif channel == EMAIL:
                assert rendered.html is not None and "<!--crmbot:image-->" in rendered.html
                assert "<b>2027</b>" not in rendered.html
                if context["moves"]:
                    assert "Renewal &lt;b&gt;2027&lt;/b&gt;" in rendered.html
            else:
                assert rendered.text.startswith(rendered.subject + "\n")


def test_the_chart_speaks_the_readers_language_or_english_without_a_cjk_font() -> None:
    [busy, quiet] = sample_contexts()
    assert digest_chart(quiet, "en") is None  # no open deal: nothing to draw, the text goes alone
    drawn = draw_digest_chart(busy, "zh", font=None)
    assert drawn is not None and drawn[0].startswith(PNG) and len(drawn[0]) < 100_000
    assert chart_labels(busy, "zh", cjk=False)["rows"][0]["stage"] == "Qualification"
    assert chart_labels(busy, "zh", cjk=False)["title"].startswith("Open pipeline by stage")
    assert drawn[1].startswith("2026年6月15日")  # the alt text is text: always the reader's language
    labels = chart_labels(busy, "zh", cjk=True)
    assert labels["rows"][0]["stage"] == "资格确认" and labels["rows"][0]["value"] == "40 个 · ¥1230万"
    values = [row["value"] for row in chart_labels(busy, "en", cjk=True)["rows"]]
    assert values == [
        "40 deals · CNY 12.3M",
        "21 deals · CNY 2.35M",
        "9 deals · CNY 1M",
        "4 deals · CNY 889k",
    ]
    if cjk_font() is None:
        pytest.skip("no CJK font installed here (fonts-noto-cjk is on CI): the Chinese drawing is not tried")
    chinese = digest_chart(busy, "zh")
    assert chinese is not None and chinese[0].startswith(PNG)
    assert Image.open(io.BytesIO(chinese[0])).size == (800, 450)
