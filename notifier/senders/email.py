"""Email delivery: SMTP over a small pool of reused connections, or .eml files when no SMTP host is set."""

from __future__ import annotations

import asyncio
import html
import re
import ssl
import time
import unicodedata
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

import aiosmtplib

from core.settings import Settings
from notifier.senders import safe_key, write_private
from notifier.types import EMAIL, DeliveryError, InvalidAddress, Outgoing

__all__ = ["IDLE_CHECK", "EmailSender", "SmtpPool", "build_email_sender", "check_email_address"]

# A connection idle longer than this is probed with NOOP before use: servers drop idle clients silently.
IDLE_CHECK = 30.0
_PROBE_TIMEOUT = 5.0
# Replies that mean "the server is going away" (421): the connection is gone, a fresh one may work.
_CLOSING = 421
# 5xx replies to MAIL FROM / DATA that mean "log in first" or "bad credentials": an operator fixes these.
_AUTH_CODES = frozenset({530, 534, 535, 538})

_LOCAL = re.compile(r"[^\s@<>()\[\],;:\"\\]+")
_LABEL = re.compile(r"[^\W_](?:(?:[^\W_]|-)*[^\W_])?")


def check_email_address(address: str) -> str:
    """Return the bare address if it looks deliverable, else raise InvalidAddress (no network involved)."""
    candidate = address.strip()
    if any(unicodedata.category(char)[0] in "CZ" for char in candidate):
        raise InvalidAddress(f"malformed email address {address!r}")
    if parseaddr(candidate) != ("", candidate) or len(candidate) > 254:
        raise InvalidAddress(f"malformed email address {address!r}")
    local, at, domain = candidate.rpartition("@")
    if (
        not at
        or not _LOCAL.fullmatch(local)
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
        or len(local) > 64
        or not all(_LABEL.fullmatch(label) for label in domain.split("."))
    ):
        raise InvalidAddress(f"malformed email address {address!r}")
    return candidate


@dataclass(slots=True)
class _Pooled:
    """One pooled client and when it last completed a command, to know when to probe it."""

    client: aiosmtplib.SMTP
    last_used: float = 0.0


class SmtpPool:
    """Up to `smtp_pool_size` SMTP connections, opened on first need and reused message after message.

    An SMTP connection carries one transaction at a time, so the pool size is the send concurrency.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tls_context: ssl.SSLContext | None = None,
        idle_check: float = IDLE_CHECK,
    ) -> None:
        if settings.smtp_host is None:
            raise ValueError("SmtpPool needs CRMBOT_SMTP_HOST")
        self._settings = settings
        self._tls_context = tls_context
        self._idle_check = idle_check
        self._idle: list[_Pooled] = []
        self._slots = asyncio.Semaphore(settings.smtp_pool_size)
        self._closed = False
        self.size = settings.smtp_pool_size
        self.connects = 0  # connections opened so far (tests and the benchmark read it)

    def _client(self) -> aiosmtplib.SMTP:
        settings = self._settings
        username = settings.smtp_username or None
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=username,
            password=password if username else None,
            use_tls=settings.smtp_tls,
            # False, not None: aiosmtplib's None means "upgrade whenever the server offers it", which
            # would override an operator who turned STARTTLS off.
            start_tls=settings.smtp_starttls and not settings.smtp_tls,
            tls_context=self._tls_context,
            timeout=settings.smtp_timeout,
        )

    @asynccontextmanager
    async def _lease(self) -> AsyncIterator[_Pooled]:
        """Hold one pooled client for one message; put it back (or close it) afterwards."""
        await self._slots.acquire()
        if self._closed:
            # Shutting down while messages wait for a connection: they go back to the queue, not lost.
            self._slots.release()
            raise DeliveryError("the SMTP pool is closed (shutting down)")
        pooled = self._idle.pop() if self._idle else _Pooled(self._client())
        reusable = False
        try:
            yield pooled
            reusable = True
        except (aiosmtplib.SMTPException, ValueError):
            # The server answered (aiosmtplib reset the envelope) or the message was refused before any
            # command; timeouts and drops already closed the client inside aiosmtplib.
            reusable = True
            raise
        finally:
            # Anything else (a cancellation mid-command) leaves the protocol out of step: never reuse it.
            if not reusable:
                pooled.client.close()
            pooled.last_used = time.monotonic()
            if self._closed:
                await _quit(pooled.client, self._settings.smtp_timeout)
            else:
                self._idle.append(pooled)
            self._slots.release()

    async def _connect(self, client: aiosmtplib.SMTP) -> None:
        await client.connect()
        self.connects += 1

    async def send(self, message: EmailMessage, *, sender: str, recipients: Sequence[str]) -> str:
        """Send one message on a pooled connection; return the server's reply to DATA.

        A live-looking connection idle for longer than the idle check is probed with NOOP first; one
        that dropped meanwhile is simply reopened. If the connection drops (or the server answers 421)
        during the transaction, it is reopened and the message sent once more before the error escapes.
        """
        async with self._lease() as pooled:
            client = pooled.client
            if client.is_connected and time.monotonic() - pooled.last_used > self._idle_check:
                try:
                    # Short: a connection silently dropped by a firewall would otherwise eat the full timeout.
                    await client.noop(timeout=min(self._settings.smtp_timeout, _PROBE_TIMEOUT))
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
            retried = False
            while True:
                try:
                    if not client.is_connected:
                        await self._connect(client)
                    _, reply = await client.send_message(message, sender=sender, recipients=list(recipients))
                except (
                    aiosmtplib.SMTPServerDisconnected,
                    aiosmtplib.SMTPResponseException,
                    aiosmtplib.SMTPRecipientsRefused,
                ) as error:
                    dropped = isinstance(error, aiosmtplib.SMTPServerDisconnected) or _code(error) == _CLOSING
                    # A refused connect is no dropped connection: reconnecting at once would only repeat it.
                    if retried or not dropped or isinstance(error, aiosmtplib.SMTPConnectError):
                        raise
                    client.close()
                    retried = True
                    continue
                return reply

    async def close(self) -> None:
        """QUIT every idle connection; connections in use are closed when they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(pooled.client, self._settings.smtp_timeout) for pooled in idle))


