"""Self-service identity linking: a one-time code sent to a known email or phone links a chat account."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from datetime import timedelta
from typing import Literal

from sqlalchemy import ColumnElement, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import Actor, load_actor
from core.db.models import ChannelIdentity, LinkCode, User
from core.domain.events import LinkCodeRequested
from core.errors import Conflict, DomainError, ValidationFailed
from core.services.base import Service
from core.services.org import parse_identity

__all__ = [
    "CODE_LENGTH",
    "CODE_TTL",
    "MAX_ATTEMPTS",
    "NOT_SELF_SERVICE",
    "LinkCodeRequested",
    "LinkRateLimited",
    "LinkingService",
    "hash_code",
    "new_code",
    "normalise_address",
    "normalise_code",
]

CODE_LENGTH = 6
CODE_TTL = timedelta(minutes=10)
MAX_ATTEMPTS = 5
RATE_WINDOW = timedelta(hours=1)
MAX_REQUESTS_PER_IDENTITY = 3
MAX_REQUESTS_PER_DESTINATION = 5
# The REST sender id is chosen by the integrator, so nobody may claim an account through it.
NOT_SELF_SERVICE = frozenset({"rest"})

AddressKind = Literal["email", "phone"]

_EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s.]+(?:\.[^@\s.]+)+", re.ASCII)
_PHONE_SEPARATORS_RE = re.compile(r"[\s().-]")
_PHONE_RE = re.compile(r"\+?[0-9]{6,20}", re.ASCII)
_CODE_SEPARATORS_RE = re.compile(r"[\s-]")
_CODE_RE = re.compile(rf"[0-9]{{{CODE_LENGTH}}}", re.ASCII)


class LinkRateLimited(DomainError):
    """Too many code requests for this chat account or address; the same answer whether it exists or not."""

    code = "rate_limited"


def normalise_address(value: str) -> tuple[AddressKind, str] | None:
    """An email (lower-cased) or a phone number ('+' and digits), or None when it is neither."""
    # NFKC turns a full-width ＠, digits and plus signs typed with a Chinese IME into ASCII.
    candidate = unicodedata.normalize("NFKC", value).strip()
    if "@" in candidate:
        email = candidate.lower()
        if len(email) <= 254 and _EMAIL_RE.fullmatch(email):
            return "email", email
        return None
    compact = _PHONE_SEPARATORS_RE.sub("", candidate)
    if _PHONE_RE.fullmatch(compact):
        return "phone", compact
    return None


def normalise_code(value: str) -> str | None:
    """'123 456', '123-456' or full-width digits → '123456'; None when it is not a 6-digit code."""
    compact = _CODE_SEPARATORS_RE.sub("", unicodedata.normalize("NFKC", value))
    return compact if _CODE_RE.fullmatch(compact) else None


def new_code() -> str:
    """A uniformly random 6-digit code from the OS's secure generator."""
    return f"{secrets.randbelow(10**CODE_LENGTH):0{CODE_LENGTH}d}"


def hash_code(channel: str, external_id: str, code: str) -> str:
    """SHA-256 of the code salted with the identity it was issued to, so it verifies for no one else."""
    return hashlib.sha256(f"{channel}\x00{external_id}\x00{code}".encode()).hexdigest()


def _phone_column() -> ColumnElement[str]:
    """users.phone without the separators people type (stored as entered: '+86 138-0013-8000')."""
    column: ColumnElement[str] = func.coalesce(User.phone, "")
    for separator in (" ", "-", "(", ")", "."):
        column = func.replace(column, separator, "")
    return column


def _lock_key(value: str) -> int:
    """A signed 64-bit key for a PostgreSQL advisory lock."""
    return int.from_bytes(hashlib.sha256(value.encode()).digest()[:8], "big", signed=True)


