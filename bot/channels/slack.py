"""Slack channel: Bolt listeners turn DMs, mentions, /crm and button clicks into IncomingMessage; replies
become chat.postMessage with Block Kit, image replies a file upload.

The adapter only translates: everything it decides is about Slack (markup, blocks, limits,
retries, acknowledgement), never about the CRM. The one step beyond translation is matching a Slack
account to a staff user by its workspace email, which goes through core.org like any other link.

Composition root::

    channel = SlackChannel(assistant, core, settings)
    app.include_router(channel.events_router())      # HTTP mode: POST /slack/events
    await channel.run_socket_mode()                   # or Socket Mode when CRMBOT_SLACK_APP_TOKEN is set
    sender = channel.sender()                          # ChannelSender for the notifier
    await channel.close()                              # on shutdown: stop socket mode, finish pending work
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_bolt.lazy_listener.async_internals import to_runnable_function
from slack_bolt.lazy_listener.async_runner import AsyncLazyListenerRunner
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant import Assistant
from bot.channels.base import DeliveryError, RateLimited, RecipientBlocked, UnknownRecipient
from bot.messages import IncomingMessage, Reply
from core.auth import SYSTEM
from core.container import Core
from core.domain.enums import STAFF_ROLES, Role
from core.services.conversations import ConversationStore
from core.settings import Settings

log = logging.getLogger("crmbot.channels.slack")

CHANNEL = "slack"
DEFAULT_API_URL = "https://slack.com/api/"
COMMAND = "/crm"
BUTTON_ACTION_ID = "crm_btn_{}"
BUTTON_ACTION = re.compile(r"^crm_btn_\d+$")
# A payload longer than a button value may hold travels as a stored token (see ConversationStore).
TOKEN_PREFIX = "crm-token:"

# Block Kit and Web API limits (Slack's API documentation).
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ACTIONS_PER_BLOCK = 25
MAX_SECTION_TEXT = 3000
MAX_BLOCKS = 50
MAX_MESSAGE_TEXT = 39_000  # chat.postMessage truncates after 40,000 characters
MAX_EVENT_BODY = 1_000_000

# Slack error codes that say the recipient cannot be reached (retrying will not help).
UNKNOWN_ERRORS = frozenset({"user_not_found", "users_not_found", "channel_not_found", "invalid_user"})
BLOCKED_ERRORS = frozenset(
    {"account_inactive", "is_archived", "user_disabled", "cannot_dm_bot", "not_in_channel", "user_is_bot"}
)

SLACK_LINK = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
UNMATCHED_TTL = 600.0  # seconds before an unmatched Slack account's profile email is looked up again
MAX_REMEMBERED = 10_000

Shorten = Callable[[str], Awaitable[str]]


# --- text: Slack markup in, escaped mrkdwn out ---------------------------------------------------------


def plain_text(markup: str) -> str:
    """Slack's message markup as a person typed it: `<mailto:a@b.c|a@b.c>` → `a@b.c`, `&lt;` → `<`."""

    def readable(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith(("@", "#")):
            return target[0] + label if label else target
        if label:
            return label
        if target.startswith("!"):
            return "@" + target[1:].split("^", 1)[0]
        for scheme in ("mailto:", "tel:"):
            if target.startswith(scheme):
                return target[len(scheme) :]
        return target

    text = SLACK_LINK.sub(readable, markup)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def strip_mention(markup: str, bot_user_id: str | None) -> str:
    """Remove the bot's own `<@U…>` mention(s) from an app_mention's text."""
    if bot_user_id:
        markup = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", markup)
    return re.sub(r"[ \t]{2,}", " ", markup).strip()


def escape(text: str) -> str:
    """Slack reads `&`, `<` and `>` as markup: escape them so replies show literally."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def section_chunks(text: str, limit: int = MAX_SECTION_TEXT) -> list[str]:
    """Escaped text cut into pieces of at most `limit` characters, at line ends where possible."""
    chunks: list[str] = []
    current = ""
    for line in text.split("\n"):
        piece = escape(line)
        candidate = f"{current}\n{piece}" if current else piece
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            chunks.append(current)
        while len(piece) > limit:
            cut = limit
            # never split an escape sequence like "&amp;" in two
            amp = piece.rfind("&", max(0, cut - 4), cut)
            if amp != -1:
                cut = amp
            chunks.append(piece[:cut])
            piece = piece[cut:]
        current = piece
    if current.strip():
        chunks.append(current)
    return chunks


def button_title(title: str) -> str:
    """A button label within Slack's 75 characters (and never empty)."""
    title = " ".join(title.split()) or "…"
    return title if len(title) <= MAX_BUTTON_TEXT else title[: MAX_BUTTON_TEXT - 1] + "…"


async def render(reply: Reply, shorten: Shorten | None = None) -> tuple[str, list[dict[str, Any]] | None]:
    """A Reply as chat.postMessage `text` (the notification fallback) and Block Kit `blocks`.

    Buttons become `actions` blocks of up to 25 buttons whose `value` is the payload; a payload too
    long for a value is stored and sent as a token (or dropped when nothing can store it).
    """
    text = escape(reply.text.strip())[:MAX_MESSAGE_TEXT]
    if not reply.buttons:
        return text, None
    elements: list[dict[str, Any]] = []
    for number, button in enumerate(reply.buttons):
        value = button.payload
        if len(value) > MAX_BUTTON_VALUE:
            if shorten is None:
                log.warning("dropped a button whose payload is %d characters long", len(value))
                continue
            value = TOKEN_PREFIX + await shorten(value)
        elements.append(
            {
                "type": "button",
                "text": {"type": "plain_text", "text": button_title(button.title), "emoji": True},
                "value": value,
                "action_id": BUTTON_ACTION_ID.format(number),
            }
        )
    actions = [
        {"type": "actions", "elements": elements[start : start + MAX_ACTIONS_PER_BLOCK]}
        for start in range(0, len(elements), MAX_ACTIONS_PER_BLOCK)
    ]
    sections = [
        {"type": "section", "text": {"type": "mrkdwn", "text": chunk}}
        for chunk in section_chunks(reply.text.strip()[:MAX_MESSAGE_TEXT])
    ][: max(0, MAX_BLOCKS - len(actions))]
    blocks = sections + actions[:MAX_BLOCKS]
    fallback = text or escape(" | ".join(button.title for button in reply.buttons))[:MAX_MESSAGE_TEXT]
    return fallback, blocks


# --- delivery: pacing, errors, the calls themselves ---------------------------------------------------------


class ChannelPacer:
    """At most one message per `interval` seconds to each Slack conversation (Slack: ≈1/s per channel)."""

    def __init__(
        self,
        interval: float = 1.0,
        max_keys: int = MAX_REMEMBERED,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self._sleep = sleep
        self._next: OrderedDict[str, float] = OrderedDict()
        self._max = max_keys

    async def wait(self, conversation: str) -> None:
        """Sleep until this conversation may take another message, and book the slot."""
        now = time.monotonic()
        slot = max(now, self._next.pop(conversation, now))
        self._next[conversation] = slot + self.interval
        if len(self._next) > self._max:
            self._next.popitem(last=False)
        if slot > now:
            await self._sleep(slot - now)

    def pause(self, conversation: str, seconds: float) -> None:
        """Slack answered 429: nothing more to this conversation for `seconds`."""
        until = time.monotonic() + seconds
        self._next[conversation] = max(until, self._next.get(conversation, until))


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            if isinstance(value, list | tuple):
                return str(value[0]) if value else None
            return str(value)
    return None


def delivery_error(exc: SlackApiError) -> DeliveryError:
    """A Slack Web API error as the typed error the notifier understands."""
    response = exc.response
    error = str(response.get("error") or "unknown_error")
    if response.status_code == 429 or error == "ratelimited":
        raw = _header(response.headers or {}, "retry-after")
        try:
            retry_after = max(0.0, float(raw)) if raw is not None else 1.0
        except ValueError:
            retry_after = 1.0
        return RateLimited(
            f"Slack rate limit ({error}); retry after {retry_after:g}s", retry_after=retry_after
        )
    if error in UNKNOWN_ERRORS:
        return UnknownRecipient(f"Slack: {error}")
    if error in BLOCKED_ERRORS:
        return RecipientBlocked(f"Slack: {error}")
    return DeliveryError(f"Slack: {error}")


async def _call(pacer: ChannelPacer, conversation: str, call: Awaitable[Any]) -> Any:
    """Run one Web API call, turning Slack and network failures into DeliveryError."""
    try:
        return await call
    except SlackApiError as exc:
        error = delivery_error(exc)
        if isinstance(error, RateLimited) and error.retry_after:
            pacer.pause(conversation, error.retry_after)
        raise error from exc
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryError(f"Slack unreachable: {type(exc).__name__}") from exc


async def deliver(
    client: AsyncWebClient,
    pacer: ChannelPacer,
    conversation: str,
    reply: Reply,
    *,
    thread_ts: str | None = None,
    shorten: Shorten | None = None,
) -> str:
    """Post one Reply to a conversation (text and buttons, then the image as a PNG upload); return its ts."""
    message_id = ""
    if reply.text.strip() or reply.buttons:
        text, blocks = await render(reply, shorten)
        arguments: dict[str, Any] = {
            "channel": conversation,
            "text": text,
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if blocks:
            arguments["blocks"] = blocks
        if thread_ts:
            arguments["thread_ts"] = thread_ts
        await pacer.wait(conversation)
        posted = await _call(pacer, conversation, client.chat_postMessage(**arguments))
        message_id = str(posted.get("ts") or "")
    if reply.image is not None:
        # An image block needs a public URL; a chart only exists as bytes, so it is uploaded instead.
        await pacer.wait(conversation)
        uploaded = await _call(
            pacer,
            conversation,
            client.files_upload_v2(
                channel=conversation,
                content=reply.image,
                filename="chart.png",
                title=reply.image_alt or "chart",
                alt_txt=reply.image_alt or None,
                thread_ts=thread_ts,
            ),
        )
        if not message_id:
            file = uploaded.get("file") or {}
            message_id = str(file.get("id") or "") if isinstance(file, dict) else ""
    return message_id


def api_url(settings: Settings) -> str:
    """The Web API base URL (a local stand-in in tests); slack_sdk wants the trailing slash."""
    url = settings.slack_api_url or DEFAULT_API_URL
    return url if url.endswith("/") else url + "/"


def web_client(settings: Settings, *, retry_rate_limits: bool = False) -> AsyncWebClient:
    """A Web API client; interactive replies wait out one 429, the notifier's sender does not."""
    if settings.slack_bot_token is None or not settings.slack_bot_token.get_secret_value():
        raise ValueError("The Slack channel needs CRMBOT_SLACK_BOT_TOKEN (xoxb-…).")
    handlers: list[Any] = [AsyncConnectionErrorRetryHandler()]
    if retry_rate_limits:
        handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=api_url(settings),
        retry_handlers=handlers,
        logger=log,
    )


class SlackSender:
    """ChannelSender for Slack: a user id (U…/W…) gets a DM; a conversation id (C…/G…/D…) is posted to."""

    channel: str = CHANNEL

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        pacer: ChannelPacer | None = None,
        conversations: ConversationStore | None = None,
    ) -> None:
        self._client = client
        self._pacer = pacer or ChannelPacer()
        self._shorten = conversations.payload_token if conversations is not None else None
        self._dms: OrderedDict[str, str] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings, conversations: ConversationStore | None = None) -> SlackSender:
        """A sender with its own client (no built-in 429 retry: the notifier schedules retries itself)."""
        return cls(web_client(settings), conversations=conversations)

    async def send(self, external_id: str, reply: Reply) -> str:
        """Deliver `reply`; return the message ts (or the file id of an image-only reply)."""
        conversation = await self.conversation_for(external_id)
        try:
            return await deliver(self._client, self._pacer, conversation, reply, shorten=self._shorten)
        except UnknownRecipient:
            self._dms.pop(external_id, None)
            raise

    async def conversation_for(self, external_id: str) -> str:
        """The DM with a user (opened once and remembered), or the conversation id itself."""
        external_id = external_id.strip()
        if not external_id:
            raise UnknownRecipient("Slack: empty recipient")
        if external_id[0] in "CGD":
            return external_id
        if (known := self._dms.get(external_id)) is not None:
            self._dms.move_to_end(external_id)
            return known
        opened = await _call(self._pacer, external_id, self._client.conversations_open(users=external_id))
        channel = opened.get("channel") or {}
        conversation = str(channel.get("id") or "") if isinstance(channel, dict) else ""
        if not conversation:
            raise DeliveryError("Slack: conversations.open returned no channel")
        self._dms[external_id] = conversation
        if len(self._dms) > MAX_REMEMBERED:
            self._dms.popitem(last=False)
        return conversation


