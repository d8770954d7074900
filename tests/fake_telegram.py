"""A local Bot API stand-in: real aiogram talks HTTP to it on 127.0.0.1; every call is recorded.

Only the methods the Telegram channel uses are implemented, with the Bot API's answer shapes, the
getUpdates offset semantics, file downloads, and failures on demand (429 retry_after, 403 blocked,
400 chat not found).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_ID = 424242
BOT_USERNAME = "crmbot_test_bot"
# Parameters aiogram sends JSON-encoded inside its multipart form.
JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "allowed_updates",
        "commands",
        "scope",
        "entities",
        "caption_entities",
        "link_preview_options",
        "reply_parameters",
    }
)


@dataclass(frozen=True)
class Upload:
    """A file sent to us in a multipart request (sendPhoto)."""

    filename: str
    data: bytes


@dataclass
class Call:
    """One Bot API request as the server saw it, and whether it was answered with success."""

    method: str
    params: dict[str, Any]
    ok: bool = True
    at: float = field(default_factory=time.monotonic)


@dataclass
class Failure:
    """A planned error answer for the next call(s) of a method."""

    method: str
    status: int
    description: str
    retry_after: int | None = None
    times: int = 1


class FakeTelegram:
    """The fake server; `url` goes into TelegramAPIServer.from_base / CRMBOT_TELEGRAM_API_URL."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.blocked_chats: set[int] = set()
        self.unknown_chats: set[int] = set()
        self.files: dict[str, tuple[str, bytes]] = {}  # file_id → (file_path, data)
        self.webhook: dict[str, Any] | None = None
        self._sizes: dict[str, int] = {}
        self._failures: list[Failure] = []
        self._updates: list[dict[str, Any]] = []
        self._forced: list[dict[str, Any]] = []
        self._new_update = asyncio.Event()
        self._closing = False
        self._message_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on a random loopback port."""
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop listening (any long poll in progress ends)."""
        self._closing = True
        self._new_update.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what tests arrange ------------------------------------------------------------------------

    def push(self, update: dict[str, Any]) -> None:
        """Queue an update for getUpdates."""
        self._updates.append(update)
        self._new_update.set()

    def redeliver(self, update: dict[str, Any]) -> None:
        """Serve an already confirmed update once more (Telegram may resend one; ids are not a clock)."""
        self._forced.append(update)
        self._new_update.set()

    def fail(
        self, method: str, status: int, description: str, *, retry_after: int | None = None, times: int = 1
    ) -> None:
        """Answer the next `times` calls of `method` with this error."""
        self._failures.append(Failure(method, status, description, retry_after, times))

    def add_file(
        self, file_id: str, data: bytes, path: str | None = None, *, size: int | None = None
    ) -> None:
        """A file getFile can describe and the file URL can serve (`size` may lie, as a test needs)."""
        self.files[file_id] = (path or f"files/{file_id}.bin", data)
        if size is not None:
            self._sizes[file_id] = size

    # --- what tests inspect ------------------------------------------------------------------------

    def called(self, method: str, *, ok: bool | None = True) -> list[dict[str, Any]]:
        """Parameters of the calls of `method` (successful ones by default; ok=None for all)."""
        return [call.params for call in self.calls if call.method == method and (ok is None or call.ok == ok)]

    def api_calls(self) -> list[Call]:
        """Every call but the polling itself."""
        return [call for call in self.calls if call.method != "getUpdates"]

    async def wait_for(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        """Poll `condition` until true (the bot works in its own tasks)."""
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {within} s; calls: {self.calls!r}")
            await asyncio.sleep(0.01)

    # --- HTTP ----------------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        call = Call(method=method, params=params)
        self.calls.append(call)
        if request.match_info["token"] != self.token:
            call.ok = False
            return _error(401, "Unauthorized")
        failure = self._planned_failure(method)
        if failure is not None:
            call.ok = False
            return _error(failure.status, failure.description, retry_after=failure.retry_after)
        if method in ("sendMessage", "sendPhoto"):
            chat_id = _int(params.get("chat_id"))
            if chat_id is None or chat_id in self.unknown_chats:
                call.ok = False
                return _error(400, "Bad Request: chat not found")
            if chat_id in self.blocked_chats:
                call.ok = False
                return _error(403, "Forbidden: bot was blocked by the user")
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            call.ok = False
            return _error(404, "Not Found: method not found")
        result = await handler(params)
        if isinstance(result, web.Response):
            call.ok = False
            return result
        return web.json_response({"ok": True, "result": result})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        self.calls.append(Call(method="download", params={"path": path}))
        for file_path, data in self.files.values():
            if file_path == path:
                return web.Response(body=data, content_type="application/octet-stream")
        return web.Response(status=404)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if request.method == "POST" and request.content_type.startswith("multipart/"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    params[key] = Upload(value.filename, value.file.read())
                else:
                    params[key] = value
        elif request.method == "POST" and request.content_type == "application/json":
            params.update(await request.json())
        else:
            params.update((await request.post()) if request.method == "POST" else request.query)
        for key, value in list(params.items()):
            # aiogram uploads a file as its own form field and refers to it as "attach://<field>".
            if isinstance(value, str) and value.startswith("attach://"):
                params[key] = params.pop(value.removeprefix("attach://"), value)
        for key in JSON_FIELDS & params.keys():
            if isinstance(params[key], str):
                params[key] = json.loads(params[key])
        return params

    def _planned_failure(self, method: str) -> Failure | None:
        for failure in self._failures:
            if failure.method == method:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    # --- methods ---------------------------------------------------------------------------------------

    async def _m_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"id": BOT_ID, "is_bot": True, "first_name": "crmbot", "username": BOT_USERNAME}

    async def _m_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = _int(params.get("offset"))
        timeout = float(params.get("timeout") or 0)
        limit = _int(params.get("limit")) or 100
        deadline = time.monotonic() + timeout
        while True:
            if offset is not None:
                # Everything below the offset is confirmed: Telegram forgets it.
                self._updates = [update for update in self._updates if update["update_id"] >= offset]
            if self._forced or self._updates:
                served = [*self._forced, *self._updates][:limit]
                self._forced = []
                return served
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing:
                return []
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), remaining)
            except TimeoutError:
                return []

    async def _m_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._message(params)
        message["text"] = params["text"]
        if "reply_markup" in params:
            message["reply_markup"] = params["reply_markup"]
        return message

    async def _m_sendPhoto(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._message(params)
        message["photo"] = [{"file_id": "sent-photo", "file_unique_id": "sent", "width": 640, "height": 480}]
        if params.get("caption"):
            message["caption"] = params["caption"]
        if "reply_markup" in params:
            message["reply_markup"] = params["reply_markup"]
        return message

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        return True

    async def _m_setMyCommands(self, params: dict[str, Any]) -> bool:
        return True

    async def _m_setWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = params
        return True

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = None
        return True

    async def _m_getFile(self, params: dict[str, Any]) -> dict[str, Any] | web.Response:
        file_id = str(params.get("file_id"))
        if file_id not in self.files:
            return _error(400, "Bad Request: invalid file_id")
        path, data = self.files[file_id]
        return {
            "file_id": file_id,
            "file_unique_id": f"u-{file_id}",
            "file_size": self._sizes.get(file_id, len(data)),
            "file_path": path,
        }

    def _message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = _int(params["chat_id"])
        return {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id and chat_id > 0 else "group"},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "crmbot", "username": BOT_USERNAME},
        }


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _error(status: int, description: str, *, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)


