"""Issue #6, as a new user would: with a clock moved forward, reminders, escalations, alerts, the survey and
the digest arrive through a real SMTP server (aiosmtpd) and the Telegram and Slack stand-ins driven by the
real aiogram and slack-sdk clients — each once, in the recipient's language, across scheduler restarts."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from bot.channels.slack import SlackSender
from bot.channels.telegram import TelegramSender, build_bot
from bot.outbound import Outbound
from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import Core
from core.db.models import InstalledProduct, Notification, User
from core.domain.enums import OpportunityStage, RequestKind, Severity
from core.schemas import OpportunityIn, ServiceRequestIn, TransitionIn
from core.settings import Settings
from notifier.alerts import load_rules
from notifier.charts import digest_chart
from notifier.chat import ChatSender
from notifier.dispatcher import Notifier
from notifier.registry import all_sweeps
from notifier.scheduler import Scheduler
from notifier.senders.email import build_email_sender
from tests.fake_slack import BOT_TOKEN as SLACK_TOKEN
from tests.fake_slack import FakeSlack
from tests.fake_telegram import FakeTelegram
from tests.smtp_server import Mailbox, smtp_server
from tests.world import World

# An end-to-end test of many seconds: left out of `make test-fast`, run by `make test`.
pytestmark = pytest.mark.slow

TOKEN = "123456:TEST-token-for-the-fake-api"
CUSTOMER_CHAT = 5150




@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with smtp_server(box) as port:
        yield box, port


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(TOKEN)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    server = FakeSlack()
    server.add_user("UNORTH", "north.manager@example.com")
    await server.start()
    yield server
    await server.close()


def shanghai(text: str) -> datetime:
    return datetime.fromisoformat(f"{text}+08:00")


async def test_a_week_of_reminders_escalations_alerts_and_digests_each_once_in_each_language(
    core: Core,
    world: World,
    settings: Settings,
    clock: FrozenClock,
    mailbox: tuple[Mailbox, int],
    telegram: FakeTelegram,
    slack: FakeSlack,
) -> None:
    box, port = mailbox
    core.settings = settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_starttls": False,
            "telegram_token": SecretStr(TOKEN),
            "telegram_api_url": telegram.url,
            "slack_bot_token": SecretStr(SLACK_TOKEN),
            "slack_api_url": slack.base_url,
        }
    )
    # The customer reads Chinese on Telegram; the north manager is on Slack; everyone else gets email.
    await core.org.link_identity(SYSTEM, "acme.buyer", f"telegram:{CUSTOMER_CHAT}")
    await core.org.link_identity(SYSTEM, "north.manager", "slack:UNORTH")
    async with core.uow() as uow:
        await uow.session.execute(update(User).where(User.username == "acme.buyer").values(lang="zh"))
        await uow.session.execute(
            update(InstalledProduct)
            .where(InstalledProduct.serial_number == world.acme_serial)
            .values(warranty_ends_on=date(2026, 7, 15))
        )
        await uow.commit()
    bot = build_bot(core.settings)
    outbound = Outbound(
        core,
        {
            "telegram": TelegramSender(bot, core.conversations),
            "slack": SlackSender.from_settings(core.settings, core.conversations),
        },
    )

    def restart() -> tuple[Scheduler, Notifier]:
        """A new process: nothing but the database carries over."""
        notifier = Notifier(
            core,
            {
                "telegram": ChatSender(outbound, "telegram"),
                "slack": ChatSender(outbound, "slack"),
                "email": build_email_sender(core.settings),
            },
            rules=[load_rules(None)],
            images={"digest": digest_chart},
        )
        return Scheduler(core, all_sweeps()), notifier

    async def run(scheduler: Scheduler, notifier: Notifier) -> None:
        await scheduler.run_due()
        await notifier.run_once()

    try:
        # Sunday evening: a serious complaint nobody answers.
        clock.set(shanghai("2026-06-14T19:00:00"))
        complaint = await core.service_desk.open_request(
            world.acme_customer,
            ServiceRequestIn(
                subject="技师态度很差，还迟到两个小时", kind=RequestKind.COMPLAINT, severity=Severity.HIGH
            ),
        )
        # A deal in the north pipeline (the digest draws it), and a repair that gets resolved.
        await core.sales.create_opportunity(
            world.rep_north,
            OpportunityIn(
                customer_code="ACME",
                name="Acme renewal",
                stage=OpportunityStage.NEGOTIATION,
                amount=Decimal("50000"),
            ),
        )
        repair = await core.service_desk.open_request(
            world.acme_customer, ServiceRequestIn(subject="洗衣机漏水", serial_number=world.acme_serial)
        )
        await core.service_desk.transition(
            world.agent, repair.ref, TransitionIn(action="assign", assignee="agent")
        )
        await core.service_desk.transition(
            world.agent, repair.ref, TransitionIn(action="resolve", resolution="更换了门封圈")
        )
        # Every 30 minutes for two days, restarting the scheduler and the notifier every 3 hours. On Monday
        # at noon the customer answers the survey with a 1.
        scheduler, notifier = restart()
        moment, step, rated = clock.now(), 0, False
        while moment <= shanghai("2026-06-16T19:00:00"):
            clock.set(moment)
            if step % 6 == 0:
                await notifier.close()
                scheduler, notifier = restart()
            if not rated and moment >= shanghai("2026-06-15T12:00:00"):
                await core.surveys.answer(world.acme_customer, repair.ref, 1, "门封圈还在漏水")
                rated = True
            await run(scheduler, notifier)
            moment += timedelta(minutes=30)
            step += 1
        await notifier.close()
    finally:
        await bot.session.close()

    async with core.uow() as uow:
        rows = list((await uow.session.execute(select(Notification).order_by(Notification.id))).scalars())
    by_user = {user.id: user.username for user in await _users(core)}
    sent = Counter(
        (by_user.get(row.user_id or 0, row.address), row.kind, row.channel)
        for row in rows
        if row.status == "sent"
    )
    assert all(row.status in ("sent", "skipped") for row in rows), [
        (row.kind, row.status, row.last_error) for row in rows
    ]

    # The customer, in Chinese on Telegram: the receipts went by email; the warranty reminder, the status
    # changes, the survey in chat.
    customer_chat = [
        message for message in telegram.called("sendMessage") if str(message["chat_id"]) == str(CUSTOMER_CHAT)
    ]
    warranty = [
        message
        for message in customer_chat
        if "保修" in message["text"] and world.acme_serial in message["text"]
    ]
    assert len(warranty) == 1 and "30" in warranty[0]["text"]
    assert sent[("acme.buyer", "warranty_expiring", "telegram")] == 1
    # The survey: once, in Chinese with five score buttons, held by the night until Monday 08:00.
    invites = [
        message for message in customer_chat if repair.ref in message["text"] and "reply_markup" in message
    ]
    assert len(invites) == 1 and sent[("acme.buyer", "survey_invite", "telegram")] == 1
    scores = [row[0]["text"] for row in invites[0]["reply_markup"]["inline_keyboard"]]
    assert len(scores) == 5 and "1" in scores[0]
    # The score of 1: the low-CSAT alert to the agent's manager (on Slack) and a follow-up task.
    assert sent[("north.manager", "alert_request", "slack")] == 1, sent
    follow_ups = [row for row in rows if row.kind == "task_due" and row.status == "sent"]
    assert [by_user[row.user_id or 0] for row in follow_ups] == ["north.manager"]
    # The escalations climbed the tree once each: north manager on Slack, the director by email.
    assert sent[("north.manager", "request_escalated", "slack")] == 1
    assert sent[("director", "request_escalated", "email")] == 1
    escalation_mail = [
        str(m["Subject"])
        for m in box.messages
        if m["To"] == "director@example.com" and "Escalated" in str(m["Subject"])
    ]
    assert escalation_mail == [f"Escalated: {complaint.ref} (complaint, high)"]
    # The alert rules: the serious complaint to the branch head, the SLA breach (nobody assigned) to admins.
    assert sent[("director", "alert_request", "email")] == 1, sent
    assert sent[("admin", "alert_request", "email")] >= 1
    # One digest a day per manager, with the chart on Slack (a file upload): Sunday (the clock starts at
    # 19:00, after the digest hour), Monday and Tuesday.
    assert sent[("north.manager", "digest", "slack")] == 3
    assert len(slack.uploads) >= 2
    # Nothing twice: every email a distinct Message-ID.
    ids = Counter(str(message["Message-ID"]) for message in box.messages)
    assert ids and max(ids.values()) == 1


async def _users(core: Core) -> list[User]:
    async with core.uow() as uow:
        return list((await uow.session.execute(select(User))).scalars())
