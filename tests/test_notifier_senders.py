"""Email and SMS senders against real servers on loopback: aiosmtpd for SMTP, an aiohttp app for SMS APIs."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr

from core.settings import Settings
from notifier.senders import safe_key
from notifier.senders.email import EmailSender, SmtpPool, build_email_sender, check_email_address
from notifier.senders.sms import (
    FileSmsSender,
    HttpSmsSender,
    TwilioSmsSender,
    build_sms_sender,
    normalise_number,
)
from notifier.senders.smsparts import GSM7_BASIC, GSM7_EXTENSION, sms_parts
from notifier.types import (
    DeliveryError,
    InvalidAddress,
    Outgoing,
    RateLimited,
    RecipientBlocked,
    Rendered,
    Sender,
)

ZH_SUBJECT = "您的 crmbot 验证码：维修单 R-1024 已更新"
ZH_TEXT = (
    "您好：\n\n您的维修单 R-1024 状态已更新为「已派工」。工程师王师傅将于明天上午到达。\n\n——crmbot 客服"
)
ZH_HTML = "<p>您好：</p><p>维修单 <b>R-1024</b> 已派工。</p>"
PASSWORD = "s3cret-Passw0rd"
# GSM 03.38 basic table typed from the standard (0x1B, the escape, left out), to check the module's own copy.
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for one test: a throw-away data dir, SMTP on loopback without STARTTLS, short timeouts."""
    values: dict[str, Any] = {
        "database_url": "sqlite+aiosqlite:///:memory:",
        "data_dir": tmp_path / "var",
        "smtp_host": "127.0.0.1",
        "smtp_starttls": False,
        "smtp_timeout": 2.0,
        "sms_timeout": 2.0,
        "mail_from": "crmbot 客服 <notify@crm.example.com>",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def outgoing(
    address: str,
    *,
    key: str = "event-1:user-7:email",
    subject: str = "Your repair order",
    text: str = "Your repair order R-1024 was dispatched.",
    html: str | None = None,
    lang: str = "en",
    channel: str = "email",
) -> Outgoing:
    """One message as the dispatcher would hand it to a sender."""
    return Outgoing(
        notification_id=1,
        dedupe_key=key,
        channel=channel,
        address=address,
        user_id=7,
        lang=lang,
        content=Rendered(subject=subject, text=text, html=html),
    )


# --- SMTP server ------------------------------------------------------------------------------------


@dataclass
class Received:
    """One message as the SMTP server got it."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    smtp_utf8: bool


@dataclass
class Recorder:
    """An aiosmtpd handler that records what arrives and answers as the test tells it to."""

    received: list[Received] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    replies: dict[str, str] = field(default_factory=dict)  # command -> reply, e.g. {"RCPT": "550 ..."}
    drops: dict[str, int] = field(default_factory=dict)  # command -> how many times to cut the line there
    data_delay: float = 0.0

    def _scripted(self, command: str, server: SMTPServer) -> str | None:
        if self.drops.get(command, 0) > 0:
            self.drops[command] -= 1
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
            return "421 4.3.0 going away"  # never reaches the client: the line is already cut
        return self.replies.get(command)

    async def handle_EHLO(
        self, server: SMTPServer, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # With a 5-argument EHLO hook aiosmtpd no longer records the client's name itself.
        session.host_name = hostname
        assert session.peer is not None
        self.peers.add(session.peer)  # type: ignore[arg-type]
        return responses

    async def handle_NOOP(self, server: SMTPServer, session: Session, envelope: Envelope, arg: str) -> str:
        return self._scripted("NOOP", server) or "250 OK"

    async def handle_MAIL(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        scripted = self._scripted("MAIL", server)
        if scripted:
            return scripted
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        scripted = self._scripted("RCPT", server)
        if scripted:
            return scripted
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        scripted = self._scripted("DATA", server)
        if scripted:
            return scripted
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        # Stored mail uses local line endings, as a mail store would keep it; the wire uses CRLF.
        parsed = email.message_from_bytes(
            envelope.content.replace(b"\r\n", b"\n"), policy=email.policy.default
        )
        assert isinstance(parsed, EmailMessage) and server.transport is not None
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), parsed, tls, envelope.smtp_utf8)
        )
        return "250 2.0.0 queued"


@dataclass
class SmtpServer:
    """A running aiosmtpd Controller and its recorder."""

    port: int
    recorder: Recorder
    controller: Controller


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    """Start aiosmtpd servers on loopback (keyword arguments go to Controller); stop them afterwards."""
    started: list[Controller] = []

    def start(**kwargs: Any) -> SmtpServer:
        recorder = Recorder()
        port = free_port()
        controller = Controller(recorder, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        started.append(controller)
        return SmtpServer(port, recorder, controller)

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def smtp(smtp_server: Callable[..., SmtpServer]) -> SmtpServer:
    """A plain SMTP server (no TLS, no AUTH)."""
    return smtp_server()


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], Any]]:
    """Close every sender a test registers, even when the test fails."""
    senders: list[Any] = []

    def register(sender: Any) -> Any:
        senders.append(sender)
        return sender

    yield register
    for sender in senders:
        await sender.close()


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and the contexts that serve and trust it."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """Generate the certificate with openssl (the `cryptography` package is not installed here)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Certificate(cert, key)


# --- email: content ---------------------------------------------------------------------------------


async def test_chinese_subject_and_body_arrive_intact(
    tmp_path: Path, smtp: SmtpServer, closing: Callable[[Any], Any]
) -> None:
    sender: EmailSender = closing(EmailSender(make_settings(tmp_path, smtp_port=smtp.port)))
    message = outgoing("王小明@例子.中国", subject=ZH_SUBJECT, text=ZH_TEXT, html=ZH_HTML, lang="zh")

    message_id = await sender.send(message)

    [received] = smtp.recorder.received
    got = received.message
    assert received.rcpt_tos == ["王小明@例子.中国"] and received.smtp_utf8
    assert received.mail_from == "notify@crm.example.com"
    assert got["Subject"] == ZH_SUBJECT
    assert got["From"] == "crmbot 客服 <notify@crm.example.com>"
    assert got["Content-Language"] == "zh-CN"
    assert got["Message-ID"] == message_id == sender.message_id(message.dedupe_key)
    assert message_id.startswith("<event-1_user-7_email-") and message_id.endswith("@crm.example.com>")
    plain, html = got.get_body(("plain",)), got.get_body(("html",))
    assert plain is not None and html is not None
    assert isinstance(plain, EmailMessage) and isinstance(html, EmailMessage)
    assert plain.get_content().rstrip("\n") == ZH_TEXT
    assert html.get_content().rstrip("\n") == ZH_HTML
    assert got.get_content_type() == "multipart/alternative"


async def test_ascii_recipient_gets_plain_text_only_and_english_language(
    tmp_path: Path, smtp: SmtpServer, closing: Callable[[Any], Any]
) -> None:
    sender = closing(EmailSender(make_settings(tmp_path, smtp_port=smtp.port)))
    await sender.send(outgoing("li.lei@example.com", subject="Line one\nline two", text="您好 hello"))

    [received] = smtp.recorder.received
    assert not received.smtp_utf8  # plain ASCII envelope; the Chinese body travels MIME-encoded
    assert received.message["Subject"] == "Line one line two"
    assert received.message["Content-Language"] == "en"
    assert received.message.get_content_type() == "text/plain"
    assert received.message.get_content().rstrip("\n") == "您好 hello"


def test_message_id_is_deterministic_per_dedupe_key(tmp_path: Path) -> None:
    sender = EmailSender(make_settings(tmp_path, smtp_host=None))
    first = sender.compose(outgoing("a@example.com", key="evt:9/user:3"))
    again = sender.compose(outgoing("a@example.com", key="evt:9/user:3"))
    other = sender.compose(outgoing("a@example.com", key="evt:9:user:3"))
    assert first["Message-ID"] == again["Message-ID"] == sender.message_id("evt:9/user:3")
    assert (
        first["Message-ID"] != other["Message-ID"]
    )  # both clean to the same text; the hash tells them apart
    assert str(first["Message-ID"]).endswith("@crm.example.com>")
    bare = EmailSender(make_settings(tmp_path, smtp_host=None, mail_from="crmbot"))
    assert bare.message_id("k1") == "<k1@crmbot.local>"


def test_safe_key() -> None:
    assert safe_key("event-1.user_7") == "event-1.user_7"
    assert safe_key("a/b") != safe_key("a:b")
    traversal = safe_key("../../etc/passwd")
    assert (
        "/" not in traversal
        and not traversal.startswith(".")
        and traversal.endswith("etc_passwd-" + traversal[-16:])
    )
    assert len(safe_key("x" * 500)) <= 117
    assert safe_key("订单") == safe_key("订单") and "/" not in safe_key("订单")


@pytest.mark.parametrize(
    "address",
    ["", "plain", "a@", "@example.com", "a b@example.com", "a@@example.com", "Bob <b@example.com>",
     "a@example.com\r\nBcc: x@example.com", "a..b@example.com", ".a@example.com", "a@-example.com",
     "a@exa_mple.com", "a@example..com"],
)  # fmt: skip
async def test_malformed_addresses_are_refused_without_a_connection(
    tmp_path: Path, smtp: SmtpServer, address: str, closing: Callable[[Any], Any]
) -> None:
    sender = closing(EmailSender(make_settings(tmp_path, smtp_port=smtp.port)))
    with pytest.raises(InvalidAddress) as caught:
        await sender.send(outgoing(address))
    assert caught.value.permanent
    assert not smtp.recorder.peers and sender.pool is not None and sender.pool.connects == 0


def test_good_addresses_pass_the_check() -> None:
    for address in ("a@example.com", "first.last+tag@sub.example.co.uk", "用户@例子.中国", "ops@localhost"):
        assert check_email_address(f" {address} ") == address


# --- email: the pool --------------------------------------------------------------------------------


async def test_pool_reuses_connections(
    tmp_path: Path, smtp: SmtpServer, closing: Callable[[Any], Any]
) -> None:
    sender = closing(EmailSender(make_settings(tmp_path, smtp_port=smtp.port, smtp_pool_size=2)))
    messages = [outgoing(f"user{n}@example.com", key=f"evt-{n}") for n in range(20)]

    ids = await asyncio.gather(*(sender.send(message) for message in messages))

    assert len(set(ids)) == 20 and len(smtp.recorder.received) == 20
    assert {r.rcpt_tos[0] for r in smtp.recorder.received} == {m.address for m in messages}
    assert sender.pool is not None and sender.pool.connects == 2
    assert len(smtp.recorder.peers) == 2  # the server saw 2 connections for 20 messages


async def test_connections_open_lazily_and_close_with_quit(
    tmp_path: Path, smtp: SmtpServer, closing: Callable[[Any], Any]
) -> None:
    sender = EmailSender(make_settings(tmp_path, smtp_port=smtp.port, smtp_pool_size=3))
    assert sender.pool is not None and sender.pool.connects == 0 and not smtp.recorder.peers
    await sender.send(outgoing("a@example.com", key="k1"))
    await sender.send(outgoing("b@example.com", key="k2"))
    assert sender.pool.connects == 1  # sequential sends need one connection only
    await sender.close()
    with pytest.raises(DeliveryError) as caught:
        await sender.send(outgoing("c@example.com", key="k3"))
    assert not caught.value.permanent


async def test_reconnects_once_when_the_server_drops_the_connection(
    tmp_path: Path, smtp: SmtpServer, closing: Callable[[Any], Any]
) -> None:
    sender = closing(EmailSender(make_settings(tmp_path, smtp_port=smtp.port, smtp_pool_size=1)))
    await sender.send(outgoing("a@example.com", key="k1"))
    smtp.recorder.drops["MAIL"] = 1  # the pooled connection dies under the next transaction

    await sender.send(outgoing("b@example.com", key="k2"))

    assert [r.rcpt_tos for r in smtp.recorder.received] == [["a@example.com"], ["b@example.com"]]
    assert sender.pool is not None and sender.pool.connects == 2


async def test_a_second_drop_fails_the_send_as_transient(
    tmp_path: Path, smtp: SmtpServer, closing: Callable[[Any], Any]
) -> None:
    sender = closing(EmailSender(make_settings(tmp_path, smtp_port=smtp.port, smtp_pool_size=1)))
    smtp.recorder.drops["DATA"] = 2
    with pytest.raises(DeliveryError) as caught:
        await sender.send(outgoing("a@example.com"))
    assert not caught.value.permanent and not smtp.recorder.received
    # The pool recovers: the next message goes through on a fresh connection.
    await sender.send(outgoing("a@example.com"))
    assert len(smtp.recorder.received) == 1


async def test_idle_connection_closed_by_the_server_is_reopened(
    tmp_path: Path, smtp_server: Callable[..., SmtpServer], closing: Callable[[Any], Any]
) -> None:
    server = smtp_server(timeout=0.2)  # aiosmtpd hangs up on clients idle for 0.2 s
    sender = closing(EmailSender(make_settings(tmp_path, smtp_port=server.port, smtp_pool_size=1)))
    await sender.send(outgoing("a@example.com", key="k1"))
    await asyncio.sleep(0.4)
    await sender.send(outgoing("b@example.com", key="k2"))
    assert len(server.recorder.received) == 2 and len(server.recorder.peers) == 2


async def test_stale_connection_failing_noop_is_replaced(
    tmp_path: Path, smtp: SmtpServer, closing: Callable[[Any], Any]
) -> None:
    settings = make_settings(tmp_path, smtp_port=smtp.port, smtp_pool_size=1)
    pool = closing(SmtpPool(settings, idle_check=0.0))  # probe before every reuse
    compose = EmailSender(make_settings(tmp_path, smtp_host=None)).compose
    await pool.send(compose(outgoing("a@example.com")), sender="n@example.com", recipients=["a@example.com"])
    smtp.recorder.replies["NOOP"] = "421 4.4.2 idle too long"
    await pool.send(compose(outgoing("b@example.com")), sender="n@example.com", recipients=["b@example.com"])
    assert len(smtp.recorder.received) == 2 and pool.connects == 2
    del smtp.recorder.replies["NOOP"]
    await pool.send(compose(outgoing("c@example.com")), sender="n@example.com", recipients=["c@example.com"])
    assert pool.connects == 2  # a NOOP that succeeds keeps the connection


async def test_cancelled_send_does_not_poison_the_pool(
    tmp_path: Path, smtp: SmtpServer, closing: Callable[[Any], Any]
) -> None:
    sender = closing(EmailSender(make_settings(tmp_path, smtp_port=smtp.port, smtp_pool_size=1)))
    smtp.recorder.data_delay = 0.5
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):  # the dispatcher's own time limit, cutting a send mid-DATA
            await sender.send(outgoing("a@example.com", key="k1"))
    smtp.recorder.data_delay = 0.0
    await sender.send(outgoing("b@example.com", key="k2"))
    assert ["b@example.com"] in [r.rcpt_tos for r in smtp.recorder.received]
    assert sender.pool is not None and sender.pool.connects == 2  # the cut connection was not reused