# --- the Bolt app -----------------------------------------------------------------------------------------


class _TrackedLazyRunner(AsyncLazyListenerRunner):
    """Bolt's lazy-listener runner, but keeping each task so the channel can await or cancel pending work.

    Bolt starts lazy listeners before it returns the acknowledgement, so once a request has been
    answered its work is already in `tasks` (what makes SlackChannel.drain deterministic).
    """

    def __init__(self, logger: logging.Logger, tasks: set[asyncio.Task[None]]) -> None:
        self.logger = logger
        self._tasks = tasks

    def start(self, function: Callable[..., Awaitable[None]], request: AsyncBoltRequest) -> None:
        """Run the lazy listener as a tracked task (argument injection as in Bolt's own asyncio runner)."""
        job = to_runnable_function(internal_func=function, logger=self.logger, request=request)
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self.logger.error("Slack lazy listener crashed", exc_info=error)


class SlackChannel:
    """The Slack side of the assistant: a Bolt app whose listeners ack first and translate afterwards."""

    def __init__(
        self,
        assistant: Assistant,
        core: Core,
        settings: Settings,
        *,
        command: str = COMMAND,
        per_channel_interval: float = 1.0,
        max_concurrency: int = 32,
    ) -> None:
        self._assistant = assistant
        self._core = core
        self._settings = settings
        self._signing_secret = (
            settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
        )
        self._pacer = ChannelPacer(per_channel_interval)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._unmatched: OrderedDict[str, float] = OrderedDict()
        self._stopping = asyncio.Event()
        self.app = AsyncApp(
            name="crmbot",
            logger=log,
            client=web_client(settings, retry_rate_limits=True),
            signing_secret=self._signing_secret,
            process_before_response=False,
        )
        self.app.listener_runner.lazy_listener_runner = _TrackedLazyRunner(log, self._tasks)
        self._register(command)

    def _register(self, command: str) -> None:
        app = self.app
        # The first listener that matches handles an event: person-written DMs are answered; every other
        # message event (channel chatter, edits, deletions, bot posts, file shares) is acked and ignored.
        app.event("message", matchers=[self._is_person_dm])(ack=self._ack, lazy=[self._on_direct_message])
        app.event("message")(self._ack)
        app.event("app_mention")(ack=self._ack, lazy=[self._on_mention])
        app.command(command)(ack=self._ack, lazy=[self._on_command])
        app.action(BUTTON_ACTION)(ack=self._ack, lazy=[self._on_button])

    # --- composition-root API ------------------------------------------------------------------------

    def events_router(self) -> APIRouter:
        """`POST /slack/events`: Events API, slash commands and interactivity in HTTP mode."""
        if not self._signing_secret:
            raise ValueError("POST /slack/events needs CRMBOT_SLACK_SIGNING_SECRET to check signatures.")
        handler = AsyncSlackRequestHandler(self.app)
        router = APIRouter(tags=["channels"])

        @router.post("/slack/events", summary="Slack Events API, slash commands and interactivity")
        async def slack_events(request: Request) -> Response:
            """Bolt checks the signature and the 5-minute window and acks; the work runs afterwards."""
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_EVENT_BODY:
                return _error(413, "too_large", "Slack request body is too large.")
            response = await handler.handle(request)
            if response.status_code == 401:
                return _error(401, "invalid_signature", "Invalid Slack signature or stale timestamp.")
            return response

        return router

    async def run_socket_mode(self) -> None:
        """Receive events over Socket Mode (CRMBOT_SLACK_APP_TOKEN) until close() is called."""
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        token = self._settings.slack_app_token
        if token is None or not token.get_secret_value():
            raise ValueError("Socket Mode needs CRMBOT_SLACK_APP_TOKEN (xapp-…).")
        handler = AsyncSocketModeHandler(self.app, token.get_secret_value(), logger=log)
        await handler.connect_async()  # type: ignore[no-untyped-call]
        log.info("Slack Socket Mode connected")
        try:
            await self._stopping.wait()
        finally:
            await handler.close_async()  # type: ignore[no-untyped-call]

    def sender(self) -> SlackSender:
        """A ChannelSender for the notifier, sharing this channel's per-conversation pacing."""
        return SlackSender(
            web_client(self._settings), pacer=self._pacer, conversations=self._core.conversations
        )

    @property
    def pending(self) -> int:
        """How many acknowledged requests are still being worked on."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait until every acknowledged request has been answered (tests; graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, grace: float = 10.0) -> None:
        """Stop Socket Mode, give pending work `grace` seconds, then cancel what is left."""
        self._stopping.set()
        try:
            await asyncio.wait_for(self.drain(), grace)
        except TimeoutError:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- listeners: ack first (Bolt runs the lazy part as a tracked task) -------------------------------

    async def _ack(self, ack: AsyncAck) -> None:
        # Slack needs the acknowledgement within 3 s; an empty one shows nothing to the person.
        await ack()

    async def _is_person_dm(self, event: dict[str, Any]) -> bool:
        return (
            event.get("channel_type") == "im"
            and not event.get("subtype")
            and not event.get("bot_id")
            and "edited" not in event
            and bool(event.get("user"))
        )

    async def _on_direct_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        await self._work("direct message", self._direct_message(body, event))

    async def _on_mention(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        await self._work("mention", self._mention(body, event, context.bot_user_id))

    async def _on_command(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        await self._work("slash command", self._command(body, respond))

    async def _on_button(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        await self._work("button", self._button(body, respond))

    async def _work(self, kind: str, job: Coroutine[Any, Any, None]) -> None:
        """Run one request's work with bounded concurrency; log failures (nobody is waiting for them)."""
        async with self._slots:
            try:
                await job
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Slack %s failed", kind)

    # --- translation ---------------------------------------------------------------------------------------

    async def _direct_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        channel, user = str(event["channel"]), str(event["user"])
        thread_ts = event.get("thread_ts")
        message = IncomingMessage(
            channel=CHANNEL,
            sender_id=user,
            chat_id=channel,
            message_id=_event_id(body, event),
            text=plain_text(str(event.get("text") or "")),
            received_at=_timestamp(event.get("ts")),
            metadata=_metadata(body, kind="dm", thread_ts=thread_ts),
        )
        for reply in await self._answer(message, body.get("team_id")):
            await self._post(channel, reply, thread_ts=thread_ts)

    async def _mention(self, body: dict[str, Any], event: dict[str, Any], bot_user_id: str | None) -> None:
        channel, user = str(event.get("channel") or ""), str(event.get("user") or "")
        # A DM reaches us as message.im already; answering its mention too would answer twice.
        if not channel or not user or channel.startswith("D") or event.get("bot_id"):
            return
        thread_ts = str(event.get("thread_ts") or event.get("ts") or "") or None
        message = IncomingMessage(
            channel=CHANNEL,
            sender_id=user,
            chat_id=channel,
            message_id=_event_id(body, event),
            text=plain_text(strip_mention(str(event.get("text") or ""), bot_user_id)),
            received_at=_timestamp(event.get("ts")),
            metadata=_metadata(body, kind="mention", thread_ts=thread_ts),
        )
        for reply in await self._answer(message, body.get("team_id")):
            await self._post(channel, reply, thread_ts=thread_ts)

    async def _command(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        user = str(body["user_id"])
        text = plain_text(str(body.get("text") or "")).strip()
        message = IncomingMessage(
            channel=CHANNEL,
            sender_id=user,
            chat_id=str(body.get("channel_id") or user),
            message_id=f"command:{body['trigger_id']}" if body.get("trigger_id") else None,
            # A bare "/crm" asks for its usage: the help intent's button payload.
            text=text or "/help",
            metadata=_metadata(body, kind="command"),
        )
        for reply in await self._answer(message, body.get("team_id")):
            await self._respond_privately(respond, user, reply)

    async def _button(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        action = (body.get("actions") or [{}])[0]
        user = str((body.get("user") or {}).get("id") or "")
        container = body.get("container") or {}
        channel = str((body.get("channel") or {}).get("id") or container.get("channel_id") or "")
        if not user:
            return
        ephemeral = bool(container.get("is_ephemeral"))
        original = body.get("message") or {}
        thread_ts = original.get("thread_ts")
        if not ephemeral and original:
            await self._show_choice(respond, original, action)
        value = str(action.get("value") or "")
        if value.startswith(TOKEN_PREFIX):
            value = await self._core.conversations.payload_for(value[len(TOKEN_PREFIX) :]) or ""
            if not value:
                return  # an old or unknown token: nothing to select
        trigger = body.get("trigger_id") or f"{container.get('message_ts')}:{action.get('action_ts')}"
        message = IncomingMessage(
            channel=CHANNEL,
            sender_id=user,
            chat_id=channel or user,
            message_id=f"action:{trigger}",
            text=value,
            metadata=_metadata(body, kind="button", thread_ts=thread_ts),
        )
        for reply in await self._answer(message, (body.get("team") or {}).get("id")):
            if ephemeral or not channel:
                await self._respond_privately(respond, user, reply)
            else:
                await self._post(channel, reply, thread_ts=thread_ts)

    async def _show_choice(
        self, respond: AsyncRespond, original: dict[str, Any], action: dict[str, Any]
    ) -> None:
        """Replace the clicked message's buttons by the choice made (no second click on a stale choice)."""
        title = str((action.get("text") or {}).get("text") or "")
        blocks = [block for block in original.get("blocks") or [] if block.get("type") != "actions"]
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"→ {escape(title)}"}]})
        try:
            await respond(text=str(original.get("text") or title), blocks=blocks, replace_original=True)
        except Exception as exc:  # cosmetic only: the click is still handled
            log.warning("could not update the clicked Slack message: %s", exc)

    # --- replies ---------------------------------------------------------------------------------------

    async def _answer(self, message: IncomingMessage, team_id: Any) -> list[Reply]:
        await self._link_staff_by_email(message.sender_id, str(team_id or ""))
        return await self._assistant.handle(message)

    async def _post(self, conversation: str, reply: Reply, *, thread_ts: str | None = None) -> None:
        try:
            await deliver(
                self.app.client,
                self._pacer,
                conversation,
                reply,
                thread_ts=thread_ts,
                shorten=self._core.conversations.payload_token,
            )
        except DeliveryError as exc:
            log.warning("Slack reply to %s not delivered: %s", conversation, exc)

    async def _respond_privately(self, respond: AsyncRespond, user: str, reply: Reply) -> None:
        """Answer a slash command or an ephemeral button only to the person (CRM data is not for the channel).

        Images cannot travel through response_url, and response_url expires: both go to the person's DM.
        """
        if reply.text.strip() or reply.buttons:
            text, blocks = await render(reply, self._core.conversations.payload_token)
            try:
                result = await respond(text=text, blocks=blocks, response_type="ephemeral")
                delivered = result.status_code == 200
            except Exception as exc:
                log.warning("Slack response_url failed (%s); answering in the DM", exc)
                delivered = False
            if not delivered:
                await self._post_to_user(user, Reply(text=reply.text, buttons=reply.buttons))
        if reply.image is not None:
            await self._post_to_user(user, Reply(text="", image=reply.image, image_alt=reply.image_alt))

    async def _post_to_user(self, user: str, reply: Reply) -> None:
        try:
            opened = await _call(self._pacer, user, self.app.client.conversations_open(users=user))
        except DeliveryError as exc:
            log.warning("could not open a Slack DM with %s: %s", user, exc)
            return
        await self._post(str((opened.get("channel") or {}).get("id") or user), reply)

    # --- identity ------------------------------------------------------------------------------------------

    async def _link_staff_by_email(self, user: str, team_id: str) -> None:
        """Link an unlinked Slack account to the one active staff user with its workspace email.

        Only staff: a staff member's Slack account lives in the company's own workspace, whose admins
        manage its email addresses. A customer's email on a Slack profile proves nothing to us (a guest or
        a Slack Connect user from another organisation edits their own profile), and a customer link
        opens that company's records; customers link through the one-time-code flow instead.
        """
        if await self._core.org.actor_for_identity(CHANNEL, user) is not None:
            return
        now = time.monotonic()
        if self._unmatched.get(user, 0.0) > now:
            return
        self._unmatched.pop(user, None)
        username = await self._staff_for_slack_user(user, team_id)
        if username is None:
            self._unmatched[user] = now + UNMATCHED_TTL
            if len(self._unmatched) > MAX_REMEMBERED:
                self._unmatched.popitem(last=False)
            return
        try:
            await self._core.org.link_identity(SYSTEM, username, f"{CHANNEL}:{user}")
            log.info("linked %s:%s to %s by workspace email", CHANNEL, user, username)
        except Exception as exc:  # e.g. a concurrent message linked it first
            log.warning("could not link %s:%s to %s: %s", CHANNEL, user, username, exc)

    async def _staff_for_slack_user(self, user: str, team_id: str) -> str | None:
        try:
            info = await self.app.client.users_info(user=user)
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("users.info for %s failed: %s", user, exc)
            return None
        profile_user = info.get("user") or {}
        if not isinstance(profile_user, dict):
            return None
        if (
            profile_user.get("is_bot")
            or profile_user.get("deleted")
            or profile_user.get("is_restricted")  # guests
            or profile_user.get("is_ultra_restricted")
            or profile_user.get("is_stranger")
            or profile_user.get("is_email_confirmed") is False
            or (team_id and profile_user.get("team_id") and profile_user.get("team_id") != team_id)
        ):
            return None
        email = str((profile_user.get("profile") or {}).get("email") or "").strip().lower()
        if not email:
            return None
        return await self._active_staff_with_email(email)

    async def _active_staff_with_email(self, email: str) -> str | None:
        """The username of the only active staff user with this email, or None (none or ambiguous)."""
        active = await self._core.org.active_staff_usernames_by_email(email)
        return active[0] if len(active) == 1 else None


# --- small helpers -----------------------------------------------------------------------------------------


def _is_staff(role: str) -> bool:
    try:
        return Role(role) in STAFF_ROLES
    except ValueError:
        return False


def _event_id(body: dict[str, Any], event: dict[str, Any]) -> str:
    """Slack's event_id (the same on every retry); a channel+ts pair if it is ever missing."""
    return str(body.get("event_id") or f"{event.get('channel')}:{event.get('ts')}")


def _timestamp(ts: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(ts), UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def _metadata(body: dict[str, Any], *, kind: str, thread_ts: Any = None) -> dict[str, str]:
    team = body.get("team_id") or (body.get("team") or {}).get("id") or ""
    metadata = {"kind": kind, "team_id": str(team)}
    if thread_ts:
        metadata["thread_ts"] = str(thread_ts)
    return metadata


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
