"""Who a person is to the notifier: their language, timezone, quiet hours and reachable channels, in order."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import ChannelIdentity, Department, NotificationPreference, User
from notifier.types import ALL_CHANNELS, CHAT_CHANNELS, EMAIL, SMS


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything needed to address one CRM user (or a bare address) without another query."""

    user_id: int | None
    name: str
    lang: str
    timezone: str
    quiet_hours: str
    # channel → address (the email or phone; for chat channels the account is found at send time).
    reachable: dict[str, str] = field(default_factory=dict)
    order: tuple[str, ...] = ()
    muted_kinds: frozenset[str] = frozenset()


def _format_window(start: time | None, end: time | None) -> str | None:
    if start is None or end is None:
        return None
    return f"{start:%H:%M}-{end:%H:%M}"


async def load_profile(
    session: AsyncSession, user_id: int, *, available: Collection[str], default_tz: str, default_quiet: str
) -> Profile | None:
    """The user's profile, or None when the user is gone or inactive (nobody to tell)."""
    user = await session.get(User, user_id)
    if user is None or not user.active:
        return None
    preference = await session.get(NotificationPreference, user_id)
    timezone = user.timezone
    if timezone is None and user.department_id is not None:
        department = await session.get(Department, user.department_id)
        timezone = department.timezone if department is not None else None
    linked = (
        await session.execute(
            select(ChannelIdentity.channel)
            .where(ChannelIdentity.user_id == user_id, ChannelIdentity.channel.in_(CHAT_CHANNELS))
            .order_by(ChannelIdentity.linked_at.desc(), ChannelIdentity.id.desc())
        )
    ).scalars()
    reachable: dict[str, str] = {}
    for channel in linked:
        if channel in available and channel not in reachable:
            reachable[channel] = ""
    if user.email and EMAIL in available:
        reachable[EMAIL] = user.email
    if user.phone and SMS in available:
        reachable[SMS] = user.phone
    # Their own order first (what they asked for in chat), then the rest: chat where they talk, newest link
    # first, then email, then SMS — the cheapest and least intrusive ways first.
    preferred = [
        channel for channel in (preference.channel_order if preference else []) if channel in reachable
    ]
    rest = [channel for channel in reachable if channel not in preferred]
    quiet = None
    if preference is not None:
        quiet = _format_window(preference.quiet_from, preference.quiet_to)
    return Profile(
        user_id=user.id,
        name=user.name,
        lang=user.lang if user.lang in ("en", "zh") else "en",
        timezone=timezone or default_tz,
        quiet_hours=default_quiet if quiet is None else quiet,
        reachable=reachable,
        order=tuple(preferred + rest),
        muted_kinds=frozenset(preference.muted_kinds if preference else ()),
    )


def address_profile(channel: str, address: str, *, lang: str, default_tz: str) -> Profile:
    """A bare email address or phone number (a linking code for a person not yet known by channel)."""
    if channel not in ALL_CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    return Profile(
        user_id=None,
        name="",
        lang=lang if lang in ("en", "zh") else "en",
        timezone=default_tz,
        quiet_hours="",
        reachable={channel: address},
        order=(channel,),
    )
