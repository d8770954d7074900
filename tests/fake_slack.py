"""A local Slack Web API stand-in on 127.0.0.1: the real slack_sdk client talks to it over HTTP.

It implements what crmbot calls (auth.test, users.info, conversations.open, chat.postMessage, chat.update,
the two-step external file upload, response_url posts), records every call, and can answer an error or
a 429 with Retry-After on demand.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
TEAM_ID = "T0CRM"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"


@dataclass
class Call:
    """One request the fake received."""

    method: str
    params: dict[str, Any]
    token: str | None


@dataclass
class Failure:
    """A canned failure for the next call(s) of a method."""

    error: str
    status: int = 200
    retry_after: int | None = None
    times: int = 1


@dataclass
class FakeSlack:
    """The Web API and response_url endpoints, recording calls; start() returns the API base URL."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    responses: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    socket_acks: list[dict[str, Any]] = field(default_factory=list)
    socket_ready: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _socket: web.WebSocketResponse | None = None
    _acked: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    _ts: int = 0

    # --- set-up ---------------------------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        email: str | None,
        *,
        team_id: str = TEAM_ID,
        **flags: Any,
    ) -> None:
        """A workspace member whose profile shows `email` (flags: is_bot, deleted, is_restricted, …)."""
        profile: dict[str, Any] = {"real_name": user_id, "display_name": user_id}
        if email is not None:
            profile["email"] = email
        self.users[user_id] = {
            "id": user_id,
            "team_id": team_id,
            "name": user_id,
            "profile": profile,
            **flags,
        }

    def fail(
        self, method: str, error: str, *, status: int = 200, retry_after: int | None = None, times: int = 1
    ) -> None:
        """Make the next `times` calls of `method` fail with `error` (429 + Retry-After when asked)."""
        self.failures.setdefault(method, []).append(Failure(error, status, retry_after, times))

    def rate_limit(self, method: str, retry_after: int = 7, times: int = 1) -> None:
        """Answer HTTP 429 with `Retry-After: retry_after` to the next `times` calls of `method`."""
        self.fail(method, "ratelimited", status=429, retry_after=retry_after, times=times)

    @property
    def base_url(self) -> str:
        """What settings.slack_api_url should be."""
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, key: str = "r1") -> str:
        """A response_url that lands on this fake."""
        return f"http://127.0.0.1:{self.port}/respond/{key}"

    # --- inspection -----------------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        """The parameters of every call of `method`, in order."""
        return [call.params for call in self.calls if call.method == method]

    def posted(self) -> list[dict[str, Any]]:
        """Every chat.postMessage."""
        return self.calls_to("chat.postMessage")

    # --- server ----------------------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen on a random loopback port."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/respond/{key}", self._respond)
        app.router.add_get("/socket", self._socket_mode)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.base_url

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                params.update(dict(await request.post()))
        return params

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else params.get("token")
        self.calls.append(Call(method, params, token))
        if token != (APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        queued = self.failures.get(method)
        if queued:
            failure = queued[0]
            failure.times -= 1
            if failure.times <= 0:
                queued.pop(0)
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            return web.json_response(
                {"ok": False, "error": failure.error}, status=failure.status, headers=headers
            )
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        body: dict[str, Any] = handler(params)
        return web.json_response(body)

    def _next_ts(self) -> str:
        self._ts += 1
        return f"1781500000.{self._ts:06d}"

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://crm-test.slack.com/",
            "team": "CRM Test",
            "user": "crmbot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user")))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user}

    def _conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("users") or "")
        if user not in self.users:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "channel": {"id": "D" + user}}

    def _chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        ts = self._next_ts()
        return {"ok": True, "channel": params["channel"], "ts": ts, "message": {"text": params.get("text")}}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "channel": params.get("channel"), "ts": params.get("ts")}

    def _files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{len(self.uploads) + 1:04d}"
        self.uploads[file_id] = b""
        return {
            "ok": True,
            "upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}",
            "file_id": file_id,
        }

    def _files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        files = json.loads(params.get("files") or "[]")
        return {"ok": True, "files": [{"id": item["id"], "title": item.get("title")} for item in files]}

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if file_id not in self.uploads:
            return web.Response(status=404, text="unknown upload")
        self.uploads[file_id] = await request.read()
        return web.Response(text="OK - " + str(len(self.uploads[file_id])))

    async def _respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append({"key": request.match_info["key"], **body})
        return web.Response(text="ok")

    # --- Socket Mode ---------------------------------------------------------------------------------------

    async def _socket_mode(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._socket = socket
        await socket.send_json(
            {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0CRM"}}
        )
        self.socket_ready.set()
        async for frame in socket:
            if frame.type == WSMsgType.TEXT:
                self.socket_acks.append(json.loads(frame.data))
                self._acked.set()
        return socket

    async def push(self, envelope: dict[str, Any]) -> None:
        """Send a Socket Mode envelope to the connected app."""
        assert self._socket is not None, "no Socket Mode connection"
        await self._socket.send_json(envelope)

    async def acked(self, envelope_id: str) -> dict[str, Any]:
        """Wait for the app's acknowledgement of an envelope."""
        while True:
            for ack in self.socket_acks:
                if ack.get("envelope_id") == envelope_id:
                    return ack
            self._acked.clear()
            await self._acked.wait()
