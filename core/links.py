"""Signed, expiring links to the open pages (a survey, a proposed visit time): short HMAC tokens.

A token is a few numbers in base 36 and an HMAC-SHA256 of them (128 bits), e.g. `1f.tb3k2o.abc…`: short
enough for an SMS, and it cannot be pointed at another record or made to live longer. Each kind of link
signs with a key of its own, derived from the admin API token and the kind's label, so a survey token is
never a valid visit token; changing the admin token voids every link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.settings import Settings

_NUMBER = re.compile(r"^[0-9a-z]{1,12}$")
_SIGNATURE = re.compile(r"^[A-Za-z0-9_-]{22}$")
_VISIT_KEY_LABEL = b"crmbot visit link v1\0"
# A visit link lives until the proposed time, and never longer than this after the proposal was made.
VISIT_LINK_LIFETIME = timedelta(days=3)


def base36(number: int) -> str:
    """A non-negative number in lower-case base 36."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if number == 0:
            return text


class LinkSigner:
    """Signs a fixed count of non-negative numbers into a token, and reads back only tokens it signed."""

    def __init__(self, secret: str | bytes, label: bytes) -> None:
        raw = secret.encode("utf-8") if isinstance(secret, str) else secret
        if not raw:
            raise ValueError("signed links need a secret")
        self._key = hashlib.sha256(label + raw).digest()

    def _signature(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign(self, *numbers: int) -> str:
        """`n1.n2….signature`."""
        body = ".".join(base36(number) for number in numbers)
        return f"{body}.{self._signature(body)}"

    def verify(self, token: str, count: int) -> tuple[int, ...] | None:
        """The `count` numbers of a token this signer made; None for anything malformed or tampered with."""
        if len(token) > 13 * count + 32:
            return None
        parts = token.strip().split(".")
        if len(parts) != count + 1 or not _SIGNATURE.match(parts[-1]):
            return None
        if not all(_NUMBER.match(part) for part in parts[:-1]):
            return None
        body = ".".join(parts[:-1])
        if not hmac.compare_digest(parts[-1].encode(), self._signature(body).encode()):
            return None
        return tuple(int(part, 36) for part in parts[:-1])


def _moment(seconds: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


# --- visit links --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VisitClaims:
    """What a valid visit link says: which job, which proposed time it answers, and until when it works."""

    order_id: int
    proposed_at: datetime
    expires_at: datetime


def visit_link_expiry(proposed_at: datetime, issued_at: datetime) -> datetime:
    """A visit link works until the proposed time, or a few days after it was sent, whichever comes first."""
    return min(proposed_at, issued_at + VISIT_LINK_LIFETIME)


class VisitLinks:
    """Signed links `{base_url}/visit/{token}` to answer one proposed visit time of one repair order.

    token = order id . proposed time . expiry (Unix seconds) . signature: a link made for one proposal
    cannot answer a later one, since the page compares the proposed time with the order's.
    """

    def __init__(self, secret: str | bytes, base_url: str = "") -> None:
        self._signer = LinkSigner(secret, _VISIT_KEY_LABEL)
        self.base_url = base_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> VisitLinks:
        """Links signed with a key derived from the admin API token, pointing at the public base URL."""
        token, _generated = settings.resolve_api_token()
        return cls(token, settings.base_url)

    def token(self, order_id: int, proposed_at: datetime, expires_at: datetime) -> str:
        """The token answering `proposed_at` for one order, valid until `expires_at`."""
        return self._signer.sign(order_id, int(proposed_at.timestamp()), int(expires_at.timestamp()))

    def url(self, order_id: int, proposed_at: datetime, expires_at: datetime) -> str:
        """The full link people open."""
        return f"{self.base_url}/visit/{self.token(order_id, proposed_at, expires_at)}"

    def read(self, token: str) -> VisitClaims | None:
        """The claims of a token this server signed; None for anything malformed or tampered with."""
        numbers = self._signer.verify(token, 3)
        if numbers is None or numbers[0] <= 0:
            return None
        proposed, expires = _moment(numbers[1]), _moment(numbers[2])
        if proposed is None or expires is None:
            return None
        return VisitClaims(order_id=numbers[0], proposed_at=proposed, expires_at=expires)
