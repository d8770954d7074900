"""The scheduler with a moved clock: care reminders once on the right local day, SLA warnings and two
escalations up the tree at the right times, one active scheduler, and `crmbot scheduler run-once`."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from core.clock import FrozenClock
from core.container import Core
from core.db.models import InstalledProduct, OutboxEvent, Task
from core.domain.enums import RequestKind, Severity
from core.schemas import ServiceRequestIn
from crmbot.cli import app
from notifier.care import SWEEPS as CARE_SWEEPS
from notifier.dispatcher import Notifier
from notifier.scheduler import Scheduler
from notifier.types import Outgoing
from tests.world import World


class Recorder:
    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.sent: list[tuple[datetime, Outgoing]] = []
        self.clock: FrozenClock | None = None

    async def send(self, message: Outgoing) -> str:
        assert self.clock is not None
        self.sent.append((self.clock.now(), message))
        return f"{self.channel}-{len(self.sent)}"

    async def close(self) -> None:
        return None


def shanghai(text: str) -> datetime:
    return datetime.fromisoformat(f"{text}+08:00")


async def events_of(core: Core, event_type: str) -> list[OutboxEvent]:
    async with core.uow() as uow:
        query = select(OutboxEvent).where(OutboxEvent.event_type == event_type).order_by(OutboxEvent.id)
        return list((await uow.session.execute(query)).scalars())


async def set_warranty_end(core: Core, serial: str, ends_on: date) -> None:
    async with core.uow() as uow:
        await uow.session.execute(
            update(InstalledProduct)
            .where(InstalledProduct.serial_number == serial)
            .values(warranty_ends_on=ends_on)
        )
        await uow.commit()


def restart(core: Core, clock: FrozenClock) -> tuple[Scheduler, Notifier, Recorder]:
    """A fresh scheduler and notifier, as after a process restart (all state is in the database)."""
    email = Recorder("email")
    email.clock = clock
    return Scheduler(core, CARE_SWEEPS), Notifier(core, {"email": email}), email


# --- care reminders -----------------------------------------------------------------------------


async def test_a_warranty_ending_in_30_days_is_reminded_once_on_the_right_local_day(
    core: Core, world: World, clock: FrozenClock
) -> None:
    await set_warranty_end(core, world.acme_serial, date(2026, 7, 15))
    delivered: list[tuple[datetime, Outgoing]] = []
    # Hour by hour from the evening 31 days before the end to two days later, restarting every 6 hours.
    moment = shanghai("2026-06-14T20:00:00")
    scheduler, notifier, email = restart(core, clock)
    hours = 0
    while moment <= shanghai("2026-06-17T12:00:00"):
        clock.set(moment)
        if hours % 6 == 0:
            delivered += email.sent
            scheduler, notifier, email = restart(core, clock)
        await scheduler.run_due()
        await notifier.run_once()
        moment += timedelta(hours=1)
        hours += 1
    delivered += email.sent
    reminders = [(at, message) for at, message in delivered if message.content.subject.startswith("Your ")]
    assert len(reminders) == 1, [message.content.subject for _, message in delivered]
    at, message = reminders[0]
    # Raised at local midnight of 15 June (30 days before 15 July), held by the night's quiet hours,
    # delivered at 08:00 local that day.
    assert at == shanghai("2026-06-15T08:00:00")
    assert message.address == "acme.buyer@example.com" and "30 days" in message.content.subject
    assert world.acme_serial in message.content.text and "15 Jul 2026" in message.content.text
    [event] = await events_of(core, "WarrantyExpiring")
    assert event.payload["days_left"] == 30 and event.payload["stage"] == 30

    # Seven days before the end, the second and last reminder.
    clock.set(shanghai("2026-07-08T09:00:00"))
    scheduler, notifier, email = restart(core, clock)
    await scheduler.run_due()
    await scheduler.run_due()
    await notifier.run_once()
    assert [message.content.subject for _, message in email.sent] == [
        "Your Washing machine WM-2023 warranty ends in 7 days"
    ]


async def test_an_extended_warranty_is_reminded_again_and_a_late_first_sight_gets_only_the_last_reminder(
    core: Core, world: World, clock: FrozenClock
) -> None:
    await set_warranty_end(core, world.acme_serial, date(2026, 6, 20))  # 5 days left at TEST_NOW
    scheduler = Scheduler(core, CARE_SWEEPS)
    await scheduler.run_due()
    [event] = await events_of(core, "WarrantyExpiring")
    assert event.payload["stage"] == 7  # never a late "30 days left"
    await set_warranty_end(core, world.acme_serial, date(2026, 7, 15))  # extended: a new end date
    await scheduler.run_due()
    assert [event.payload["stage"] for event in await events_of(core, "WarrantyExpiring")] == [7, 30]


async def test_follow_up_tasks_due_today_are_reminded_once(
    core: Core, world: World, clock: FrozenClock
) -> None:
    async with core.uow() as uow:
        uow.session.add_all(
            [
                Task(
                    title="Send the quote to Acme",
                    kind="follow_up",
                    status="open",
                    assignee_id=world.rep_north.user_id,
                    due_at=shanghai("2026-06-15T17:00:00"),
                    created_at=clock.now(),
                ),
                Task(
                    title="Tomorrow's call",
                    kind="follow_up",
                    status="open",
                    assignee_id=world.rep_north.user_id,
                    due_at=shanghai("2026-06-16T09:00:00"),
                    created_at=clock.now(),
                ),
                Task(
                    title="Done already",
                    kind="follow_up",
                    status="done",
                    assignee_id=world.rep_north.user_id,
                    due_at=shanghai("2026-06-15T11:00:00"),
                    created_at=clock.now(),
                ),
            ]
        )
        await uow.commit()
    scheduler, notifier, email = restart(core, clock)
    await scheduler.run_due()
    await scheduler.run_due()
    await notifier.run_once()
    assert [message.content.subject for _, message in email.sent] == ["Due today: Send the quote to Acme"]
    assert email.sent[0][1].address == "rep.north@example.com"


async def test_maintenance_is_reminded_a_week_ahead(core: Core, world: World, clock: FrozenClock) -> None:
    async with core.uow() as uow:
        await uow.session.execute(
            update(InstalledProduct)
            .where(InstalledProduct.serial_number == world.acme_serial)
            .values(maintenance_interval_months=12, last_maintenance_on=date(2025, 6, 20))
        )
        await uow.commit()
    scheduler = Scheduler(core, CARE_SWEEPS)
    await scheduler.run_due()
    await scheduler.run_due()
    [event] = await events_of(core, "MaintenanceDue")
    assert event.payload["due_on"] == "2026-06-20"


# --- SLA ----------------------------------------------------------------------------------------


async def test_an_unanswered_complaint_is_warned_then_escalates_twice_up_the_tree(
    core: Core, world: World, clock: FrozenClock
) -> None:
    opened_at = clock.now()
    complaint = await core.service_desk.open_request(
        world.acme_customer,
        ServiceRequestIn(
            subject="Technician was rude and late", kind=RequestKind.COMPLAINT, severity=Severity.HIGH
        ),
    )
    scheduler, notifier, email = restart(core, clock)

    async def at(offset: timedelta) -> list[str]:
        clock.set(opened_at + offset)
        await scheduler.run_due()
        await notifier.run_once()
        return [f"{message.address} {message.content.subject}" for _, message in email.sent]

    # A high-severity complaint must get a first response within 2 hours.
    assert not [line for line in await at(timedelta(minutes=89)) if "response" in line or "Escalated" in line]
    warned = await at(timedelta(minutes=90))
    assert f"north.manager@example.com {complaint.ref}: first response due 15 Jun 2026, 12:00" in " | ".join(
        warned
    ).replace("Mon ", "")
    email.sent.clear()
    assert await at(timedelta(minutes=119)) == []
    first = await at(timedelta(hours=2))
    assert [line for line in first if "Escalated" in line] == [
        f"north.manager@example.com Escalated: {complaint.ref} (complaint, high)"
    ]
    email.sent.clear()
    assert await at(timedelta(hours=2, minutes=59)) == []
    second = await at(timedelta(hours=3))
    assert second == [f"director@example.com Escalated: {complaint.ref} (complaint, high)"]
    email.sent.clear()
    assert await at(timedelta(hours=30)) == []  # the top of the tree: nothing more, however late

    detail = await core.service_desk.get_request(world.admin, complaint.ref)
    steps = [entry for entry in detail.history if entry.action == "escalate"]
    assert [entry.comment.split("; ")[1] for entry in steps] == [
        "escalated to north.manager (level 1)",
        "escalated to director (level 2)",
    ]
    assert detail.status == "escalated" and detail.escalation_level == 2
    # Both targets were missed in the end (the resolution after a day): one breach each, for the alert rules.
    breaches = await events_of(core, "ServiceRequestSlaBreached")
    assert [event.payload["target"] for event in breaches] == ["response", "resolution"]


async def test_a_responded_request_is_not_escalated_for_its_response(
    core: Core, world: World, clock: FrozenClock
) -> None:
    from core.schemas import TransitionIn

    request = await core.service_desk.open_request(
        world.acme_customer,
        ServiceRequestIn(subject="Noisy", serial_number=world.acme_serial, severity=Severity.HIGH),
    )
    await core.service_desk.transition(
        world.agent, request.ref, TransitionIn(action="assign", assignee="agent")
    )
    clock.advance(timedelta(hours=5))  # past the 4-hour response target, well before the 1-day resolution
    await Scheduler(core, CARE_SWEEPS).run_due()
    assert await events_of(core, "ServiceRequestEscalated") == []


# --- one scheduler ------------------------------------------------------------------------------


async def test_two_schedulers_started_at_once_one_sweeps(
    core: Core, world: World, clock: FrozenClock
) -> None:
    swept: list[str] = []

    async def count(core: Core, now: datetime) -> int:
        await asyncio.sleep(0)
        return 1

    from notifier.scheduler import Sweep

    one = Scheduler(core, [Sweep("probe", count)], holder="one")
    two = Scheduler(core, [Sweep("probe", count)], holder="two")
    results = await asyncio.gather(one.tick(), two.tick())
    swept = [name for name, result in zip(("one", "two"), results, strict=True) if result is not None]
    assert len(swept) == 1
    holder, other = (one, two) if swept == ["one"] else (two, one)
    assert await other.tick() is None and await holder.tick() is not None  # the holder renews
    clock.advance(timedelta(seconds=91))  # the holder died: its lease runs out
    assert await other.tick() is not None and await holder.tick() is None
    await other.stop()  # a clean stop hands the lease back at once
    assert await holder.tick() is not None


async def test_a_failing_sweep_does_not_stop_the_others(core: Core, world: World) -> None:
    from notifier.scheduler import Sweep

    async def broken(core: Core, now: datetime) -> int:
        raise RuntimeError("boom")

    async def fine(core: Core, now: datetime) -> int:
        return 3

    done = await Scheduler(core, [Sweep("broken", broken), Sweep("fine", fine)]).run_due()
    assert done == {"broken": -1, "fine": 3}


# --- crmbot scheduler run-once ------------------------------------------------------------------


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CRMBOT_DATABASE_URL", database_url)
    monkeypatch.setenv("CRMBOT_DATA_DIR", str(tmp_path / "var"))
    for name in ("CRMBOT_SMTP_HOST", "CRMBOT_TELEGRAM_TOKEN", "CRMBOT_SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    import crmbot.cli

    monkeypatch.setattr(crmbot.cli.console, "width", 200)
    return CliRunner()


def test_run_once_at_a_moment_twice_sends_once(
    cli: CliRunner, world: World, core: Core, tmp_path: Path
) -> None:
    asyncio.run(set_warranty_end_sync(core.settings.database_url, world.acme_serial))
    first = cli.invoke(app, ["scheduler", "run-once", "--at", "2026-06-15T09:00:00+08:00"])
    assert first.exit_code == 0, first.output
    assert "care.warranty" in first.output
    again = cli.invoke(app, ["scheduler", "run-once", "--at", "2026-06-15T09:00:00+08:00"])
    assert again.exit_code == 0, again.output
    mails = [path for path in (tmp_path / "var" / "mail").glob("*.eml") if "warranty_expiring" in path.name]
    assert len(mails) == 1
    assert "acme.buyer@example.com" in mails[0].read_text(encoding="utf-8")


async def set_warranty_end_sync(database_url: str, serial: str) -> None:
    from core.db.engine import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(InstalledProduct)
                .where(InstalledProduct.serial_number == serial)
                .values(warranty_ends_on=date(2026, 7, 15))
            )
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("value", "message"),
    [("tomorrow", "is not an ISO 8601 date and time"), ("2026-06-15T09:00:00", "needs a timezone offset")],
)
def test_run_once_refuses_a_bad_moment(cli: CliRunner, world: World, value: str, message: str) -> None:
    result = cli.invoke(app, ["scheduler", "run-once", "--at", value])
    assert result.exit_code == 2 and message in result.output


# --- the care plan ------------------------------------------------------------------------------


async def test_the_care_plan_welcomes_new_customers_after_a_month_and_calls_at_risk_ones_once(
    core: Core, world: World, clock: FrozenClock
) -> None:
    from core.db.models import Customer

    async with core.uow() as uow:
        await uow.session.execute(
            update(Customer).where(Customer.code == "GLOBEX").values(lifecycle_stage="at_risk")
        )
        await uow.commit()
    scheduler, notifier, _ = restart(core, clock)
    await scheduler.run_due()
    await notifier.run_once()
    async with core.uow() as uow:
        tasks = list((await uow.session.execute(select(Task).where(Task.title.like("Call %")))).scalars())
    assert [(task.title.split(":")[0], task.assignee_id) for task in tasks] == [
        ("Call Globex Ltd", world.rep_south.user_id)
    ]
    assert [event.payload["activity"] for event in await events_of(core, "CareActivityDue")] == []

    clock.advance(timedelta(days=30, hours=1))
    for _ in range(2):
        scheduler, notifier, _ = restart(core, clock)
        await scheduler.run_due()
        await notifier.run_once()
    welcomes = await events_of(core, "CareActivityDue")
    assert [(event.payload["activity"], event.payload["message"]) for event in welcomes] == [
        ("welcome-check", "care_welcome")
    ]
    async with core.uow() as uow:
        tasks = list((await uow.session.execute(select(Task).where(Task.title.like("Call %")))).scalars())
    assert len(tasks) == 1  # the at-risk call is not repeated


def test_a_bad_care_plan_is_refused_at_start_with_its_line(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from core.settings import Settings

    plan = tmp_path / "plan.yml"
    plan.write_text(
        "- name: welcome\n  stage: new\n  after_days: thirty\n  message: care_welcome\n", encoding="utf-8"
    )
    with pytest.raises(ValidationError, match=r"plan\.yml:3: 'after_days' must be a whole number"):
        Settings(care_plan=plan, data_dir=tmp_path)


CARE_CONTEXT = {
    "recipient_name": "王芳",
    "serial": "WM2023-00917",
    "product": "WM-2023 front-load washing machine 8 kg / 滚筒洗衣机",
    "warranty_type": "standard",
    "customer_name": "上海浦东新区某某家电销售有限公司",
    "ends_on": "2026-07-15",
    "days_left": 30,
    "stage": 30,
    "due_on": "2026-07-01",
    "title": "Send the renewal quote to Acme Appliances and agree a date for the demo",
    "task_kind": "follow_up",
    "due_at": "2026-06-15T09:00:00+00:00",
    "customer_code": "ACME",
    "ticket": "SR-1234",
    "subject": "Technician was rude and two hours late",
    "kind": "complaint",
    "severity": "critical",
    "target": "response",
    "assignee_name": "North Manager",
    "level": 2,
    "reason": "",
    "sla_target": "response",
    "sla_due": "2026-06-15T04:00:00+00:00",
    "escalated_to_name": "Director",
    "response_due": "",
    "resolution": "",
}


@pytest.mark.parametrize(
    "kind",
    [
        "warranty_expiring",
        "maintenance_due",
        "task_due",
        "sla_at_risk",
        "request_escalated",
        "care_welcome",
        "care_checkin",
        "care_anniversary",
    ],
)
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_care_messages_render_everywhere_and_sms_stay_short(kind: str, lang: str) -> None:
    from notifier.senders.smsparts import sms_parts
    from notifier.templates import Templates

    templates = Templates()
    for channel in ("email", "sms", "telegram", "slack", "web"):
        rendered = templates.render(kind, channel, lang, CARE_CONTEXT, "Asia/Shanghai")
        assert rendered.subject and rendered.text
        if channel == "sms":
            assert sms_parts(rendered.text).parts <= 2, rendered.text
        if lang == "zh":
            assert any("\u4e00" <= char <= "\u9fff" for char in rendered.text)
        for button in rendered.buttons:
            assert len(button.payload.encode()) <= 64


async def test_housekeeping_forgets_only_what_is_past_its_time(
    core: Core, world: World, clock: FrozenClock
) -> None:
    from core.db.models import InboundMessage, Notification, SweepMark

    old, recent = clock.now() - timedelta(days=400), clock.now() - timedelta(hours=1)
    async with core.uow() as uow:
        uow.session.add_all(
            [
                InboundMessage(channel="telegram", message_id="1", received_at=old),
                InboundMessage(channel="telegram", message_id="2", received_at=recent),
                SweepMark(kind="sla", subject="sr:1", mark="response-L1", created_at=old),
                SweepMark(kind="warranty", subject="ip:1", mark="30d:2025-01-01", created_at=old),
            ]
        )
        await uow.commit()
    await core.service_desk.open_request(
        world.acme_customer, ServiceRequestIn(subject="x", serial_number=world.acme_serial)
    )
    _, notifier, _ = restart(core, clock)
    await notifier.run_once()
    clock.advance(timedelta(days=200))
    removed = await core.housekeeping.purge(clock.now())
    assert removed["inbound_messages"] == 2 and removed["sweep_marks"] == 1 and removed["notifications"] == 1
    assert removed["outbox"] > 0
    async with core.uow() as uow:
        marks = list((await uow.session.execute(select(SweepMark.kind))).scalars())
        left = list((await uow.session.execute(select(Notification))).scalars())
    assert marks == ["warranty"] and left == []


def test_a_bad_alert_rules_file_is_refused_at_start_with_its_line(
    cli: CliRunner, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "alerts.yml"
    rules.write_text(
        "rules:\n  - name: oops\n    event: ServiceRequestOpened\n    notify:\n      - role: wizard\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("CRMBOT_ALERT_RULES", str(rules))
    result = cli.invoke(app, ["scheduler", "run-once"])
    assert result.exit_code == 2, result.output
    assert f"{rules}:5:" in result.output and "wizard" in result.output and "Traceback" not in result.output


async def test_customer_values_are_recomputed_once_a_business_day(
    core: Core, world: World, clock: FrozenClock
) -> None:
    from notifier.scheduler import Sweep

    [values] = [sweep for sweep in CARE_SWEEPS if sweep.name == "customer.values"]
    assert isinstance(values, Sweep)
    assert await values.run(core, clock.now()) == 2  # both customers scored and tiered
    assert await values.run(core, clock.now() + timedelta(hours=5)) == 0  # the same day in Shanghai
    assert await values.run(core, shanghai("2026-06-16T00:30:00")) == 2  # the next day
