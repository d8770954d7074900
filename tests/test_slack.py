"""The Slack channel through real edges: signed requests into the real Bolt app, a local Slack Web API."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from bot.assistant import Assistant
from bot.channels.base import DeliveryError, RateLimited, RecipientBlocked, UnknownRecipient
from bot.channels.slack import (
    TOKEN_PREFIX,
    ChannelPacer,
    SlackChannel,
    SlackSender,
    plain_text,
    render,
    strip_mention,
    web_client,
)
from bot.messages import Button, IncomingMessage, Reply
from core.auth import SYSTEM
from core.container import Core
from core.settings import Settings
from tests.chat import ScriptedNlu
from tests.fake_slack import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, TEAM_ID, FakeSlack
from tests.world import World

SIGNING_SECRET = "test-signing-secret"
HELP_INTRO = "Here is what I can do"
NOT_LINKED = "not linked to a crmbot user"
PNG = b"\x89PNG\r\n\x1a\n" + b"chart" * 50


# --- rig ------------------------------------------------------------------------------------------------


@dataclass
class Rig:
    """The channel mounted in a FastAPI app, an HTTP client into it, the fake Slack and the scripted NLU."""

    channel: SlackChannel
    http: httpx.AsyncClient
    slack: FakeSlack
    nlu: ScriptedNlu
    core: Core
    events: int = 0

    async def post(self, body: str, content_type: str, **signing: Any) -> httpx.Response:
        """POST a body to /slack/events signed like Slack (or mis-signed, when asked)."""
        headers = {"Content-Type": content_type, **sign(body, **signing)}
        return await self.http.post("/slack/events", content=body.encode("utf-8"), headers=headers)

    async def event(
        self, event: dict[str, Any], *, event_id: str | None = None, **signing: Any
    ) -> httpx.Response:
        """Deliver an Events API callback."""
        self.events += 1
        envelope = {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": "A0CRM",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{self.events:04d}",
            "event_time": int(time.time()),
        }
        return await self.post(json.dumps(envelope), "application/json", **signing)

    async def dm(self, user: str, text: str, **signing: Any) -> httpx.Response:
        """A person writes to the bot in their DM."""
        self.events += 1
        event = {
            "type": "message",
            "channel": "D" + user,
            "user": user,
            "text": text,
            "ts": f"1781500000.{self.events:06d}",
            "channel_type": "im",
        }
        return await self.event(event, **signing)

    async def command(self, user: str, text: str) -> httpx.Response:
        """A person types `/crm text`."""
        form = {
            "token": "legacy",
            "team_id": TEAM_ID,
            "channel_id": "C0SALES",
            "user_id": user,
            "command": "/crm",
            "text": text,
            "response_url": self.slack.response_url("command"),
            "trigger_id": f"1337.{time.time_ns()}.abcdef",
            "api_app_id": "A0CRM",
        }
        return await self.post(urlencode(form), "application/x-www-form-urlencoded")

    async def click(self, user: str, message: dict[str, Any], action_index: int = 0) -> httpx.Response:
        """A person clicks a button of a message the bot posted (as recorded by the fake)."""
        buttons = [
            element
            for block in message["blocks"]
            if block["type"] == "actions"
            for element in block["elements"]
        ]
        button = buttons[action_index]
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM_ID, "domain": "crm-test"},
            "user": {"id": user, "username": user, "team_id": TEAM_ID},
            "api_app_id": "A0CRM",
            "token": "legacy",
            "container": {
                "type": "message",
                "message_ts": message["ts"],
                "channel_id": message["channel"],
                "is_ephemeral": False,
            },
            "trigger_id": f"4242.{time.time_ns()}.fedcba",
            "channel": {"id": message["channel"], "name": "directmessage"},
            "message": {
                "type": "message",
                "bot_id": "BBOT",
                "text": message["text"],
                "ts": message["ts"],
                "blocks": message["blocks"],
                **({"thread_ts": message["thread_ts"]} if message.get("thread_ts") else {}),
            },
            "response_url": self.slack.response_url("action"),
            "actions": [
                {
                    "type": "button",
                    "action_id": button["action_id"],
                    "block_id": "b1",
                    "text": button["text"],
                    "value": button["value"],
                    "action_ts": str(time.time()),
                }
            ],
        }
        return await self.post(
            urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"
        )


def sign(
    body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None, retry: int | None = None
) -> dict[str, str]:
    """Slack's request signature: v0= hex HMAC-SHA256 of `v0:{timestamp}:{body}`."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    headers = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}
    if retry is not None:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    return headers