# --- update builders (what Telegram would push) --------------------------------------------------------


def user_json(user_id: int, lang: str = "en") -> dict[str, Any]:
    """A Telegram user."""
    return {"id": user_id, "is_bot": False, "first_name": f"User{user_id}", "language_code": lang}


def message_json(user_id: int, message_id: int, lang: str = "en", **fields: Any) -> dict[str, Any]:
    """A private-chat message from `user_id`."""
    return {
        "message_id": message_id,
        "date": int(time.time()),
        "chat": {"id": user_id, "type": "private", "first_name": f"User{user_id}"},
        "from": user_json(user_id, lang),
        **fields,
    }


def text_update(update_id: int, user_id: int, text: str, lang: str = "en") -> dict[str, Any]:
    """An update carrying a text message (commands get their bot_command entity)."""
    fields: dict[str, Any] = {"text": text}
    if text.startswith("/"):
        fields["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return {"update_id": update_id, "message": message_json(user_id, update_id, lang, **fields)}


def callback_update(update_id: int, user_id: int, data: str, lang: str = "en") -> dict[str, Any]:
    """A button press on a message the bot sent earlier."""
    bot_message = {
        "message_id": 9000 + update_id,
        "date": int(time.time()),
        "chat": {"id": user_id, "type": "private", "first_name": f"User{user_id}"},
        "from": {"id": BOT_ID, "is_bot": True, "first_name": "crmbot"},
        "text": "Choose:",
    }
    return {
        "update_id": update_id,
        "callback_query": {
            "id": f"cq-{update_id}",
            "from": user_json(user_id, lang),
            "chat_instance": "ci-1",
            "message": bot_message,
            "data": data,
        },
    }


def photo_update(
    update_id: int, user_id: int, sizes: list[tuple[str, int, int, int]], caption: str | None = None
) -> dict[str, Any]:
    """A photo message; `sizes` are (file_id, width, height, file_size), as Telegram lists them."""
    fields: dict[str, Any] = {
        "photo": [
            {"file_id": fid, "file_unique_id": f"u-{fid}", "width": w, "height": h, "file_size": size}
            for fid, w, h, size in sizes
        ]
    }
    if caption is not None:
        fields["caption"] = caption
    return {"update_id": update_id, "message": message_json(user_id, update_id, **fields)}


def document_update(
    update_id: int, user_id: int, file_id: str, file_name: str, mime_type: str, size: int
) -> dict[str, Any]:
    """A document message."""
    document = {
        "file_id": file_id,
        "file_unique_id": f"u-{file_id}",
        "file_name": file_name,
        "mime_type": mime_type,
        "file_size": size,
    }
    return {"update_id": update_id, "message": message_json(user_id, update_id, document=document)}
