"""Web chat channel: the chat page, its embed snippet, uploads and the live WebSocket (web:<session id>).

Routes (see `webchat_router`): `GET /` the page, `GET /webchat.js` the embed snippet, `GET /webchat/app.js`
and `/webchat/webchat.css` its assets, `GET /webchat/session` who this browser is, `POST /webchat/upload`,
`POST /webchat/demo/signin`, `POST /webchat/signout`, and `WebSocket /webchat/ws`.

Wire protocol on the socket (JSON text frames):
  browser → server  {"type": "message", "id": "<uuid>", "text": "...", "attachments": ["<upload id>"]}
                    {"type": "ping"}
  server → browser  {"type": "ready"} once accepted; then per message {"type": "typing", "id"},
                    {"type": "reply", "id", "seq", "text", "buttons"?, "image"?, "image_alt"?, "replay"?}
                    per reply and {"type": "done", "id"}; at any time {"type": "notification", "id",
                    "text", ...}, {"type": "error", "code", "id"?}, {"type": "session_changed"},
                    {"type": "pong"}.

The browser's identity is a random session id (256 bits) in an HttpOnly, SameSite=Lax cookie, signed with
a key derived from the API token so that only ids this server issued are accepted: the channel identity
is `web:<session id>`. Open sockets, pending uploads and recent turns live in a `WebChatHub` in this
process; `WebChatSender` pushes notifications through it (and says UnknownRecipient when no tab is open,
so the notifier falls back to another channel).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask

from bot.assistant import Assistant, RateLimit, SenderLimiter
from bot.channels.base import UnknownRecipient
from bot.messages import Attachment, IncomingMessage, Reply
from core.auth import SYSTEM
from core.container import Core
from core.db.models import DemoMarker
from core.demo import DEMO_MARKER
from core.errors import DomainError

log = logging.getLogger("crmbot.webchat")

CHANNEL = "web"
COOKIE = "crmbot_chat"
SESSION_MAX_AGE = 30 * 24 * 3600  # a customer links once; "sign out" ends it sooner
STATIC_DIR = Path(__file__).parent / "webchat"
MAX_UPLOAD = 10 * 1024 * 1024
MAX_FRAME = 64 * 1024  # one chat message; files go through /webchat/upload
MAX_ATTACHMENTS = 5
UPLOAD_TTL = 15 * 60.0
MAX_PENDING_UPLOADS = 5  # per session, uploaded but not yet sent
MAX_PENDING_BYTES = 200 * 1024 * 1024  # per process, so uploads cannot exhaust memory
MAX_TABS = 20  # open sockets per session
MAX_SOCKETS = 10_000  # per process
RECENT_TURNS = 500  # turns remembered to answer a resend after a reconnect…
RECENT_TURN_SECONDS = 10 * 60.0  # …for this long (a reconnect comes within seconds or minutes)
DEMO_IDENTITY = "web:demo-"
PERSONA_ROLES = ("customer", "rep", "technician", "manager", "agent")
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")
CLIENT_ID = re.compile(r"[A-Za-z0-9-]{8,64}")
UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# Decided by the file's first bytes, never by the name or the declared type.
SIGNATURES: tuple[tuple[bytes, int, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png", "png"),
    (b"\xff\xd8\xff", 0, "image/jpeg", "jpg"),
    (b"GIF87a", 0, "image/gif", "gif"),
    (b"GIF89a", 0, "image/gif", "gif"),
    (b"WEBP", 8, "image/webp", "webp"),
    (b"%PDF-", 0, "application/pdf", "pdf"),
)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "webchat.css": "text/css; charset=utf-8",
    "webchat.js": "text/javascript; charset=utf-8",
}


def sniff(data: bytes) -> tuple[str, str] | None:
    """(content type, extension) of an image or PDF by its magic bytes; None for anything else."""
    for magic, offset, content_type, extension in SIGNATURES:
        if data[offset : offset + len(magic)] == magic and (extension != "webp" or data[:4] == b"RIFF"):
            return content_type, extension
    return None


def clean_filename(raw: str, extension: str) -> str:
    """A display name without paths or control characters, ending in the sniffed extension."""
    name = unquote(raw or "")[:512].replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if unicodedata.category(char)[0] != "C").strip(" .")[:120]
    if not name:
        return f"upload.{extension}"
    return name if name.lower().endswith("." + extension) else f"{name}.{extension}"


def reply_payload(reply: Reply) -> dict[str, Any]:
    """A Reply as the page renders it (an image travels as a data: URL, like the REST channel's)."""
    body: dict[str, Any] = {"text": reply.text}
    if reply.buttons:
        body["buttons"] = [{"title": button.title, "payload": button.payload} for button in reply.buttons]
    if reply.image is not None:
        body["image"] = "data:image/png;base64," + base64.b64encode(reply.image).decode("ascii")
        body["image_alt"] = reply.image_alt
    return body


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """The app's error shape, `{"error": {"code", "message"}}`."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def same_origin(headers: Mapping[str, str]) -> bool:
    """A browser's request from another site is refused (a missing Origin is a non-browser client)."""
    origin = headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows past `limit` bytes (never buffered beyond it)."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


@dataclass(frozen=True, slots=True)
class Persona:
    """A demo user the page offers to sign in as."""

    username: str
    name: str
    role: str

    def public(self) -> dict[str, str]:
        """What the page may show."""
        return {"username": self.username, "name": self.name, "role": self.role}


async def demo_personas(core: Core) -> list[Persona] | None:
    """The demo personas (users with a `web:demo-*` identity), or None when the demo is not loaded."""
    # A read of the marker the demo loader writes; core offers no query for it yet.
    async with core.uow() as uow:
        if await uow.session.get(DemoMarker, DEMO_MARKER) is None:
            return None
    found: list[tuple[int, str, Persona]] = []
    for user in await core.org.list_users(SYSTEM):
        demo = sorted(identity for identity in user.identities if identity.startswith(DEMO_IDENTITY))
        if demo and user.role in PERSONA_ROLES:
            persona = Persona(user.username, user.name, user.role)
            found.append((PERSONA_ROLES.index(user.role), demo[0], persona))
    return [persona for _rank, _identity, persona in sorted(found)]


class _Socket:
    """One open tab; sends are serialised because replies and notifications come from different tasks."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.open = True
        self._lock = asyncio.Lock()

    async def send(self, payload: dict[str, Any]) -> bool:
        """Send one frame; False (and closed from then on) when the tab has gone."""
        if not self.open:
            return False
        async with self._lock:
            try:
                await self.websocket.send_text(json.dumps(payload, ensure_ascii=False))
            except Exception:  # any failure to write means the connection is gone
                self.open = False
        return self.open

    async def close(self, code: int) -> None:
        """Close from the server side (sign-out elsewhere, shutdown)."""
        if self.open:
            self.open = False
            try:
                async with self._lock:
                    await self.websocket.close(code=code)
            except Exception:  # already closed by the peer
                log.debug("socket already closed")


@dataclass
class _Upload:
    session: str
    attachment: Attachment
    expires: float


class WebChatHub:
    """This process's open chat sockets per session, pending uploads and recently answered turns."""

    def __init__(
        self,
        *,
        session_secret: str | bytes | None = None,
        upload_rate: RateLimit | None = None,
        signin_rate: RateLimit | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = session_secret.encode() if isinstance(session_secret, str) else session_secret
        self._derived: dict[str, bytes] = {}
        self._sockets: dict[str, set[_Socket]] = {}
        self._uploads: OrderedDict[str, _Upload] = OrderedDict()
        self._upload_bytes = 0
        self._turns: OrderedDict[str, tuple[float, asyncio.Future[list[Reply]]]] = OrderedDict()
        self._upload_limiter = SenderLimiter(upload_rate or RateLimit(burst=5, per_second=0.2))
        self._signin_limiter = SenderLimiter(signin_rate or RateLimit(burst=5, per_second=0.1))
        self._monotonic = monotonic

    # --- sessions -------------------------------------------------------------------------------

    def _key(self, app: Any) -> bytes:
        if self._secret is not None:
            return self._secret
        token = getattr(getattr(app, "state", None), "api_token", None)
        if not isinstance(token, str) or not token:
            raise RuntimeError("The web chat needs app.state.api_token or WebChatHub(session_secret=...).")
        if token not in self._derived:
            # A key of its own, so a session cookie says nothing about the API token.
            self._derived = {token: hashlib.sha256(b"crmbot webchat session v1\0" + token.encode()).digest()}
        return self._derived[token]

    def _signature(self, app: Any, session: str) -> str:
        digest = hmac.new(self._key(app), session.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def issue(self, app: Any) -> tuple[str, str]:
        """A new session: (session id, cookie value)."""
        session = secrets.token_urlsafe(32)
        return session, f"{session}.{self._signature(app, session)}"

    def session_of(self, app: Any, cookie: str | None) -> str | None:
        """The session id in a cookie this server issued; None for a missing, forged or malformed one."""
        if not cookie or len(cookie) > 200:
            return None
        session, _, signature = cookie.partition(".")
        if not SESSION_ID.fullmatch(session):
            return None
        if not hmac.compare_digest(signature.encode(), self._signature(app, session).encode()):
            return None
        return session

    # --- sockets --------------------------------------------------------------------------------

    def register(self, session: str, socket: _Socket) -> bool:
        """Add an open tab; False when the session or the process has too many."""
        tabs = self._sockets.setdefault(session, set())
        if len(tabs) >= MAX_TABS or sum(len(group) for group in self._sockets.values()) >= MAX_SOCKETS:
            if not tabs:
                del self._sockets[session]
            return False
        tabs.add(socket)
        return True

    def unregister(self, session: str, socket: _Socket) -> None:
        """Forget a closed tab."""
        tabs = self._sockets.get(session)
        if tabs is not None:
            tabs.discard(socket)
            if not tabs:
                del self._sockets[session]

    def connected(self, session: str) -> int:
        """How many tabs of this session are open in this process."""
        return len(self._sockets.get(session, ()))

    async def push(self, session: str, payload: dict[str, Any]) -> int:
        """Send a frame to every open tab of a session; how many got it."""
        tabs = list(self._sockets.get(session, ()))
        results = await asyncio.gather(*(tab.send(payload) for tab in tabs))
        return sum(results)

    async def end_session(self, session: str) -> None:
        """Tell the session's other tabs it changed (signed out or in as someone else) and close them."""
        for tab in list(self._sockets.get(session, ())):
            await tab.send({"type": "session_changed"})
            await tab.close(1000)

    async def close_all(self, code: int = 1012) -> None:
        """Close every socket (1012: service restart, the page reconnects)."""
        for tabs in list(self._sockets.values()):
            for tab in list(tabs):
                await tab.close(code)

    # --- uploads --------------------------------------------------------------------------------

    def _expire_uploads(self) -> None:
        now = self._monotonic()
        while self._uploads:
            upload_id, upload = next(iter(self._uploads.items()))
            if upload.expires > now:
                break
            self._drop_upload(upload_id)

    def _drop_upload(self, upload_id: str) -> _Upload | None:
        upload = self._uploads.pop(upload_id, None)
        if upload is not None:
            self._upload_bytes -= len(upload.attachment.data)
        return upload

    def allow_upload(self, session: str) -> bool:
        """Take an upload token for the session (5 at once, then one per 5 s)."""
        return self._upload_limiter.allow(session, self._monotonic())

    def allow_signin(self, session: str) -> bool:
        """Take a sign-in token for the session."""
        return self._signin_limiter.allow(session, self._monotonic())

    def store_upload(self, session: str, attachment: Attachment) -> str | None:
        """Keep a file until the session's next message; None when the session or process is full."""
        self._expire_uploads()
        size = len(attachment.data)
        mine = sum(1 for upload in self._uploads.values() if upload.session == session)
        if mine >= MAX_PENDING_UPLOADS or self._upload_bytes + size > MAX_PENDING_BYTES:
            return None
        upload_id = secrets.token_urlsafe(18)
        self._uploads[upload_id] = _Upload(session, attachment, self._monotonic() + UPLOAD_TTL)
        self._upload_bytes += size
        return upload_id

    def take_uploads(self, session: str, upload_ids: list[str]) -> tuple[list[Attachment], bool]:
        """The session's files by id, removed from the store; the flag says whether any was missing."""
        self._expire_uploads()
        found: list[Attachment] = []
        missing = False
        for upload_id in upload_ids:
            upload = self._uploads.get(upload_id)
            if upload is None or upload.session != session:
                missing = True
                continue
            self._drop_upload(upload_id)
            found.append(upload.attachment)
        return found, missing

    # --- turns ----------------------------------------------------------------------------------

    async def answer(self, assistant: Assistant, message: IncomingMessage) -> tuple[list[Reply], bool]:
        """The assistant's replies to a message, and whether they are a replay of an earlier answer.

        A resend after a reconnect carries the same id: the assistant de-duplicates it (so it is acted
        on once), and this process hands back the replies it already gave, which the lost connection
        may never have delivered.
        """
        key = message.message_id
        now = self._monotonic()
        while self._turns and (
            len(self._turns) > RECENT_TURNS or next(iter(self._turns.values()))[0] < now - RECENT_TURN_SECONDS
        ):
            self._turns.popitem(last=False)
        if key is not None and key in self._turns:
            return list(await asyncio.shield(self._turns[key][1])), True
        future: asyncio.Future[list[Reply]] = asyncio.get_running_loop().create_future()
        if key is not None:
            self._turns[key] = (now, future)
        try:
            replies = await assistant.handle(message)
        except BaseException as exc:
            self._turns.pop(key or "", None)
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        future.set_result(replies)
        return replies, False


class WebChatSender:
    """Pushes a Reply to every open tab of a web chat session (the notifier's ChannelSender for "web")."""

    channel = CHANNEL

    def __init__(self, hub: WebChatHub) -> None:
        self._hub = hub

    async def send(self, external_id: str, reply: Reply) -> str:
        """Deliver to the session's open tabs; UnknownRecipient when none is open in this process."""
        message_id = "web-" + secrets.token_hex(8)
        payload = {"type": "notification", "id": message_id, **reply_payload(reply)}
        if await self._hub.push(external_id, payload) == 0:
            raise UnknownRecipient("Nobody has that web chat open right now.")
        return message_id


class _SignIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    username: str = Field(min_length=1, max_length=64)


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str = Field(max_length=20)
    id: str | None = Field(default=None, pattern=CLIENT_ID.pattern)
    text: str = Field(default="", max_length=MAX_FRAME)
    attachments: list[str] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)


def _message_key(session: str, client_id: str | None) -> str | None:
    """A message id unique to the session, so one browser's ids can never shadow another's."""
    if client_id is None:
        return None
    return hashlib.sha256(session.encode()).hexdigest()[:16] + ":" + client_id


def webchat_router(hub: WebChatHub | None = None) -> APIRouter:
    """The web chat's routes; the Assistant comes from app.state.assistant and the Core from app.state.core.

    Pass the same `hub` to `WebChatSender(hub)` so notifications reach the sockets these routes hold.
    """
    hub = hub or WebChatHub()
    assets = {name: (STATIC_DIR / name).read_bytes() for name in ASSETS}
    router = APIRouter(tags=["channels"], include_in_schema=False)

    def asset(name: str, cache: str = "no-cache") -> Response:
        return Response(
            assets[name],
            media_type=ASSETS[name],
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": cache},
        )

    def set_session_cookie(request: Request, response: Response, cookie: str) -> None:
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=SESSION_MAX_AGE,
            path="/",
            httponly=True,
            samesite="lax",
            # Behind a TLS-terminating proxy the app sees http; the proxy's header says what the browser used.
            secure=request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https",
        )

    def session_of(request: Request) -> str | None:
        return hub.session_of(request.app, request.cookies.get(COOKIE))

    @router.get("/")
    async def page(request: Request) -> Response:
        """The chat page (static: no CRM data); issues the session cookie when the browser has none."""
        response = Response(assets["index.html"], media_type=ASSETS["index.html"], headers=PAGE_HEADERS)
        cookie = request.cookies.get(COOKIE, "")
        if hub.session_of(request.app, cookie) is None:
            _session, cookie = hub.issue(request.app)
        set_session_cookie(request, response, cookie)  # refreshed on each visit
        return response

    @router.get("/webchat.js")
    async def embed_snippet() -> Response:
        """The embed snippet for a company site (a floating button opening the chat in an iframe)."""
        response = asset("webchat.js", "public, max-age=3600")
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        return response

    @router.get("/webchat/app.js")
    async def app_script() -> Response:
        """The page's script."""
        return asset("app.js")

    @router.get("/webchat/webchat.css")
    async def stylesheet() -> Response:
        """The page's styles."""
        return asset("webchat.css")

    @router.get("/webchat/session")
    async def session_info(request: Request) -> Response:
        """Who this browser is signed in as, and the demo personas when the demo is loaded."""
        session = session_of(request)
        if session is None:
            return error_response(401, "no_session", "No web chat session: open the chat page first.")
        core: Core = request.app.state.core
        actor = await core.org.actor_for_identity(CHANNEL, session)
        personas = await demo_personas(core)
        signed_in = (
            {"username": actor.username, "name": actor.name, "role": actor.role.value} if actor else None
        )
        return JSONResponse(
            {
                "signed_in": signed_in,
                "demo": personas is not None,
                "personas": [persona.public() for persona in personas or ()],
            },
            headers={"Cache-Control": "no-store"},
        )

    @router.post("/webchat/demo/signin")
    async def demo_signin(request: Request) -> Response:
        """Sign this browser in as a demo persona (only where the demo dataset is loaded)."""
        session = session_of(request)
        if not same_origin(request.headers):
            return error_response(403, "forbidden", "Cross-site request refused.")
        if session is None:
            return error_response(401, "no_session", "No web chat session: open the chat page first.")
        if not hub.allow_signin(session):
            return error_response(429, "too_many_requests", "Too many sign-ins; wait a moment.")
        core: Core = request.app.state.core
        personas = await demo_personas(core)
        if personas is None:
            return error_response(404, "not_found", "Not found.")
        try:
            wanted = _SignIn.model_validate_json(await read_capped(request, 4096) or b"")
        except ValidationError:
            return error_response(422, "validation_failed", 'Send {"username": "..."}.')
        persona = next((item for item in personas if item.username == wanted.username), None)
        if persona is None:
            return error_response(404, "not_found", "No such demo persona.")
        # A fresh session for the new person: nothing of the previous one (or a planted cookie) carries over.
        new_session, cookie = hub.issue(request.app)
        try:
            await core.org.link_identity(SYSTEM, persona.username, f"{CHANNEL}:{new_session}")
        except DomainError as error:
            return error_response(409, "conflict", str(error))
        # Other tabs hear of it after this response (and its new cookie) has reached the browser.
        response = JSONResponse(
            {"signed_in": persona.public()}, background=BackgroundTask(hub.end_session, session)
        )
        set_session_cookie(request, response, cookie)
        return response

    @router.post("/webchat/signout")
    async def signout(request: Request) -> Response:
        """Forget this browser's session (the page then starts a new, unlinked one)."""
        session = session_of(request)
        if not same_origin(request.headers):
            return error_response(403, "forbidden", "Cross-site request refused.")
        ending = BackgroundTask(hub.end_session, session) if session is not None else None
        response = Response(status_code=204, background=ending)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
        return response

    @router.post("/webchat/upload")
    async def upload(request: Request) -> Response:
        """Keep an image or PDF (≤ 10 MB, raw body) for the session's next message; returns its id."""
        session = session_of(request)
        if not same_origin(request.headers):
            return error_response(403, "forbidden", "Cross-site request refused.")
        if session is None:
            return error_response(401, "no_session", "No web chat session: open the chat page first.")
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_UPLOAD:
            return error_response(413, "payload_too_large", "Files can be at most 10 MB.")
        if not hub.allow_upload(session):
            return error_response(429, "too_many_requests", "Too many uploads; wait a moment.")
        data = await read_capped(request, MAX_UPLOAD)
        if data is None:
            return error_response(413, "payload_too_large", "Files can be at most 10 MB.")
        sniffed = sniff(data[:16])
        if sniffed is None:
            return error_response(
                415, "unsupported_media_type", "Only images (PNG, JPEG, GIF, WebP) and PDF files."
            )
        content_type, extension = sniffed
        filename = clean_filename(request.headers.get("x-filename", ""), extension)
        kind = "document" if extension == "pdf" else "photo"
        attachment = Attachment(kind=kind, filename=filename, content_type=content_type, data=data)
        upload_id = hub.store_upload(session, attachment)
        if upload_id is None:
            return error_response(429, "too_many_requests", "Send the files you already attached first.")
        return JSONResponse(
            {"id": upload_id, "filename": filename, "content_type": content_type, "size": len(data)}
        )

    @router.websocket("/webchat/ws")
    async def chat_socket(websocket: WebSocket) -> None:
        """The live conversation of one tab."""
        session = hub.session_of(websocket.app, websocket.cookies.get(COOKIE))
        if session is None or not same_origin(websocket.headers):
            await websocket.close(code=1008)  # before accept: the handshake is refused (HTTP 403)
            return
        await websocket.accept()
        socket = _Socket(websocket)
        if not hub.register(session, socket):
            await socket.close(1013)  # try again later
            return
        try:
            await socket.send({"type": "ready"})
            await _converse(websocket, socket, session)
        finally:
            hub.unregister(session, socket)

    async def _converse(websocket: WebSocket, socket: _Socket, session: str) -> None:
        assistant: Assistant = websocket.app.state.assistant
        while socket.open:
            frame = await websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            raw = frame.get("text")
            if raw is None or len(raw) > MAX_FRAME:
                await socket.send({"type": "error", "code": "bad_message"})
                continue
            try:
                inbound = _Inbound.model_validate_json(raw)
            except ValidationError:
                await socket.send({"type": "error", "code": "bad_message"})
                continue
            if inbound.type == "ping":
                await socket.send({"type": "pong"})
            elif inbound.type == "message":
                await _turn(assistant, socket, session, inbound)
            else:
                await socket.send({"type": "error", "code": "bad_message", "id": inbound.id})

    async def _turn(assistant: Assistant, socket: _Socket, session: str, inbound: _Inbound) -> None:
        attachments, missing = hub.take_uploads(
            session, [item for item in inbound.attachments if UPLOAD_ID.fullmatch(item)]
        )
        if missing or len(attachments) < len(inbound.attachments):
            await socket.send({"type": "error", "code": "attachment_expired", "id": inbound.id})
        message = IncomingMessage(
            channel=CHANNEL,
            sender_id=session,
            text=inbound.text,
            message_id=_message_key(session, inbound.id),
            attachments=tuple(attachments),
        )
        await socket.send({"type": "typing", "id": inbound.id})
        try:
            replies, replay = await hub.answer(assistant, message)
        except Exception:
            log.exception("web chat turn failed")
            await socket.send({"type": "error", "code": "internal", "id": inbound.id})
            replies, replay = [], False
        for seq, reply in enumerate(replies):
            frame: dict[str, Any] = {"type": "reply", "id": inbound.id, "seq": seq, **reply_payload(reply)}
            if replay:
                frame["replay"] = True
            if not await socket.send(frame):
                return
        await socket.send({"type": "done", "id": inbound.id})

    return router


def install_webchat(app: FastAPI, hub: WebChatHub | None = None) -> WebChatSender:
    """Add the web chat to an app (with state.core, .assistant, .api_token); returns the notifier's sender."""
    hub = hub or WebChatHub()
    app.include_router(webchat_router(hub))
    app.state.webchat_hub = hub
    return WebChatSender(hub)