# --- email: errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "reply", "kind", "permanent"),
    [
        ("RCPT", "550 5.1.1 <a@example.com>: mailbox unavailable", InvalidAddress, True),
        ("RCPT", "553 5.1.3 bad recipient syntax", InvalidAddress, True),
        ("RCPT", "450 4.2.0 mailbox busy", DeliveryError, False),
        ("RCPT", "451 4.3.0 try again later", DeliveryError, False),
        ("RCPT", "452 4.5.3 too many recipients", DeliveryError, False),
        ("RCPT", "421 4.3.2 shutting down", DeliveryError, False),
        ("DATA", "550 5.7.1 message rejected as spam", DeliveryError, True),
        ("DATA", "552 5.3.4 message too big", DeliveryError, True),
        ("DATA", "554 5.7.1 policy violation", DeliveryError, True),
        ("DATA", "451 4.7.1 greylisted", DeliveryError, False),
        ("DATA", "421 4.3.2 shutting down", DeliveryError, False),
        ("MAIL", "550 5.7.1 sender rejected", DeliveryError, True),
        ("MAIL", "454 4.7.0 TLS not available", DeliveryError, False),
        ("MAIL", "530 5.7.0 authentication required", DeliveryError, False),
    ],
)
async def test_smtp_replies_map_to_delivery_errors(
    tmp_path: Path,
    smtp: SmtpServer,
    command: str,
    reply: str,
    kind: type[DeliveryError],
    permanent: bool,
    closing: Callable[[Any], Any],
) -> None:
    sender = closing(EmailSender(make_settings(tmp_path, smtp_port=smtp.port)))
    smtp.recorder.replies[command] = reply
    with pytest.raises(DeliveryError) as caught:
        await sender.send(outgoing("a@example.com"))
    assert type(caught.value) is kind
    assert caught.value.permanent is permanent
    assert reply.split()[0] in str(caught.value)
    if reply.startswith("530"):
        assert "CRMBOT_SMTP_USERNAME" in str(caught.value)
    assert not smtp.recorder.received
    # After a refused transaction the connection is still good for the next message.
    del smtp.recorder.replies[command]
    await sender.send(outgoing("b@example.com", key="k2"))
    assert len(smtp.recorder.received) == 1


