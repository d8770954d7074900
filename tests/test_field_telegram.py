"""Field service on a real edge: the technician says "on my way" and proposes a new time on Telegram; the
customer gets the arrival time and the [Confirm] [Another time] buttons on Telegram and taps Confirm — real
aiogram against the local Bot API stand-in, with the notifier running as it does in `crmbot run`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from bot.assistant import Assistant, RateLimit
from bot.channels.telegram import TelegramChannel, build_bot
from core.auth import SYSTEM
from core.container import Core
from core.schemas import RepairActionIn, RepairOrderIn, ServiceRequestIn
from core.settings import Settings
from notifier.build import build_notifier
from tests.chat import ScriptedNlu
from tests.fake_telegram import FakeTelegram, callback_update, text_update
from tests.world import World

TOKEN = "123456:TEST-token-for-the-fake-api"
CUSTOMER_CHAT = 5150
TECHNICIAN_CHAT = 7001


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(TOKEN)
    await server.start()
    yield server
    await server.stop()


def sent_to(fake: FakeTelegram, chat: int) -> list[dict[str, Any]]:
    return [message for message in fake.called("sendMessage") if str(message["chat_id"]) == str(chat)]


async def test_eta_and_a_new_time_confirmed_with_the_customers_telegram_button(
    core: Core, world: World, settings: Settings, fake: FakeTelegram
) -> None:
    core.settings = settings.model_copy(
        update={"telegram_token": SecretStr(TOKEN), "telegram_api_url": fake.url}
    )
    await core.org.link_identity(SYSTEM, "acme.buyer", f"telegram:{CUSTOMER_CHAT}")
    await core.org.link_identity(SYSTEM, "tech.north", f"telegram:{TECHNICIAN_CHAT}")
    request = await core.service_desk.open_request(
        world.acme_customer, ServiceRequestIn(subject="Not draining", serial_number=world.acme_serial)
    )
    order = await core.service_desk.dispatch(
        world.agent,
        RepairOrderIn(
            service_request=request.ref,
            technician="tech.north",
            scheduled_at=datetime(2026, 6, 15, 6, 0, tzinfo=UTC),
        ),
    )
    await core.service_desk.act_on_repair(world.tech_north, order.ref, RepairActionIn(action="accept"))

    nlu = ScriptedNlu()
    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=100, per_second=100))
    channel = TelegramChannel(assistant, core, build_bot(core.settings))
    notifier = build_notifier(core, {"telegram": channel.sender})
    stop = asyncio.Event()
    running = asyncio.create_task(notifier.run(stop))
    polling = channel.start_polling()

    async def wait_text(chat: int, needle: str) -> dict[str, Any]:
        await fake.wait_for(lambda: any(needle in m["text"] for m in sent_to(fake, chat)), within=10)
        return next(m for m in reversed(sent_to(fake, chat)) if needle in m["text"])

    try:
        # "On my way": the technician's answer, then the customer's arrival time on Telegram.
        nlu.expect("on_my_way", job_id=order.ref)
        fake.push(text_update(1, TECHNICIAN_CHAT, f"on my way to {order.ref}, 20 minutes"))
        await wait_text(TECHNICIAN_CHAT, "arriving about 10:20")
        eta = await wait_text(CUSTOMER_CHAT, "is on the way")
        assert (
            "Tech North is on the way for your request SR-1 (job RO-1), arriving about 10:20." in eta["text"]
        )

        # A new time: the card, Yes, then the customer's question with buttons.
        nlu.expect("reschedule_job", job_id=order.ref, time="2026-06-19T14:00:00+08:00")
        fake.push(text_update(2, TECHNICIAN_CHAT, f"reschedule {order.ref} to Friday 2pm"))
        card = await wait_text(TECHNICIAN_CHAT, "Propose Fri 19 Jun 14:00")
        yes = card["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        fake.push(callback_update(3, TECHNICIAN_CHAT, yes))
        await wait_text(TECHNICIAN_CHAT, "Asked Acme Corp to confirm")
        ask = await wait_text(CUSTOMER_CHAT, "can we come at a new time?")
        buttons = [row[0] for row in ask["reply_markup"]["inline_keyboard"]]
        assert [button["text"] for button in buttons] == ["Confirm", "Another time"]

        # The customer taps Confirm: their answer in the chat; the technician is told.
        fake.push(callback_update(4, CUSTOMER_CHAT, buttons[0]["callback_data"]))
        await wait_text(CUSTOMER_CHAT, "The visit for RO-1 is confirmed for Fri 19 Jun 14:00")
        await wait_text(TECHNICIAN_CHAT, "confirmed the new visit time for job RO-1")
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await notifier.close()
        await channel.close()
        polling.cancel()

    detail = await core.service_desk.get_repair_order(world.agent, order.ref)
    assert (detail.status, detail.scheduled_at, detail.proposed_at) == (
        "in_progress",
        datetime(2026, 6, 19, 6, 0, tzinfo=UTC),
        None,
    )