def slack_settings(settings: Settings, slack: FakeSlack) -> Settings:
    return settings.model_copy(
        update={
            "slack_bot_token": SecretStr(BOT_TOKEN),
            "slack_signing_secret": SecretStr(SIGNING_SECRET),
            "slack_api_url": slack.base_url,
        }
    )


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    yield fake
    await fake.close()


async def make_rig(
    core: Core, settings: Settings, slack: FakeSlack, assistant: Assistant | None = None
) -> Rig:
    nlu = ScriptedNlu()
    channel = SlackChannel(
        assistant or Assistant(core, nlu), core, slack_settings(settings, slack), per_channel_interval=0.0
    )
    app = FastAPI()
    app.include_router(channel.events_router())
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    return Rig(channel=channel, http=http, slack=slack, nlu=nlu, core=core)


@pytest.fixture
async def rig(core: Core, world: World, settings: Settings, slack: FakeSlack) -> AsyncIterator[Rig]:
    rig = await make_rig(core, settings, slack)
    yield rig
    await rig.http.aclose()
    await rig.channel.close()


async def slack_user(core: Core, user: str) -> str | None:
    actor = await core.org.actor_for_identity("slack", user)
    return actor.username if actor else None


# --- HTTP edge: signature, replay window, url_verification --------------------------------------------------


