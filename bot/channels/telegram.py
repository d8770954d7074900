"""Telegram channel (aiogram 3): updates → IncomingMessage, Reply → Bot API calls; polling or webhook."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNotFound,
    TelegramRetryAfter,
)
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.methods import AnswerCallbackQuery, SendMessage, SendPhoto, TelegramMethod
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from bot.channels.base import DeliveryError, RateLimited, RecipientBlocked, UnknownRecipient
from bot.messages import Attachment, IncomingMessage, Reply
from core.container import Core
from core.settings import Settings

log = logging.getLogger("crmbot.telegram")

CHANNEL = "telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
WEBHOOK_PATH = "/telegram/webhook"
MAX_TEXT = 4096  # sendMessage.text
MAX_CAPTION = 1024  # sendPhoto.caption
MAX_BUTTONS = 100  # inline keyboard buttons per message
MAX_BUTTON_TITLE = 64
MAX_CALLBACK_DATA = 64  # bytes, not characters
MAX_DOWNLOAD = 10 * 1024 * 1024
MAX_WEBHOOK_BODY = 1024 * 1024
MAX_RETRY_WAIT = 30.0  # a longer flood wait is handed back to the caller instead of blocking a handler
WEBHOOK_ANSWER_WITHIN = 20.0  # Telegram resends after ~60 s without an answer; stay well below that
PAYLOAD_PREFIX = "p:"
SECRET_CHARS = re.compile(r"[A-Za-z0-9_-]{1,256}")
NUMERIC_ID = re.compile(r"-?\d{1,20}")

COMMANDS = {
    "en": (
        ("start", "Start, or link your account"),
        ("help", "What can you do?"),
        ("cancel", "Cancel the current task"),
    ),
    "zh": (("start", "开始或绑定账号"), ("help", "你能做什么？"), ("cancel", "取消当前操作")),
}
# The few sentences the channel itself says (no CRM meaning, so not in the dialogue's catalogs).
TEXTS = {
    "en": {
        "expired": "That button has expired. Please ask again.",
        "too_big": "That file is too large (over 10 MB). Please send a smaller photo or document.",
        "download_failed": "I could not fetch that file from Telegram. Please try again.",
        "unsupported": "I can read text, photos and documents.",
    },
    "zh": {
        "expired": "该按钮已失效，请重新提问。",
        "too_big": "文件太大（超过 10 MB），请发送更小的照片或文档。",
        "download_failed": "无法从 Telegram 获取该文件，请重试。",
        "unsupported": "我可以读取文字、照片和文档。",
    },
}

T = TypeVar("T")


class ChatAssistant(Protocol):
    """What the channel needs from the bot pipeline (bot.assistant.Assistant fits)."""

    async def handle(self, message: IncomingMessage) -> list[Reply]:
        """Answer one incoming message."""
        ...


class PayloadStore(Protocol):
    """Short tokens for long button payloads (core.services.conversations.ConversationStore)."""

    async def payload_token(self, payload: str) -> str:
        """A short token standing for `payload`."""
        ...

    async def payload_for(self, token: str) -> str | None:
        """The payload behind a token, or None."""
        ...


def build_bot(settings: Settings) -> Bot:
    """An aiogram Bot for the configured token, pointed at a self-hosted Bot API server when one is set."""
    if settings.telegram_token is None or not settings.telegram_token.get_secret_value().strip():
        raise ValueError("The Telegram channel needs CRMBOT_TELEGRAM_TOKEN.")
    session = (
        AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
        if settings.telegram_api_url
        else AiohttpSession()
    )
    # No default parse_mode: every text goes out as plain text, so whatever a person or a CRM record
    # contains (*, _, <, &) can never break Markdown/HTML parsing or inject formatting.
    return Bot(
        settings.telegram_token.get_secret_value().strip(),
        session=session,
        default=DefaultBotProperties(parse_mode=None),
    )


def text_length(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units): never less than the number of characters."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Cut a long text into messages of at most `limit`, on line breaks where possible, then spaces."""
    if text_length(text) <= limit:
        return [text]
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        candidate = f"{current}\n{line}" if current else line
        if text_length(candidate) <= limit:
            current = candidate
            continue
        if current:
            pieces.append(current)
        while text_length(line) > limit:
            head = _cut(line, limit)
            pieces.append(head.rstrip())
            line = line[len(head) :].lstrip(" ")
        current = line
    if current:
        pieces.append(current)
    return [piece for piece in pieces if piece.strip()]


