"""Delivery status of notifications for operators, and putting dead letters back in the queue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from core.auth import Actor, require_role
from core.db.models import Notification, User
from core.errors import InvalidTransition, NotFound, ValidationFailed
from core.schemas import NotificationOut, NotificationStats, Page
from core.services.base import Service, fetch_page

STATUSES = ("pending", "sending", "sent", "failed", "dead", "skipped")
RETRYABLE = ("dead", "failed")


def _out(notification: Notification, username: str | None) -> NotificationOut:
    return NotificationOut(
        id=notification.id,
        kind=notification.kind,
        channel=notification.channel,
        username=username,
        status=notification.status,
        urgent=notification.urgent,
        attempts=notification.attempts,
        next_attempt_at=notification.next_attempt_at,
        provider_id=notification.provider_id,
        last_error=notification.last_error,
        created_at=notification.created_at,
        sent_at=notification.sent_at,
    )


class NotificationService(Service):
    """What the notifier did, per message; admins see everything, everyone else their own messages."""

    def _query(self, actor: Actor) -> Any:
        query = select(Notification, User.username).outerjoin(User, User.id == Notification.user_id)
        if not actor.is_admin:
            query = query.where(Notification.user_id == actor.user_id)
        return query

    async def list(
        self,
        actor: Actor,
        *,
        status: str | None = None,
        username: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[NotificationOut]:
        """Newest first, filtered by status, recipient and kind."""
        if status is not None and status not in STATUSES:
            raise ValidationFailed(
                f"Unknown status '{status[:20]}'; use one of {', '.join(STATUSES)}.", field="status"
            )
        query = self._query(actor)
        if status is not None:
            query = query.where(Notification.status == status)
        if username is not None:
            query = query.where(User.username == username)
        if kind is not None:
            query = query.where(Notification.kind == kind)
        async with self._uow() as uow:
            total, rows = await fetch_page(
                uow.session, query.order_by(Notification.id.desc()), limit=limit, offset=offset
            )
            return Page(items=[_out(row[0], row[1]) for row in rows], total=total, limit=limit, offset=offset)

    async def get(self, actor: Actor, notification_id: int) -> NotificationOut:
        """One notification, if the actor may see it."""
        async with self._uow() as uow:
            row = (
                await uow.session.execute(self._query(actor).where(Notification.id == notification_id))
            ).first()
            if row is None:
                raise NotFound(f"No notification {notification_id} found.")
            return _out(row[0], row[1])

    async def stats(self, actor: Actor, *, dead_limit: int = 20) -> NotificationStats:
        """Counts by status, the oldest message still waiting, the newest dead letters."""
        require_role(actor, doing="see the notifier's status")
        async with self._uow() as uow:
            session = uow.session
            counts = dict.fromkeys(STATUSES, 0)
            for status, count in await session.execute(
                select(Notification.status, func.count()).group_by(Notification.status)
            ):
                counts[status] = count
            oldest = (
                await session.execute(
                    select(func.min(Notification.created_at)).where(
                        Notification.status.in_(("pending", "sending"))
                    )
                )
            ).scalar_one()
            dead = (
                await session.execute(
                    self._query(actor)
                    .where(Notification.status == "dead")
                    .order_by(Notification.id.desc())
                    .limit(dead_limit)
                )
            ).all()
            return NotificationStats(
                counts=counts, oldest_pending_at=oldest, dead=[_out(row[0], row[1]) for row in dead]
            )

    async def retry(self, actor: Actor, notification_id: int) -> NotificationOut:
        """Put a dead letter back in the queue with fresh attempts (an operator fixed the cause)."""
        require_role(actor, doing="retry notifications")
        async with self._uow() as uow:
            session = uow.session
            notification = await session.get(Notification, notification_id)
            if notification is None:
                raise NotFound(f"No notification {notification_id} found.")
            if notification.status != "dead":
                raise InvalidTransition(
                    f"Notification {notification_id} is {notification.status}: only dead letters are retried."
                )
            if notification.kind == "link_code":
                raise InvalidTransition("A linking code is never sent again: the person asks for a new one.")
            if not notification.channel:
                raise InvalidTransition(
                    f"Notification {notification_id} has no channel to retry on ({notification.last_error})."
                )
            now = self._clock.now()
            await session.execute(
                update(Notification)
                .where(Notification.id == notification_id, Notification.status == "dead")
                .values(status="pending", attempts=0, next_attempt_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            await uow.commit()
        return await self.get(actor, notification_id)
