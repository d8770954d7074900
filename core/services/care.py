"""Care reminders: warranty ending, maintenance due, follow-up tasks due — each raised once, on the right day.

Every sweep works out what is due on the business day `now` falls on (in the company's timezone: warranty
and maintenance dates are local dates) and raises an event for each thing not yet reminded, marking it in
the same transaction. A sweep that did not run for a while catches up with what is still relevant
instead of sending every reminder it missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta

from sqlalchemy import and_, func, select

from core.db.models import Customer, InstalledProduct, Product, SweepMark, Task
from core.domain import events
from core.domain.care_plan import CareActivity
from core.domain.enums import LifecycleStage, TaskKind
from core.domain.warranty import add_months
from core.services.base import Service, open_task
from core.services.marks import insert_ignoring_duplicates, mark_once, marks_of

# Reminder stages before the warranty ends, largest first: a unit first seen 5 days before its end gets
# the 7-day reminder only, never a late "30 days left".
WARRANTY_STAGES = (30, 7)
MAINTENANCE_NOTICE = timedelta(days=7)
# A maintenance reminder that would be more than this late is not sent (the next interval will be).
MAINTENANCE_GRACE = timedelta(days=30)
BATCH = 500


class CareService(Service):
    """The sweeps behind care reminders (the scheduler calls them; the notifier words and sends them)."""

    def _day(self, now: datetime) -> date:
        return now.astimezone(self._tz).date()

    async def warranty_reminders(self, now: datetime) -> int:
        """Raise WarrantyExpiring for units 30 and 7 days before their warranty ends; how many were raised."""
        today = self._day(now)
        horizon = today + timedelta(days=max(WARRANTY_STAGES))
        raised = 0
        async with self._uow() as uow:
            session = uow.session
            units = (
                await session.execute(
                    select(
                        InstalledProduct.id,
                        InstalledProduct.customer_id,
                        InstalledProduct.serial_number,
                        InstalledProduct.warranty_ends_on,
                    )
                    .where(InstalledProduct.warranty_ends_on.between(today, horizon))
                    .order_by(InstalledProduct.id)
                )
            ).all()
            done = await marks_of(session, "warranty", [f"ip:{unit.id}" for unit in units])
            for unit in units:
                days_left = (unit.warranty_ends_on - today).days
                stage = min(stage for stage in WARRANTY_STAGES if days_left <= stage)
                mark = f"{stage}d:{unit.warranty_ends_on.isoformat()}"
                # An extended warranty has a new end date, hence a new mark: it is reminded again.
                if (f"ip:{unit.id}", mark) in done or not await mark_once(
                    session, "warranty", f"ip:{unit.id}", mark, now
                ):
                    continue
                uow.emit(
                    events.WarrantyExpiring(
                        aggregate_id=unit.id,
                        customer_id=unit.customer_id,
                        serial_number=unit.serial_number,
                        ends_on=unit.warranty_ends_on,
                        days_left=days_left,
                        stage=stage,
                    )
                )
                raised += 1
            await uow.commit()
        return raised

    async def maintenance_reminders(self, now: datetime) -> int:
        """Raise MaintenanceDue a week before each unit's periodic maintenance; how many were raised."""
        today = self._day(now)
        raised = 0
        async with self._uow() as uow:
            session = uow.session
            interval = func.coalesce(
                InstalledProduct.maintenance_interval_months, Product.maintenance_interval_months
            )
            units = (
                await session.execute(
                    select(
                        InstalledProduct.id,
                        InstalledProduct.customer_id,
                        InstalledProduct.serial_number,
                        InstalledProduct.sold_on,
                        InstalledProduct.last_maintenance_on,
                        interval,
                    )
                    .join(Product, Product.id == InstalledProduct.product_id)
                    .where(interval.is_not(None), interval > 0)
                    .order_by(InstalledProduct.id)
                )
            ).all()
            due: list[tuple[int, int, str, date]] = []
            for unit_id, customer_id, serial, sold_on, last_done, months in units:
                due_on = _next_maintenance(last_done or sold_on, int(months), today - MAINTENANCE_GRACE)
                if due_on - MAINTENANCE_NOTICE <= today:
                    due.append((unit_id, customer_id, serial, due_on))
            done = await marks_of(session, "maintenance", [f"ip:{unit_id}" for unit_id, *_ in due])
            for unit_id, customer_id, serial, due_on in due:
                subject, mark = f"ip:{unit_id}", due_on.isoformat()
                if (subject, mark) in done or not await mark_once(session, "maintenance", subject, mark, now):
                    continue
                uow.emit(
                    events.MaintenanceDue(
                        aggregate_id=unit_id, customer_id=customer_id, serial_number=serial, due_on=due_on
                    )
                )
                raised += 1
            await uow.commit()
        return raised

    async def task_reminders(self, now: datetime) -> int:
        """Raise TaskDue for open tasks due today (business day) that have an assignee; how many."""
        today = self._day(now)
        start = datetime.combine(today, time.min, tzinfo=self._tz)
        end = start + timedelta(days=1)
        raised = 0
        async with self._uow() as uow:
            session = uow.session
            tasks = (
                await session.execute(
                    select(Task.id, Task.assignee_id, Task.due_at)
                    .where(
                        Task.status == "open",
                        Task.assignee_id.is_not(None),
                        and_(Task.due_at >= start, Task.due_at < end),
                    )
                    .order_by(Task.id)
                )
            ).all()
            done = await marks_of(session, "task", [f"task:{task.id}" for task in tasks])
            for task_id, assignee_id, due_at in tasks:
                subject, mark = f"task:{task_id}", today.isoformat()
                if (subject, mark) in done or not await mark_once(session, "task", subject, mark, now):
                    continue
                uow.emit(events.TaskDue(aggregate_id=task_id, assignee_id=assignee_id, due_at=due_at))
                raised += 1
            await uow.commit()
        return raised

    async def lifecycle_activities(self, now: datetime, plan: Sequence[CareActivity]) -> int:
        """Carry out the care plan: for each customer, the activities of their segment and lifecycle stage
        that are due by the time they have spent in it; each once per customer and stage. How many."""
        if not plan:
            return 0
        done_count = 0
        stages = {activity.stage for activity in plan}
        async with self._uow() as uow:
            session = uow.session
            customers = (
                await session.execute(
                    select(
                        Customer.id,
                        Customer.name,
                        Customer.segment,
                        Customer.lifecycle_stage,
                        Customer.created_at,
                        Customer.owner_id,
                    )
                    .where(Customer.lifecycle_stage.in_(stages))
                    .order_by(Customer.id)
                )
            ).all()
            subjects = [f"c:{customer.id}" for customer in customers]
            # When each customer was first seen in their stage (a "new" customer: since creation).
            entered: dict[tuple[str, str], datetime] = {}
            for offset in range(0, len(subjects), BATCH):
                rows = await session.execute(
                    select(SweepMark.subject, SweepMark.mark, SweepMark.created_at).where(
                        SweepMark.kind == "lifecycle",
                        SweepMark.subject.in_(subjects[offset : offset + BATCH]),
                    )
                )
                entered.update({(subject, mark): at for subject, mark, at in rows})
            done = await marks_of(session, "care", subjects)
            first_seen: list[dict[str, object]] = []
            for customer in customers:
                subject, stage = f"c:{customer.id}", customer.lifecycle_stage
                since = entered.get((subject, f"in:{stage}"))
                if since is None:
                    since = customer.created_at if stage == LifecycleStage.NEW else now
                    first_seen.append(
                        {"kind": "lifecycle", "subject": subject, "mark": f"in:{stage}", "created_at": since}
                    )
                for activity in plan:
                    if not activity.applies_to(customer.segment, stage):
                        continue
                    mark = f"{activity.name}:{stage}"[:40]
                    if now < since + timedelta(days=activity.after_days) or (subject, mark) in done:
                        continue
                    if not await mark_once(session, "care", subject, mark, now):
                        continue
                    if activity.message:
                        uow.emit(
                            events.CareActivityDue(
                                aggregate_id=customer.id,
                                activity=activity.name,
                                message=activity.message,
                                stage=stage,
                            )
                        )
                    if activity.task and customer.owner_id is not None:
                        await open_task(
                            uow,
                            title=activity.task.replace("{customer}", customer.name),
                            kind=TaskKind.FOLLOW_UP.value,
                            assignee_id=customer.owner_id,
                            due_at=datetime.combine(self._day(now), time(17, 0), tzinfo=self._tz),
                            now=now,
                            customer_id=customer.id,
                        )
                    done_count += 1
            # When each customer entered their stage is only a note: one statement for all of them.
            await insert_ignoring_duplicates(session, SweepMark, first_seen, ["kind", "subject", "mark"])
            await uow.commit()
        return done_count

    async def done_today(self, kind: str, day: str) -> bool:
        """Whether a once-a-day job of `kind` already ran for the business day `day` (ISO date)."""
        async with self._uow() as uow:
            found = await uow.session.execute(
                select(SweepMark.id).where(
                    SweepMark.kind == kind, SweepMark.subject == "day", SweepMark.mark == day
                )
            )
            return found.first() is not None

    async def mark_done(self, kind: str, day: str, now: datetime) -> None:
        """Record that the once-a-day job of `kind` ran for `day` (after it succeeded)."""
        async with self._uow() as uow:
            await mark_once(uow.session, kind, "day", day, now)
            await uow.commit()


def _next_maintenance(since: date, months: int, not_before: date) -> date:
    """The first maintenance date after `since` every `months`, skipping those before `not_before`."""
    step = 1
    due = add_months(since, months)
    while due < not_before:
        step += 1
        due = add_months(since, months * step)
    return due