async def _quit(client: aiosmtplib.SMTP, limit: float) -> None:
    """Say QUIT politely if still connected; a server that does not answer is simply cut off."""
    try:
        if client.is_connected:
            await client.quit(timeout=min(limit, 5.0))
    except (aiosmtplib.SMTPException, OSError):
        pass
    finally:
        client.close()


def _code(error: Exception) -> int | None:
    """The SMTP reply code carried by an aiosmtplib error, if any (the first refusal for RCPT)."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return error.recipients[0].code if error.recipients else None
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return error.code
    return None


class EmailSender:
    """Sends rendered notifications as UTF-8 email through an SmtpPool, or writes .eml files."""

    channel: str = EMAIL

    def __init__(self, settings: Settings, *, tls_context: ssl.SSLContext | None = None) -> None:
        self._settings = settings
        self._envelope_from = parseaddr(settings.mail_from)[1] or settings.mail_from
        _, at, domain = self._envelope_from.rpartition("@")
        self._domain = domain if at and domain else "crmbot.local"
        self.pool = SmtpPool(settings, tls_context=tls_context) if settings.smtp_host else None

    def message_id(self, dedupe_key: str) -> str:
        """The Message-ID for a dedupe key: the same on every re-send, so receivers see one message."""
        return f"<{safe_key(dedupe_key)}@{self._domain}>"

    def compose(self, message: Outgoing) -> EmailMessage:
        """Build the email for `message` (plain text, plus an HTML alternative when there is one)."""
        address = check_email_address(message.address)
        content = message.content
        email = EmailMessage()
        email["From"] = self._settings.mail_from
        email["To"] = address
        # A template's stray newline must not become a header error (or a header injection).
        email["Subject"] = " ".join(content.subject.split())
        email["Date"] = format_datetime(datetime.now(UTC))
        email["Message-ID"] = self.message_id(message.dedupe_key)
        email.set_content(content.text, charset="utf-8")
        if content.html and content.image is not None:
            # The chart travels inline (multipart/related beside the HTML), shown where the template put
            # the slot, else at the end of the body. The Content-ID follows the dedupe key: a re-send is
            # the same message.
            slot = "<!--crmbot:image-->"
            cid = f"chart.{safe_key(message.dedupe_key)}@{self._domain}"
            alt = html.escape(content.image_alt, quote=True)
            tag = f'<p><img src="cid:{cid}" alt="{alt}" width="600" style="max-width:100%;height:auto;"></p>'
            if slot in content.html:
                body = content.html.replace(slot, tag, 1)
            elif "</body>" in content.html:
                body = content.html.replace("</body>", f"{tag}\n</body>", 1)
            else:
                body = f"{content.html}\n{tag}"
            email.add_alternative(body, subtype="html", charset="utf-8")
            html_part = email.get_body(preferencelist=("html",))
            assert html_part is not None
            html_part.add_related(
                content.image,
                maintype="image",
                subtype="png",
                cid=f"<{cid}>",
                disposition="inline",
                filename="chart.png",
            )
        elif content.html:
            email.add_alternative(content.html, subtype="html", charset="utf-8")
        elif content.image is not None:
            email.add_attachment(content.image, maintype="image", subtype="png", filename="chart.png")
        # After the body: making the message multipart moves every Content-* header into the first part.
        email["Content-Language"] = "zh-CN" if message.lang.lower().startswith("zh") else "en"
        return email

    async def send(self, message: Outgoing) -> str:
        """Deliver `message` over SMTP (or to an .eml file); return its Message-ID."""
        address = check_email_address(message.address)
        email = self.compose(message)
        message_id = self.message_id(message.dedupe_key)
        if self.pool is None:
            path = self._settings.mail_directory / f"{safe_key(message.dedupe_key)}.eml"
            # A non-ASCII address cannot be RFC 2047-encoded: write such a message as SMTPUTF8 would send it.
            policy = email_policy.SMTPUTF8 if not address.isascii() else email_policy.SMTP
            policy = policy.clone(linesep="\n")
            try:
                await asyncio.to_thread(write_private, path, email.as_bytes(policy=policy))
            except OSError as error:
                raise DeliveryError(f"cannot write {path}: {error}") from error
            return message_id
        try:
            await self.pool.send(email, sender=self._envelope_from, recipients=[address])
        except (aiosmtplib.SMTPException, OSError, ValueError) as error:
            raise self._failure(error, address) from error
        return message_id

    def _failure(self, error: Exception, address: str) -> DeliveryError:
        """Translate an aiosmtplib error into the notifier's DeliveryError family."""
        settings = self._settings
        server = f"{settings.smtp_host}:{settings.smtp_port}"
        code = _code(error)
        reply = self._scrub(_reply_text(error))
        failure: DeliveryError
        if isinstance(error, aiosmtplib.SMTPRecipientsRefused | aiosmtplib.SMTPRecipientRefused):
            if code is not None and code >= 500 and code not in _AUTH_CODES:
                return InvalidAddress(f"{server} refused recipient {address}: {code} {reply}")
            return DeliveryError(f"{server} deferred recipient {address}: {code} {reply}")
        if isinstance(error, aiosmtplib.SMTPAuthenticationError):
            return DeliveryError(
                f"SMTP login as {settings.smtp_username!r} on {server} failed ({code} {reply}); "
                "check CRMBOT_SMTP_USERNAME and CRMBOT_SMTP_PASSWORD"
            )
        if isinstance(error, aiosmtplib.SMTPSenderRefused | aiosmtplib.SMTPDataError):
            stage = "MAIL FROM" if isinstance(error, aiosmtplib.SMTPSenderRefused) else "DATA"
            if code is not None and code in _AUTH_CODES:
                return DeliveryError(
                    f"{server} wants authentication at {stage} ({code} {reply}); "
                    "check CRMBOT_SMTP_USERNAME and CRMBOT_SMTP_PASSWORD"
                )
            failure = DeliveryError(f"{server} refused the message at {stage}: {code} {reply}")
            if code is not None and code >= 500:
                failure.permanent = True  # the same message will be refused again
            return failure
        if isinstance(error, ssl.SSLError):
            # Checked before ValueError: a certificate failure is both, and it is our setup, not the address.
            return DeliveryError(f"TLS with {server} failed: {reply}")
        if isinstance(error, aiosmtplib.SMTPNotSupported):
            # Only the SMTPUTF8 check raises this while sending: the server takes no non-ASCII address.
            if not address.isascii():
                return InvalidAddress(f"{server} cannot deliver to {address}: {reply}")
            return DeliveryError(
                f"{server} cannot send from {self._envelope_from}: {reply}; check CRMBOT_MAIL_FROM"
            )
        if isinstance(error, ValueError):
            return InvalidAddress(f"cannot send to {address}: {reply}")
        if isinstance(error, aiosmtplib.SMTPTimeoutError | TimeoutError):
            return DeliveryError(f"SMTP timeout talking to {server}: {reply}")
        if isinstance(error, aiosmtplib.SMTPResponseException):
            return DeliveryError(f"{server} answered {code} {reply}")
        # Connection refused or reset, a drop after the one reconnect, TLS failures, STARTTLS not offered.
        return DeliveryError(f"SMTP delivery through {server} failed: {reply}")

    def _scrub(self, text: str) -> str:
        """Remove the SMTP password from text bound for logs and the database, should a server echo it."""
        secret = self._settings.smtp_password
        password = secret.get_secret_value() if secret else ""
        return text.replace(password, "******") if len(password) >= 4 else text

    async def close(self) -> None:
        """Close the SMTP pool's connections."""
        if self.pool is not None:
            await self.pool.close()


def _reply_text(error: Exception) -> str:
    """The human part of an error: the server's reply text, else the exception's message."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
        return error.recipients[0].message
    if isinstance(error, aiosmtplib.SMTPException):
        return error.message or type(error).__name__
    return str(error) or type(error).__name__


def build_email_sender(settings: Settings) -> EmailSender:
    """The email sender for these settings: SMTP when CRMBOT_SMTP_HOST is set, else .eml files."""
    return EmailSender(settings)