async def test_non_ascii_address_without_smtputf8_is_invalid(
    tmp_path: Path, smtp_server: Callable[..., SmtpServer], closing: Callable[[Any], Any]
) -> None:
    server = smtp_server(enable_SMTPUTF8=False)
    sender = closing(EmailSender(make_settings(tmp_path, smtp_port=server.port)))
    with pytest.raises(InvalidAddress):
        await sender.send(outgoing("王小明@example.com"))
    await sender.send(outgoing("wang@example.com", subject=ZH_SUBJECT, text=ZH_TEXT))
    assert server.recorder.received[0].message["Subject"] == ZH_SUBJECT  # MIME-encoded, no SMTPUTF8 needed


async def test_connection_refused_is_transient(tmp_path: Path, closing: Callable[[Any], Any]) -> None:
    sender = closing(EmailSender(make_settings(tmp_path, smtp_port=free_port())))
    with pytest.raises(DeliveryError) as caught:
        await sender.send(outgoing("a@example.com"))
    assert not caught.value.permanent and type(caught.value) is DeliveryError
    assert "127.0.0.1" in str(caught.value)


async def test_server_timeout_is_transient(
    tmp_path: Path, smtp: SmtpServer, closing: Callable[[Any], Any]
) -> None:
    sender = closing(EmailSender(make_settings(tmp_path, smtp_port=smtp.port, smtp_timeout=0.3)))
    smtp.recorder.data_delay = 1.0
    with pytest.raises(DeliveryError) as caught:
        await sender.send(outgoing("a@example.com"))
    assert not caught.value.permanent and "timeout" in str(caught.value).lower()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_login_and_failed_login(
    tmp_path: Path, smtp_server: Callable[..., SmtpServer], closing: Callable[[Any], Any]
) -> None:
    def authenticator(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        good = isinstance(data, LoginPassword) and (data.login, data.password) == (b"crm", PASSWORD.encode())
        # handled=False: with the default (True) aiosmtpd sends no 535 and the client waits forever.
        return AuthResult(success=good, handled=False)

    server = smtp_server(authenticator=authenticator, auth_required=True, auth_require_tls=False)
    good = make_settings(
        tmp_path, smtp_port=server.port, smtp_username="crm", smtp_password=SecretStr(PASSWORD)
    )
    sender = closing(EmailSender(good))
    await sender.send(outgoing("a@example.com"))
    assert len(server.recorder.received) == 1

    wrong = "Wrong-password-42"
    bad = closing(
        EmailSender(
            make_settings(
                tmp_path, smtp_port=server.port, smtp_username="crm", smtp_password=SecretStr(wrong)
            )
        )
    )
    with pytest.raises(DeliveryError) as caught:
        await bad.send(outgoing("a@example.com"))
    assert not caught.value.permanent and type(caught.value) is DeliveryError
    text = str(caught.value)
    assert "535" in text and "CRMBOT_SMTP_PASSWORD" in text and wrong not in text

    anonymous = closing(EmailSender(make_settings(tmp_path, smtp_port=server.port)))
    with pytest.raises(DeliveryError) as caught:
        await anonymous.send(outgoing("a@example.com"))
    assert not caught.value.permanent  # 530: configuration, not the message


# --- email: TLS -------------------------------------------------------------------------------------


async def test_starttls(
    tmp_path: Path,
    smtp_server: Callable[..., SmtpServer],
    certificate: Certificate,
    closing: Callable[[Any], Any],
) -> None:
    server = smtp_server(tls_context=certificate.server_context(), require_starttls=True)
    settings = make_settings(tmp_path, smtp_port=server.port, smtp_starttls=True)
    sender = closing(EmailSender(settings, tls_context=certificate.client_context()))
    await sender.send(outgoing("a@example.com", subject=ZH_SUBJECT, text=ZH_TEXT))
    [received] = server.recorder.received
    assert received.tls and received.message["Subject"] == ZH_SUBJECT

    untrusting = closing(EmailSender(settings))  # the system CAs do not know our self-signed certificate
    with pytest.raises(DeliveryError) as caught:
        await untrusting.send(outgoing("a@example.com"))
    assert not caught.value.permanent

    plain = closing(EmailSender(make_settings(tmp_path, smtp_port=server.port, smtp_starttls=False)))
    with pytest.raises(DeliveryError) as caught:
        await plain.send(outgoing("a@example.com"))
    assert not caught.value.permanent  # the server insists on STARTTLS: "530 Must issue a STARTTLS first"


async def test_implicit_tls(
    tmp_path: Path,
    smtp_server: Callable[..., SmtpServer],
    certificate: Certificate,
    closing: Callable[[Any], Any],
) -> None:
    server = smtp_server(ssl_context=certificate.server_context())
    settings = make_settings(tmp_path, smtp_port=server.port, smtp_tls=True, smtp_starttls=True)
    sender = closing(EmailSender(settings, tls_context=certificate.client_context()))
    for n in range(3):
        await sender.send(outgoing("a@example.com", key=f"k{n}"))
    assert len(server.recorder.received) == 3 and all(r.tls for r in server.recorder.received)
    assert sender.pool is not None and sender.pool.connects == 1


# --- email: .eml fallback ---------------------------------------------------------------------------


async def test_eml_files_when_no_smtp_host(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, smtp_host=None)
    sender: Sender = build_email_sender(settings)
    message = outgoing("王小明@example.com", key="evt:5/user:1", subject=ZH_SUBJECT, text=ZH_TEXT, lang="zh")

    first = await sender.send(message)
    second = await sender.send(message)
    await sender.send(outgoing("b@example.com", key="evt:6/user:1"))
    await sender.close()

    assert first == second
    files = sorted(settings.mail_directory.iterdir())
    assert [path.name for path in files] == sorted(
        [f"{safe_key('evt:5/user:1')}.eml", f"{safe_key('evt:6/user:1')}.eml"]
    )
    path = settings.mail_directory / f"{safe_key('evt:5/user:1')}.eml"
    assert path.stat().st_mode & 0o777 == 0o600
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == ZH_SUBJECT and parsed["Message-ID"] == first
    assert parsed["To"] == "王小明@example.com" and parsed["Content-Language"] == "zh-CN"
    assert parsed.get_content().rstrip("\n") == ZH_TEXT


async def test_eml_refuses_bad_address(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, smtp_host=None, mail_dir=tmp_path / "mail")
    with pytest.raises(InvalidAddress):
        await EmailSender(settings).send(outgoing("not-an-address"))
    assert not (tmp_path / "mail").exists()


# --- SMS: parts -------------------------------------------------------------------------------------


def test_gsm7_tables() -> None:
    assert len(GSM_BASIC) == 127 and set(GSM_BASIC) == GSM7_BASIC
    assert set("\f^{}\\[~]|€") == GSM7_EXTENSION and not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(
    ("text", "encoding", "characters", "parts"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),
        ("€" * 81, "GSM-7", 162, 2),
        ("{}[]~\\^|€\f", "GSM-7", 20, 1),
        (GSM_BASIC, "GSM-7", 127, 1),
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),  # the escape pair is not split across parts
        ("中" * 70, "UCS-2", 70, 1),
        ("中" * 71, "UCS-2", 71, 2),
        ("中" * 134, "UCS-2", 134, 2),
        ("中" * 135, "UCS-2", 135, 3),
        ("a" * 159 + "á", "UCS-2", 160, 3),  # one character outside GSM 03.38 makes it all UCS-2
        ("ç", "UCS-2", 1, 1),  # GSM 03.38 has capital Ç only
        ("`", "UCS-2", 1, 1),
        ("😀" * 35, "UCS-2", 70, 1),
        ("😀" * 36, "UCS-2", 72, 2),
        ("中" * 66 + "😀" + "中" * 66, "UCS-2", 134, 3),  # the surrogate pair is not split either
        ("", "GSM-7", 0, 1),
    ],
)
def test_sms_parts(text: str, encoding: str, characters: int, parts: int) -> None:
    counted = sms_parts(text)
    assert (counted.encoding, counted.characters, counted.parts) == (encoding, characters, parts)


