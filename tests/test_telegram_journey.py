"""Issue #4, as a new user would: a customer on Telegram links their account with a one-time code and
files a repair request with a photo — real aiogram against the local Bot API stand-in, the real linking
service, code delivery to the mail folder, and the dialogue (with a scripted NLU for the repair turns)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from bot.assistant import Assistant, RateLimit
from bot.channels.telegram import TelegramChannel, build_bot
from core.container import Core
from core.settings import Settings
from tests.chat import ScriptedNlu
from tests.fake_telegram import FakeTelegram, callback_update, photo_update, text_update
from tests.notify import deliver_to_files as deliver_link_codes
from tests.world import World

TOKEN = "123456:TEST-token-for-the-fake-api"
USER = 5150


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(TOKEN)
    await server.start()
    yield server
    await server.stop()


async def test_link_then_repair_request_with_a_photo(
    core: Core, world: World, settings: Settings, fake: FakeTelegram
) -> None:
    configured = settings.model_copy(
        update={"telegram_token": SecretStr(TOKEN), "telegram_api_url": fake.url}
    )
    nlu = ScriptedNlu()
    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=100, per_second=100))
    channel = TelegramChannel(assistant, core, build_bot(configured))
    photo = b"\xff\xd8\xff" + b"leak-photo" * 300
    fake.add_file("ph-1", photo, "photos/leak.jpg")
    sent_before = 0

    async def step(update: dict[str, object], until: str) -> list[dict[str, object]]:
        """Send an update and wait until the bot has said something containing `until`."""
        nonlocal sent_before
        fake.push(update)
        await fake.wait_for(
            lambda: any(
                until in str(message["text"]) for message in fake.called("sendMessage")[sent_before:]
            ),
            within=10,
        )
        sent = fake.called("sendMessage")[sent_before:]
        sent_before = len(fake.called("sendMessage"))
        return sent

    task = channel.start_polling()
    try:
        asked = await step(text_update(1, USER, "hi"), "email")
        assert "email" in asked[0]["text"].lower()
        promised = await step(text_update(2, USER, "acme.buyer@example.com"), "code")
        assert "code" in promised[0]["text"].lower()
        assert await deliver_link_codes(core) == 1
        [mail] = list(configured.mail_directory.glob("*.eml"))
        code = re.search(r"\b(\d{6})\b", mail.read_text(encoding="utf-8"))
        assert code is not None
        linked = await step(text_update(3, USER, code.group(1)), "Acme Buyer")
        assert "Acme Buyer" in linked[0]["text"]
        nlu.expect("open_service_request", serial_number="WM2023-00917")
        time_question = await step(
            photo_update(
                4,
                USER,
                [("ph-1", 1280, 960, len(photo))],
                caption="my washer WM2023-00917 leaks, see the photo",
            ),
            "When would you like",
        )
        assert any("When would you like" in str(message["text"]) for message in time_question), time_question
        nlu.expect("inform", time="2026-06-16T10:00:00+08:00")
        summary = await step(text_update(5, USER, "tomorrow 10am"), "Shall I open it?")
        keyboard = summary[-1]["reply_markup"]["inline_keyboard"]  # type: ignore[index]
        yes = keyboard[0][0]
        assert yes["text"] == "Yes" and len(yes["callback_data"].encode()) <= 64
        opened = await step(callback_update(6, USER, yes["callback_data"]), "file added")
        texts = " ".join(str(message["text"]) for message in opened)
        assert "SR-1" in texts and "📎 1 file added to SR-1." in texts
    finally:
        await channel.close()
        task.cancel()
    detail = await core.service_desk.get_request(world.agent, "SR-1")
    assert (detail.channel, detail.serial_number, detail.customer_code) == (
        "telegram",
        "WM2023-00917",
        "ACME",
    )
    assert [(file.filename, file.size) for file in detail.attachments] == [("photo-u-ph-1.jpg", len(photo))]
