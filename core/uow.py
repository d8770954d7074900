"""Unit of work: one transaction, and the domain events raised inside it written to the outbox."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Self

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.clock import Clock
from core.db.models import OutboxEvent
from core.domain.events import DomainEvent

# Set while a unit of work is open in this task. A second one opened inside it would wait on SQLite's
# write lock held by the first (a 30-second hang, then "database is locked"): fail fast instead.
_open_unit: ContextVar[bool] = ContextVar("crmbot_open_unit_of_work", default=False)


class UnitOfWork:
    """`async with uow:` opens a session; `commit()` writes pending events with the change, atomically."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        clock: Clock,
        on_events_committed: Callable[[], None] | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._clock = clock
        self._on_events_committed = on_events_committed
        self._session: AsyncSession | None = None
        self._events: list[DomainEvent] = []
        self._token: Token[bool] | None = None

    @property
    def session(self) -> AsyncSession:
        """The open session (only inside `async with`)."""
        if self._session is None:
            raise RuntimeError("UnitOfWork used outside 'async with'")
        return self._session

    async def __aenter__(self) -> Self:
        if _open_unit.get():
            raise RuntimeError("a unit of work was opened inside another one; pass the session down instead")
        self._token = _open_unit.set(True)
        self._session = self._session_factory()
        self._events = []
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # close() rolls back whatever was not committed but, unlike rollback(), leaves the objects
        # already loaded readable, so services can shape their answers after the block.
        try:
            await self.session.close()
        finally:
            self._session = None
            self._events = []
            if self._token is not None:
                _open_unit.reset(self._token)
                self._token = None

    def emit(self, event: DomainEvent) -> None:
        """Queue an event; it is stored only if the transaction commits."""
        self._events.append(event)

    async def commit(self) -> None:
        """Flush the change, append its events to the outbox, commit both together."""
        occurred_at = self._clock.now()
        wrote_events = bool(self._events)
        if self._events:
            await self.session.flush()
            # One executemany, not an INSERT per event: an import of 50,000 rows raises 50,000 events.
            await self.session.execute(
                insert(OutboxEvent),
                [
                    {
                        "event_type": event.name,
                        "aggregate": event.aggregate,
                        "aggregate_id": event.aggregate_id,
                        "payload": event.payload(),
                        "occurred_at": occurred_at,
                        "attempts": 0,
                    }
                    for event in self._events
                ],
            )
        self._events = []
        await self.session.commit()
        if wrote_events and self._on_events_committed is not None:
            # Wakes an in-process notifier now instead of at its next poll.
            self._on_events_committed()