class LinkingService(Service):
    """Issue and check one-time codes that link a channel account to the CRM user owning an address."""

    async def request_code(self, channel: str, external_id: str, address: str, lang: str) -> None:
        """Record a code for `channel:external_id` and, if `address` is a user's, send it via the outbox.

        The caller learns nothing about whether the address exists: the same row is written, the same
        limits apply and the same None comes back either way.
        """
        channel, external_id = self._identity(channel, external_id)
        normalised = normalise_address(address)
        if normalised is None:
            raise ValidationFailed(
                "That doesn't look like an email address or a phone number.", field="address"
            )
        kind, destination = normalised
        now = self._clock.now()
        async with self._uow() as uow:
            session = uow.session
            await self._serialise(session, f"identity:{channel}:{external_id}", f"destination:{destination}")
            since = now - RATE_WINDOW
            by_identity = await session.scalar(
                select(func.count(LinkCode.id)).where(
                    LinkCode.channel == channel,
                    LinkCode.external_id == external_id,
                    LinkCode.created_at > since,
                )
            )
            by_destination = await session.scalar(
                select(func.count(LinkCode.id)).where(
                    LinkCode.destination == destination, LinkCode.created_at > since
                )
            )
            if (by_identity or 0) >= MAX_REQUESTS_PER_IDENTITY or (
                by_destination or 0
            ) >= MAX_REQUESTS_PER_DESTINATION:
                raise LinkRateLimited("Too many codes were requested. Please wait a while and try again.")
            user_id = await self._only_user(session, kind, destination)
            # Only the newest code of an identity is live: earlier ones die when a new one is issued.
            await session.execute(
                update(LinkCode)
                .where(
                    LinkCode.channel == channel,
                    LinkCode.external_id == external_id,
                    LinkCode.used_at.is_(None),
                    LinkCode.expires_at > now,
                )
                .values(expires_at=now)
            )
            code = new_code()
            row = LinkCode(
                channel=channel,
                external_id=external_id,
                destination=destination,
                user_id=user_id,
                code_hash=hash_code(channel, external_id, code),
                attempts=0,
                created_at=now,
                expires_at=now + CODE_TTL,
            )
            session.add(row)
            await session.flush()
            if user_id is not None:
                uow.emit(
                    LinkCodeRequested(
                        aggregate_id=row.id,
                        destination=destination,
                        channel=channel,
                        code=code,
                        lang=lang if lang in ("en", "zh") else "en",
                    )
                )
            await uow.commit()

    async def verify(self, channel: str, external_id: str, code: str) -> Actor | None:
        """Link the account when `code` matches its newest live code; None (attempt counted) otherwise.

        Raises Conflict when the code is right but the account is linked to someone else meanwhile.
        """
        channel, external_id = self._identity(channel, external_id)
        now = self._clock.now()
        candidate = normalise_code(code)
        async with self._uow() as uow:
            session = uow.session
            row = (
                await session.execute(
                    select(LinkCode)
                    .where(
                        LinkCode.channel == channel,
                        LinkCode.external_id == external_id,
                        LinkCode.used_at.is_(None),
                        LinkCode.expires_at > now,
                    )
                    .order_by(LinkCode.created_at.desc(), LinkCode.id.desc())
                    .limit(1)
                    .with_for_update()
                )
            ).scalar_one_or_none()
            if row is None or row.attempts >= MAX_ATTEMPTS:
                return None
            row.attempts += 1
            given = hash_code(channel, external_id, candidate or "")
            matches = hmac.compare_digest(given.encode(), row.code_hash.encode()) and candidate is not None
            if not matches or row.user_id is None:
                # A code issued for an address nobody owns was never sent, so it never verifies.
                await uow.commit()
                return None
            row.used_at = now
            user = await session.get(User, row.user_id)
            if user is None or not user.active:
                await uow.commit()
                return None
            linked = (
                await session.execute(
                    select(ChannelIdentity).where(
                        ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id
                    )
                )
            ).scalar_one_or_none()
            if linked is not None and linked.user_id != user.id:
                await uow.commit()  # the code is spent either way
                raise Conflict("This chat account is already linked to another user.", field="identity")
            if linked is None:
                session.add(
                    ChannelIdentity(user_id=user.id, channel=channel, external_id=external_id, linked_at=now)
                )
            actor = await load_actor(session, user)
            await uow.commit()
            return actor

    @staticmethod
    def _identity(channel: str, external_id: str) -> tuple[str, str]:
        """A checked identity on a channel where people may link themselves."""
        channel, external_id = parse_identity(f"{channel}:{external_id}")
        if channel in NOT_SELF_SERVICE:
            raise ValidationFailed(
                f"Accounts on the {channel} channel are linked by an administrator.", field="identity"
            )
        return channel, external_id

    @staticmethod
    async def _serialise(session: AsyncSession, *names: str) -> None:
        """On PostgreSQL, make concurrent requests for one identity or address count one at a time.

        SQLite takes its single write lock at BEGIN IMMEDIATE already. Keys are locked in sorted order
        so two transactions can never wait on each other.
        """
        if session.get_bind().dialect.name != "postgresql":
            return
        for key in sorted({_lock_key(name) for name in names}):
            await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    @staticmethod
    async def _only_user(session: AsyncSession, kind: AddressKind, destination: str) -> int | None:
        """The one active user with this address; None when nobody has it, or several do (be safe)."""
        condition = (
            func.lower(User.email) == destination if kind == "email" else _phone_column() == destination
        )
        found = list(
            (
                await session.execute(select(User.id).where(User.active.is_(True), condition).limit(2))
            ).scalars()
        )
        return found[0] if len(found) == 1 else None