async def test_url_verification_challenge_is_answered(rig: Rig) -> None:
    body = json.dumps(
        {
            "token": "legacy",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    )
    response = await rig.post(body, "application/json")
    assert response.status_code == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in response.text


@pytest.mark.parametrize(
    "signing",
    [
        pytest.param({"secret": "someone-elses-secret"}, id="forged-signature"),
        pytest.param({"timestamp": int(time.time()) - 6 * 60}, id="six-minutes-old"),
    ],
)
async def test_bad_signature_or_stale_timestamp_is_rejected_and_nothing_runs(
    rig: Rig, signing: dict[str, Any]
) -> None:
    await rig.core.org.link_identity(SYSTEM, "rep.north", "slack:U100")
    rig.slack.add_user("U100", "rep.north@example.com")
    rig.nlu.expect("help")

    response = await rig.dm("U100", "help", **signing)
    await rig.channel.drain()

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert rig.slack.calls == []  # not even auth.test: the request never got past the signature check
    assert rig.nlu.seen == []


async def test_unsigned_request_is_rejected(rig: Rig) -> None:
    response = await rig.http.post("/slack/events", json={"type": "event_callback", "event": {}})
    assert response.status_code == 401
    assert rig.slack.calls == []


def test_router_refuses_to_exist_without_a_signing_secret(
    core: Core, settings: Settings, slack: FakeSlack
) -> None:
    no_secret = slack_settings(settings, slack).model_copy(update={"slack_signing_secret": None})
    channel = SlackChannel(Assistant(core, ScriptedNlu()), core, no_secret)
    with pytest.raises(ValueError, match="SIGNING_SECRET"):
        channel.events_router()


# --- DMs, identity ---------------------------------------------------------------------------------------


async def test_dm_from_staff_email_is_auto_linked_and_answered_in_the_dm(rig: Rig) -> None:
    rig.slack.add_user("U100", "Rep.North@Example.com")
    rig.nlu.expect("help")

    response = await rig.dm("U100", "what can you do?")
    assert response.status_code == 200
    await rig.channel.drain()

    assert await slack_user(rig.core, "U100") == "rep.north"
    [post] = rig.slack.posted()
    assert post["channel"] == "DU100"
    assert HELP_INTRO in post["text"]
    assert "thread_ts" not in post
    assert [params["user"] for params in rig.slack.calls_to("users.info")] == ["U100"]

    # Linked now: the next message needs no profile look-up.
    rig.nlu.expect("help")
    await rig.dm("U100", "help again")
    await rig.channel.drain()
    assert len(rig.slack.calls_to("users.info")) == 1
    assert len(rig.slack.posted()) == 2


@pytest.mark.parametrize(
    ("email", "flags"),
    [
        pytest.param("acme.buyer@example.com", {}, id="customer-email"),
        pytest.param("rep.north@example.com", {"is_restricted": True}, id="guest-account"),
        pytest.param("rep.north@example.com", {"team_id": "T0OTHER"}, id="slack-connect-stranger"),
        pytest.param("rep.north@example.com", {"is_bot": True}, id="bot-user"),
        pytest.param("nobody@example.com", {}, id="unknown-email"),
        pytest.param(None, {}, id="no-email-scope"),
    ],
)
async def test_accounts_that_must_not_be_auto_linked(
    rig: Rig, email: str | None, flags: dict[str, Any]
) -> None:
    rig.slack.add_user("U300", email, **flags)

    await rig.dm("U300", "show me my warranty")
    await rig.channel.drain()

    assert await slack_user(rig.core, "U300") is None
    [post] = rig.slack.posted()
    assert NOT_LINKED in post["text"]
    assert rig.nlu.seen == []


async def test_unmatched_account_is_not_looked_up_on_every_message(rig: Rig) -> None:
    rig.slack.add_user("U300", "nobody@example.com")
    await rig.dm("U300", "hello")
    await rig.channel.drain()
    await rig.dm("U300", "hello?")
    await rig.channel.drain()
    assert len(rig.slack.calls_to("users.info")) == 1
    assert len(rig.slack.posted()) == 2


async def test_explicit_identity_wins_without_a_profile_lookup(rig: Rig) -> None:
    await rig.core.org.link_identity(SYSTEM, "tech.north", "slack:U500")
    rig.slack.add_user("U500", "rep.north@example.com")  # a different staff email must not matter
    rig.nlu.expect("help")

    await rig.dm("U500", "help")
    await rig.channel.drain()

    assert rig.slack.calls_to("users.info") == []
    assert await slack_user(rig.core, "U500") == "tech.north"


async def test_bot_posts_edits_and_channel_chatter_are_acked_and_ignored(rig: Rig) -> None:
    rig.slack.add_user("U100", "rep.north@example.com")
    base = {
        "type": "message",
        "channel": "DU100",
        "user": "U100",
        "text": "hi",
        "ts": "1.1",
        "channel_type": "im",
    }
    events = [
        base | {"bot_id": "BOTHER"},
        base | {"subtype": "message_changed"},
        base | {"subtype": "file_share"},
        base | {"channel": "C0SALES", "channel_type": "channel"},
    ]
    for event in events:
        response = await rig.event(event)
        assert response.status_code == 200
    await rig.channel.drain()
    assert rig.slack.posted() == []
    assert rig.nlu.seen == []


async def test_slack_markup_reaches_the_dialogue_as_typed(rig: Rig) -> None:
    await rig.core.org.link_identity(SYSTEM, "rep.north", "slack:U100")
    await rig.dm("U100", "mail <mailto:li@acme.example|li@acme.example> about R&amp;D &lt;urgent&gt;")
    await rig.channel.drain()
    assert rig.nlu.seen[0][0] == "mail li@acme.example about R&D <urgent>"


# --- ack first, retries ------------------------------------------------------------------------------------


class GatedAssistant(Assistant):
    """An assistant that answers only once the test opens the gate (to prove the ack comes first)."""

    def __init__(self, core: Core) -> None:
        super().__init__(core, ScriptedNlu())
        self.gate = asyncio.Event()
        self.received: list[IncomingMessage] = []

    async def handle(self, message: IncomingMessage) -> list[Reply]:
        self.received.append(message)
        await self.gate.wait()
        return [Reply(text="done")]


async def test_request_is_acknowledged_before_the_work_is_done(
    core: Core, world: World, settings: Settings, slack: FakeSlack
) -> None:
    assistant = GatedAssistant(core)
    rig = await make_rig(core, settings, slack, assistant)
    try:
        await core.org.link_identity(SYSTEM, "rep.north", "slack:U100")
        response = await rig.dm("U100", "slow question")
        assert response.status_code == 200
        assert rig.channel.pending == 1  # acked while the answer is still being worked out
        assert slack.posted() == []

        assistant.gate.set()
        await rig.channel.drain()
        assert rig.channel.pending == 0
        assert [post["text"] for post in slack.posted()] == ["done"]
        assert assistant.received[0].message_id == "Ev0002"
    finally:
        await rig.http.aclose()
        await rig.channel.close()


async def test_retried_event_is_processed_once(rig: Rig) -> None:
    await rig.core.org.link_identity(SYSTEM, "rep.north", "slack:U100")
    rig.nlu.expect("help")
    event = {
        "type": "message",
        "channel": "DU100",
        "user": "U100",
        "text": "help",
        "ts": "1781500000.000777",
        "channel_type": "im",
    }

    first = await rig.event(event, event_id="Ev0RETRY")
    await rig.channel.drain()
    second = await rig.event(event, event_id="Ev0RETRY", retry=1)
    third = await rig.event(event, event_id="Ev0RETRY", retry=2)
    await rig.channel.drain()

    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 200]
    assert len(rig.nlu.seen) == 1
    assert len(rig.slack.posted()) == 1