# --- SMS: numbers and the file sender ---------------------------------------------------------------


def test_normalise_number() -> None:
    assert normalise_number("+86 138-0013-8000") == "+8613800138000"
    assert normalise_number("＋８６ １３８ ００１３ ８０００") == "+8613800138000"
    for bad in ("", "13800138000", "+86", "+1234567", "+1234567890123456", "+86 138 abc", "008613800138000"):
        with pytest.raises(InvalidAddress):
            normalise_number(bad)


async def test_file_sms(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sms_from="CRM")
    sender = build_sms_sender(settings)
    assert isinstance(sender, FileSmsSender)
    message = outgoing("+86 138 0013 8000", key="evt:1/sms", text="【crmbot】验证码 123456", channel="sms")

    provider_id = await sender.send(message)
    assert await sender.send(message) == provider_id  # a re-send overwrites the same file

    name = f"{safe_key('evt:1/sms')}.txt"
    assert provider_id == f"file:{name}"
    assert [path.name for path in settings.sms_directory.iterdir()] == [name]
    path = settings.sms_directory / name
    assert path.stat().st_mode & 0o777 == 0o600
    head, _, body = path.read_text(encoding="utf-8").partition("\n\n")
    lines = head.splitlines()
    assert lines[0] == "To: +8613800138000" and lines[1] == "From: CRM" and lines[2].startswith("Date: ")
    assert lines[3] == "Parts: 1 (UCS-2)"
    assert body == "【crmbot】验证码 123456\n"


