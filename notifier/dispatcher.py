"""The notifier's engine: outbox events → notifications (routing), notifications → people (delivery).

Delivery is at-least-once with a dedupe key, made as close to exactly-once as the providers allow:
rows are claimed in a short transaction (`FOR UPDATE SKIP LOCKED` on PostgreSQL, SQLite's single
writer otherwise) with a lease, sent outside any transaction, and each outcome is committed on its own
the moment it is known. A worker killed mid-send leaves its claims to expire and be taken again; the
only message that can reach a person twice is one the provider accepted in the instant before the
kill, and for email even that one carries the same Message-ID.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import socket
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, or_, select, update
from sqlalchemy import event as orm_events
from sqlalchemy.ext.asyncio import AsyncSession

from core.container import Core
from core.db.models import Notification, OutboxEvent
from core.domain.quiet import quiet_until
from core.services.marks import insert_ignoring_duplicates
from notifier.recipients import Profile, address_profile, load_profile
from notifier.registry import event_routes
from notifier.routing import SECRET_FIELDS, Message, Route, routing_with
from notifier.templates import TemplateFailure, Templates
from notifier.types import CHAT_CHANNELS, EMAIL, DeliveryError, Outgoing, Rendered, Sender

log = logging.getLogger("crmbot.notifier")

PENDING, SENDING, SENT, FAILED, DEAD, SKIPPED = "pending", "sending", "sent", "failed", "dead", "skipped"
STATUSES = (PENDING, SENDING, SENT, FAILED, DEAD, SKIPPED)
ROUTE_BATCH = 500
MAX_ROUTE_ATTEMPTS = 5
# Context fields that are secrets: kept only until the message is sent or given up.
SECRET_CONTEXT = ("code",)
IMAGE_CHANNELS = (*CHAT_CHANNELS, EMAIL)


class EventRule(Protocol):
    """Looks at every event of the types it names (the managers' alert rules): messages it causes."""

    @property
    def event_types(self) -> frozenset[str]:
        """The event types worth calling it for."""
        ...

    async def __call__(self, session: AsyncSession, event: OutboxEvent) -> list[Message]:
        """The messages this event causes."""
        ...


# Draws a kind's picture from the notification's context and language: (PNG bytes, alt text), or None.
ImageMaker = Callable[[dict[str, Any], str], tuple[bytes, str] | None]
REDACTED = "******"


def _pin_loaded_objects(session: AsyncSession) -> None:
    """Keep every object the routing session loads alive until the session ends.

    The session's identity map holds weak references: without this, the customer or product read for
    one event is collected and read again for the next, and routing a batch costs a query per fact.
    """
    pinned: list[object] = []
    session.sync_session.info["pinned"] = pinned

    @orm_events.listens_for(session.sync_session, "loaded_as_persistent")
    def _pin(_session: Any, instance: object) -> None:
        pinned.append(instance)


def _now_plus(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def _address_key(address: str) -> str:
    # Dedupe keys end up in Message-IDs and file names: never put the address itself there.
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()[:16]


def dedupe_base(source: str, message: Message) -> str:
    """The dedupe key without its channel: one per (event, purpose, recipient)."""
    target = message.target
    who = f"u{target.user_id}" if target.user_id is not None else f"a{_address_key(target.address)}"
    purpose = f".{message.purpose}" if message.purpose else ""
    return f"{source}:{message.kind}{purpose}:{who}"


def choose_channels(message: Message, profile: Profile) -> list[tuple[str, list[str]]]:
    """(channel, fallback) pairs to create for this message and person; empty when nobody is reachable."""
    if message.channels is None:
        order = list(profile.order)
        return [(order[0], order[1:])] if order else []
    chosen: list[tuple[str, list[str]]] = []
    chat_done = False
    for channel in profile.order:
        if channel not in message.channels:
            continue
        if channel in CHAT_CHANNELS:
            if chat_done:
                continue
            chat_done = True
        chosen.append((channel, []))
    return chosen


@dataclass(frozen=True, slots=True)
class Claimed:
    """A notification this worker holds the lease on."""

    id: int
    dedupe_key: str
    kind: str
    urgent: bool
    user_id: int | None
    channel: str
    address: str
    lang: str
    timezone: str
    quiet_hours: str
    context: dict[str, Any]
    expires_at: datetime | None
    fallback: list[str]
    attempts: int

    @property
    def recipient(self) -> tuple[str, str]:
        """Messages to the same person on the same channel go out in order, one at a time."""
        return self.channel, str(self.user_id) if self.user_id is not None else self.address


class Notifier:
    """Routes outbox events and delivers due notifications through the senders it was given."""

    def __init__(
        self,
        core: Core,
        senders: Mapping[str, Sender],
        templates: Templates | None = None,
        *,
        worker_id: str | None = None,
        send_timeout: float = 60.0,
        concurrency: Mapping[str, int] | None = None,
        routes: Mapping[str, Route] | None = None,
        rules: Sequence[EventRule] = (),
        images: Mapping[str, ImageMaker] | None = None,
    ) -> None:
        self.core = core
        self.settings = core.settings
        self.senders = dict(senders)
        self.templates = templates or Templates()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._send_timeout = send_timeout
        # What each event type means to people (the built-in routes), plus rules that look at every event
        # (the managers' alert rules), plus charts drawn for some kinds where the channel shows images.
        self.routes = dict(routes) if routes is not None else event_routes()
        self.rules = list(rules)
        self.images = dict(images or {})
        limits = {"email": self.settings.smtp_pool_size, "sms": 4, **(concurrency or {})}
        self._limits = {channel: asyncio.Semaphore(limits.get(channel, 8)) for channel in self.senders}
        self._wake = asyncio.Event()

    # --- routing ----------------------------------------------------------------------------------

    async def route(self) -> int:
        """Turn unprocessed outbox events into notifications; returns how many events were handled."""
        handled = 0
        while True:
            count = await self._route_batch()
            handled += count
            if count < ROUTE_BATCH:
                return handled

    async def _route_batch(self) -> int:
        with routing_with(self.settings):
            return await self._route_batch_now()

    async def _route_batch_now(self) -> int:
        async with self.core.uow() as uow:
            session = uow.session
            _pin_loaded_objects(session)
            profiles: dict[int, Profile | None] = {}
            events = (
                (
                    await session.execute(
                        select(OutboxEvent)
                        .where(OutboxEvent.processed_at.is_(None))
                        .order_by(OutboxEvent.id)
                        .limit(ROUTE_BATCH)
                        # Several workers on PostgreSQL route disjoint events; SQLite has one writer.
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            if not events:
                return 0
            now = self.core.clock.now()
            rows: list[dict[str, Any]] = []
            handled: list[int] = []
            for event in events:
                route = self.routes.get(event.event_type)
                # Most events (an import's 50,000 CustomerCreated) concern nobody: no savepoint, no query.
                rules = [rule for rule in self.rules if event.event_type in rule.event_types]
                if route is not None or rules:
                    try:
                        async with session.begin_nested():
                            messages = await route(session, event) if route is not None else []
                            for rule in rules:
                                messages += await rule(session, event)
                            rows += await self._plan(session, event.id, messages, now, profiles)
                    except Exception as exc:  # a broken route must not stall everything behind it
                        log.exception("routing outbox event %s (%s) failed", event.id, event.event_type)
                        event.attempts += 1
                        event.last_error = f"{type(exc).__name__}: {exc}"[:500]
                        if event.attempts < MAX_ROUTE_ATTEMPTS:
                            continue
                secrets = SECRET_FIELDS.get(event.event_type)
                if secrets:
                    event.payload = {
                        key: (REDACTED if key in secrets else value) for key, value in event.payload.items()
                    }
                handled.append(event.id)
            # One UPDATE for the batch: marking each row through the ORM would flush it at every savepoint.
            await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(handled))
                .values(processed_at=now)
                .execution_options(synchronize_session=False)
            )
            await self._insert(session, rows)
            await uow.commit()
            return len(events)

    async def _plan(
        self,
        session: AsyncSession,
        outbox_id: int | None,
        messages: Iterable[Message],
        now: datetime,
        profiles: dict[int, Profile | None] | None = None,
        *,
        source: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows for `messages`, keyed by the outbox event (or `source` for messages no event caused)."""
        rows: list[dict[str, Any]] = []
        profiles = {} if profiles is None else profiles
        for message in messages:
            user_id = message.target.user_id
            if user_id is not None and user_id in profiles:
                profile = profiles[user_id]
            else:
                profile = await self._profile(session, message)
                if user_id is not None:
                    profiles[user_id] = profile
            if profile is None:
                continue
            base = dedupe_base(source or f"e{outbox_id}", message)
            common = {
                "outbox_id": outbox_id,
                "kind": message.kind,
                "urgent": message.urgent,
                "user_id": profile.user_id,
                "lang": profile.lang,
                "timezone": profile.timezone,
                "quiet_hours": "" if message.urgent else profile.quiet_hours,
                "context": {"recipient_name": profile.name, **message.context},
                "expires_at": message.expires_at,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "next_attempt_at": now,
            }
            if message.kind in profile.muted_kinds and not message.urgent:
                rows.append(
                    {
                        **common,
                        "dedupe_key": f"{base}:muted",
                        "channel": "",
                        "address": "",
                        "fallback": [],
                        "status": SKIPPED,
                        "last_error": "muted by the recipient",
                    }
                )
                continue
            choices = choose_channels(message, profile)
            if not choices:
                rows.append(
                    {
                        **common,
                        "dedupe_key": f"{base}:none",
                        "channel": "",
                        "address": "",
                        "fallback": [],
                        # A message meant for any channel that finds none is a dead letter someone must
                        # act on; a copy meant for particular channels (the receipt by email) that the
                        # person is not on is simply not sent.
                        "status": DEAD if message.channels is None else SKIPPED,
                        "last_error": "no reachable channel"
                        if message.channels is None
                        else f"not reachable by {' or '.join(message.channels)}",
                    }
                )
                continue
            for channel, fallback in choices:
                rows.append(
                    {
                        **common,
                        "dedupe_key": f"{base}:{channel}",
                        "channel": channel,
                        "address": profile.reachable.get(channel, ""),
                        "fallback": fallback,
                        "status": PENDING,
                        "last_error": None,
                    }
                )
        return rows

    async def _profile(self, session: AsyncSession, message: Message) -> Profile | None:
        target = message.target
        if target.user_id is not None:
            return await load_profile(
                session,
                target.user_id,
                available=self.senders.keys(),
                default_tz=self.settings.timezone,
                default_quiet=self.settings.quiet_hours,
            )
        if target.channel is None or not target.address:
            return None
        return address_profile(
            target.channel,
            target.address,
            lang=target.lang or self.settings.default_lang,
            default_tz=self.settings.timezone,
        )

    async def _insert(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        # An event routed twice (a crash before its outbox row was marked) inserts nothing new.
        await insert_ignoring_duplicates(session, Notification, rows, ["dedupe_key"])

    async def enqueue(self, messages: Iterable[Message], *, source: str) -> list[int]:
        """Notifications not caused by an event (`crmbot notify test`); returns the new rows' ids."""
        async with self.core.uow() as uow:
            now = self.core.clock.now()
            rows = await self._plan(uow.session, None, messages, now, source=source)
            await self._insert(uow.session, rows)
            await uow.commit()
        async with self.core.uow() as uow:
            keys = [row["dedupe_key"] for row in rows]
            found = await uow.session.execute(
                select(Notification.id).where(Notification.dedupe_key.in_(keys))
            )
            return sorted(found.scalars())

    # --- delivery ---------------------------------------------------------------------------------

    async def deliver(self, only: Iterable[int] | None = None) -> int:
        """Claim due notifications and deliver them; returns how many were claimed."""
        claimed = await self._claim(list(only) if only is not None else None)
        if not claimed:
            return 0
        by_recipient: dict[tuple[str, str], list[Claimed]] = defaultdict(list)
        for row in sorted(claimed, key=lambda row: row.id):
            by_recipient[row.recipient].append(row)
        await asyncio.gather(*(self._deliver_in_order(rows) for rows in by_recipient.values()))
        return len(claimed)

    async def _claim(self, only: list[int] | None) -> list[Claimed]:
        table = Notification
        async with self.core.uow() as uow:
            now = self.core.clock.now()
            due = or_(
                and_(table.status == PENDING, table.next_attempt_at <= now),
                # A worker that died (kill -9, power cut) holds its claims only until the lease ends.
                and_(table.status == SENDING, table.locked_until < now),
            )
            candidates = select(table.id).where(due)
            if only is not None:
                candidates = candidates.where(table.id.in_(only))
            candidates = (
                candidates.order_by(table.urgent.desc(), table.next_attempt_at, table.id)
                .limit(self.settings.notify_batch)
                .with_for_update(skip_locked=True)
            )
            columns = [getattr(table, name) for name in Claimed.__slots__]
            result = await uow.session.execute(
                update(table)
                .where(table.id.in_(candidates.scalar_subquery()))
                .values(
                    status=SENDING,
                    locked_by=self.worker_id,
                    locked_until=_now_plus(now, self.settings.notify_lease),
                    attempts=table.attempts + 1,
                    updated_at=now,
                )
                .returning(*columns)
                .execution_options(synchronize_session=False)
            )
            rows = [Claimed(**row._mapping) for row in result]
            await uow.commit()
            return rows

    async def _deliver_in_order(self, rows: list[Claimed]) -> None:
        for row in rows:
            try:
                await self._deliver_one(row)
            except Exception:  # recording failed (database gone): the lease returns the row later
                log.exception("recording the outcome of notification %s failed", row.id)

    async def _deliver_one(self, row: Claimed) -> None:
        now = self.core.clock.now()
        if row.expires_at is not None and now >= row.expires_at:
            await self._finish(row, DEAD, error="expired before it could be delivered")
            return
        if not row.urgent:
            until = quiet_until(now, row.timezone, row.quiet_hours)
            if until is not None:
                await self._defer(row, until)
                return
        sender = self.senders.get(row.channel)
        if sender is None:
            await self._refused(row, f"channel {row.channel!r} is not connected")
            return
        try:
            content = self.templates.render(row.kind, row.channel, row.lang, row.context, row.timezone)
        except TemplateFailure as exc:
            await self._finish(row, DEAD, error=f"template error: {exc}")
            return
        content = self._with_image(row, content)
        outgoing = Outgoing(
            notification_id=row.id,
            dedupe_key=row.dedupe_key,
            channel=row.channel,
            address=row.address,
            user_id=row.user_id,
            lang=row.lang,
            content=content,
        )
        try:
            async with self._limits[row.channel]:
                provider_id = await asyncio.wait_for(sender.send(outgoing), self._send_timeout)
        except DeliveryError as exc:
            if exc.permanent:
                await self._refused(row, str(exc) or type(exc).__name__)
            else:
                await self._retry_later(row, str(exc) or type(exc).__name__, exc.retry_after)
            return
        except TimeoutError:
            await self._retry_later(row, f"no answer from {row.channel} in {self._send_timeout:.0f} s", None)
            return
        except Exception as exc:  # a sender bug must cost one message a retry, never the worker
            log.exception("sender %s failed on notification %s", row.channel, row.id)
            await self._retry_later(row, f"{type(exc).__name__}: {exc}", None)
            return
        await self._finish(row, SENT, provider_id=provider_id or None)

    def _with_image(self, row: Claimed, content: Rendered) -> Rendered:
        """The kind's chart, for channels that can show one; the message goes without it if drawing fails."""
        maker = self.images.get(row.kind)
        if maker is None or row.channel not in IMAGE_CHANNELS:
            return content
        try:
            drawn = maker(row.context, row.lang)
        except Exception:
            log.exception("drawing the image of notification %s failed; sending the text alone", row.id)
            return content
        if drawn is None:
            return content
        image, alt = drawn
        return replace(content, image=image, image_alt=alt)

    def _backoff(self, attempts: int) -> float:
        growth: float = 2.0 ** max(0, attempts - 1)
        ceiling = min(self.settings.notify_retry_cap, self.settings.notify_retry_base * growth)
        return ceiling * random.uniform(0.5, 1.0)

    async def _retry_later(self, row: Claimed, error: str, retry_after: float | None) -> None:
        if row.attempts >= self.settings.notify_max_attempts:
            await self._finish(row, DEAD, error=f"gave up after {row.attempts} attempts: {error}")
            return
        # A provider's Retry-After is honoured, but never beyond the longest backoff: a date far in the
        # future from one odd reply must not park a message for days.
        asked = min(retry_after or 0.0, self.settings.notify_retry_cap)
        wait = max(asked, self._backoff(row.attempts))
        await self._update(
            row,
            status=PENDING,
            next_attempt_at=_now_plus(self.core.clock.now(), wait),
            last_error=error[:1000],
        )

    async def _defer(self, row: Claimed, until: datetime) -> None:
        # Waiting out quiet hours is not an attempt.
        await self._update(row, status=PENDING, next_attempt_at=until, attempts=max(0, row.attempts - 1))

    async def _refused(self, row: Claimed, error: str) -> None:
        """Refused for good on this channel: hand over to the next one the person has, or give up."""
        if not row.fallback or row.user_id is None:
            await self._finish(row, DEAD, error=error)
            return
        async with self.core.uow() as uow:
            session = uow.session
            profile = await load_profile(
                session,
                row.user_id,
                available=self.senders.keys(),
                default_tz=self.settings.timezone,
                default_quiet=self.settings.quiet_hours,
            )
            remaining = [
                channel for channel in row.fallback if profile is not None and channel in profile.reachable
            ]
            base = row.dedupe_key.rsplit(":", 1)[0]
            now = self.core.clock.now()
            if remaining and profile is not None:
                nxt = remaining[0]
                await self._insert(
                    session,
                    [
                        {
                            "dedupe_key": f"{base}:{nxt}",
                            "outbox_id": None,
                            "kind": row.kind,
                            "urgent": row.urgent,
                            "user_id": row.user_id,
                            "channel": nxt,
                            "address": profile.reachable.get(nxt, ""),
                            "lang": row.lang,
                            "timezone": row.timezone,
                            "quiet_hours": row.quiet_hours,
                            "context": row.context,
                            "expires_at": row.expires_at,
                            "fallback": remaining[1:],
                            "status": PENDING,
                            "attempts": 0,
                            "next_attempt_at": now,
                            "created_at": now,
                            "updated_at": now,
                            "last_error": None,
                        }
                    ],
                )
                status, error = FAILED, f"{error} → {nxt}"
            else:
                status = DEAD
            await self._update_in(session, row, **self._final(status, error=error))
            await uow.commit()
        self._wake.set()

    def _final(
        self, status: str, *, error: str | None = None, provider_id: str | None = None
    ) -> dict[str, Any]:
        values: dict[str, Any] = {"status": status, "last_error": error[:1000] if error else None}
        if status == SENT:
            values.update(provider_id=provider_id, sent_at=self.core.clock.now())
        return values

    async def _finish(
        self, row: Claimed, status: str, *, error: str | None = None, provider_id: str | None = None
    ) -> None:
        values = self._final(status, error=error, provider_id=provider_id)
        if any(key in row.context for key in SECRET_CONTEXT):
            # A linking code is useless once delivered or given up, and must not linger in the table.
            values["context"] = {
                key: (REDACTED if key in SECRET_CONTEXT else value) for key, value in row.context.items()
            }
        await self._update(row, **values)

    async def _update(self, row: Claimed, **values: Any) -> None:
        async with self.core.uow() as uow:
            await self._update_in(uow.session, row, **values)
            await uow.commit()

    async def _update_in(self, session: AsyncSession, row: Claimed, **values: Any) -> None:
        values.setdefault("locked_by", None)
        values.setdefault("locked_until", None)
        result = await session.execute(
            update(Notification)
            # Fenced by the lease: a worker that was too slow must not overwrite another's outcome.
            .where(
                Notification.id == row.id,
                Notification.locked_by == self.worker_id,
                Notification.status == SENDING,
            )
            .values(updated_at=self.core.clock.now(), **values)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 1) == 0:
            log.warning("notification %s: lease lost before recording %s", row.id, values.get("status"))

    # --- running ----------------------------------------------------------------------------------

    def wake(self) -> None:
        """New events are committed: route and deliver now rather than at the next poll."""
        self._wake.set()

    async def run_once(self) -> tuple[int, int]:
        """Route everything pending and deliver everything due now, until nothing is left to do."""
        routed = await self.route()
        delivered = 0
        while True:
            count = await self.deliver()
            delivered += count
            if count == 0:
                break
            routed += await self.route()
        return routed, delivered

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Work until `stop` is set (or the task is cancelled); never dies of one bad message or a
        database hiccup."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:
                log.exception("notifier cycle failed; trying again")
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(
                    waiters, timeout=self.settings.notify_poll, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def close(self) -> None:
        """Close every sender's connections."""
        for sender in self.senders.values():
            try:
                await sender.close()
            except Exception:
                log.exception("closing the %s sender failed", sender.channel)
