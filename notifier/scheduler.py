"""The scheduler: at most one active across every process (a database lease), triggering idempotent sweeps.

APScheduler only says *when*; what is due, and what was already done, lives in our tables (each sweep
marks what it did in the same transaction as the event it raises). So a restart, a missed run, a
second scheduler or `crmbot scheduler run-once` at the same moment can never do anything twice.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, update

from core.container import Core
from core.db.models import SchedulerLease
from core.services.marks import insert_ignoring_duplicates

log = logging.getLogger("crmbot.scheduler")

LEASE_NAME = "scheduler"


@dataclass(frozen=True, slots=True)
class Sweep:
    """One kind of work the scheduler triggers; `run` returns how many things it did.

    `every` spaces out sweeps that read a lot and whose answers change slowly (the whole customer base
    for the care plan): the scheduler skips them until that long after their last run in this process.
    """

    name: str
    run: Callable[[Core, datetime], Awaitable[int]]
    every: timedelta = timedelta(0)


class Scheduler:
    """Holds the lease and runs every sweep; `start()` hands the timing to APScheduler."""

    def __init__(
        self,
        core: Core,
        sweeps: Sequence[Sweep],
        *,
        holder: str | None = None,
        lease: timedelta = timedelta(seconds=90),
        every: float = 60.0,
    ) -> None:
        self.core = core
        self.sweeps = list(sweeps)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = lease
        self.every = every
        self._scheduler: Any = None
        self._last_run: dict[str, datetime] = {}

    async def acquire(self) -> bool:
        """Take or renew the lease; False while another live scheduler holds it."""
        now = self.core.clock.now()
        async with self.core.uow() as uow:
            session = uow.session
            created = await insert_ignoring_duplicates(
                session,
                SchedulerLease,
                [
                    {
                        "name": LEASE_NAME,
                        "holder": self.holder,
                        "acquired_at": now,
                        "expires_at": now + self.lease,
                    }
                ],
                ["name"],
            )
            taken = created == 1
            if not taken:
                result = await session.execute(
                    update(SchedulerLease)
                    .where(
                        SchedulerLease.name == LEASE_NAME,
                        or_(SchedulerLease.holder == self.holder, SchedulerLease.expires_at <= now),
                    )
                    .values(holder=self.holder, acquired_at=now, expires_at=now + self.lease)
                    .execution_options(synchronize_session=False)
                )
                taken = getattr(result, "rowcount", 0) == 1
            await uow.commit()
        return taken

    async def release(self) -> None:
        """Give the lease up at shutdown so another scheduler need not wait for it to expire."""
        async with self.core.uow() as uow:
            await uow.session.execute(
                update(SchedulerLease)
                .where(SchedulerLease.name == LEASE_NAME, SchedulerLease.holder == self.holder)
                .values(expires_at=self.core.clock.now())
                .execution_options(synchronize_session=False)
            )
            await uow.commit()

    async def run_due(self, now: datetime | None = None) -> dict[str, int]:
        """Run every sweep due at the moment `now`; one failing sweep never stops the others."""
        moment = now or self.core.clock.now()
        done: dict[str, int] = {}
        for sweep in self.sweeps:
            last = self._last_run.get(sweep.name)
            if last is not None and last <= moment < last + sweep.every:
                continue
            self._last_run[sweep.name] = moment
            try:
                done[sweep.name] = await sweep.run(self.core, moment)
            except Exception:
                log.exception(
                    "sweep %s failed at %s; it runs again next time", sweep.name, moment.isoformat()
                )
                done[sweep.name] = -1
        return done

    async def tick(self) -> dict[str, int] | None:
        """One scheduled run: only the lease holder sweeps."""
        if not await self.acquire():
            return None
        return await self.run_due()

    def start(self) -> None:
        """Trigger `tick` every `every` seconds (first run now)."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        scheduler = AsyncIOScheduler(timezone="UTC")
        # A run missed by up to five minutes (a busy loop, a suspended VM) still happens, and several missed
        # runs collapse into one: every sweep catches up by itself on what is due, so one run is enough.
        scheduler.add_job(
            self.tick,
            "interval",
            seconds=self.every,
            next_run_time=datetime.now().astimezone(),
            misfire_grace_time=300,
            coalesce=True,
            max_instances=1,
            id="sweeps",
        )
        scheduler.start()
        self._scheduler = scheduler

    async def stop(self) -> None:
        """Stop triggering and hand the lease back."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        try:
            await self.release()
        except Exception:
            log.exception("releasing the scheduler lease failed; it expires by itself")