async def test_too_long_and_empty_sms_are_refused(tmp_path: Path) -> None:
    sender = FileSmsSender(make_settings(tmp_path))
    for text in ("中" * (67 * 10 + 1), "   "):
        with pytest.raises(DeliveryError) as caught:
            await sender.send(outgoing("+8613800138000", text=text, channel="sms"))
        assert caught.value.permanent and not isinstance(caught.value, InvalidAddress)
    assert not settings_dir_exists(tmp_path)
    await sender.send(outgoing("+8613800138000", text="中" * 670, channel="sms"))  # exactly 10 parts is fine


def settings_dir_exists(tmp_path: Path) -> bool:
    """Whether the file SMS sender wrote anything."""
    return (tmp_path / "var" / "sms").exists()


def test_build_sms_sender_names_missing_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CRMBOT_SMS_ACCOUNT_SID, CRMBOT_SMS_AUTH_TOKEN, CRMBOT_SMS_FROM"):
        build_sms_sender(make_settings(tmp_path, sms_provider="twilio"))
    with pytest.raises(ValueError, match="CRMBOT_SMS_AUTH_TOKEN"):
        build_sms_sender(
            make_settings(tmp_path, sms_provider="twilio", sms_account_sid="AC1", sms_from="+1555")
        )
    with pytest.raises(ValueError, match="CRMBOT_SMS_URL"):
        build_sms_sender(make_settings(tmp_path, sms_provider="http"))
    with pytest.raises(ValueError, match="CRMBOT_SMS_BODY_TEMPLATE"):
        HttpSmsSender(make_settings(tmp_path, sms_url="http://127.0.0.1:9/", sms_body_template="{{ to "))


