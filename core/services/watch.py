"""Watching for what did not happen: deals nobody moved, key customers nobody visited.

Each check is one idempotent pass for a moment `now`, raising its event once per deal or customer per
episode: the mark is the local date the `days` were reached, recorded with the event in one transaction.
A second pass (or a second scheduler) finds the mark and raises nothing; a deal that moves and then stalls
again reaches a new date, so it is reported again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import Customer, Opportunity, Visit
from core.domain.enums import OPEN_STAGES, ValueTier
from core.domain.events import DealStalled, KeyCustomerNotVisited
from core.services.base import Service
from core.services.marks import mark_once, marks_of

DEAL_STALLED = "deal_stalled"
KEY_CUSTOMER_NOT_VISITED = "key_customer_not_visited"
# What counts as seeing the customer: a call or an email is contact, not a visit.
VISIT_KINDS = ("visit", "meeting")


@dataclass(frozen=True, slots=True)
class UnvisitedKeyCustomer:
    """A key-tier customer nobody has visited for the watch window."""

    customer_id: int
    code: str
    name: str
    owner_id: int | None
    tier: str
    last_visited_on: date | None
    since: date  # the last visit or, never visited, the day the customer was created
    days: int


async def unvisited_key_customers(
    session: AsyncSession,
    *,
    today: date,
    days: int,
    tz: ZoneInfo,
    scope: ColumnElement[bool] | None = None,
) -> list[UnvisitedKeyCustomer]:
    """Key-tier customers (within `scope`) with no visit or meeting for `days` days, counted from the last
    one or, never visited, from when the customer was created: the one rule the alert sweep and the chat's
    "visits of my team" both apply."""
    last_visit = (
        select(Visit.customer_id, func.max(Visit.visited_on).label("last_on"))
        .where(Visit.kind.in_(VISIT_KINDS))
        .group_by(Visit.customer_id)
        .subquery()
    )
    conditions = [Customer.tier == ValueTier.KEY.value, *([scope] if scope is not None else [])]
    rows = await session.execute(
        select(
            Customer.id, Customer.code, Customer.name, Customer.owner_id, Customer.tier, Customer.created_at,
            last_visit.c.last_on,
        )
        .outerjoin(last_visit, last_visit.c.customer_id == Customer.id)
        .where(*conditions)
        .order_by(Customer.id)
    )
    found = []
    for customer_id, code, name, owner_id, tier, created_at, last_on in rows.tuples():
        since: date = last_on if last_on is not None else created_at.astimezone(tz).date()
        idle = (today - since).days
        if idle >= days:
            found.append(UnvisitedKeyCustomer(customer_id, code, name, owner_id, tier, last_on, since, idle))
    return found


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be a whole number of at least 1, not {days!r}")


class WatchService(Service):
    """The scheduler's checks for inactivity; they act as the system, so they take no actor."""

    async def stalled_deals(self, now: datetime, days: int) -> int:
        """Raise DealStalled for every open deal unchanged for `days` days; returns how many were raised."""
        _check_days(days)
        cutoff = now - timedelta(days=days)
        async with self._uow() as uow:
            session = uow.session
            rows = (
                await session.execute(
                    select(
                        Opportunity.id,
                        Opportunity.customer_id,
                        Opportunity.owner_id,
                        Opportunity.amount,
                        Opportunity.updated_at,
                        Opportunity.stage_changed_at,
                    )
                    .where(
                        Opportunity.stage.in_([stage.value for stage in OPEN_STAGES]),
                        Opportunity.updated_at <= cutoff,
                        Opportunity.stage_changed_at <= cutoff,
                    )
                    .order_by(Opportunity.id)
                )
            ).all()
            candidates = []
            for deal_id, customer_id, owner_id, amount, updated_at, stage_changed_at in rows:
                reached = (
                    (max(updated_at, stage_changed_at) + timedelta(days=days)).astimezone(self._tz).date()
                )
                mark = f"{days}d:{reached.isoformat()}"
                candidates.append((str(deal_id), mark, deal_id, customer_id, owner_id, amount))
            done = await marks_of(session, DEAL_STALLED, [c[0] for c in candidates])
            raised = 0
            for subject, mark, deal_id, customer_id, owner_id, amount in candidates:
                if (subject, mark) in done or not await mark_once(session, DEAL_STALLED, subject, mark, now):
                    continue
                uow.emit(
                    DealStalled(
                        aggregate_id=deal_id,
                        customer_id=customer_id,
                        owner_id=owner_id,
                        days=days,
                        amount=amount,
                    )
                )
                raised += 1
            await uow.commit()
        return raised

    async def unvisited_key_customers(self, now: datetime, days: int) -> int:
        """Raise KeyCustomerNotVisited for every key-tier customer with no visit (or meeting) for `days`
        days, counted from the last one or, never visited, from when the customer was created."""
        _check_days(days)
        today = now.astimezone(self._tz).date()
        async with self._uow() as uow:
            session = uow.session
            candidates = [
                (
                    str(found.customer_id),
                    f"{days}d:{(found.since + timedelta(days=days)).isoformat()}",
                    found.customer_id,
                    found.owner_id,
                    found.tier,
                )
                for found in await unvisited_key_customers(session, today=today, days=days, tz=self._tz)
            ]
            done = await marks_of(session, KEY_CUSTOMER_NOT_VISITED, [c[0] for c in candidates])
            raised = 0
            for subject, mark, customer_id, owner_id, tier in candidates:
                if (subject, mark) in done or not await mark_once(
                    session, KEY_CUSTOMER_NOT_VISITED, subject, mark, now
                ):
                    continue
                uow.emit(
                    KeyCustomerNotVisited(aggregate_id=customer_id, owner_id=owner_id, tier=tier, days=days)
                )
                raised += 1
            await uow.commit()
        return raised