# --- app mentions, slash command, buttons ------------------------------------------------------------------


async def test_app_mention_is_answered_in_its_thread(rig: Rig) -> None:
    await rig.core.org.link_identity(SYSTEM, "rep.south", "slack:U200")
    rig.nlu.expect("help")
    event = {
        "type": "app_mention",
        "channel": "C0SALES",
        "user": "U200",
        "text": f"<@{BOT_USER_ID}> what can you do?",
        "ts": "1781500001.000100",
    }

    await rig.event(event)
    await rig.channel.drain()

    assert rig.nlu.seen[0][0] == "what can you do?"
    [post] = rig.slack.posted()
    assert post["channel"] == "C0SALES"
    assert post["thread_ts"] == "1781500001.000100"
    assert HELP_INTRO in post["text"]


async def test_mention_inside_a_thread_answers_in_that_thread(rig: Rig) -> None:
    await rig.core.org.link_identity(SYSTEM, "rep.south", "slack:U200")
    event = {
        "type": "app_mention",
        "channel": "C0SALES",
        "user": "U200",
        "text": f"hey <@{BOT_USER_ID}> hello",
        "ts": "1781500002.000200",
        "thread_ts": "1781500001.000100",
    }
    await rig.event(event)
    await rig.channel.drain()
    [post] = rig.slack.posted()
    assert post["thread_ts"] == "1781500001.000100"


@pytest.mark.parametrize("text", ["help", ""])
async def test_slash_command_acks_at_once_and_answers_privately(rig: Rig, text: str) -> None:
    await rig.core.org.link_identity(SYSTEM, "rep.north", "slack:U100")
    if text:
        rig.nlu.expect("help")

    response = await rig.command("U100", text)
    assert response.status_code == 200
    assert response.text == ""  # the ack shows nothing; the answer follows through response_url
    await rig.channel.drain()

    [answer] = rig.slack.responses
    assert answer["key"] == "command"
    assert answer["response_type"] == "ephemeral"
    assert HELP_INTRO in answer["text"]
    assert rig.slack.posted() == []


