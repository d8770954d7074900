"""The Telegram channel: real aiogram against a local fake Bot API (loopback only), polling and webhook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from bot.assistant import Assistant
from bot.channels.base import ChannelSender, DeliveryError, RateLimited, RecipientBlocked, UnknownRecipient
from bot.channels.telegram import (
    MAX_TEXT,
    ChatAssistant,
    Pacer,
    TelegramChannel,
    TelegramSender,
    build_bot,
    split_text,
    text_length,
)
from bot.messages import Attachment, Button, IncomingMessage, Reply
from core.auth import SYSTEM
from core.container import Core
from core.settings import Settings
from tests.chat import ScriptedNlu
from tests.fake_telegram import (
    FakeTelegram,
    Upload,
    callback_update,
    document_update,
    message_json,
    photo_update,
    text_update,
)
from tests.world import World

TOKEN = "123456:TEST-fake-telegram-token"
SECRET = "hook-Secret_123"
ACME = 1001  # the Telegram user id linked to acme.buyer
PNG = b"\x89PNG\r\n\x1a\n" + b"chart" * 20


@dataclass
class Recorder:
    """An assistant double: records every IncomingMessage; answers via `inner` or with canned replies."""

    inner: ChatAssistant | None = None
    replies: list[Reply] = field(default_factory=lambda: [Reply(text="ok")])
    seen: list[IncomingMessage] = field(default_factory=list)
    answered: list[list[Reply]] = field(default_factory=list)

    async def handle(self, message: IncomingMessage) -> list[Reply]:
        self.seen.append(message)
        replies = await self.inner.handle(message) if self.inner is not None else list(self.replies)
        self.answered.append(replies)
        return replies


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(TOKEN)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def tg_settings(settings: Settings, fake: FakeTelegram) -> Settings:
    return settings.model_copy(update={"telegram_token": SecretStr(TOKEN), "telegram_api_url": fake.url})


@asynccontextmanager
async def open_channel(
    core: Core, settings: Settings, assistant: ChatAssistant, **options: Any
) -> AsyncIterator[TelegramChannel]:
    channel = TelegramChannel(assistant, core, build_bot(settings), polling_timeout=2, **options)
    try:
        yield channel
    finally:
        await channel.close()


@asynccontextmanager
async def polling(channel: TelegramChannel) -> AsyncIterator[None]:
    task = asyncio.create_task(channel.run_polling())
    try:
        yield
    finally:
        await channel.stop()
        await asyncio.wait_for(task, 5)


def webhook_client(channel: TelegramChannel, secret: str | None = SECRET) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(channel.webhook_router(secret))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def linked(core: Core, world: World) -> None:
    await core.org.link_identity(SYSTEM, world.acme_customer.username, f"telegram:{ACME}")


def buttons_of(params: dict[str, Any]) -> list[dict[str, Any]]:
    rows = params.get("reply_markup", {}).get("inline_keyboard", [])
    assert all(len(row) == 1 for row in rows), "one button per row"
    return [row[0] for row in rows]


# --- polling ------------------------------------------------------------------------------------------


async def test_polling_text_gets_a_plain_reply_with_a_compact_keyboard(
    core: Core, world: World, fake: FakeTelegram, tg_settings: Settings
) -> None:
    await linked(core, world)
    nlu = ScriptedNlu()
    nlu.expect("check_warranty", serial_number=world.acme_serial)
    async with open_channel(core, tg_settings, Assistant(core, nlu)) as channel, polling(channel):
        fake.push(text_update(1, ACME, "is WM2023-00917 under warranty? *bold* <b>"))
        await fake.wait_for(lambda: bool(fake.called("sendMessage")))
    [sent] = fake.called("sendMessage")
    assert sent["chat_id"] == str(ACME)
    assert "WM2023-00917) is covered until" in sent["text"]
    assert "parse_mode" not in sent  # plain text: nothing a person types can break formatting
    buttons = buttons_of(sent)
    assert buttons and "Request a repair" in [button["text"] for button in buttons]
    for button in buttons:
        assert button["callback_data"].startswith("p:")
        assert len(button["callback_data"].encode()) <= 64
        payload = await core.conversations.payload_for(button["callback_data"][2:])
        assert payload is not None and payload.startswith("/")
    # Polling set up the bot first: no webhook in the way, commands in the menu in both languages.
    methods = [call.method for call in fake.calls]
    assert methods.index("deleteWebhook") < methods.index("getUpdates")
    assert [params.get("language_code") for params in fake.called("setMyCommands")] == [None, "zh"]
    assert [c["command"] for c in fake.called("setMyCommands")[1]["commands"]] == ["start", "help", "cancel"]
    assert fake.called("getUpdates")[0]["allowed_updates"] == ["callback_query", "message"]


async def test_polling_button_press_answers_the_query_then_the_payload_reaches_the_dialogue(
    core: Core, world: World, fake: FakeTelegram, tg_settings: Settings
) -> None:
    await linked(core, world)
    nlu = ScriptedNlu()
    recorder = Recorder(inner=Assistant(core, nlu))
    payload = "/help"
    token = await core.conversations.payload_token(payload)
    async with open_channel(core, tg_settings, recorder) as channel, polling(channel):
        fake.push(callback_update(7, ACME, "p:" + token))
        await fake.wait_for(lambda: bool(fake.called("sendMessage")))
    assert fake.called("answerCallbackQuery") == [{"callback_query_id": "cq-7"}]
    methods = [call.method for call in fake.api_calls()]
    assert methods.index("answerCallbackQuery") < methods.index("sendMessage")
    [message] = recorder.seen
    assert (message.channel, message.sender_id, message.chat_id) == ("telegram", str(ACME), str(ACME))
    assert (message.text, message.message_id) == (payload, "7")
    assert nlu.seen == []  # a payload is a certain parse: the NLU was not asked
    assert "Here is what I can do for you" in fake.called("sendMessage")[0]["text"]


async def test_the_same_update_delivered_twice_is_answered_once(
    core: Core, world: World, fake: FakeTelegram, tg_settings: Settings
) -> None:
    await linked(core, world)
    recorder = Recorder(inner=Assistant(core, ScriptedNlu()))
    update = text_update(40, ACME, "/help")
    async with open_channel(core, tg_settings, recorder) as channel, polling(channel):
        fake.push(update)
        await fake.wait_for(lambda: len(recorder.answered) == 1)
        fake.redeliver(update)
        await fake.wait_for(lambda: len(recorder.answered) == 2)
    assert recorder.answered[1] == []
    assert len(fake.called("sendMessage")) == 1


async def test_polling_stops_promptly_even_right_after_starting(
    core: Core, fake: FakeTelegram, tg_settings: Settings
) -> None:
    async with open_channel(core, tg_settings, Recorder()) as channel:
        early = channel.start_polling()
        await channel.stop()  # before the task even ran
        await asyncio.wait_for(early, 2)
        starting = channel.start_polling()
        await asyncio.sleep(0)  # now inside deleteWebhook
        await channel.stop()
        await asyncio.wait_for(starting, 2)
        late = asyncio.create_task(channel.run_polling())
        await fake.wait_for(lambda: bool(fake.called("getUpdates")))
        await channel.stop()
        await asyncio.wait_for(late, 2)
        await channel.stop()  # idempotent


async def test_expired_or_foreign_buttons_are_told_in_the_persons_language(
    core: Core, fake: FakeTelegram, tg_settings: Settings
) -> None:
    recorder = Recorder()
    async with open_channel(core, tg_settings, recorder) as channel, webhook_client(channel) as http:
        for update in (
            callback_update(1, ACME, "p:0123456789abcdef00"),
            callback_update(2, 77, "old", "zh-hans"),
        ):
            response = await http.post(
                "/telegram/webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
            )
            assert response.status_code == 200
    first, second = fake.called("answerCallbackQuery")
    assert "expired" in first["text"] and "失效" in second["text"]
    assert recorder.seen == [] and fake.called("sendMessage") == []


# --- webhook ---------------------------------------------------------------------------------------------


async def test_webhook_with_the_right_secret_is_processed_once(
    core: Core, world: World, fake: FakeTelegram, tg_settings: Settings
) -> None:
    await linked(core, world)
    nlu = ScriptedNlu()
    nlu.expect("greet")
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    update = text_update(500, ACME, "hello there")
    async with (
        open_channel(core, tg_settings, Assistant(core, nlu)) as channel,
        webhook_client(channel) as http,
    ):
        first = await http.post("/telegram/webhook", json=update, headers=headers)
        again = await http.post("/telegram/webhook", json=update, headers=headers)
    assert first.status_code == again.status_code == 200
    [sent] = fake.called("sendMessage")
    assert sent["text"].startswith("Hello ") and sent["chat_id"] == str(ACME)


async def test_webhook_with_a_missing_or_wrong_secret_is_refused_untouched(
    core: Core, fake: FakeTelegram, tg_settings: Settings
) -> None:
    recorder = Recorder()
    async with open_channel(core, tg_settings, recorder) as channel, webhook_client(channel) as http:
        for secret in (None, "", "wrong-secret", SECRET + "x", SECRET.lower(), "密钥".encode()):
            headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
            response = await http.post("/telegram/webhook", json=text_update(1, ACME, "hi"), headers=headers)
            assert response.status_code == 401, secret
            assert response.json()["error"]["code"] == "unauthorized"
    assert fake.calls == [] and recorder.seen == []


async def test_webhook_without_a_configured_secret_still_demands_one(
    core: Core, fake: FakeTelegram, tg_settings: Settings
) -> None:
    recorder = Recorder()
    async with open_channel(core, tg_settings, recorder) as channel, webhook_client(channel, None) as http:
        derived = channel.webhook_secret(None)
        assert len(derived) >= 32 and derived == channel.webhook_secret(None)
        refused = await http.post("/telegram/webhook", json=text_update(1, ACME, "hi"))
        garbage = await http.post(
            "/telegram/webhook", content=b"not json", headers={"X-Telegram-Bot-Api-Secret-Token": derived}
        )
        accepted = await http.post(
            "/telegram/webhook",
            json=text_update(2, ACME, "hi"),
            headers={"X-Telegram-Bot-Api-Secret-Token": derived},
        )
    assert (refused.status_code, garbage.status_code, accepted.status_code) == (401, 400, 200)
    assert [message.text for message in recorder.seen] == ["hi"]


async def test_register_webhook_sends_the_secret_and_update_types(
    core: Core, fake: FakeTelegram, tg_settings: Settings
) -> None:
    async with open_channel(core, tg_settings, Recorder()) as channel:
        await channel.register_webhook("https://crm.example.com/telegram/webhook", SECRET)
        with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
            await channel.register_webhook("https://crm.example.com/telegram/webhook", "no spaces allowed")
    assert fake.webhook is not None
    assert fake.webhook["url"] == "https://crm.example.com/telegram/webhook"
    assert fake.webhook["secret_token"] == SECRET
    assert fake.webhook["allowed_updates"] == ["callback_query", "message"]
    assert fake.webhook["drop_pending_updates"] == "false"
    assert len(fake.called("setMyCommands")) == 2


# --- commands, files ----------------------------------------------------------------------------------------


async def test_commands_become_intents_and_the_deep_link_travels_in_metadata(
    core: Core, fake: FakeTelegram, tg_settings: Settings
) -> None:
    recorder = Recorder()
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    texts = ["/start link-ABC123", "/start", "/help", "/cancel@crmbot_test_bot", "/unknown_thing"]
    async with open_channel(core, tg_settings, recorder) as channel, webhook_client(channel) as http:
        for number, text in enumerate(texts, start=1):
            # A chat each: five replies to one chat in a row would be paced to one a second.
            update = text_update(number, ACME + number, text)
            response = await http.post("/telegram/webhook", json=update, headers=headers)
            assert response.status_code == 200
    assert [(message.text, message.metadata) for message in recorder.seen] == [
        ("/greet", {"start": "link-ABC123"}),
        ("/greet", {}),
        ("/help", {}),
        ("/cancel", {}),
        ("/unknown_thing", {}),
    ]


async def test_an_unlinked_person_gets_the_linking_hint(
    core: Core, world: World, fake: FakeTelegram, tg_settings: Settings
) -> None:
    async with (
        open_channel(core, tg_settings, Assistant(core, ScriptedNlu())) as channel,
        webhook_client(channel) as http,
    ):
        await http.post(
            "/telegram/webhook",
            json=text_update(3, 999, "/start"),
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
        )
    [sent] = fake.called("sendMessage")
    assert sent["chat_id"] == "999" and "link" in sent["text"].lower()


async def test_a_photo_with_caption_arrives_as_an_attachment(
    core: Core, fake: FakeTelegram, tg_settings: Settings
) -> None:
    small, large = b"small-jpeg", b"\xff\xd8\xff" + b"large-jpeg" * 500
    fake.add_file("ph-s", small, "photos/s.jpg")
    fake.add_file("ph-l", large, "photos/l.jpg")
    fake.add_file("doc-1", b"%PDF-1.4 manual", "documents/manual.pdf")
    recorder = Recorder(replies=[Reply(text="Thanks, I got the photo.")])
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    photo = photo_update(
        10, ACME, [("ph-s", 90, 67, len(small)), ("ph-l", 1280, 960, len(large))], caption="It leaks here"
    )
    document = document_update(11, ACME, "doc-1", "manual.pdf", "application/pdf", 15)
    async with open_channel(core, tg_settings, recorder) as channel, webhook_client(channel) as http:
        for update in (photo, document):
            assert (await http.post("/telegram/webhook", json=update, headers=headers)).status_code == 200
    first, second = recorder.seen
    assert first.text == "It leaks here" and first.message_id == "10"
    assert first.attachments == (Attachment("photo", "photo-u-ph-l.jpg", "image/jpeg", large),)
    assert second.text == ""
    assert second.attachments == (
        Attachment("document", "manual.pdf", "application/pdf", b"%PDF-1.4 manual"),
    )
    assert [params["path"] for params in fake.called("download")] == ["photos/l.jpg", "documents/manual.pdf"]
    assert [params["text"] for params in fake.called("sendMessage")] == ["Thanks, I got the photo."] * 2


async def test_files_over_the_cap_are_refused_with_a_message(
    core: Core, fake: FakeTelegram, tg_settings: Settings
) -> None:
    fake.add_file("doc-lies", b"x" * 3000, "documents/big.bin", size=500)  # getFile under-reports its size
    recorder = Recorder()
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    huge = document_update(1, ACME, "doc-huge", "scan.tif", "image/tiff", 11 * 1024 * 1024)
    lying = document_update(2, ACME, "doc-lies", "big.bin", "application/octet-stream", 500)
    sticker = {
        "update_id": 3,
        "message": message_json(
            ACME,
            3,
            sticker={
                "file_id": "st",
                "file_unique_id": "st",
                "type": "regular",
                "width": 1,
                "height": 1,
                "is_animated": False,
                "is_video": False,
            },
        ),
    }
    async with (
        open_channel(core, tg_settings, recorder, max_download=2048) as channel,
        webhook_client(channel) as http,
    ):
        for update in (huge, lying, sticker):
            assert (await http.post("/telegram/webhook", json=update, headers=headers)).status_code == 200
    assert recorder.seen == []
    texts = [params["text"] for params in fake.called("sendMessage")]
    assert len(texts) == 3 and "too large" in texts[0] and "too large" in texts[1]
    assert "photos and documents" in texts[2]
    assert [params["file_id"] for params in fake.called("getFile")] == [
        "doc-lies"
    ]  # the huge one: not even asked


# --- rendering and sending ------------------------------------------------------------------------------


async def test_callback_data_stays_within_64_bytes_for_chinese_titles_and_long_payloads(
    core: Core, fake: FakeTelegram, tg_settings: Settings
) -> None:
    long_payload = '/open_service_request{"kb_article_code": "KB-1", "description": "' + "漏水" * 200 + '"}'
    buttons = [
        Button("申请维修：洗衣机漏水，需要上门检查和更换排水泵", long_payload),
        Button("A very long English button title that goes on and on well past sixty-four chars", "/affirm"),
        *(Button(f"选项 {n}", f'/search_knowledge{{"query": "错误 E{n}"}}') for n in range(120)),
    ]
    async with open_channel(core, tg_settings, Recorder()) as channel:
        sender: ChannelSender = channel.sender
        message_id = await sender.send(str(ACME), Reply(text="请选择：", buttons=tuple(buttons)))
    [sent] = fake.called("sendMessage")
    assert message_id == "1"
    rendered = buttons_of(sent)
    assert len(rendered) == 100
    assert rendered[0]["text"] == buttons[0].title
    assert len(rendered[1]["text"]) <= 64 and rendered[1]["text"].endswith("…")
    for original, button in zip(buttons, rendered, strict=False):
        assert len(button["callback_data"].encode("utf-8")) <= 64
        assert await core.conversations.payload_for(button["callback_data"][2:]) == original.payload


async def test_long_replies_are_split_on_line_breaks(
    core: Core, fake: FakeTelegram, tg_settings: Settings
) -> None:
    lines = [f"{n:04d} " + "x" * 90 for n in range(100)]  # ~9,500 characters
    text = "\n".join(lines)
    async with open_channel(core, tg_settings, Recorder()) as channel:
        await channel.sender.send(str(ACME), Reply(text=text, buttons=(Button("OK", "/affirm"),)))
    sent = fake.called("sendMessage")
    assert len(sent) == 3
    assert all(text_length(params["text"]) <= MAX_TEXT for params in sent)
    assert "\n".join(params["text"] for params in sent) == text  # cut between lines, nothing lost
    assert ["reply_markup" in params for params in sent] == [False, False, True]


def test_split_text_handles_lines_longer_than_a_message_and_utf16_lengths() -> None:
    words = " ".join(["word"] * 3000)
    pieces = split_text(words)
    assert all(len(piece) <= MAX_TEXT for piece in pieces) and " ".join(pieces) == words
    solid = "y" * 9000
    assert "".join(split_text(solid)) == solid
    emoji = "😀" * 3000  # 6,000 UTF-16 code units: Telegram counts it over the limit
    assert [text_length(piece) for piece in split_text(emoji)] == [4096, 1904]
    assert split_text("short") == ["short"]


async def test_images_go_as_photos_with_the_text_as_caption_when_it_fits(
    core: Core, fake: FakeTelegram, tg_settings: Settings
) -> None:
    keyboard = (Button("Details", "/pipeline_summary"),)
    async with open_channel(core, tg_settings, Recorder()) as channel:
        await channel.sender.send(str(ACME), Reply(text="Pipeline Q2", image=PNG, buttons=keyboard))
        await channel.sender.send(
            str(ACME), Reply(text="z" * 2000, image=PNG, image_alt="Funnel", buttons=keyboard)
        )
    short, long = fake.called("sendPhoto")
    assert short["caption"] == "Pipeline Q2" and buttons_of(short)
    assert short["photo"] == Upload("chart.png", PNG)
    assert long["caption"] == "Funnel" and "reply_markup" not in long
    [separate] = fake.called("sendMessage")
    assert separate["text"] == "z" * 2000 and buttons_of(separate)


async def test_retry_after_is_honoured_once(core: Core, fake: FakeTelegram, tg_settings: Settings) -> None:
    fake.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    async with open_channel(core, tg_settings, Recorder()) as channel:
        assert await channel.sender.send(str(ACME), Reply(text="after the wait")) == "1"
    refused, delivered = [call for call in fake.calls if call.method == "sendMessage"]
    assert not refused.ok and delivered.ok
    assert delivered.at - refused.at >= 0.95


async def test_repeated_or_long_flood_waits_become_rate_limited(
    core: Core, fake: FakeTelegram, tg_settings: Settings
) -> None:
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    bot = build_bot(tg_settings)
    sender = TelegramSender(bot, core.conversations, sleep=no_sleep, max_retry_wait=10)
    try:
        fake.fail("sendMessage", 429, "Too Many Requests: retry after 3", retry_after=3, times=2)
        with pytest.raises(RateLimited) as twice:
            await sender.send(str(ACME), Reply(text="x"))
        fake.fail("sendMessage", 429, "Too Many Requests: retry after 120", retry_after=120)
        with pytest.raises(RateLimited) as long_wait:
            await sender.send(str(ACME), Reply(text="y"))
    finally:
        await bot.session.close()
    assert waits == [3.0]  # waited once for the first, not at all for the two-minute ban
    assert twice.value.retry_after == 3 and long_wait.value.retry_after == 120
    assert not twice.value.permanent and len(fake.called("sendMessage", ok=False)) == 3


async def test_blocked_and_unknown_recipients_are_typed(
    core: Core, fake: FakeTelegram, tg_settings: Settings
) -> None:
    fake.blocked_chats.add(ACME)
    fake.unknown_chats.add(555)
    async with open_channel(core, tg_settings, Recorder()) as channel:
        with pytest.raises(RecipientBlocked) as blocked:
            await channel.sender.send(str(ACME), Reply(text="your SR-1 is done"))
        with pytest.raises(UnknownRecipient):
            await channel.sender.send("555", Reply(text="hello"))
        fake.fail("sendMessage", 400, "Bad Request: message text is empty")
        with pytest.raises(DeliveryError) as bad:
            await channel.sender.send("556", Reply(text="hello"))
    assert blocked.value.permanent and "blocked" in str(blocked.value)
    assert bad.value.permanent and not isinstance(bad.value, UnknownRecipient | RecipientBlocked)
    assert channel.sender.channel == "telegram"


async def test_pacing_keeps_per_chat_and_global_limits() -> None:
    now = 0.0
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        nonlocal now
        waits.append(round(seconds, 3))
        now += seconds

    pacer = Pacer(now=lambda: now, sleep=sleep)
    for _ in range(5):
        await pacer.wait(ACME)
    assert waits == [1.0, 1.0]  # a burst of 3, then one a second
    waits.clear()
    for _ in range(4):
        await pacer.wait(-100200)  # a group: 20 a minute
    assert waits == [3.0]
    waits.clear()
    now += 10
    for chat in range(1, 32):
        await pacer.wait(chat)
    assert waits == [
        round(1 / 30, 3)
    ]  # the 31st distinct chat in the same instant waits for the global bucket


def test_build_bot_needs_a_token_and_honours_the_api_url(settings: Settings) -> None:
    with pytest.raises(ValueError, match="TELEGRAM_TOKEN"):
        build_bot(settings)
    bot = build_bot(
        settings.model_copy(
            update={"telegram_token": SecretStr(TOKEN), "telegram_api_url": "http://127.0.0.1:1/"}
        )
    )
    assert bot.session.api.api_url(TOKEN, "getMe") == f"http://127.0.0.1:1/bot{TOKEN}/getMe"
    assert bot.default.parse_mode is None