# --- SMS: HTTP providers ----------------------------------------------------------------------------


@dataclass
class Request:
    """One request as the fake gateway saw it."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes


@dataclass
class Gateway:
    """A local HTTP server standing in for Twilio or an SMS gateway."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    status: int = 201
    body: Any = field(default_factory=lambda: {"sid": "SM0123456789abcdef"})
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self, status: int, body: Any = "", headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            Request(
                request.method, request.path, dict(request.headers), dict(request.query), await request.read()
            )
        )
        if self.hang:
            await asyncio.wait_for(self.released.wait(), 5.0)
        if isinstance(self.body, str):
            return web.Response(status=self.status, text=self.body, headers=self.headers)
        return web.json_response(self.body, status=self.status, headers=self.headers)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """The fake gateway on a free loopback port."""
    fake = Gateway()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    yield fake
    fake.released.set()
    await runner.cleanup()


def twilio(tmp_path: Path, gateway: Gateway, **overrides: Any) -> TwilioSmsSender:
    """A Twilio sender pointed at the fake gateway."""
    values: dict[str, Any] = {
        "sms_provider": "twilio",
        "sms_url": gateway.url,
        "sms_account_sid": "AC123",
        "sms_auth_token": SecretStr("tw-token"),
        "sms_from": "+15550001111",
    }
    sender = build_sms_sender(make_settings(tmp_path, **{**values, **overrides}))
    assert isinstance(sender, TwilioSmsSender)
    return sender


async def test_twilio_request_shape(tmp_path: Path, gateway: Gateway, closing: Callable[[Any], Any]) -> None:
    sender = closing(twilio(tmp_path, gateway))
    sid = await sender.send(
        outgoing("+86 138 0013 8000", key="evt:1/sms", text="验证码 123456", channel="sms")
    )

    assert sid == "SM0123456789abcdef"
    [request] = gateway.requests
    assert (request.method, request.path) == ("POST", "/2010-04-01/Accounts/AC123/Messages.json")
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"AC123:tw-token").decode()
    assert request.headers["I-Twilio-Idempotency-Token"] == "evt:1/sms"
    assert request.headers["Idempotency-Key"] == "evt:1/sms"
    assert request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    form = {key: values[0] for key, values in parse_qs(request.body.decode()).items()}
    assert form == {"To": "+8613800138000", "From": "+15550001111", "Body": "验证码 123456"}