async def test_slash_command_falls_back_to_the_dm_when_response_url_fails(rig: Rig) -> None:
    await rig.core.org.link_identity(SYSTEM, "rep.north", "slack:U100")
    rig.slack.add_user("U100", "rep.north@example.com")
    rig.nlu.expect("help")
    form = {
        "team_id": TEAM_ID,
        "channel_id": "C0SALES",
        "user_id": "U100",
        "command": "/crm",
        "text": "help",
        "response_url": f"http://127.0.0.1:{rig.slack.port}/gone",
        "trigger_id": "1.2.3",
    }
    await rig.post(urlencode(form), "application/x-www-form-urlencoded")
    await rig.channel.drain()
    [post] = rig.slack.posted()
    assert post["channel"] == "DU100"
    assert HELP_INTRO in post["text"]


async def test_button_click_sends_its_payload_to_the_dialogue(rig: Rig) -> None:
    await rig.core.org.link_identity(SYSTEM, "rep.north", "slack:U100")
    rig.nlu.expect("nlu_fallback", 0.3, ranking=(("nlu_fallback", 0.3), ("help", 0.2), ("list_deals", 0.1)))
    await rig.dm("U100", "blorp")
    await rig.channel.drain()

    # The guesses (only intents a rep can use), then the rep's own suggestions.
    question = rig.slack.posted()[0]
    section, actions = question["blocks"]
    assert section["type"] == "section"
    assert actions["type"] == "actions"
    assert [(button["action_id"], button["value"]) for button in actions["elements"]] == [
        ("crm_btn_0", "/help"),
        ("crm_btn_1", "/list_deals"),
    ]
    seen_before = len(rig.nlu.seen)

    response = await rig.click("U100", question | {"ts": "1781500000.000001"})
    assert response.status_code == 200
    await rig.channel.drain()

    assert len(rig.nlu.seen) == seen_before  # a payload is a certain parse: no NLU involved
    answer = rig.slack.posted()[-1]
    assert answer["channel"] == "DU100"
    assert HELP_INTRO in answer["text"]
    # The clicked message lost its buttons and shows the choice instead.
    [update] = rig.slack.responses
    assert update["replace_original"] is True
    assert all(block["type"] != "actions" for block in update["blocks"])
    assert "What can you do?" in json.dumps(update["blocks"])


async def test_long_payload_travels_as_a_token_and_comes_back(rig: Rig) -> None:
    await rig.core.org.link_identity(SYSTEM, "rep.north", "slack:U100")
    payload = "/search_knowledge" + json.dumps({"query": "E13 " + "x" * 2100})
    text, blocks = await render(
        Reply(text="pick", buttons=(Button("Search", payload),)), rig.core.conversations.payload_token
    )
    assert blocks is not None
    value = blocks[-1]["elements"][0]["value"]
    assert value.startswith(TOKEN_PREFIX) and len(value) <= 2000

    message = {"channel": "DU100", "ts": "1781500000.000009", "text": text, "blocks": blocks}
    await rig.click("U100", message)
    await rig.channel.drain()
    # The stored payload came back whole (too long to be a certain parse, so it reached the NLU).
    assert [text for text, _context in rig.nlu.seen] == [payload]


class ImageAssistant(Assistant):
    """Answers every message with a chart."""

    async def handle(self, message: IncomingMessage) -> list[Reply]:
        return [Reply(text="Pipeline this quarter", image=PNG, image_alt="pipeline chart")]


async def test_image_reply_is_uploaded_to_the_thread(
    core: Core, world: World, settings: Settings, slack: FakeSlack
) -> None:
    rig = await make_rig(core, settings, slack, ImageAssistant(core, ScriptedNlu()))
    try:
        event = {
            "type": "app_mention",
            "channel": "C0SALES",
            "user": "U200",
            "text": "<@UBOT> pipeline",
            "ts": "9.1",
        }
        await rig.event(event)
        await rig.channel.drain()
        [post] = slack.posted()
        assert post["text"] == "Pipeline this quarter"
        [complete] = slack.calls_to("files.completeUploadExternal")
        assert complete["channel_id"] == "C0SALES"
        assert complete["thread_ts"] == "9.1"
        assert list(slack.uploads.values()) == [PNG]
    finally:
        await rig.http.aclose()
        await rig.channel.close()


