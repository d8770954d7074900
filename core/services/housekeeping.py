"""Housekeeping: forget what is only kept for a while (de-duplication ids, used codes, handled events)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete

from core.db.models import ButtonPayload, InboundMessage, LinkCode, Notification, OutboxEvent, SweepMark
from core.services.base import Service

# Platforms stop redelivering an update within a day (Slack retries for minutes, Telegram keeps 24 hours).
INBOUND_KEPT = timedelta(days=7)
# A linking code is dead after 10 minutes; the row only serves the rate limits (per hour) after that.
LINK_CODES_KEPT = timedelta(days=2)
# Buttons in old chat messages keep working this long.
BUTTONS_KEPT = timedelta(days=180)
# Handled outbox events: the notifications they caused keep their own record.
EVENTS_KEPT = timedelta(days=30)
# Delivered and skipped notifications; dead letters stay until someone deals with them.
NOTIFICATIONS_KEPT = timedelta(days=180)
# Marks of one-off steps whose subject is long past (SLA steps, task reminders); reminder marks that
# stop a warranty or care message from repeating are kept.
SHORT_LIVED_MARKS = ("sla", "task")
MARKS_KEPT = timedelta(days=90)


class HousekeepingService(Service):
    """Deletes rows whose purpose has passed; the scheduler runs it now and then."""

    async def purge(self, now: datetime) -> dict[str, int]:
        """Delete what is past its keeping time; how many rows of each kind went."""
        statements = {
            "inbound_messages": delete(InboundMessage).where(InboundMessage.received_at < now - INBOUND_KEPT),
            "link_codes": delete(LinkCode).where(LinkCode.expires_at < now - LINK_CODES_KEPT),
            "button_payloads": delete(ButtonPayload).where(ButtonPayload.created_at < now - BUTTONS_KEPT),
            "notifications": delete(Notification).where(
                Notification.status.in_(("sent", "skipped", "failed")),
                Notification.created_at < now - NOTIFICATIONS_KEPT,
            ),
            "outbox": delete(OutboxEvent).where(
                OutboxEvent.processed_at.is_not(None), OutboxEvent.processed_at < now - EVENTS_KEPT
            ),
            "sweep_marks": delete(SweepMark).where(
                SweepMark.kind.in_(SHORT_LIVED_MARKS), SweepMark.created_at < now - MARKS_KEPT
            ),
        }
        removed: dict[str, int] = {}
        async with self._uow() as uow:
            for name, statement in statements.items():
                result = await uow.session.execute(statement.execution_options(synchronize_session=False))
                removed[name] = int(getattr(result, "rowcount", 0) or 0)
            await uow.commit()
        return removed