def _cut(line: str, limit: int) -> str:
    """The longest head of `line` within `limit`, ending at a space when there is one."""
    end = len(line)
    while text_length(line[:end]) > limit:
        end -= max(1, (text_length(line[:end]) - limit) // 2)
    space = line.rfind(" ", 0, end)
    return line[: space + 1] if space > end // 2 else line[:end]


def button_title(title: str) -> str:
    """A button label within Telegram's comfortable size (never empty)."""
    title = " ".join(title.split()) or "•"
    return title if len(title) <= MAX_BUTTON_TITLE else title[: MAX_BUTTON_TITLE - 1] + "…"


def chat_ref(external_id: str) -> int | str:
    """A chat id as the Bot API wants it: numeric ids as int, '@channelname' as it is."""
    value = external_id.strip()
    return int(value) if NUMERIC_ID.fullmatch(value) else value


def lang_of(user: User | None) -> str:
    """The language for the channel's own sentences, from the Telegram client's language."""
    code = (user.language_code or "") if user is not None else ""
    return "zh" if code.lower().startswith("zh") else "en"


def delivery_error(error: TelegramAPIError) -> DeliveryError:
    """Telegram's error → the channel-neutral delivery error the notifier understands."""
    description = error.message
    lowered = description.lower()
    if isinstance(error, TelegramRetryAfter):
        return RateLimited(description, retry_after=float(error.retry_after))
    if isinstance(error, TelegramForbiddenError):
        # "bot was blocked by the user", "user is deactivated", "bot was kicked from the group chat"
        return RecipientBlocked(description)
    if isinstance(error, TelegramMigrateToChat):
        return UnknownRecipient(f"{description} (the group is now chat {error.migrate_to_chat_id})")
    if isinstance(error, TelegramNotFound) or (
        isinstance(error, TelegramBadRequest)
        and any(words in lowered for words in ("chat not found", "user not found", "peer_id_invalid"))
    ):
        return UnknownRecipient(description)
    failure = DeliveryError(description)
    if isinstance(error, TelegramBadRequest):
        failure.permanent = True  # the same request will be refused again
    return failure


class TokenBucket:
    """`rate` tokens a second, up to `burst`; a taker may borrow ahead and is told how long to wait."""

    def __init__(self, rate: float, burst: float, now: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self._now = now
        self._tokens = burst
        self._updated = now()

    def reserve(self) -> float:
        """Take one token; the seconds to wait before using it (0 when one was there)."""
        moment = self._now()
        self._tokens = min(self.burst, self._tokens + (moment - self._updated) * self.rate)
        self._updated = moment
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def idle(self) -> bool:
        """Full again: forgetting this bucket changes nothing."""
        return self._tokens + (self._now() - self._updated) * self.rate >= self.burst


class Pacer:
    """Keeps sends under Telegram's limits: ~30/s overall, ~1/s per chat (20/min per group)."""

    def __init__(
        self,
        *,
        global_rate: float = 30.0,
        chat_rate: float = 1.0,
        group_rate: float = 20 / 60,
        chat_burst: float = 3.0,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_chats: int = 10_000,
    ) -> None:
        self._now = now
        self._sleep = sleep
        self._global = TokenBucket(global_rate, global_rate, now)
        self._chat_rate = chat_rate
        self._group_rate = group_rate
        self._chat_burst = chat_burst
        self._chats: OrderedDict[str, TokenBucket] = OrderedDict()
        self._max_chats = max_chats

    async def wait(self, chat: int | str) -> None:
        """Return when one more message to `chat` is within the limits."""
        delay = self._bucket(str(chat)).reserve()
        if delay > 0:
            await self._sleep(delay)
        # The global bucket is taken only after the chat's wait, so a slow chat does not hold others' share.
        delay = self._global.reserve()
        if delay > 0:
            await self._sleep(delay)

    def _bucket(self, chat: str) -> TokenBucket:
        bucket = self._chats.pop(chat, None)
        if bucket is None:
            group = chat.startswith("-") or chat.startswith("@")
            bucket = TokenBucket(self._group_rate if group else self._chat_rate, self._chat_burst, self._now)
        self._chats[chat] = bucket
        while len(self._chats) > self._max_chats:
            oldest, old = next(iter(self._chats.items()))
            if not old.idle():
                break
            del self._chats[oldest]
        return bucket


class TelegramSender:
    """Sends Replies to Telegram chats (the notifier's ChannelSender), paced and with typed errors."""

    channel = CHANNEL

    def __init__(
        self,
        bot: Bot,
        payloads: PayloadStore,
        *,
        pacer: Pacer | None = None,
        max_retry_wait: float = MAX_RETRY_WAIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.bot = bot
        self._payloads = payloads
        self._pacer = pacer or Pacer()
        self._max_retry_wait = max_retry_wait
        self._sleep = sleep

    async def send(self, external_id: str, reply: Reply) -> str:
        """Deliver `reply` to the chat `external_id`; the id of the last message sent ("" if nothing)."""
        try:
            message_id = await self.render(chat_ref(external_id), reply)
        except TelegramAPIError as error:
            raise delivery_error(error) from error
        return "" if message_id is None else str(message_id)

    async def render(self, chat: int | str, reply: Reply) -> int | None:
        """Reply → sendPhoto/sendMessage calls; buttons ride on the last message. Raises aiogram errors."""
        keyboard = await self.keyboard(reply)
        text = reply.text.strip()
        last: int | None = None
        if reply.image is not None:
            caption_fits = text_length(text) <= MAX_CAPTION
            photo = SendPhoto(
                chat_id=chat,
                photo=BufferedInputFile(reply.image, filename="chart.png"),
                caption=(text or reply.image_alt or None)
                if caption_fits
                else (reply.image_alt[:MAX_CAPTION] or None),
                reply_markup=keyboard if caption_fits else None,
            )
            last = (await self.call(chat, photo)).message_id
            if caption_fits:
                return last
        elif not text and keyboard is None:
            return None
        chunks = split_text(text) if text else ["…"]
        for index, chunk in enumerate(chunks):
            markup = keyboard if index == len(chunks) - 1 else None
            last = (
                await self.call(chat, SendMessage(chat_id=chat, text=chunk, reply_markup=markup))
            ).message_id
        return last

    async def keyboard(self, reply: Reply) -> InlineKeyboardMarkup | None:
        """One button per row; callback_data carries a short token for the payload, never the label."""
        if not reply.buttons:
            return None
        if len(reply.buttons) > MAX_BUTTONS:
            log.warning("reply has %d buttons; Telegram shows at most %d", len(reply.buttons), MAX_BUTTONS)
        rows: list[list[InlineKeyboardButton]] = []
        for button in reply.buttons[:MAX_BUTTONS]:
            data = PAYLOAD_PREFIX + await self._payloads.payload_token(button.payload)
            if len(data.encode("utf-8")) > MAX_CALLBACK_DATA:
                raise ValueError(f"callback_data over {MAX_CALLBACK_DATA} bytes: {data!r}")
            rows.append([InlineKeyboardButton(text=button_title(button.title), callback_data=data)])
        return InlineKeyboardMarkup(inline_keyboard=rows)

    async def call(self, chat: int | str, method: TelegramMethod[T]) -> T:
        """One paced API call; a 429 is honoured by waiting `retry_after` and trying once more."""
        await self._pacer.wait(chat)
        try:
            return await self.bot(method)
        except TelegramRetryAfter as error:
            if error.retry_after > self._max_retry_wait:
                raise
            log.warning("Telegram asked to wait %s s before %s", error.retry_after, method.__api_method__)
            await self._sleep(float(error.retry_after))
            return await self.bot(method)


class TelegramChannel:
    """The Telegram adapter: one chat Router on a Dispatcher, fed by long polling or the webhook."""

    def __init__(
        self,
        assistant: ChatAssistant,
        core: Core,
        bot: Bot,
        *,
        pacer: Pacer | None = None,
        max_download: int = MAX_DOWNLOAD,
        polling_timeout: int = 25,
        max_retry_wait: float = MAX_RETRY_WAIT,
    ) -> None:
        self.assistant = assistant
        self.bot = bot
        self.payloads: PayloadStore = core.conversations
        self.sender = TelegramSender(bot, self.payloads, pacer=pacer, max_retry_wait=max_retry_wait)
        self.max_download = max_download
        self._polling_timeout = polling_timeout
        # Handlers get these by parameter name (aiogram's DI): `telegram`, `assistant`.
        self.dispatcher = Dispatcher(telegram=self, assistant=assistant)
        self.dispatcher.include_router(chat_router())
        self._chat_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._in_flight: set[asyncio.Task[object]] = set()
        self._polling: asyncio.Task[None] | None = None
        self._stop_requested = False

    @property
    def allowed_updates(self) -> list[str]:
        """The update types the chat router handles (message, callback_query)."""
        return self.dispatcher.resolve_used_update_types()

    async def setup_commands(self) -> None:
        """Register /start, /help, /cancel in the Telegram menu, in English and Chinese."""
        for lang, commands in COMMANDS.items():
            try:
                await self.bot.set_my_commands(
                    [BotCommand(command=name, description=text) for name, text in commands],
                    language_code=None if lang == "en" else lang,
                )
            except TelegramAPIError as error:
                log.warning("setMyCommands (%s) failed: %s", lang, error)

    def start_polling(self) -> asyncio.Task[None]:
        """run_polling() in a background task that stop() can end even before it has begun."""
        self._stop_requested = False
        self._polling = asyncio.create_task(self.run_polling(), name="telegram-polling")
        return self._polling

    async def run_polling(self) -> None:
        """Long-poll getUpdates until stop(); removes any webhook first (Telegram allows only one)."""
        current = asyncio.current_task()
        if self._polling is not current:  # awaited directly rather than through start_polling()
            self._polling = current
            self._stop_requested = False
        try:
            if self._stop_requested:
                return
            try:
                await self.bot.delete_webhook(drop_pending_updates=False)
            except TelegramAPIError as error:
                # Not fatal: aiogram's polling loop retries with backoff until Telegram is reachable.
                log.warning("deleteWebhook failed before polling: %s", error)
            if not self._stop_requested:
                await self.setup_commands()
            if self._stop_requested:
                return  # stop() came before polling began
            # No await between the check above and start_polling taking its lock: stop() sees either.
            await self.dispatcher.start_polling(
                self.bot,
                polling_timeout=self._polling_timeout,
                handle_signals=False,  # the composition root owns signals and calls stop()
                close_bot_session=False,  # the notifier keeps sending through the same session
                allowed_updates=self.allowed_updates,
            )
        finally:
            self._polling = None

    async def stop(self, grace: float = 10.0) -> None:
        """Stop polling (if running) and let conversations in progress finish, up to `grace` seconds."""
        polling = self._polling
        if polling is not None and polling is not asyncio.current_task():
            self._stop_requested = True
            try:
                await asyncio.wait_for(self.dispatcher.stop_polling(), grace)
            except RuntimeError:
                pass  # not inside start_polling yet: run_polling returns at its next check
            except TimeoutError:
                log.warning("polling did not stop within %s s", grace)
            _done, stuck = await asyncio.wait({polling}, timeout=grace)
            for task in stuck:
                task.cancel()
        current = asyncio.current_task()
        pending = {task for task in self._in_flight if not task.done() and task is not current}
        if pending:
            await asyncio.wait(pending, timeout=grace)

    async def close(self) -> None:
        """Stop and close the HTTP session (the sender is unusable afterwards)."""
        await self.stop()
        await self.bot.session.close()

    def webhook_secret(self, configured: str | None) -> str:
        """The secret Telegram must echo: the configured one, else one derived from the bot token."""
        if configured:
            if not SECRET_CHARS.fullmatch(configured):
                raise ValueError(
                    "CRMBOT_TELEGRAM_WEBHOOK_SECRET must be 1–256 characters of A-Z a-z 0-9 _ -."
                )
            return configured
        # No secret configured is never "no check": derive a stable one only the token holder knows.
        return hashlib.blake2b(self.bot.token.encode(), person=b"crmbot-tg-hook", digest_size=24).hexdigest()

    async def register_webhook(self, url: str, secret: str | None) -> None:
        """Point Telegram at our webhook (same secret as webhook_router) and register the commands."""
        await self.bot.set_webhook(
            url=url,
            secret_token=self.webhook_secret(secret),
            allowed_updates=self.allowed_updates,
            drop_pending_updates=False,
        )
        await self.setup_commands()

    def webhook_router(self, secret: str | None) -> APIRouter:
        """`POST /telegram/webhook`: checks the secret header, then feeds the update to the Dispatcher."""
        expected = self.webhook_secret(secret).encode()
        router = APIRouter(tags=["channels"])

        @router.post(WEBHOOK_PATH, include_in_schema=False)
        async def telegram_webhook(request: Request) -> JSONResponse:
            """Handle one update Telegram pushes to us."""
            given = request.headers.get(SECRET_HEADER, "").encode()
            if not hmac.compare_digest(given, expected):
                return _error(401, "unauthorized", f"Missing or wrong {SECRET_HEADER} header.")
            length = request.headers.get("content-length", "0")
            if not length.isdigit() or int(length) > MAX_WEBHOOK_BODY:
                return _error(413, "payload_too_large", "An update is never that large.")
            try:
                update = Update.model_validate(await request.json(), context={"bot": self.bot})
            except (ValueError, ValidationError):
                return _error(400, "bad_request", "The body is not a Telegram update.")
            # Usually done within milliseconds; a slow turn is moved to the background by aiogram after
            # WEBHOOK_ANSWER_WITHIN seconds so Telegram is answered before it resends the update.
            await self.dispatcher.feed_webhook_update(self.bot, update, _timeout=WEBHOOK_ANSWER_WITHIN)
            return JSONResponse({"ok": True})

        return router

    async def converse(
        self,
        *,
        update: Update,
        user: User,
        chat_id: int,
        text: str,
        received: Message | None = None,
        attachments: Sequence[Attachment] = (),
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Hand one message to the assistant and send its replies back to the chat."""
        incoming = IncomingMessage(
            channel=CHANNEL,
            sender_id=str(user.id),
            chat_id=str(chat_id),
            # update_id is what Telegram redelivers: the pipeline drops a second delivery of it.
            message_id=str(update.update_id),
            received_at=received.date if received is not None else None,
            text=text,
            attachments=tuple(attachments),
            metadata=metadata or {},
        )
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            # One turn at a time per chat, so two quick messages cannot race on the conversation state.
            lock = self._chat_locks.setdefault(str(chat_id), asyncio.Lock())
            async with lock:
                replies = await self.assistant.handle(incoming)
                await self.deliver(chat_id, replies)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def deliver(self, chat_id: int, replies: Sequence[Reply]) -> None:
        """Send replies in order; a failure is logged (the person's message was already handled)."""
        for reply in replies:
            try:
                await self.sender.render(chat_id, reply)
            except TelegramAPIError as error:
                failure = delivery_error(error)
                level = logging.INFO if failure.permanent else logging.WARNING
                log.log(level, "reply to chat %s not delivered: %s", chat_id, failure)
                if failure.permanent:
                    return

    async def say(self, chat_id: int, user: User | None, key: str) -> None:
        """One of the channel's own short sentences, in the person's Telegram language."""
        await self.deliver(chat_id, [Reply(text=TEXTS[lang_of(user)][key])])

    async def answer_button(self, query: CallbackQuery, text: str | None) -> None:
        """Stop the button's spinner (optionally with a short notice); a stale query is not an error."""
        try:
            # Not a chat message: it does not count against the chat's pacing.
            await self.bot(AnswerCallbackQuery(callback_query_id=query.id, text=text))
        except TelegramAPIError as error:
            log.info("answerCallbackQuery failed: %s", error)

    async def fetch(self, file_id: str, size_hint: int | None) -> bytes | None:
        """Download a file, or None when it is over the size cap (checked before and while reading)."""
        if size_hint is not None and size_hint > self.max_download:
            return None
        file = await self.bot.get_file(file_id)
        if (file.file_size or 0) > self.max_download:
            return None
        if not file.file_path:
            raise ValueError("getFile returned no file_path")
        api = self.bot.session.api
        if api.is_local:
            # A local-mode Bot API server hands out paths on its own disk instead of download URLs.
            local = Path(api.wrap_local_file.to_local(file.file_path))
            return await asyncio.to_thread(_read_capped, local, self.max_download)
        data = bytearray()
        async for chunk in self.bot.session.stream_content(
            api.file_url(self.bot.token, file.file_path), timeout=60
        ):
            data += chunk
            if len(data) > self.max_download:
                return None
        return bytes(data)


def _read_capped(path: Path, cap: int) -> bytes | None:
    """A local file's bytes, or None when it is over `cap`."""
    return None if path.stat().st_size > cap else path.read_bytes()


def _error(status: int, code: str, message: str) -> JSONResponse:
    """The app's JSON error shape ({"error": {"code", "message"}}), without touching the Bot API."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


# --- the chat feature's Router: handlers translate only --------------------------------------------


def chat_router() -> Router:
    """Messages, commands, files and button presses of the chat feature (a new Router per Dispatcher)."""
    router = Router(name="chat")
    router.message.register(on_start, CommandStart())
    router.message.register(on_help, Command("help"))
    router.message.register(on_cancel, Command("cancel"))
    router.message.register(on_text, F.text)
    router.message.register(on_file, F.photo | F.document)
    router.message.register(on_other)
    router.callback_query.register(on_button)
    return router


async def on_start(
    message: Message, command: CommandObject, event_update: Update, telegram: TelegramChannel
) -> None:
    """/start [payload]: a greeting; a deep-link payload travels in metadata["start"]."""
    if message.from_user is None:
        return
    payload = (command.args or "").strip()
    # Rasa-style payloads ("/greet") give the dialogue a certain intent without asking the NLU and keep
    # the conversation's language (a bare English word like "help" would switch a Chinese chat to English).
    await telegram.converse(
        update=event_update,
        user=message.from_user,
        chat_id=message.chat.id,
        text="/greet",
        received=message,
        metadata={"start": payload[:512]} if payload else None,
    )


async def on_help(message: Message, event_update: Update, telegram: TelegramChannel) -> None:
    """/help: the help intent."""
    if message.from_user is not None:
        await telegram.converse(
            update=event_update,
            user=message.from_user,
            chat_id=message.chat.id,
            text="/help",
            received=message,
        )


async def on_cancel(message: Message, event_update: Update, telegram: TelegramChannel) -> None:
    """/cancel: the cancel intent."""
    if message.from_user is not None:
        await telegram.converse(
            update=event_update,
            user=message.from_user,
            chat_id=message.chat.id,
            text="/cancel",
            received=message,
        )


async def on_text(message: Message, event_update: Update, telegram: TelegramChannel) -> None:
    """A text message, as typed."""
    if message.from_user is not None:
        await telegram.converse(
            update=event_update,
            user=message.from_user,
            chat_id=message.chat.id,
            text=message.text or "",
            received=message,
        )


async def on_file(message: Message, event_update: Update, telegram: TelegramChannel) -> None:
    """A photo (largest size) or document, fetched into an Attachment; the caption is the text."""
    user = message.from_user
    if user is None:
        return
    if message.photo:
        largest = max(message.photo, key=lambda size: (size.width * size.height, size.file_size or 0))
        file_id, size = largest.file_id, largest.file_size
        kind, filename, content_type = "photo", f"photo-{largest.file_unique_id}.jpg", "image/jpeg"
    elif message.document is not None:
        document = message.document
        file_id, size = document.file_id, document.file_size
        kind = "document"
        filename = document.file_name or f"document-{document.file_unique_id}"
        content_type = document.mime_type or "application/octet-stream"
    else:  # pragma: no cover - the filter admits only photos and documents
        return
    try:
        data = await telegram.fetch(file_id, size)
    except (TelegramAPIError, OSError, ValueError) as error:
        log.warning("could not download %s from chat %s: %s", kind, message.chat.id, error)
        await telegram.say(message.chat.id, user, "download_failed")
        return
    if data is None:
        await telegram.say(message.chat.id, user, "too_big")
        return
    await telegram.converse(
        update=event_update,
        user=user,
        chat_id=message.chat.id,
        text=message.caption or "",
        received=message,
        attachments=[Attachment(kind=kind, filename=filename, content_type=content_type, data=data)],
    )


async def on_other(message: Message, telegram: TelegramChannel) -> None:
    """Stickers, voice, locations…: say what the bot can read instead of staying silent."""
    if message.from_user is not None and message.chat.type == "private":
        await telegram.say(message.chat.id, message.from_user, "unsupported")


async def on_button(query: CallbackQuery, event_update: Update, telegram: TelegramChannel) -> None:
    """A button press: stop the spinner, then the button's payload is the person's message."""
    data = query.data or ""
    token = data[len(PAYLOAD_PREFIX) :] if data.startswith(PAYLOAD_PREFIX) else ""
    # The look-up is one indexed read, so the spinner is answered within milliseconds, and an unknown
    # token can be told in the same answer (a query can be answered only once).
    payload = await telegram.payloads.payload_for(token) if token else None
    await telegram.answer_button(query, None if payload else TEXTS[lang_of(query.from_user)]["expired"])
    if payload is None:
        return
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    await telegram.converse(update=event_update, user=query.from_user, chat_id=chat_id, text=payload)