# --- Socket Mode (the same Bolt app over the fake's WebSocket) ---------------------------------------------


async def test_socket_mode_acks_envelopes_and_answers(
    core: Core, world: World, settings: Settings, slack: FakeSlack
) -> None:
    nlu = ScriptedNlu()
    socket_settings = slack_settings(settings, slack).model_copy(
        update={"slack_app_token": SecretStr(APP_TOKEN), "slack_signing_secret": None}
    )
    channel = SlackChannel(Assistant(core, nlu), core, socket_settings, per_channel_interval=0.0)
    await core.org.link_identity(SYSTEM, "rep.north", "slack:U100")
    nlu.expect("help")
    running = asyncio.create_task(channel.run_socket_mode())
    try:
        await asyncio.wait_for(slack.socket_ready.wait(), 5)
        event = {
            "type": "message",
            "channel": "DU100",
            "user": "U100",
            "text": "help",
            "ts": "5.1",
            "channel_type": "im",
        }
        envelope = {
            "envelope_id": "env-1",
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": {
                "team_id": TEAM_ID,
                "event": event,
                "type": "event_callback",
                "event_id": "Ev0SOCKET",
            },
        }
        await slack.push(envelope)
        await asyncio.wait_for(slack.acked("env-1"), 5)
        await channel.drain()
        [post] = slack.posted()
        assert post["channel"] == "DU100"
        assert HELP_INTRO in post["text"]
    finally:
        await channel.close()
        await asyncio.wait_for(running, 5)


async def test_socket_mode_needs_an_app_token(core: Core, settings: Settings, slack: FakeSlack) -> None:
    channel = SlackChannel(Assistant(core, ScriptedNlu()), core, slack_settings(settings, slack))
    with pytest.raises(ValueError, match="APP_TOKEN"):
        await channel.run_socket_mode()


# --- SlackSender (the notifier's way out) ------------------------------------------------------------------


@pytest.fixture
def sender(settings: Settings, slack: FakeSlack) -> SlackSender:
    return SlackSender.from_settings(slack_settings(settings, slack))


async def test_sender_opens_the_dm_once_and_returns_the_ts(settings: Settings, slack: FakeSlack) -> None:
    slack.add_user("U100", "rep.north@example.com")
    sender = SlackSender(web_client(slack_settings(settings, slack)), pacer=ChannelPacer(0.0))
    first = await sender.send(
        "U100",
        Reply(text="SLA breach on SR-7 <now>", buttons=(Button("Open SR-7", "/check_request_status"),)),
    )
    second = await sender.send("U100", Reply(text="again"))
    assert first and second and first != second
    assert len(slack.calls_to("conversations.open")) == 1
    posts = slack.posted()
    assert [post["channel"] for post in posts] == ["DU100", "DU100"]
    assert posts[0]["text"] == "SLA breach on SR-7 &lt;now&gt;"
    assert posts[0]["blocks"][-1]["elements"][0]["text"]["text"] == "Open SR-7"
    assert sender.channel == "slack"


async def test_sender_posts_to_a_channel_id_directly(sender: SlackSender, slack: FakeSlack) -> None:
    await sender.send("C0ALERTS", Reply(text="Deal won"))
    assert slack.calls_to("conversations.open") == []
    assert slack.posted()[0]["channel"] == "C0ALERTS"


async def test_sender_uploads_an_image(sender: SlackSender, slack: FakeSlack) -> None:
    slack.add_user("U100", "rep.north@example.com")
    message_id = await sender.send("U100", Reply(text="", image=PNG, image_alt="funnel"))
    assert message_id.startswith("F")
    assert slack.posted() == []
    assert list(slack.uploads.values()) == [PNG]
    [complete] = slack.calls_to("files.completeUploadExternal")
    assert complete["channel_id"] == "DU100"


