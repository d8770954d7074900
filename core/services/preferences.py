"""Each person's notification preferences: the kinds they mute, the channel they want first, quiet hours.

The stored row is `NotificationPreference`; the notifier reads it when it addresses a message (muted kinds
are recorded as skipped, the channel order comes first, quiet hours hold non-urgent messages back). Only
the person themselves changes their preferences, from chat or the API, through this service.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import Actor
from core.clock import Clock
from core.db.models import ChannelIdentity, NotificationPreference, User
from core.domain.enums import Role
from core.domain.quiet import parse_quiet_hours
from core.errors import NotFound, PermissionDenied, ValidationFailed
from core.services.base import Service, UowFactory
from core.services.digest import user_timezone

__all__ = [
    "ALWAYS_SENT",
    "CHANNELS",
    "MUTABLE_KINDS",
    "ChannelNotLinked",
    "PreferenceService",
    "Preferences",
    "UnknownChannel",
    "UnknownKind",
    "reachable_channels",
]

# The notification kinds a person may mute (the names the notifier's templates use):
# warranty reminders, maintenance reminders, follow-up reminders, surveys, alerts, the digest, status updates.
MUTABLE_KINDS: tuple[str, ...] = (
    "warranty_expiring",
    "maintenance_due",
    "task_due",
    "survey",
    "alert",
    "digest",
    "request_status",
)
# Sent whatever the preferences say: someone is waiting for them right now.
ALWAYS_SENT = frozenset({"link_code"})
CHAT_CHANNELS: tuple[str, ...] = ("telegram", "slack", "web")
CHANNELS: tuple[str, ...] = (*CHAT_CHANNELS, "email", "sms")
# What each role usually receives, for "what notifications do I get?" (a muted kind is always listed too).
ROLE_KINDS: dict[Role, tuple[str, ...]] = {
    Role.CUSTOMER: ("request_status", "survey", "warranty_expiring", "maintenance_due"),
    Role.REP: ("task_due", "alert"),
    Role.TECHNICIAN: ("task_due", "alert"),
    Role.AGENT: ("task_due", "alert"),
    Role.MANAGER: ("task_due", "alert", "digest"),
    Role.ADMIN: ("task_due", "alert", "digest"),
}
_CLOCK = re.compile(r"^\s*([01]?\d|2[0-3])[:：.]([0-5]\d)\s*$")


class UnknownKind(ValidationFailed):
    """Kinds of message that do not exist, or that cannot be muted (`always` is the subset sent anyway)."""

    def __init__(self, kinds: list[str], always: list[str]) -> None:
        if always and len(always) == len(kinds):
            message = "One-time codes are always sent: they cannot be muted."
        else:
            message = (
                f"I don't know the kind of message {', '.join(repr(kind) for kind in kinds)}; "
                f"these can be muted: {', '.join(MUTABLE_KINDS)}."
            )
        super().__init__(message, field="kinds")
        self.kinds = kinds
        self.always = always


class UnknownChannel(ValidationFailed):
    """Channel names that do not exist."""

    def __init__(self, channels: list[str]) -> None:
        super().__init__(
            f"Unknown channel {', '.join(repr(name) for name in channels)}; "
            f"the channels are: {', '.join(CHANNELS)}.",
            field="channels",
        )
        self.channels = channels


class ChannelNotLinked(ValidationFailed):
    """Channels the person cannot be reached on (no account linked, no address on file)."""

    def __init__(self, channels: list[str], reachable: list[str]) -> None:
        where = ", ".join(reachable) if reachable else "nothing yet"
        super().__init__(
            f"You can't be reached on {', '.join(channels)}: no account or address is linked for it. "
            f"You can be reached on: {where}.",
            field="channels",
        )
        self.channels = channels
        self.reachable = reachable


@dataclass(frozen=True, slots=True)
class Preferences:
    """How and when one person is notified, as stored and as it works out (`timezone`: where their quiet
    hours are counted)."""

    kinds: tuple[str, ...]
    muted: tuple[str, ...]
    channel_order: tuple[str, ...]
    reachable: tuple[str, ...]
    quiet_from: time | None
    quiet_to: time | None
    quiet_hours: str
    quiet_default: bool
    timezone: str

    @property
    def receiving(self) -> tuple[str, ...]:
        """The kinds of `kinds` that are not muted."""
        return tuple(kind for kind in self.kinds if kind not in self.muted)


async def reachable_channels(session: AsyncSession, user: User) -> list[str]:
    """Where a user can be reached, in the notifier's default order: chat accounts (newest link first),
    then email, then SMS."""
    linked = (
        await session.execute(
            select(ChannelIdentity.channel)
            .where(ChannelIdentity.user_id == user.id, ChannelIdentity.channel.in_(CHAT_CHANNELS))
            .order_by(ChannelIdentity.linked_at.desc(), ChannelIdentity.id.desc())
        )
    ).scalars()
    found: list[str] = []
    for channel in linked:
        if channel not in found:
            found.append(channel)
    if user.email:
        found.append("email")
    if user.phone:
        found.append("sms")
    return found


def _clock_time(value: time | str | None, field: str) -> time | None:
    if value is None or isinstance(value, time):
        return value.replace(second=0, microsecond=0, tzinfo=None) if value is not None else None
    match = _CLOCK.match(value)
    if match is None:
        raise ValidationFailed(f"'{value[:20]}' is not a time of day like 22:00.", field=field)
    return time(int(match.group(1)), int(match.group(2)))


class PreferenceService(Service):
    """Reading and changing the speaker's own notification preferences."""

    def __init__(
        self, uow: UowFactory, clock: Clock, timezone: str = "UTC", *, default_quiet: str = ""
    ) -> None:
        super().__init__(uow, clock, timezone)
        self._default_quiet = default_quiet

    async def get(self, actor: Actor) -> Preferences:
        """The actor's preferences."""
        async with self._uow() as uow:
            user, preference = await self._load(uow.session, actor)
            return await self._view(uow.session, user, preference)

    async def mute(self, actor: Actor, kinds: Iterable[str]) -> Preferences:
        """Stop these kinds of message (the notifier records them as skipped)."""
        wanted = self._kinds(kinds)
        async with self._uow() as uow:
            user, preference = await self._load(uow.session, actor, create=True)
            assert preference is not None
            current = list(preference.muted_kinds or [])
            preference.muted_kinds = current + [kind for kind in wanted if kind not in current]
            await uow.commit()
            return await self._view(uow.session, user, preference)

    async def unmute(self, actor: Actor, kinds: Iterable[str]) -> Preferences:
        """Send these kinds of message again."""
        wanted = self._kinds(kinds)
        async with self._uow() as uow:
            user, preference = await self._load(uow.session, actor, create=True)
            assert preference is not None
            preference.muted_kinds = [kind for kind in preference.muted_kinds or [] if kind not in wanted]
            await uow.commit()
            return await self._view(uow.session, user, preference)

    async def set_channel_order(self, actor: Actor, channels: Iterable[str]) -> Preferences:
        """Reach the actor on these channels first, in this order (the others stay as fallbacks)."""
        wanted: list[str] = []
        for raw in channels:
            name = raw.strip().lower()
            if name not in wanted:
                wanted.append(name)
        if not wanted:
            raise ValidationFailed("Say which channel you'd like to be reached on.", field="channels")
        unknown = [name for name in wanted if name not in CHANNELS]
        if unknown:
            raise UnknownChannel(unknown)
        async with self._uow() as uow:
            session = uow.session
            user, preference = await self._load(session, actor, create=True)
            assert preference is not None
            reachable = await reachable_channels(session, user)
            missing = [name for name in wanted if name not in reachable]
            if missing:
                raise ChannelNotLinked(missing, reachable)
            preference.channel_order = wanted
            await uow.commit()
            return await self._view(session, user, preference)

    async def set_quiet_hours(
        self, actor: Actor, start: time | str | None, end: time | str | None
    ) -> Preferences:
        """Hold non-urgent messages back from `start` to `end` (local time; across midnight is fine).

        Both None: back to the company default. The same time twice: no quiet hours at all.
        """
        begin, finish = _clock_time(start, "start"), _clock_time(end, "end")
        if (begin is None) != (finish is None):
            raise ValidationFailed("Quiet hours need a start and an end, like 22:00-07:00.", field="end")
        async with self._uow() as uow:
            user, preference = await self._load(uow.session, actor, create=True)
            assert preference is not None
            preference.quiet_from, preference.quiet_to = begin, finish
            await uow.commit()
            return await self._view(uow.session, user, preference)

    # --- helpers ------------------------------------------------------------------------------------

    @staticmethod
    def _kinds(kinds: Iterable[str]) -> list[str]:
        wanted: list[str] = []
        for raw in kinds:
            kind = raw.strip().lower()
            if kind and kind not in wanted:
                wanted.append(kind)
        if not wanted:
            raise ValidationFailed("Say which kind of message you mean.", field="kinds")
        bad = [kind for kind in wanted if kind not in MUTABLE_KINDS]
        if bad:
            raise UnknownKind(bad, [kind for kind in bad if kind in ALWAYS_SENT])
        return wanted

    async def _load(
        self, session: AsyncSession, actor: Actor, *, create: bool = False
    ) -> tuple[User, NotificationPreference | None]:
        if actor.user_id is None:
            raise PermissionDenied("Notification preferences belong to a person.")
        user = await session.get(User, actor.user_id)
        if user is None or not user.active:
            raise NotFound("No such user.")
        preference = await session.get(NotificationPreference, user.id)
        if preference is None and create:
            preference = NotificationPreference(user_id=user.id, channel_order=[], muted_kinds=[])
            session.add(preference)
        return user, preference

    async def _view(
        self, session: AsyncSession, user: User, preference: NotificationPreference | None
    ) -> Preferences:
        muted = tuple(preference.muted_kinds or []) if preference is not None else ()
        order = tuple(preference.channel_order or []) if preference is not None else ()
        reachable = await reachable_channels(session, user)
        preferred = [name for name in order if name in reachable]
        quiet_from = preference.quiet_from if preference is not None else None
        quiet_to = preference.quiet_to if preference is not None else None
        own = quiet_from is not None and quiet_to is not None
        quiet = f"{quiet_from:%H:%M}-{quiet_to:%H:%M}" if own else self._default_quiet
        window = parse_quiet_hours(quiet) if quiet else None
        try:
            role = Role(user.role)
        except ValueError:
            role = Role.CUSTOMER
        kinds = ROLE_KINDS.get(role, ())
        return Preferences(
            kinds=(*kinds, *(kind for kind in muted if kind not in kinds)),
            muted=muted,
            channel_order=order,
            reachable=(*preferred, *(name for name in reachable if name not in preferred)),
            quiet_from=quiet_from,
            quiet_to=quiet_to,
            quiet_hours=f"{window[0]:%H:%M}-{window[1]:%H:%M}" if window else "",
            quiet_default=not own,
            timezone=await user_timezone(session, user, str(self._tz)),
        )
