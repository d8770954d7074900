"""SLA watch: warn before a request's response or resolution target is missed, escalate up the tree after.

For each open request and each target not yet met (first response, resolution): at 75 % of the time
allowed the assignee is warned (once); at the due time the request is escalated to the next person up
(the assignee's manager), and every further half of the allowed time without a response to the one above,
until the top of the tree. Each step is a history entry and an event the notifier pushes to the people
concerned, and each is marked so it happens once however often the sweep runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import Customer, Department, ServiceRequest, ServiceRequestChange, User
from core.domain import events
from core.domain.enums import RequestStatus
from core.domain.workflow import REQUEST_OPEN_STATES, request_move
from core.services.base import Service
from core.services.marks import mark_once
from core.uow import UnitOfWork

AT_RISK_SHARE = 0.75
# After the due time, the next escalation comes every this share of the time that was allowed.
ESCALATION_STEP_SHARE = 0.5
MAX_LEVELS = 5


async def escalation_chain(session: AsyncSession, request: ServiceRequest) -> list[User]:
    """Who a request goes up to, in order: the assignee's manager, theirs, … (department heads where a
    person has no manager). Starts from the customer's owner when nobody is assigned yet."""
    start_id = request.assignee_id
    if start_id is None:
        customer = await session.get(Customer, request.customer_id)
        start_id = customer.owner_id if customer is not None else None
    chain: list[User] = []
    seen: set[int] = set()
    person = await session.get(User, start_id) if start_id is not None else None
    if person is not None:
        seen.add(person.id)
    while person is not None and len(chain) < MAX_LEVELS:
        person = await _next_up(session, person, seen)
        if person is not None:
            seen.add(person.id)
            if person.active:
                chain.append(person)
    return chain


async def _next_up(session: AsyncSession, person: User, seen: set[int]) -> User | None:
    if person.manager_id is not None and person.manager_id not in seen:
        return await session.get(User, person.manager_id)
    department_id = person.department_id
    visited: set[int] = set()
    while department_id is not None and department_id not in visited:
        visited.add(department_id)
        department = await session.get(Department, department_id)
        if department is None:
            return None
        if department.head_id is not None and department.head_id not in seen:
            return await session.get(User, department.head_id)
        department_id = department.parent_id
    return None


class SlaService(Service):
    """The SLA sweep the scheduler runs."""

    async def sweep(self, now: datetime) -> int:
        """Warn and escalate what is due at `now`; how many steps were taken."""
        steps = 0
        async with self._uow() as uow:
            session = uow.session
            requests = (
                (
                    await session.execute(
                        select(ServiceRequest)
                        .where(ServiceRequest.status.in_([state.value for state in REQUEST_OPEN_STATES]))
                        .order_by(ServiceRequest.id)
                    )
                )
                .scalars()
                .all()
            )
            for request in requests:
                for target, due, met in (
                    ("response", request.response_due_at, request.first_response_at is not None),
                    ("resolution", request.resolution_due_at, request.resolved_at is not None),
                ):
                    if due is None or met:
                        continue
                    steps += await self._watch(uow, session, request, target, due, now)
            await uow.commit()
        return steps

    async def _watch(
        self,
        uow: UnitOfWork,
        session: AsyncSession,
        request: ServiceRequest,
        target: str,
        due: datetime,
        now: datetime,
    ) -> int:
        allowed = max(due - request.created_at, timedelta(minutes=1))
        subject = f"sr:{request.id}"
        if now < due:
            if now >= request.created_at + allowed * AT_RISK_SHARE and await mark_once(
                session, "sla", subject, f"{target}-risk", now
            ):
                uow.emit(
                    events.ServiceRequestSlaAtRisk(
                        aggregate_id=request.id,
                        customer_id=request.customer_id,
                        target=target,
                        due_at=due,
                        assignee_id=request.assignee_id,
                    )
                )
                return 1
            return 0
        steps = 0
        if await mark_once(session, "sla", subject, f"{target}-breach", now):
            uow.emit(
                events.ServiceRequestSlaBreached(
                    aggregate_id=request.id,
                    customer_id=request.customer_id,
                    target=target,
                    due_at=due,
                    assignee_id=request.assignee_id,
                )
            )
            steps += 1
        # Escalation k (1, 2, …) is due at due + (k - 1) × half the time allowed.
        overdue = now - due
        reached = 1 + int(overdue / (allowed * ESCALATION_STEP_SHARE))
        chain = await escalation_chain(session, request)
        for level in range(1, min(reached, len(chain)) + 1):
            if not await mark_once(session, "sla", subject, f"{target}-L{level}", now):
                continue
            # Both targets climb the same ladder: a resolution missed after the response already went to
            # the top raises the breach (for the alert rules) but has nobody further up to go to.
            if request.escalation_level >= len(chain):
                continue
            steps += 1
            self._escalate(uow, session, request, chain, target, due, now)
        return steps

    def _escalate(
        self,
        uow: UnitOfWork,
        session: AsyncSession,
        request: ServiceRequest,
        chain: list[User],
        target: str,
        due: datetime,
        now: datetime,
    ) -> None:
        level = request.escalation_level + 1
        person = chain[level - 1]
        old_status = request.status
        new_status = request_move("escalate", RequestStatus(old_status))
        request.escalation_level = level
        request.status = new_status
        request.updated_at = now
        local_due = due.astimezone(self._tz).strftime("%Y-%m-%d %H:%M")
        reason = f"{target} due {local_due} missed"
        session.add(
            ServiceRequestChange(
                service_request_id=request.id,
                actor_id=None,
                at=now,
                action="escalate",
                from_status=old_status,
                to_status=new_status,
                comment=f"SLA: {reason}; escalated to {person.username} (level {level})",
            )
        )
        uow.emit(
            events.ServiceRequestEscalated(
                aggregate_id=request.id,
                customer_id=request.customer_id,
                level=level,
                escalated_to_id=person.id,
                # Machine-readable, so each reader's message can say it in their own language.
                reason=f"sla:{target}:{due.isoformat()}",
            )
        )
