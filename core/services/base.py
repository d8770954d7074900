"""What every core service shares: a way to open units of work, the clock, and common lookups."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Row, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.db.models import Customer, Task, User
from core.domain.enums import TaskStatus
from core.domain.events import TaskCreated
from core.errors import NotFound, ValidationFailed
from core.uow import UnitOfWork

UowFactory = Callable[[], UnitOfWork]

_REF = re.compile(r"^\s*(?:(?P<prefix>[A-Za-z]{2})\s*[-#]?\s*)?(?P<number>\d{1,9})\s*$")


def parse_ref(value: str | int, prefix: str) -> int:
    """'SR-12', 'sr 12', '#12' or 12 → 12; anything else, or another prefix, is a clear error."""
    if isinstance(value, int):
        if value <= 0:
            raise ValidationFailed(f"{prefix}-{value} is not a valid reference.")
        return value
    match = _REF.match(value.replace("#", ""))
    if match is None or (match["prefix"] and match["prefix"].upper() != prefix):
        raise ValidationFailed(f"'{value[:40]}' is not a {prefix}- reference (like {prefix}-12).")
    return int(match["number"])


def ref(prefix: str, number: int) -> str:
    """The identifier people see."""
    return f"{prefix}-{number}"


class Service:
    """Base for core services."""

    def __init__(self, uow: UowFactory, clock: Clock, timezone: str = "UTC") -> None:
        self._uow = uow
        self._clock = clock
        self._tz = ZoneInfo(timezone)

    def today(self) -> date:
        """The business day now, in the company's timezone (a warranty ends on a local date)."""
        return self._clock.now().astimezone(self._tz).date()


async def user_by_username(session: AsyncSession, username: str) -> User:
    """A user by username, or NotFound naming it."""
    user = (await session.execute(select(User).where(User.username == username.strip()))).scalar_one_or_none()
    if user is None:
        raise NotFound(f"No user named '{username[:64]}'.", field="username")
    return user


async def customer_by_code(session: AsyncSession, code: str) -> Customer:
    """A customer by code, unscoped: callers check visibility themselves."""
    customer = (
        await session.execute(select(Customer).where(Customer.code == code.strip()))
    ).scalar_one_or_none()
    if customer is None:
        raise NotFound(f"No customer with code '{code[:64]}'.", field="customer_code")
    return customer


async def open_task(
    uow: UnitOfWork,
    *,
    title: str,
    kind: str,
    assignee_id: int | None,
    due_at: datetime | None,
    now: datetime,
    actor_id: int | None = None,
    customer_id: int | None = None,
    visit_id: int | None = None,
    service_request_id: int | None = None,
) -> Task:
    """Add an open task in this unit of work and raise TaskCreated for it (the reminder hangs off that)."""
    task = Task(
        title=title.strip()[:300],
        kind=kind,
        status=TaskStatus.OPEN.value,
        due_at=due_at,
        assignee_id=assignee_id,
        customer_id=customer_id,
        visit_id=visit_id,
        service_request_id=service_request_id,
        created_at=now,
    )
    uow.session.add(task)
    await uow.session.flush()
    uow.emit(
        TaskCreated(
            aggregate_id=task.id, actor_id=actor_id, assignee_id=assignee_id, due_at=due_at, kind=kind
        )
    )
    return task


async def fetch_page(
    session: AsyncSession, query: Select[Any], *, limit: int, offset: int
) -> tuple[int, Sequence[Row[Any]]]:
    """How many rows `query` has in all, and the page of them from `offset` (the query carries the order)."""
    total = (
        await session.execute(select(func.count()).select_from(query.order_by(None).subquery()))
    ).scalar_one()
    rows = (await session.execute(query.limit(limit).offset(offset))).all()
    return total, rows


async def usernames(session: AsyncSession, ids: set[int | None]) -> dict[int, str]:
    """Map user ids to usernames in one query."""
    wanted = {user_id for user_id in ids if user_id is not None}
    if not wanted:
        return {}
    rows = await session.execute(select(User.id, User.username).where(User.id.in_(wanted)))
    return {user_id: username for user_id, username in rows.tuples()}