async def test_twilio_messaging_service(
    tmp_path: Path, gateway: Gateway, closing: Callable[[Any], Any]
) -> None:
    service = "MG" + "0" * 32
    sender = closing(twilio(tmp_path, gateway, sms_from=service))
    await sender.send(outgoing("+8613800138000", channel="sms"))
    form = parse_qs(gateway.requests[0].body.decode())
    assert form["MessagingServiceSid"] == [service] and "From" not in form


@pytest.mark.parametrize(
    ("status", "body", "kind", "permanent"),
    [
        (400, {"code": 21211, "message": "Invalid 'To' Phone Number"}, InvalidAddress, True),
        (400, {"code": 21614, "message": "'To' number is not a valid mobile number"}, InvalidAddress, True),
        (400, {"code": 21217, "message": "Phone number does not appear to be valid"}, InvalidAddress, True),
        (
            400,
            {"code": 21610, "message": "Attempt to send to unsubscribed recipient"},
            RecipientBlocked,
            True,
        ),
        (400, {"code": 21602, "message": "Message body is required"}, DeliveryError, True),
        (400, {"code": 21606, "message": "'From' number is not SMS capable"}, DeliveryError, False),
        (401, {"code": 20003, "message": "Authenticate"}, DeliveryError, False),
        (403, {"code": 20003, "message": "Forbidden"}, DeliveryError, False),
        (404, {"code": 20404, "message": "The requested resource was not found"}, DeliveryError, False),
        (500, "Internal Server Error", DeliveryError, False),
        (503, {"code": 20500, "message": "Service unavailable"}, DeliveryError, False),
    ],
)
async def test_twilio_errors(
    tmp_path: Path,
    gateway: Gateway,
    status: int,
    body: Any,
    kind: type[DeliveryError],
    permanent: bool,
    closing: Callable[[Any], Any],
) -> None:
    sender = closing(twilio(tmp_path, gateway))
    gateway.answer(status, body)
    with pytest.raises(DeliveryError) as caught:
        await sender.send(outgoing("+8613800138000", channel="sms"))
    assert type(caught.value) is kind and caught.value.permanent is permanent
    assert str(status) in str(caught.value) and "tw-token" not in str(caught.value)


async def test_twilio_rate_limit(tmp_path: Path, gateway: Gateway, closing: Callable[[Any], Any]) -> None:
    sender = closing(twilio(tmp_path, gateway))
    gateway.answer(429, {"code": 20429, "message": "Too Many Requests"}, {"Retry-After": "7"})
    with pytest.raises(RateLimited) as caught:
        await sender.send(outgoing("+8613800138000", channel="sms"))
    assert caught.value.retry_after == 7.0 and not caught.value.permanent
    gateway.answer(429, {"code": 20429, "message": "Too Many Requests"})
    with pytest.raises(RateLimited) as caught:
        await sender.send(outgoing("+8613800138000", channel="sms"))
    assert caught.value.retry_after is None


