"""Care reminders and SLA steps: the sweeps that find what is due, and the messages they become."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import SYSTEM
from core.container import Core
from core.db.models import Customer, InstalledProduct, OutboxEvent, Product, Task, User
from core.domain.care_plan import load_care_plan
from core.services.base import ref
from core.services.sla import escalation_chain
from notifier.routing import Message, Route, Target, customer_targets, request_facts
from notifier.scheduler import Sweep

URGENT_SEVERITIES = ("high", "critical")


async def _unit_facts(session: AsyncSession, unit_id: int) -> tuple[InstalledProduct, dict[str, Any]] | None:
    unit = await session.get(InstalledProduct, unit_id)
    if unit is None:
        return None
    product = await session.get(Product, unit.product_id)
    customer = await session.get(Customer, unit.customer_id)
    return unit, {
        "serial": unit.serial_number,
        "product": product.name if product is not None else "",
        "warranty_type": unit.warranty_type,
        "customer_name": customer.name if customer is not None else "",
    }


async def warranty_expiring(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The customer is told the cover ends soon, with the extended-warranty and maintenance offer."""
    found = await _unit_facts(session, event.aggregate_id)
    if found is None:
        return []
    unit, facts = found
    payload = event.payload
    context = {
        **facts,
        "ends_on": str(payload.get("ends_on") or unit.warranty_ends_on.isoformat()),
        "days_left": int(payload.get("days_left") or 0),
        "stage": int(payload.get("stage") or 0),
    }
    return [
        Message(kind="warranty_expiring", target=target, context=context)
        for target in await customer_targets(session, unit.customer_id)
    ]


async def maintenance_due(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The customer is invited to book the periodic maintenance."""
    found = await _unit_facts(session, event.aggregate_id)
    if found is None:
        return []
    unit, facts = found
    context = {**facts, "due_on": str(event.payload.get("due_on") or "")}
    return [
        Message(kind="maintenance_due", target=target, context=context)
        for target in await customer_targets(session, unit.customer_id)
    ]


async def task_due(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The assignee is reminded of a follow-up due today."""
    task = await session.get(Task, event.aggregate_id)
    if task is None or task.status != "open" or task.assignee_id is None:
        return []
    customer = await session.get(Customer, task.customer_id) if task.customer_id else None
    context = {
        "title": task.title,
        "task_kind": task.kind,
        "due_at": task.due_at.isoformat() if task.due_at else "",
        "customer_name": customer.name if customer is not None else "",
        "customer_code": customer.code if customer is not None else "",
        "ticket": ref("SR", task.service_request_id) if task.service_request_id else "",
    }
    return [Message(kind="task_due", target=Target(user_id=task.assignee_id), context=context)]


async def sla_at_risk(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The assignee (or, with nobody assigned, the first person up the chain) is warned in time."""
    found = await request_facts(session, event.aggregate_id)
    if found is None:
        return []
    request, facts = found
    recipient = request.assignee_id
    if recipient is None:
        chain = await escalation_chain(session, request)
        recipient = chain[0].id if chain else None
    if recipient is None:
        return []
    context = {
        **facts,
        "target": str(event.payload.get("target") or ""),
        "due_at": str(event.payload.get("due_at") or ""),
    }
    return [
        Message(
            kind="sla_at_risk",
            target=Target(user_id=recipient),
            context=context,
            urgent=request.severity in URGENT_SEVERITIES,
        )
    ]


async def request_escalated(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The person it went up to must act; the assignee learns it went over their head."""
    found = await request_facts(session, event.aggregate_id)
    if found is None:
        return []
    request, facts = found
    escalated_to = event.payload.get("escalated_to_id")
    if not isinstance(escalated_to, int):
        return []
    person = await session.get(User, escalated_to)
    reason = str(event.payload.get("reason") or "")
    sla_target = sla_due = ""
    if reason.startswith("sla:"):
        _, sla_target, sla_due = [*reason.split(":", 2), "", ""][:3]
        reason = ""
    context = {
        **facts,
        "level": int(event.payload.get("level") or 0),
        "reason": reason,
        "sla_target": sla_target,
        "sla_due": sla_due,
        "escalated_to_name": person.name if person is not None else "",
    }
    urgent = request.severity in URGENT_SEVERITIES or request.kind == "complaint"
    messages = [
        Message(kind="request_escalated", target=Target(user_id=escalated_to), context=context, urgent=urgent)
    ]
    # After an SLA breach the assignee already has the breach alert; a manual escalation is news to them.
    if request.assignee_id is not None and request.assignee_id != escalated_to and not sla_target:
        messages.append(
            Message(
                kind="request_escalated",
                target=Target(user_id=request.assignee_id),
                context=context,
                purpose="assignee",
            )
        )
    return messages


async def care_activity(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """A care plan message (welcome, check-in, anniversary) to the customer's people."""
    customer = await session.get(Customer, event.aggregate_id)
    kind = str(event.payload.get("message") or "")
    if customer is None or not kind:
        return []
    context = {"customer_name": customer.name, "stage": str(event.payload.get("stage") or "")}
    return [
        Message(kind=kind, target=target, context=context)
        for target in await customer_targets(session, customer.id)
    ]


ROUTES: dict[str, Route] = {
    "CareActivityDue": care_activity,
    "WarrantyExpiring": warranty_expiring,
    "MaintenanceDue": maintenance_due,
    "TaskDue": task_due,
    "ServiceRequestSlaAtRisk": sla_at_risk,
    "ServiceRequestEscalated": request_escalated,
}


async def _warranty(core: Core, now: datetime) -> int:
    return await core.care.warranty_reminders(now)


async def _maintenance(core: Core, now: datetime) -> int:
    return await core.care.maintenance_reminders(now)


async def _tasks(core: Core, now: datetime) -> int:
    return await core.care.task_reminders(now)


async def _lifecycle(core: Core, now: datetime) -> int:
    return await core.care.lifecycle_activities(now, load_care_plan(core.settings.care_plan))


async def _customer_values(core: Core, now: datetime) -> int:
    """Re-score and re-tier every customer once per business day (tier moves become events)."""
    day = now.astimezone(ZoneInfo(core.settings.timezone)).date().isoformat()
    if await core.care.done_today("value", day):
        return 0
    counts = await core.customers.recompute_values(SYSTEM)
    await core.care.mark_done("value", day, now)
    return sum(counts.values())


async def _housekeeping(core: Core, now: datetime) -> int:
    return sum((await core.housekeeping.purge(now)).values())


async def _sla(core: Core, now: datetime) -> int:
    return await core.sla.sweep(now)


SWEEPS: list[Sweep] = [
    Sweep("sla", _sla),
    Sweep("care.warranty", _warranty),
    # Reads every unit with a maintenance interval (0.7 s for 100,000 on SQLite): due dates are a week ahead.
    Sweep("care.maintenance", _maintenance, every=timedelta(hours=1)),
    Sweep("care.tasks", _tasks),
    # The whole customer base is read: once an hour is plenty for activities counted in days.
    Sweep("care.lifecycle", _lifecycle, every=timedelta(hours=1)),
    Sweep("customer.values", _customer_values, every=timedelta(hours=1)),
    Sweep("housekeeping", _housekeeping, every=timedelta(hours=6)),
]

__all__ = ["ROUTES", "SWEEPS"]