@pytest.mark.parametrize(
    ("method", "error", "expected"),
    [
        ("conversations.open", "user_not_found", UnknownRecipient),
        ("chat.postMessage", "channel_not_found", UnknownRecipient),
        ("chat.postMessage", "account_inactive", RecipientBlocked),
        ("chat.postMessage", "is_archived", RecipientBlocked),
        ("chat.postMessage", "internal_error", DeliveryError),
    ],
)
async def test_sender_maps_slack_errors_to_typed_errors(
    sender: SlackSender, slack: FakeSlack, method: str, error: str, expected: type[DeliveryError]
) -> None:
    slack.add_user("U100", "rep.north@example.com")
    slack.fail(method, error)
    with pytest.raises(expected) as caught:
        await sender.send("U100", Reply(text="hello"))
    assert type(caught.value) is expected
    assert caught.value.permanent is (expected is not DeliveryError)


async def test_sender_reports_429_with_retry_after(sender: SlackSender, slack: FakeSlack) -> None:
    slack.add_user("U100", "rep.north@example.com")
    slack.rate_limit("chat.postMessage", retry_after=7)
    with pytest.raises(RateLimited) as caught:
        await sender.send("U100", Reply(text="hello"))
    assert caught.value.retry_after == 7.0
    assert not caught.value.permanent
    assert len(slack.posted()) == 1  # no hidden retry: the notifier decides when to try again


async def test_sender_paces_messages_per_conversation_and_after_a_429(
    settings: Settings, slack: FakeSlack
) -> None:
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    sender = SlackSender(web_client(slack_settings(settings, slack)), pacer=ChannelPacer(1.0, sleep=record))
    await sender.send("C0ONE", Reply(text="1"))
    await sender.send("C0TWO", Reply(text="another conversation: not held back"))
    assert slept == []
    await sender.send("C0ONE", Reply(text="2"))
    assert len(slept) == 1 and 0.5 < slept[0] <= 1.0

    slack.rate_limit("chat.postMessage", retry_after=7)
    with pytest.raises(RateLimited):
        await sender.send("C0TWO", Reply(text="too fast"))
    await sender.send("C0TWO", Reply(text="after the pause"))
    assert 6.0 < slept[-1] <= 7.0


async def test_pacer_really_waits() -> None:
    pacer = ChannelPacer(0.2)
    started = time.monotonic()
    await pacer.wait("C0ONE")
    await pacer.wait("C0ONE")
    assert time.monotonic() - started >= 0.2


# --- pure translation ------------------------------------------------------------------------------------


def test_plain_text_reads_slack_markup() -> None:
    assert plain_text("<mailto:a@b.co|a@b.co> <tel:+86123|+86 123>") == "a@b.co +86 123"
    assert (
        plain_text("see <https://x.example/y> and <https://x.example|site>")
        == "see https://x.example/y and site"
    )
    assert plain_text("<@U1> <#C1|general> <!here>") == "@U1 #general @here"
    assert plain_text("a &lt;b&gt; &amp;amp;") == "a <b> &amp;"


def test_strip_mention_removes_only_the_bot() -> None:
    assert strip_mention("<@UBOT>  show <@U9> Acme", "UBOT") == "show <@U9> Acme"
    assert strip_mention("<@UBOT|crmbot> hi", "UBOT") == "hi"


async def test_render_respects_block_kit_limits() -> None:
    buttons = tuple(Button("x" * 100 if n == 0 else f"choice {n}", f'/pick{{"n": {n}}}') for n in range(30))
    text, blocks = await render(Reply(text="a & b\n" + "y" * 7000, buttons=buttons))
    assert blocks is not None
    sections = [block for block in blocks if block["type"] == "section"]
    actions = [block for block in blocks if block["type"] == "actions"]
    assert all(len(block["text"]["text"]) <= 3000 for block in sections)
    assert sections[0]["text"]["text"].startswith("a &amp; b")
    assert [len(block["elements"]) for block in actions] == [25, 5]
    elements = [element for block in actions for element in block["elements"]]
    assert len(elements[0]["text"]["text"]) == 75
    assert len({element["action_id"] for element in elements}) == 30
    assert text.startswith("a &amp; b")
