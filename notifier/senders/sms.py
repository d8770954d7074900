"""SMS delivery: to files (development), through a Twilio-compatible API, or a generic HTTP gateway."""

from __future__ import annotations

import asyncio
import json
import re
import unicodedata
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from core.settings import Settings
from notifier.senders import safe_key, write_private
from notifier.senders.smsparts import SmsParts, sms_parts
from notifier.types import SMS, DeliveryError, InvalidAddress, Outgoing, RateLimited, RecipientBlocked, Sender

__all__ = [
    "MAX_PARTS",
    "FileSmsSender",
    "HttpSmsSender",
    "TwilioSmsSender",
    "build_sms_sender",
    "normalise_number",
]

# Notification SMS are short templates; a text this long is a template bug, and would cost ten SMS.
MAX_PARTS = 10
TWILIO_API = "https://api.twilio.com"

_NUMBER = re.compile(r"\+[0-9]{8,15}")
# Twilio error codes meaning "this number cannot receive SMS", as opposed to a problem on our side.
_TWILIO_BAD_NUMBER = frozenset({21211, 21214, 21217, 21401, 21407, 21421, 21612, 21614})
_TWILIO_UNSUBSCRIBED = 21610
# Twilio 400s that are our configuration (From number, account permissions): an operator fixes them.
_TWILIO_CONFIG = frozenset({21212, 21408, 21603, 21606, 21660})
# A gateway's 4xx body that talks about the number points at the recipient, not at our request.
_MENTIONS_NUMBER = re.compile(
    r"\b(?:phone|number|msisdn|recipient|destination)s?\b|[\"'`]to[\"'`]|\bto\s*(?::|=|field|param)",
    re.IGNORECASE,
)
_SNIPPET = 200


def normalise_number(address: str) -> str:
    """Return `address` as +digits (spaces and dashes removed), or raise InvalidAddress."""
    # NFKC turns full-width digits and plus signs (common in Chinese input) into ASCII ones.
    number = re.sub(r"[\s-]", "", unicodedata.normalize("NFKC", address))
    if not _NUMBER.fullmatch(number):
        raise InvalidAddress(f"not an international phone number (+ and 8-15 digits): {address!r}")
    return number


def _checked(message_text: str) -> SmsParts:
    """Refuse texts no SMS should carry: empty, or longer than MAX_PARTS parts."""
    if not message_text.strip():
        failure = DeliveryError("empty SMS text")
        failure.permanent = True
        raise failure
    parts = sms_parts(message_text)
    if parts.parts > MAX_PARTS:
        failure = DeliveryError(
            f"SMS text too long: {parts.characters} {parts.encoding} units need {parts.parts} parts "
            f"(at most {MAX_PARTS})"
        )
        failure.permanent = True
        raise failure
    return parts


def _header_token(dedupe_key: str) -> str:
    """The dedupe key as an HTTP header value: itself when printable ASCII, else its file-safe form."""
    if re.fullmatch(r"[\x21-\x7e]{1,200}", dedupe_key):
        return dedupe_key
    return safe_key(dedupe_key)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), if there is a usable one."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _snippet(response: httpx.Response) -> str:
    """The start of a response body, on one line, for error messages."""
    text = " ".join(response.text.split())
    return text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else "")