async def test_twilio_timeout_and_refused_connection(
    tmp_path: Path, gateway: Gateway, closing: Callable[[Any], Any]
) -> None:
    sender = closing(twilio(tmp_path, gateway, sms_timeout=0.3))
    gateway.hang = True
    with pytest.raises(DeliveryError) as caught:
        await sender.send(outgoing("+8613800138000", channel="sms"))
    assert not caught.value.permanent and "timed out" in str(caught.value)

    nobody = closing(twilio(tmp_path, gateway, sms_url=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(DeliveryError) as caught:
        await nobody.send(outgoing("+8613800138000", channel="sms"))
    assert not caught.value.permanent and "unreachable" in str(caught.value)


@pytest.mark.parametrize("address", ["13800138000", "+86", "+86 138 0013 8000 1234 5678", "abc", ""])
async def test_invalid_numbers_never_reach_the_network(
    tmp_path: Path, gateway: Gateway, address: str, closing: Callable[[Any], Any]
) -> None:
    senders = [
        closing(twilio(tmp_path, gateway)),
        closing(HttpSmsSender(make_settings(tmp_path, sms_url=gateway.url))),
        FileSmsSender(make_settings(tmp_path)),
    ]
    for sender in senders:
        with pytest.raises(InvalidAddress):
            await sender.send(outgoing(address, channel="sms"))
    assert not gateway.requests and not settings_dir_exists(tmp_path)


def http_sender(tmp_path: Path, gateway: Gateway, **overrides: Any) -> HttpSmsSender:
    """A generic HTTP gateway sender pointed at the fake gateway."""
    values: dict[str, Any] = {
        "sms_provider": "http",
        "sms_url": f"{gateway.url}/v1/sms",
        "sms_auth_token": SecretStr("gw-token"),
        "sms_from": "CRM",
    }
    sender = build_sms_sender(make_settings(tmp_path, **{**values, **overrides}))
    assert isinstance(sender, HttpSmsSender)
    return sender


async def test_http_gateway_json_body(
    tmp_path: Path, gateway: Gateway, closing: Callable[[Any], Any]
) -> None:
    sender = closing(http_sender(tmp_path, gateway))
    gateway.answer(200, {"message_id": "m-42", "status": "queued"})
    text = '【crmbot】维修单 "R-1024" 已派工 <b>'
    provider_id = await sender.send(outgoing("+8613800138000", key="evt:2/sms", text=text, channel="sms"))

    assert provider_id == "m-42"
    [request] = gateway.requests
    assert (request.method, request.path) == ("POST", "/v1/sms")
    assert request.headers["Authorization"] == "Bearer gw-token"
    assert request.headers["Idempotency-Key"] == "evt:2/sms"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"to": "+8613800138000", "text": text, "from": "CRM"}


async def test_http_gateway_custom_template_and_id_fallback(
    tmp_path: Path, gateway: Gateway, closing: Callable[[Any], Any]
) -> None:
    template = "phone={{ to|urlencode }}&msg={{ text|urlencode }}&ref={{ dedupe_key|urlencode }}"
    sender = closing(
        http_sender(
            tmp_path, gateway, sms_method="PUT", sms_body_template=template,
            sms_content_type="application/x-www-form-urlencoded", sms_auth_token=None,
        )
    )  # fmt: skip
    gateway.answer(202, "accepted")
    provider_id = await sender.send(outgoing("+8613800138000", key="k 1", text="你好 & bye", channel="sms"))

    assert provider_id == "http:202"
    [request] = gateway.requests
    assert request.method == "PUT" and "Authorization" not in request.headers
    assert request.headers["Idempotency-Key"] == safe_key("k 1")  # a space cannot go into a header as is
    assert parse_qs(request.body.decode()) == {
        "phone": ["+8613800138000"],
        "msg": ["你好 & bye"],
        "ref": ["k 1"],
    }


async def test_http_gateway_get(tmp_path: Path, gateway: Gateway, closing: Callable[[Any], Any]) -> None:
    sender = closing(http_sender(tmp_path, gateway, sms_method="GET"))
    gateway.answer(200, {"id": 981})
    provider_id = await sender.send(outgoing("+8613800138000", key="evt:3", text="你好", channel="sms"))

    assert provider_id == "981"
    [request] = gateway.requests
    assert request.method == "GET" and request.body == b""
    assert request.query == {"to": "+8613800138000", "text": "你好", "sender": "CRM", "dedupe_key": "evt:3"}


async def test_http_gateway_template_is_sandboxed(
    tmp_path: Path, gateway: Gateway, closing: Callable[[Any], Any]
) -> None:
    for template in (
        "{{ to.__class__.__mro__ }}",
        "{{ nonexistent }}",
        "{{ ''.__class__.__subclasses__() }}",
    ):
        sender = closing(http_sender(tmp_path, gateway, sms_body_template=template))
        with pytest.raises(DeliveryError) as caught:
            await sender.send(outgoing("+8613800138000", channel="sms"))
        assert not caught.value.permanent and "CRMBOT_SMS_BODY_TEMPLATE" in str(caught.value)
    assert not gateway.requests


@pytest.mark.parametrize(
    ("status", "body", "kind", "permanent"),
    [
        (400, {"error": "invalid phone number"}, InvalidAddress, True),
        (422, {"errors": {"to": ["is not a mobile number"]}}, InvalidAddress, True),
        (404, "recipient not found", InvalidAddress, True),
        (400, {"error": "message contains a banned word"}, DeliveryError, True),
        (422, "Failed to parse the request body", DeliveryError, True),
        (404, "Not Found", DeliveryError, False),  # a wrong CRMBOT_SMS_URL: keep the message
        (401, {"error": "bad token"}, DeliveryError, False),
        (403, "Forbidden", DeliveryError, False),
        (500, "oops", DeliveryError, False),
        (503, "maintenance", DeliveryError, False),
    ],
)
async def test_http_gateway_errors(
    tmp_path: Path,
    gateway: Gateway,
    status: int,
    body: Any,
    kind: type[DeliveryError],
    permanent: bool,
    closing: Callable[[Any], Any],
) -> None:
    sender = closing(http_sender(tmp_path, gateway))
    gateway.answer(status, body)
    with pytest.raises(DeliveryError) as caught:
        await sender.send(outgoing("+8613800138000", channel="sms"))
    assert type(caught.value) is kind and caught.value.permanent is permanent
    assert "gw-token" not in str(caught.value)


async def test_http_gateway_rate_limit_and_timeout(
    tmp_path: Path, gateway: Gateway, closing: Callable[[Any], Any]
) -> None:
    sender = closing(http_sender(tmp_path, gateway, sms_timeout=0.3))
    gateway.answer(429, "slow down", {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    with pytest.raises(RateLimited) as caught:
        await sender.send(outgoing("+8613800138000", channel="sms"))
    assert caught.value.retry_after is not None and caught.value.retry_after > 1e9

    gateway.hang = True
    with pytest.raises(DeliveryError) as failure:
        await sender.send(outgoing("+8613800138000", channel="sms"))
    assert not failure.value.permanent and "timed out" in str(failure.value)
