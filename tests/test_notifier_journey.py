"""Issue #5, as a new user would: a customer opens a request on Telegram and gets the receipt by email
from a real SMTP server; the technician gets the dispatch card on Telegram (in Chinese, their language),
presses Accept, and the customer is told who comes when — real aiogram against the local Bot API
stand-in, the real SMTP sender against aiosmtpd, and the notifier running as it does in `crmbot run`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from bot.assistant import Assistant, RateLimit
from bot.channels.telegram import TelegramChannel, build_bot
from core.auth import SYSTEM
from core.container import Core
from core.db.models import Notification, User
from core.schemas import RepairOrderIn, ServiceRequestIn
from core.settings import Settings
from notifier.build import build_notifier
from tests.chat import ScriptedNlu
from tests.fake_telegram import FakeTelegram, callback_update, text_update
from tests.smtp_server import Mailbox, smtp_server
from tests.world import World

TOKEN = "123456:TEST-token-for-the-fake-api"
CUSTOMER_CHAT = 5150
TECHNICIAN_CHAT = 7001


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with smtp_server(box) as port:
        yield box, port


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(TOKEN)
    await server.start()
    yield server
    await server.stop()


def sent_to(fake: FakeTelegram, chat: int) -> list[dict[str, Any]]:
    return [message for message in fake.called("sendMessage") if str(message["chat_id"]) == str(chat)]


async def test_receipt_by_email_dispatch_card_on_telegram_and_accept_tells_the_customer(
    core: Core, world: World, settings: Settings, fake: FakeTelegram, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    core.settings = settings.model_copy(
        update={
            "telegram_token": SecretStr(TOKEN),
            "telegram_api_url": fake.url,
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_starttls": False,
        }
    )
    await core.org.link_identity(SYSTEM, "acme.buyer", f"telegram:{CUSTOMER_CHAT}")
    await core.org.link_identity(SYSTEM, "tech.north", f"telegram:{TECHNICIAN_CHAT}")
    async with core.uow() as uow:
        await uow.session.execute(update(User).where(User.username == "tech.north").values(lang="zh"))
        await uow.commit()

    nlu = ScriptedNlu()
    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=100, per_second=100))
    channel = TelegramChannel(assistant, core, build_bot(core.settings))
    notifier = build_notifier(core, {"telegram": channel.sender})
    stop = asyncio.Event()
    running = asyncio.create_task(notifier.run(stop))
    polling = channel.start_polling()
    seen = 0

    async def say(update: dict[str, Any], until: str) -> list[dict[str, Any]]:
        nonlocal seen
        fake.push(update)
        await fake.wait_for(
            lambda: any(until in str(message["text"]) for message in fake.called("sendMessage")[seen:]),
            within=10,
        )
        said = fake.called("sendMessage")[seen:]
        seen = len(fake.called("sendMessage"))
        return said

    try:
        # The customer opens a repair request in the chat.
        nlu.expect("open_service_request", serial_number=world.acme_serial)
        await say(text_update(1, CUSTOMER_CHAT, "my washer WM2023-00917 leaks"), "When would you like")
        nlu.expect("inform", time="2026-06-16T10:00:00+08:00")
        summary = await say(text_update(2, CUSTOMER_CHAT, "tomorrow 10am"), "Shall I open it?")
        yes = summary[-1]["reply_markup"]["inline_keyboard"][0][0]
        await say(callback_update(3, CUSTOMER_CHAT, yes["callback_data"]), "SR-1")

        # The receipt arrives by email through the SMTP server.
        await fake.wait_for(lambda: len(box.messages) == 1, within=10)
        [receipt] = box.messages
        assert receipt["To"] == "acme.buyer@example.com" and "SR-1" in str(receipt["Subject"])
        assert (
            receipt["Message-ID"].startswith("<e") and receipt.get_body(preferencelist=("html",)) is not None
        )

        # A dispatcher assigns the job: the technician's card arrives on Telegram, in Chinese, with buttons.
        order = await core.service_desk.dispatch(
            world.agent, RepairOrderIn(service_request="SR-1", technician="tech.north")
        )
        await fake.wait_for(lambda: len(sent_to(fake, TECHNICIAN_CHAT)) == 1, within=10)
        [card] = sent_to(fake, TECHNICIAN_CHAT)
        assert order.ref in card["text"] and world.acme_serial in card["text"] and "保修" in card["text"]
        buttons = [row[0] for row in card["reply_markup"]["inline_keyboard"]]
        assert [button["text"] for button in buttons] == ["接受", "拒接", "我的工单"]
        # The customer hears that someone is on it, in their chat.
        await fake.wait_for(
            lambda: any("Tech North" in m["text"] for m in sent_to(fake, CUSTOMER_CHAT)), within=10
        )

        # The technician presses Accept; the customer is told who comes.
        seen = len(fake.called("sendMessage"))
        await say(callback_update(4, TECHNICIAN_CHAT, buttons[0]["callback_data"], lang="zh"), order.ref)
        await fake.wait_for(
            lambda: any(
                order.ref in m["text"] and "Tech North" in m["text"]
                for m in sent_to(fake, CUSTOMER_CHAT)[-1:]
            ),
            within=10,
        )
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await notifier.close()
        await channel.close()
        polling.cancel()

    detail = await core.service_desk.get_repair_order(world.agent, order.ref)
    assert detail.status == "accepted"
    async with core.uow() as uow:
        rows = (await uow.session.execute(select(Notification).order_by(Notification.id))).scalars().all()
    assert [(row.kind, row.channel, row.status) for row in rows] == [
        ("request_acknowledged", "email", "sent"),
        ("request_status", "telegram", "sent"),
        ("dispatch_card", "telegram", "sent"),
        ("job_accepted", "telegram", "sent"),
    ]
    assert len(box.messages) == 1  # nothing twice


async def test_platform_rate_limits_and_blocks_are_recorded_and_handled(
    core: Core, world: World, settings: Settings, fake: FakeTelegram, clock: Any
) -> None:
    from datetime import timedelta

    from bot.channels.slack import SlackSender
    from notifier.dispatcher import Notifier
    from notifier.senders.email import build_email_sender
    from tests.fake_slack import BOT_TOKEN as SLACK_TOKEN
    from tests.fake_slack import FakeSlack

    slack = FakeSlack()
    slack.add_user("U7002", "tech.south@example.com")
    slack_url = await slack.start()
    core.settings = settings.model_copy(
        update={
            "telegram_token": SecretStr(TOKEN),
            "telegram_api_url": fake.url,
            "slack_bot_token": SecretStr(SLACK_TOKEN),
            "slack_api_url": slack_url,
        }
    )
    await core.org.link_identity(SYSTEM, "tech.north", f"telegram:{TECHNICIAN_CHAT}")
    await core.org.link_identity(SYSTEM, "tech.south", "slack:U7002")
    await core.org.link_identity(SYSTEM, "agent", "telegram:7003")
    bot = build_bot(core.settings)
    from bot.channels.telegram import TelegramSender
    from bot.outbound import Outbound
    from notifier.chat import ChatSender

    outbound = Outbound(
        core,
        {
            "telegram": TelegramSender(bot, core.conversations),
            "slack": SlackSender.from_settings(core.settings, core.conversations),
        },
    )
    notifier = Notifier(
        core,
        {
            "telegram": ChatSender(outbound, "telegram"),
            "slack": ChatSender(outbound, "slack"),
            "email": build_email_sender(core.settings),
        },
    )
    try:
        fake.fail("sendMessage", 429, "Too Many Requests: retry after 120", retry_after=120)
        # Slack's sender also holds the conversation for Retry-After seconds of real time: keep it short.
        slack.rate_limit("chat.postMessage", retry_after=2)
        north = await core.service_desk.open_request(world.acme_customer, _request(world.acme_serial))
        south = await core.service_desk.open_request(world.globex_customer, _request(world.globex_serial))
        await core.service_desk.dispatch(
            world.agent, RepairOrderIn(service_request=north.ref, technician="tech.north")
        )
        await core.service_desk.dispatch(
            world.south_manager, RepairOrderIn(service_request=south.ref, technician="tech.south")
        )
        await notifier.run_once()
        cards = await _rows(core, "dispatch_card")
        assert [(row.channel, row.status) for row in cards] == [("telegram", "pending"), ("slack", "pending")]
        assert "retry after 120" in (cards[0].last_error or "")
        assert cards[0].next_attempt_at >= clock.now() + timedelta(seconds=120)
        assert "retry after 2s" in (cards[1].last_error or "")
        assert cards[1].next_attempt_at >= clock.now() + timedelta(seconds=2)

        clock.advance(timedelta(minutes=5))
        await notifier.run_once()
        assert [row.status for row in await _rows(core, "dispatch_card")] == ["sent", "sent"]
        assert len(sent_to(fake, TECHNICIAN_CHAT)) == 1
        assert len(slack.posted()) == 2  # the call refused with 429, then the delivery

        # The agent blocked the bot: the assignment falls back to email.
        fake.fail("sendMessage", 403, "Forbidden: bot was blocked by the user")
        third = await core.service_desk.open_request(world.acme_customer, _request(world.acme_serial))
        from core.schemas import TransitionIn

        await core.service_desk.transition(
            world.north_manager, third.ref, TransitionIn(action="assign", assignee="agent")
        )
        await notifier.run_once()
        assigned = await _rows(core, "request_assigned")
        assert [(row.channel, row.status) for row in assigned] == [("telegram", "failed"), ("email", "sent")]
        assert "blocked" in (assigned[0].last_error or "")
    finally:
        await notifier.close()
        await bot.session.close()
        await slack.close()


def _request(serial: str) -> Any:
    from core.schemas import ServiceRequestIn

    return ServiceRequestIn(subject="Noisy pump", serial_number=serial)


async def _rows(core: Core, kind: str) -> list[Notification]:
    async with core.uow() as uow:
        query = select(Notification).where(Notification.kind == kind).order_by(Notification.id)
        return list((await uow.session.execute(query)).scalars())


async def test_a_technician_declines_from_the_card_and_the_dispatcher_is_told_why(
    core: Core, world: World, settings: Settings, fake: FakeTelegram, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    core.settings = settings.model_copy(
        update={
            "telegram_token": SecretStr(TOKEN),
            "telegram_api_url": fake.url,
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_starttls": False,
        }
    )
    await core.org.link_identity(SYSTEM, "tech.north", f"telegram:{TECHNICIAN_CHAT}")
    assistant = Assistant(core, ScriptedNlu(), rate_limit=RateLimit(burst=100, per_second=100))
    channel = TelegramChannel(assistant, core, build_bot(core.settings))
    notifier = build_notifier(core, {"telegram": channel.sender})
    stop = asyncio.Event()
    running = asyncio.create_task(notifier.run(stop))
    polling = channel.start_polling()
    try:
        request = await core.service_desk.open_request(
            world.acme_customer,
            ServiceRequestIn(subject="Drum does not spin", serial_number=world.acme_serial),
        )
        order = await core.service_desk.dispatch(
            world.agent, RepairOrderIn(service_request=request.ref, technician="tech.north")
        )
        await fake.wait_for(lambda: len(sent_to(fake, TECHNICIAN_CHAT)) == 1, within=10)
        [card] = sent_to(fake, TECHNICIAN_CHAT)
        titles = [row[0]["text"] for row in card["reply_markup"]["inline_keyboard"]]
        assert titles == ["Accept", "Decline", "My jobs"]
        decline = card["reply_markup"]["inline_keyboard"][1][0]["callback_data"]
        fake.push(callback_update(1, TECHNICIAN_CHAT, decline))
        await fake.wait_for(
            lambda: any("Why can't you take" in m["text"] for m in sent_to(fake, TECHNICIAN_CHAT))
        )
        fake.push(text_update(2, TECHNICIAN_CHAT, "fully booked that day"))
        await fake.wait_for(
            lambda: any(m["text"].startswith("Declined") for m in sent_to(fake, TECHNICIAN_CHAT))
        )
        await fake.wait_for(lambda: any("declined" in str(m["Subject"]) for m in box.messages), within=10)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await notifier.close()
        await channel.close()
        polling.cancel()
    [mail] = [m for m in box.messages if "declined" in str(m["Subject"])]
    assert mail["To"] == "agent@example.com"
    assert str(mail["Subject"]) == f"{order.ref} declined by Tech North: reassign it"
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None and "fully booked that day" in body.get_content()
    detail = await core.service_desk.get_repair_order(world.agent, order.ref)
    assert detail.status == "open" and detail.technician is None
    assert [(step.action, step.comment) for step in detail.history][-1] == (
        "decline",
        "fully booked that day",
    )
