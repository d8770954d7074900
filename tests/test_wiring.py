"""The composition root connects configured platforms: Telegram by polling or by webhook."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from bot.assistant import Assistant
from core.auth import SYSTEM
from core.container import Core
from core.settings import Settings
from crmbot.app import create_app
from crmbot.cli import start_channels
from tests.chat import ScriptedNlu
from tests.fake_telegram import FakeTelegram
from tests.world import World

TOKEN = "123456:TEST-token-for-the-fake-api"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(TOKEN)
    await server.start()
    yield server
    await server.stop()


async def test_polling_answers_a_linked_user(
    core: Core, world: World, settings: Settings, fake: FakeTelegram
) -> None:
    await core.org.link_identity(SYSTEM, "acme.buyer", "telegram:4242")
    configured = settings.model_copy(
        update={"telegram_token": SecretStr(TOKEN), "telegram_api_url": fake.url}
    )
    nlu = ScriptedNlu()
    nlu.expect("greet")
    assistant = Assistant(core, nlu)
    app = create_app(core, "test-admin-token", assistant=assistant)
    stops = await start_channels(app, core, assistant, configured)
    try:
        fake.push(
            {
                "update_id": 1,
                "message": {
                    "message_id": 1,
                    "date": 0,
                    "text": "hi",
                    "chat": {"id": 4242, "type": "private"},
                    "from": {"id": 4242, "is_bot": False, "first_name": "A"},
                },
            }
        )
        await fake.wait_for(lambda: bool(fake.called("sendMessage")))
    finally:
        for stop in stops:
            await stop()
    assert "Hello Acme Buyer" in fake.called("sendMessage")[0]["text"]
    assert "telegram" in app.state.senders


async def test_webhook_mode_mounts_the_route_and_registers(
    core: Core, world: World, settings: Settings, fake: FakeTelegram
) -> None:
    configured = settings.model_copy(
        update={
            "telegram_token": SecretStr(TOKEN),
            "telegram_api_url": fake.url,
            "telegram_webhook_url": "https://crm.example.com/telegram/webhook",
            "telegram_webhook_secret": SecretStr("s3cret-token"),
        }
    )
    assistant = Assistant(core, ScriptedNlu())
    app = create_app(core, "test-admin-token", assistant=assistant)
    stops = await start_channels(app, core, assistant, configured)
    try:
        [registered] = fake.called("setWebhook")
        assert registered["url"] == "https://crm.example.com/telegram/webhook"
        assert registered["secret_token"] == "s3cret-token"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            refused = await client.post(
                "/telegram/webhook",
                json={"update_id": 5},
                headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"},
            )
            assert refused.status_code == 401
    finally:
        for stop in stops:
            await stop()


async def test_slack_http_mode_mounts_the_signed_events_route(
    core: Core, world: World, settings: Settings
) -> None:
    configured = settings.model_copy(
        update={
            "slack_bot_token": SecretStr("xoxb-test"),
            "slack_signing_secret": SecretStr("signing-secret"),
            "slack_api_url": "http://127.0.0.1:9/api/",
        }
    )
    assistant = Assistant(core, ScriptedNlu())
    app = create_app(core, "test-admin-token", assistant=assistant)
    stops = await start_channels(app, core, assistant, configured)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            forged = await client.post(
                "/slack/events",
                content=b'{"type":"event_callback"}',
                headers={
                    "X-Slack-Request-Timestamp": "1",
                    "X-Slack-Signature": "v0=forged",
                    "Content-Type": "application/json",
                },
            )
            assert forged.status_code == 401
        assert "slack" in app.state.senders
    finally:
        for stop in stops:
            await stop()


async def test_linking_codes_are_delivered_while_the_server_runs(
    core: Core, world: World, settings: Settings
) -> None:
    import asyncio

    from crmbot.cli import start_notifier

    stop = start_notifier(core, {})
    try:
        await core.linking.request_code("telegram", "777", "acme.buyer@example.com", "en")
        for _ in range(100):
            mails = list(settings.mail_directory.glob("*.eml"))
            if mails:
                break
            await asyncio.sleep(0.05)
    finally:
        await stop()
    [mail] = mails
    assert "acme.buyer@example.com" in mail.read_text(encoding="utf-8")