def _json(response: httpx.Response) -> dict[str, Any]:
    """The response body as a JSON object, or {} when it is not one."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _transport_failure(name: str, error: Exception) -> DeliveryError:
    """A timeout or connection failure: the gateway may be fine in a minute."""
    kind = "timed out" if isinstance(error, httpx.TimeoutException) else "unreachable"
    return DeliveryError(f"{name} {kind}: {type(error).__name__}: {error}")


class _SmsSender:
    """What every SMS sender shares: the channel name, the number and length checks, close()."""

    channel: str = SMS

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sender = settings.sms_from or "crmbot"

    def _prepare(self, address: str, text: str) -> tuple[str, SmsParts]:
        return normalise_number(address), _checked(text)

    async def close(self) -> None:
        """Nothing to release."""


class FileSmsSender(_SmsSender):
    """Writes each SMS to `<sms_directory>/<dedupe key>.txt` (development and demos)."""

    async def send(self, message: Outgoing) -> str:
        """Write the SMS file (a re-send overwrites it); return `file:<name>`."""
        number, parts = self._prepare(message.address, message.content.text)
        name = f"{safe_key(message.dedupe_key)}.txt"
        body = (
            f"To: {number}\nFrom: {self._sender}\nDate: {datetime.now(UTC).isoformat()}\n"
            f"Parts: {parts.parts} ({parts.encoding})\n\n{message.content.text}\n"
        )
        path = self._settings.sms_directory / name
        try:
            await asyncio.to_thread(write_private, path, body.encode("utf-8"))
        except OSError as error:
            raise DeliveryError(f"cannot write {path}: {error}") from error
        return f"file:{name}"


class TwilioSmsSender(_SmsSender):
    """Sends through Twilio's Messages API (or a provider that speaks the same REST dialect)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        missing = [
            name
            for name, value in (
                ("CRMBOT_SMS_ACCOUNT_SID", settings.sms_account_sid),
                (
                    "CRMBOT_SMS_AUTH_TOKEN",
                    settings.sms_auth_token and settings.sms_auth_token.get_secret_value(),
                ),
                ("CRMBOT_SMS_FROM", settings.sms_from),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"CRMBOT_SMS_PROVIDER=twilio needs {', '.join(missing)}")
        assert settings.sms_account_sid is not None and settings.sms_auth_token is not None
        base = (settings.sms_url or TWILIO_API).rstrip("/")
        self._url = f"{base}/2010-04-01/Accounts/{settings.sms_account_sid}/Messages.json"
        self._client = httpx.AsyncClient(
            timeout=settings.sms_timeout,
            auth=(settings.sms_account_sid, settings.sms_auth_token.get_secret_value()),
            headers={"Accept": "application/json"},
        )

    async def send(self, message: Outgoing) -> str:
        """POST the message; return Twilio's message sid."""
        number, _ = self._prepare(message.address, message.content.text)
        form = {"To": number, "Body": message.content.text}
        # A Messaging Service sid (MG…) in CRMBOT_SMS_FROM lets Twilio pick the sender number.
        form["MessagingServiceSid" if re.fullmatch(r"MG[0-9a-fA-F]{32}", self._sender) else "From"] = (
            self._sender
        )
        token = _header_token(message.dedupe_key)
        headers = {"I-Twilio-Idempotency-Token": token, "Idempotency-Key": token}
        try:
            response = await self._client.post(self._url, data=form, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise _transport_failure("Twilio API", error) from error
        return self._result(response, number)

    def _result(self, response: httpx.Response, number: str) -> str:
        status = response.status_code
        body = _json(response)
        if 200 <= status < 300:
            sid = body.get("sid")
            return str(sid) if isinstance(sid, str | int) and not isinstance(sid, bool) else f"http:{status}"
        raw_code = body.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        reason = body.get("message") or _snippet(response)
        detail = f"HTTP {status}, Twilio error {code}: {reason}" if code else f"HTTP {status}: {reason}"
        if status == 429:
            raise RateLimited(f"Twilio rate limit ({detail})", retry_after=_retry_after(response))
        if status >= 500 or status in (408, 409):
            raise DeliveryError(f"Twilio unavailable ({detail})")
        if status in (401, 403, 404):
            raise DeliveryError(
                f"Twilio refused the request ({detail}); check CRMBOT_SMS_ACCOUNT_SID, "
                "CRMBOT_SMS_AUTH_TOKEN and CRMBOT_SMS_URL"
            )
        if code == _TWILIO_UNSUBSCRIBED:
            raise RecipientBlocked(f"{number} unsubscribed (replied STOP) ({detail})")
        if code in _TWILIO_BAD_NUMBER:
            raise InvalidAddress(f"Twilio cannot deliver to {number} ({detail})")
        if code in _TWILIO_CONFIG:
            raise DeliveryError(f"Twilio refused our sender settings ({detail}); check CRMBOT_SMS_FROM")
        failure = DeliveryError(f"Twilio refused the message ({detail})")
        failure.permanent = 400 <= status < 500
        raise failure

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


class HttpSmsSender(_SmsSender):
    """Sends through a generic HTTP gateway whose request body is a Jinja2 template from the settings."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        if not settings.sms_url:
            raise ValueError("CRMBOT_SMS_PROVIDER=http needs CRMBOT_SMS_URL")
        self._url = settings.sms_url
        self._method = settings.sms_method
        # Sandboxed: the template comes from configuration, and must not reach Python internals.
        environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        try:
            self._template = environment.from_string(settings.sms_body_template)
        except TemplateError as error:
            raise ValueError(f"CRMBOT_SMS_BODY_TEMPLATE is not a valid template: {error}") from error
        headers = {"Accept": "application/json"}
        if settings.sms_auth_token is not None and settings.sms_auth_token.get_secret_value():
            headers["Authorization"] = f"Bearer {settings.sms_auth_token.get_secret_value()}"
        self._client = httpx.AsyncClient(timeout=settings.sms_timeout, headers=headers)

    async def send(self, message: Outgoing) -> str:
        """Send the request; return the gateway's message id, or `http:<status>` when it gives none."""
        number, _ = self._prepare(message.address, message.content.text)
        variables = {
            "to": number,
            "text": message.content.text,
            "sender": self._sender,
            "dedupe_key": message.dedupe_key,
        }
        headers = {"Idempotency-Key": _header_token(message.dedupe_key)}
        try:
            if self._method == "GET":
                request = self._client.build_request("GET", self._url, params=variables, headers=headers)
            else:
                try:
                    body = self._template.render(variables)
                except TemplateError as error:
                    raise DeliveryError(f"CRMBOT_SMS_BODY_TEMPLATE failed: {error}") from error
                headers["Content-Type"] = self._settings.sms_content_type
                request = self._client.build_request(
                    self._method, self._url, content=body.encode("utf-8"), headers=headers
                )
            response = await self._client.send(request)
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise _transport_failure("SMS gateway", error) from error
        return self._result(response, number)

    def _result(self, response: httpx.Response, number: str) -> str:
        status = response.status_code
        if 200 <= status < 300:
            body = _json(response)
            for key in ("id", "message_id", "sid"):
                value = body.get(key)
                if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                    return str(value)
            return f"http:{status}"
        detail = f"HTTP {status}: {_snippet(response)}"
        if status == 429:
            raise RateLimited(f"SMS gateway rate limit ({detail})", retry_after=_retry_after(response))
        if status >= 500 or status in (408, 409, 425):
            raise DeliveryError(f"SMS gateway unavailable ({detail})")
        if status in (400, 404, 422) and _MENTIONS_NUMBER.search(response.text):
            raise InvalidAddress(f"SMS gateway refused {number} ({detail})")
        if status in (401, 403, 404, 405, 407, 415) or status < 400:
            # Credentials, URL, method or content type: configuration an operator fixes; keep the message.
            raise DeliveryError(
                f"SMS gateway refused the request ({detail}); check CRMBOT_SMS_URL, CRMBOT_SMS_METHOD, "
                "CRMBOT_SMS_CONTENT_TYPE and CRMBOT_SMS_AUTH_TOKEN"
            )
        failure = DeliveryError(f"SMS gateway refused the message ({detail})")
        failure.permanent = True
        raise failure

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def build_sms_sender(settings: Settings) -> Sender:
    """The SMS sender CRMBOT_SMS_PROVIDER names; ValueError naming the missing CRMBOT_ variable."""
    if settings.sms_provider == "twilio":
        return TwilioSmsSender(settings)
    if settings.sms_provider == "http":
        return HttpSmsSender(settings)
    return FileSmsSender(settings)
