"""The web chat channel over real edges: a uvicorn server on loopback, httpx, and a WebSocket client."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from bot.assistant import Assistant, RateLimit
from bot.channels.base import UnknownRecipient
from bot.channels.web import COOKIE, MAX_UPLOAD, WebChatHub, WebChatSender
from bot.messages import Button, IncomingMessage, Reply
from core.auth import SYSTEM
from core.container import Core
from core.db.models import DemoMarker
from crmbot.app import create_app
from tests.chat import ScriptedNlu
from tests.conftest import TEST_NOW
from tests.world import World

TOKEN = "test-admin-token"
WAIT = 10.0


def tiny_png() -> bytes:
    """A real 1×1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x1f\x6f\xeb"))
        + chunk(b"IEND", b"")
    )


PNG = tiny_png()
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


class LiveServer:
    """A real uvicorn server for an app, on a free loopback port, in the test's event loop; restartable."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/webchat/ws"

    async def start(self) -> None:
        """Listen (again on the same port after a stop) and wait until the server accepts connections."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        config = uvicorn.Config(
            self.app, lifespan="off", log_level="warning", timeout_graceful_shutdown=2, ws="auto"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[listener]))
        for _ in range(500):
            if self._server.started:
                return
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        raise TimeoutError("uvicorn did not start")

    async def stop(self) -> None:
        """Shut down: every open WebSocket is closed by the server, as in a restart or a crash."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)
            self._server = self._task = None


class RecordingAssistant(Assistant):
    """The real assistant, remembering each message the channel handed it."""

    def __init__(self, core: Core, nlu: Any, **kwargs: Any) -> None:
        super().__init__(core, nlu, **kwargs)
        self.received: list[IncomingMessage] = []

    async def handle(self, message: IncomingMessage) -> list[Reply]:
        self.received.append(message)
        return await super().handle(message)


@dataclass
class Env:
    core: Core
    nlu: ScriptedNlu
    assistant: RecordingAssistant
    hub: WebChatHub
    sender: WebChatSender
    server: LiveServer
    http: httpx.AsyncClient
    extra: list[LiveServer] = field(default_factory=list)


def build_app(core: Core, assistant: Assistant, hub: WebChatHub) -> tuple[FastAPI, WebChatSender]:
    app = create_app(core, TOKEN, assistant=assistant, webchat=hub)
    sender: WebChatSender = app.state.webchat_sender
    return app, sender


@pytest.fixture
async def env(core: Core) -> AsyncIterator[Env]:
    """The app with the web chat on a live server; tests that need people ask for `world` too."""
    nlu = ScriptedNlu()
    assistant = RecordingAssistant(core, nlu, rate_limit=RateLimit(burst=100, per_second=100))
    hub = WebChatHub()
    app, sender = build_app(core, assistant, hub)
    server = LiveServer(app)
    await server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        environment = Env(core, nlu, assistant, hub, sender, server, http)
        try:
            yield environment
        finally:
            for extra in environment.extra:
                await extra.stop()
            await server.stop()


async def new_session(env: Env) -> tuple[str, str]:
    """Open the page like a browser: (cookie value, session id)."""
    response = await env.http.get("/")
    assert response.status_code == 200
    cookie = response.cookies[COOKIE]
    env.http.cookies.clear()  # each test names the browser it speaks for
    return cookie, cookie.split(".")[0]


def cookie_header(cookie: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={cookie}"}


async def open_socket(server: LiveServer, cookie: str | None, **headers: str) -> ClientConnection:
    all_headers = {**(cookie_header(cookie) if cookie else {}), **headers}
    ws = await connect(server.ws_url, additional_headers=all_headers, open_timeout=WAIT)
    assert (await receive(ws))["type"] == "ready"
    return ws


async def receive(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    return frame


async def say(ws: ClientConnection, text: str, message_id: str, **extra: Any) -> list[dict[str, Any]]:
    """Send a message; every frame up to its "done"."""
    await ws.send(json.dumps({"type": "message", "id": message_id, "text": text, **extra}))
    frames = []
    while True:
        frame = await receive(ws)
        frames.append(frame)
        if frame["type"] == "done" and frame["id"] == message_id:
            return frames


def replies(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [frame for frame in frames if frame["type"] == "reply"]


async def link(env: Env, session: str, username: str = "acme.buyer") -> None:
    await env.core.org.link_identity(SYSTEM, username, f"web:{session}")


async def load_demo_marker(core: Core) -> None:
    async with core.uow() as uow:
        uow.session.add(DemoMarker(name="demo", loaded_at=TEST_NOW))
        await uow.commit()


# --- the page -------------------------------------------------------------------------------------


async def test_page_is_served_with_a_session_cookie_and_csp(env: Env) -> None:
    response = await env.http.get("/")
    env.http.cookies.clear()
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE}=") and "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie
    assert "Path=/" in set_cookie and "Secure" not in set_cookie  # plain http on loopback
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "img-src 'self' data:" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    cookie = response.cookies[COOKIE]
    session, _, signature = cookie.partition(".")
    assert len(session) == 43 and signature  # token_urlsafe(32): 256 random bits, signed
    # No CRM data in the page, and no inline script for the CSP to trip over.
    assert "Acme" not in response.text and "WM2023" not in response.text and "<script>" not in response.text
    # The same browser keeps its session; a forged cookie is replaced by a fresh one.
    again = await env.http.get("/", headers=cookie_header(cookie))
    assert again.cookies[COOKIE] == cookie
    forged = await env.http.get("/", headers=cookie_header(session + ".forged"))
    assert forged.cookies[COOKIE] != session + ".forged" and forged.cookies[COOKIE].split(".")[0] != session

    script = await env.http.get("/webchat/app.js")
    assert script.headers["content-type"].startswith("text/javascript") and "textContent" in script.text
    for unsafe in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert unsafe not in script.text
    assert (await env.http.get("/webchat/webchat.css")).headers["content-type"].startswith("text/css")
    embed = await env.http.get("/webchat.js")
    assert embed.headers["content-type"].startswith("text/javascript")
    assert embed.text.startswith("/*")
    assert '<script src="https://HOST/webchat.js" async></script>' in embed.text  # documented on top
    assert ".innerHTML" not in embed.text


async def test_socket_refused_without_a_valid_cookie_or_from_another_site(env: Env) -> None:
    cookie, session = await new_session(env)
    for headers in (
        {},
        cookie_header("A" * 43 + ".bm90LXNpZ25lZA"),
        cookie_header(session),
        cookie_header("demo-customer"),
        {**cookie_header(cookie), "Origin": "https://evil.example"},
    ):
        with pytest.raises(InvalidStatus) as refused:
            await connect(env.server.ws_url, additional_headers=headers, open_timeout=WAIT)
        assert refused.value.response.status_code == 403
    ws = await open_socket(env.server, cookie, Origin=env.server.url)
    await ws.send("not json")
    assert (await receive(ws)) == {"type": "error", "code": "bad_message"}
    await ws.send(json.dumps({"type": "ping"}))
    assert (await receive(ws)) == {"type": "pong"}
    await ws.close()
    assert (await env.http.get("/webchat/session")).status_code == 401


async def test_unlinked_browser_gets_no_crm_data(env: Env) -> None:
    cookie, _session = await new_session(env)
    info = (await env.http.get("/webchat/session", headers=cookie_header(cookie))).json()
    assert info == {"signed_in": None, "demo": False, "personas": []}
    ws = await open_socket(env.server, cookie)
    frames = await say(ws, "is WM2023-00917 still under warranty?", "0b9d6f52-0000-4000-8000-000000000001")
    said = " ".join(reply["text"] for reply in replies(frames))
    assert said and "WM-2023" not in said and "warranty until" not in said and "Acme" not in said
    assert env.nlu.seen == []  # an unlinked person never reaches the NLU or the CRM
    await ws.close()


# --- conversation ---------------------------------------------------------------------------------


async def test_linked_identity_gets_replies_with_buttons(env: Env, world: World) -> None:
    cookie, session = await new_session(env)
    await link(env, session)
    info = (await env.http.get("/webchat/session", headers=cookie_header(cookie))).json()
    assert info["signed_in"] == {"username": "acme.buyer", "name": "Acme Buyer", "role": "customer"}
    ws = await open_socket(env.server, cookie)
    env.nlu.expect("search_knowledge")
    frames = await say(ws, "error E13 on my dishwasher", "6f1c2a3e-1111-4000-8000-000000000001")
    assert [frame["type"] for frame in frames] == ["typing", "reply", "reply", "done"]
    found = replies(frames)
    assert found[0]["text"] == "Here's what I found:" and "KB-DW-E13" in found[1]["text"]
    assert [button["title"] for button in found[1]["buttons"]] == ["This solved it", "Open a repair request"]
    assert [frame["seq"] for frame in found] == [0, 1]
    # Clicking a button sends its payload back, which selects it.
    solved = found[1]["buttons"][0]["payload"]
    assert solved.startswith("/kb_solved")
    frames = await say(ws, solved, "6f1c2a3e-1111-4000-8000-000000000002")
    assert replies(frames) and all("buttons" not in reply for reply in replies(frames))
    message = env.assistant.received[0]
    assert (message.channel, message.sender_id) == ("web", session)
    assert message.text == "error E13 on my dishwasher"
    await ws.close()


async def test_a_resent_message_id_is_answered_once(env: Env, world: World) -> None:
    cookie, session = await new_session(env)
    await link(env, session)
    message_id = "3c8e5d1a-2222-4000-8000-000000000001"
    ws = await open_socket(env.server, cookie)
    env.nlu.expect("greet")
    first = replies(await say(ws, "hello", message_id))
    assert first[0]["text"].startswith("Hello Acme Buyer") and "replay" not in first[0]
    await ws.close()
    # The browser reconnects and re-sends what it has no "done" for: the same answer, not a second turn.
    ws = await open_socket(env.server, cookie)
    again = replies(await say(ws, "hello", message_id))
    assert [reply["text"] for reply in again] == [reply["text"] for reply in first]
    assert all(reply["replay"] is True for reply in again)
    assert len(env.nlu.seen) == 1
    await ws.close()
    # Another worker (its own hub, same database and token) does not act on it a second time either.
    other_app, _sender = build_app(env.core, env.assistant, WebChatHub())
    other = LiveServer(other_app)
    env.extra.append(other)
    await other.start()
    ws = await open_socket(other, cookie)
    assert replies(await say(ws, "hello", message_id)) == []
    assert len(env.nlu.seen) == 1
    await ws.close()
    # Ids are per browser: another session using the same id is a new message.
    stranger, _ = await new_session(env)
    ws = await open_socket(env.server, stranger)
    assert replies(await say(ws, "hello", message_id))
    await ws.close()


async def test_demo_persona_sign_in_only_with_the_demo_marker(env: Env, world: World) -> None:
    await env.core.org.link_identity(SYSTEM, "acme.buyer", "web:demo-customer")
    await env.core.org.link_identity(SYSTEM, "rep.north", "web:demo-rep")
    await env.core.org.link_identity(SYSTEM, "admin", "web:demo-admin")
    cookie, _session = await new_session(env)
    headers = {**cookie_header(cookie), "Content-Type": "application/json"}

    # Not demo data: no personas offered, and the shortcut does not exist.
    info = (await env.http.get("/webchat/session", headers=headers)).json()
    assert info == {"signed_in": None, "demo": False, "personas": []}
    refused = await env.http.post("/webchat/demo/signin", json={"username": "acme.buyer"}, headers=headers)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"

    await load_demo_marker(env.core)
    info = (await env.http.get("/webchat/session", headers=headers)).json()
    assert info["demo"] is True and info["signed_in"] is None
    assert info["personas"] == [
        {"username": "acme.buyer", "name": "Acme Buyer", "role": "customer"},
        {"username": "rep.north", "name": "Rep North", "role": "rep"},
    ]
    for username in ("admin", "rep.south", "nobody"):  # only the offered personas
        answer = await env.http.post("/webchat/demo/signin", json={"username": username}, headers=headers)
        assert answer.status_code == 404
    no_cookie = await env.http.post("/webchat/demo/signin", json={"username": "acme.buyer"})
    assert no_cookie.status_code == 401
    cross_site = await env.http.post(
        "/webchat/demo/signin",
        json={"username": "acme.buyer"},
        headers={**headers, "Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403

    other_tab = await open_socket(env.server, cookie)
    signed = await env.http.post("/webchat/demo/signin", json={"username": "acme.buyer"}, headers=headers)
    assert signed.status_code == 200 and signed.json()["signed_in"]["username"] == "acme.buyer"
    new_cookie = signed.cookies[COOKIE]
    env.http.cookies.clear()
    assert new_cookie != cookie and "HttpOnly" in signed.headers["set-cookie"]
    # The session id changes on sign-in; the old one's tabs are told and closed.
    assert (await receive(other_tab)) == {"type": "session_changed"}
    old = (await env.http.get("/webchat/session", headers=cookie_header(cookie))).json()
    assert old["signed_in"] is None
    new = (await env.http.get("/webchat/session", headers=cookie_header(new_cookie))).json()
    assert new["signed_in"]["username"] == "acme.buyer"
    ws = await open_socket(env.server, new_cookie)
    env.nlu.expect("greet")
    assert replies(await say(ws, "hi", "9a7b1c2d-3333-4000-8000-000000000001"))[0]["text"].startswith(
        "Hello Acme Buyer"
    )

    signed_out = await env.http.post("/webchat/signout", headers=cookie_header(new_cookie))
    assert signed_out.status_code == 204
    dropped = signed_out.headers["set-cookie"]
    assert f'{COOKIE}=""' in dropped and "Max-Age=0" in dropped
    assert (await receive(ws)) == {"type": "session_changed"}


# --- pushing --------------------------------------------------------------------------------------


async def test_sender_pushes_to_every_open_tab_and_says_when_nobody_listens(env: Env, world: World) -> None:
    assert env.sender.channel == "web"
    cookie, session = await new_session(env)
    await link(env, session)
    tabs = [await open_socket(env.server, cookie), await open_socket(env.server, cookie)]
    reply = Reply(
        text="Your technician Tech North is on the way.",
        buttons=(Button(title="Thanks", payload="/affirm"),),
        image=PNG,
        image_alt="map",
    )
    message_id = await env.sender.send(session, reply)
    assert message_id.startswith("web-")
    for tab in tabs:
        pushed = await receive(tab)
        assert pushed["type"] == "notification" and pushed["id"] == message_id
        assert pushed["text"] == reply.text
        assert pushed["buttons"] == [{"title": "Thanks", "payload": "/affirm"}]
        assert pushed["image"].startswith("data:image/png;base64,") and pushed["image_alt"] == "map"
    for tab in tabs:
        await tab.close()
    for _ in range(200):
        if env.hub.connected(session) == 0:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(UnknownRecipient):
        await env.sender.send(session, reply)
    with pytest.raises(UnknownRecipient):
        await env.sender.send("demo-customer", reply)


# --- uploads --------------------------------------------------------------------------------------


async def test_uploads_are_checked_and_delivered_with_the_next_message(env: Env, world: World) -> None:
    cookie, session = await new_session(env)
    await link(env, session)
    headers = cookie_header(cookie)

    async def upload(data: bytes, name: str, content_type: str, browser: dict[str, str]) -> httpx.Response:
        return await env.http.post(
            "/webchat/upload",
            content=data,
            headers={**browser, "Content-Type": content_type, "X-Filename": name},
        )

    assert (await upload(PNG, "a.png", "image/png", {})).status_code == 401
    cross_site = {**headers, "Origin": "https://evil.example"}
    assert (await upload(PNG, "a.png", "image/png", cross_site)).status_code == 403
    assert (await upload(b"<html><script>", "x.png", "image/png", headers)).status_code == 415
    too_big = await upload(PNG + b"\0" * (MAX_UPLOAD - len(PNG) + 1), "big.png", "image/png", headers)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
    photo = await upload(PNG, "..%2F..%2Fleak%0A.png", "image/png", headers)
    assert photo.status_code == 200, photo.text
    assert photo.json()["filename"] == "leak.png" and photo.json()["content_type"] == "image/png"
    pdf = (await upload(PDF, "invoice", "application/pdf", headers)).json()
    assert (pdf["filename"], pdf["content_type"]) == ("invoice.pdf", "application/pdf")

    ws = await open_socket(env.server, cookie)
    env.nlu.expect("greet")
    both = [photo.json()["id"], pdf["id"]]
    frames = await say(ws, "photo of the leak", "5e4d3c2b-4444-4000-8000-000000000001", attachments=both)
    assert "error" not in [frame["type"] for frame in frames]
    attachments = env.assistant.received[-1].attachments
    assert [(item.kind, item.filename, item.content_type) for item in attachments] == [
        ("photo", "leak.png", "image/png"),
        ("document", "invoice.pdf", "application/pdf"),
    ]
    assert attachments[0].data == PNG
    # An upload goes with one message only, and only with its own session's messages.
    again = "5e4d3c2b-4444-4000-8000-000000000002"
    frames = await say(ws, "again", again, attachments=[photo.json()["id"]])
    assert {"type": "error", "code": "attachment_expired", "id": again} in frames
    assert env.assistant.received[-1].attachments == ()
    await ws.close()

    stranger, _ = await new_session(env)
    theirs = (await upload(PNG, "p.png", "image/png", headers)).json()["id"]
    ws = await open_socket(env.server, stranger)
    frames = await say(ws, "mine now", "5e4d3c2b-4444-4000-8000-000000000003", attachments=[theirs])
    assert frames[0]["code"] == "attachment_expired" and env.assistant.received[-1].attachments == ()
    await ws.close()


async def test_uploads_are_rate_limited_per_session(env: Env) -> None:
    cookie, _session = await new_session(env)
    statuses = []
    for _ in range(7):
        response = await env.http.post(
            "/webchat/upload", content=b"MZ\x90\x00", headers={**cookie_header(cookie), "X-Filename": "a.exe"}
        )
        statuses.append(response.status_code)
    assert statuses[:5] == [415] * 5 and statuses[5:] == [429, 429]
    other, _ = await new_session(env)
    other_headers = {**cookie_header(other), "X-Filename": "a.png"}
    fine = await env.http.post("/webchat/upload", content=PNG, headers=other_headers)
    assert fine.status_code == 200
