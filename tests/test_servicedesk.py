"""Service requests and repair orders through the core services, on the real database."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import Core
from core.db.models import OutboxEvent, ServiceRequest, ServiceRequestChange
from core.domain.enums import RequestKind, Severity
from core.errors import InsufficientStock, InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from core.schemas import PartUsedIn, RepairActionIn, RepairOrderIn, ServiceRequestIn, TransitionIn
from tests.world import World


async def outbox(core: Core) -> list[tuple[str, int]]:
    async with core.uow() as uow:
        rows = await uow.session.execute(
            select(OutboxEvent.event_type, OutboxEvent.aggregate_id).order_by(OutboxEvent.id)
        )
        return list(rows.tuples())


async def count(core: Core, model: type) -> int:
    async with core.uow() as uow:
        return (await uow.session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_customer_opens_request_for_own_serial_with_sla(
    core: Core, world: World, clock: FrozenClock
) -> None:
    opened = await core.service_desk.open_request(
        world.acme_customer,
        ServiceRequestIn(
            subject="Washing machine leaking",
            serial_number="wm2023-00917 ",
            channel="rest",
            severity=Severity.HIGH,
        ),
    )
    assert opened.ref == f"SR-{opened.id}"
    assert (opened.customer_code, opened.serial_number, opened.status) == ("ACME", "WM2023-00917", "new")
    assert opened.response_due_at == clock.now() + timedelta(hours=4)
    assert opened.resolution_due_at == clock.now() + timedelta(days=1)
    assert ("ServiceRequestOpened", opened.id) in await outbox(core)


async def test_customer_cannot_use_another_customers_serial(core: Core, world: World) -> None:
    before = await count(core, ServiceRequest)
    with pytest.raises(NotFound) as refused:
        await core.service_desk.open_request(
            world.acme_customer, ServiceRequestIn(subject="mine now", serial_number=world.globex_serial)
        )
    assert "AB12345" in refused.value.message and "Globex" not in refused.value.message
    with pytest.raises(NotFound):
        await core.service_desk.open_request(
            world.acme_customer, ServiceRequestIn(subject="as globex", customer_code="GLOBEX")
        )
    assert await count(core, ServiceRequest) == before


async def test_full_lifecycle_is_recorded_in_order(core: Core, world: World, clock: FrozenClock) -> None:
    desk = core.service_desk
    request = await desk.open_request(
        world.agent, ServiceRequestIn(customer_code="ACME", subject="Noisy drum")
    )
    steps = [
        TransitionIn(action="assign", assignee="agent"),
        TransitionIn(action="start", comment="calling the customer"),
        TransitionIn(action="hold", comment="waiting for part"),
        TransitionIn(action="start"),
        TransitionIn(action="resolve", resolution="Tightened drum bearing"),
        TransitionIn(action="close"),
    ]
    for step in steps:
        clock.advance(timedelta(minutes=5))
        detail = await desk.transition(world.agent, request.ref, step)
    assert detail.status == "closed"
    assert [entry.action for entry in detail.history] == [
        "open",
        "assign",
        "start",
        "hold",
        "start",
        "resolve",
        "close",
    ]
    assert [entry.to_status for entry in detail.history][-3:] == ["in_progress", "resolved", "closed"]
    assert all(entry.actor == "agent" for entry in detail.history)
    times = [entry.at for entry in detail.history]
    assert times == sorted(times) and times[0] < times[-1]
    assert detail.history[2].comment == "calling the customer"
    events = [
        name
        for name, aggregate in await outbox(core)
        if aggregate == request.id and name.startswith("Service")
    ]
    assert events == [
        "ServiceRequestOpened",
        "ServiceRequestAssigned",
        "ServiceRequestStatusChanged",
        "ServiceRequestStatusChanged",
        "ServiceRequestStatusChanged",
        "ServiceRequestResolved",
        "ServiceRequestClosed",
    ]


async def test_illegal_transitions_change_nothing(core: Core, world: World) -> None:
    desk = core.service_desk
    request = await desk.open_request(world.agent, ServiceRequestIn(customer_code="ACME", subject="x"))
    history_before = await count(core, ServiceRequestChange)
    events_before = len(await outbox(core))
    with pytest.raises(InvalidTransition, match="resolve it first"):
        await desk.transition(world.agent, request.ref, TransitionIn(action="close"))
    await desk.transition(world.agent, request.ref, TransitionIn(action="assign", assignee="agent"))
    with pytest.raises(ValidationFailed, match="resolution"):
        await desk.transition(world.agent, request.ref, TransitionIn(action="resolve", resolution="  "))
    with pytest.raises(ValidationFailed):
        await desk.transition(world.agent, request.ref, TransitionIn(action="assign", assignee="acme.buyer"))
    detail = await desk.get_request(world.agent, request.ref)
    assert detail.status == "assigned"
    assert await count(core, ServiceRequestChange) == history_before + 1
    assert len(await outbox(core)) == events_before + 1


async def test_customer_confirms_or_reopens_but_cannot_assign(core: Core, world: World) -> None:
    desk = core.service_desk
    request = await desk.open_request(world.acme_customer, ServiceRequestIn(subject="Door seal torn"))
    with pytest.raises(PermissionDenied):
        await desk.transition(
            world.acme_customer, request.ref, TransitionIn(action="assign", assignee="agent")
        )
    await desk.transition(world.agent, request.ref, TransitionIn(action="assign", assignee="agent"))
    await desk.transition(
        world.agent, request.ref, TransitionIn(action="resolve", resolution="Seal replaced")
    )
    reopened = await desk.transition(
        world.acme_customer, request.ref, TransitionIn(action="reopen", comment="still leaking")
    )
    assert reopened.status == "in_progress"
    # Customers see that staff acted, not the staff's internal account names.
    assert {entry.actor for entry in reopened.history} == {"acme.buyer", "staff"}


async def test_escalation_goes_to_the_assignees_manager(core: Core, world: World) -> None:
    desk = core.service_desk
    complaint = await desk.open_request(
        world.acme_customer,
        ServiceRequestIn(
            subject="Technician was rude and late", kind=RequestKind.COMPLAINT, severity=Severity.HIGH
        ),
    )
    await desk.transition(world.agent, complaint.ref, TransitionIn(action="assign", assignee="agent"))
    escalated = await desk.transition(world.agent, complaint.ref, TransitionIn(action="escalate"))
    assert (escalated.status, escalated.escalation_level) == ("escalated", 1)
    assert escalated.history[-1].comment == "escalated to north.manager"
    async with core.uow() as uow:
        payload = (
            await uow.session.execute(
                select(OutboxEvent.payload).where(OutboxEvent.event_type == "ServiceRequestEscalated")
            )
        ).scalar_one()
    assert payload["escalated_to_id"] == world.north_manager.user_id
    assert payload["level"] == 1


async def test_dispatch_accept_complete_in_warranty_is_free_and_deducts_stock(
    core: Core, world: World
) -> None:
    desk = core.service_desk
    request = await desk.open_request(
        world.acme_customer, ServiceRequestIn(subject="Leak", serial_number=world.acme_serial)
    )
    order = await desk.dispatch(
        world.agent,
        RepairOrderIn(
            service_request=request.ref,
            technician="tech.north",
            scheduled_at=core.clock.now() + timedelta(days=1),
        ),
    )
    assert (order.status, order.technician, order.station_code) == ("dispatched", "tech.north", "ST-N")
    assert (await desk.get_request(world.agent, request.ref)).status == "assigned"
    with pytest.raises(NotFound):  # another technician's job does not exist for them
        await desk.act_on_repair(world.tech_south, order.ref, RepairActionIn(action="accept"))
    await desk.act_on_repair(world.tech_north, order.ref, RepairActionIn(action="accept"))
    done = await desk.act_on_repair(
        world.tech_north,
        order.ref,
        RepairActionIn(
            action="complete",
            work_summary="Replaced pump",
            labour_minutes=45,
            parts=[PartUsedIn(part_code="P-100", quantity=1)],
        ),
    )
    assert (done.status, done.in_warranty, done.total_charge) == ("completed", True, Decimal("0.00"))
    assert [(part.part_code, part.quantity, part.unit_price) for part in done.parts] == [
        ("P-100", 1, Decimal("180.00"))
    ]
    assert await desk.stock_level(SYSTEM, "ST-N", "P-100") == 2
    resolved = await desk.get_request(world.acme_customer, request.ref)
    assert (resolved.status, resolved.resolution) == ("resolved", "Replaced pump")
    assert resolved.repair_orders == [order.ref]
    names = [name for name, _ in await outbox(core)]
    assert names[-2:] == ["ServiceRequestResolved", "RepairCompleted"]


async def test_out_of_warranty_repair_is_charged(core: Core, world: World) -> None:
    desk = core.service_desk
    request = await desk.open_request(
        world.agent, ServiceRequestIn(subject="Old dishwasher", serial_number=world.acme_old_serial)
    )
    order = await desk.dispatch(
        world.agent, RepairOrderIn(service_request=request.ref, technician="tech.north")
    )
    await desk.act_on_repair(world.tech_north, order.ref, RepairActionIn(action="accept"))
    await desk.act_on_repair(world.tech_north, order.ref, RepairActionIn(action="start"))
    done = await desk.act_on_repair(
        world.tech_north,
        order.ref,
        RepairActionIn(
            action="complete",
            work_summary="New pump",
            labour_minutes=60,
            parts=[PartUsedIn(part_code="P-100", quantity=2)],
        ),
    )
    assert done.in_warranty is False
    assert (done.parts_charge, done.labour_charge, done.total_charge) == (
        Decimal("360.00"),
        Decimal("170.00"),
        Decimal("530.00"),
    )


async def test_short_stock_refuses_completion_and_changes_nothing(core: Core, world: World) -> None:
    desk = core.service_desk
    request = await desk.open_request(world.agent, ServiceRequestIn(customer_code="GLOBEX", subject="Pump"))
    order = await desk.dispatch(
        world.agent, RepairOrderIn(service_request=request.ref, technician="tech.south")
    )
    await desk.act_on_repair(world.tech_south, order.ref, RepairActionIn(action="accept"))
    with pytest.raises(InsufficientStock, match="Only 1 of part P-100"):
        await desk.act_on_repair(
            world.tech_south,
            order.ref,
            RepairActionIn(
                action="complete", work_summary="pump", parts=[PartUsedIn(part_code="P-100", quantity=2)]
            ),
        )
    with pytest.raises(NotFound, match="No part"):
        await desk.act_on_repair(
            world.tech_south,
            order.ref,
            RepairActionIn(
                action="complete", work_summary="pump", parts=[PartUsedIn(part_code="P-999", quantity=1)]
            ),
        )
    assert await desk.stock_level(SYSTEM, "ST-S", "P-100") == 1
    assert (await desk.get_repair_order(world.tech_south, order.ref)).status == "accepted"
    assert (await desk.get_request(world.agent, request.ref)).status == "assigned"


async def test_cancelled_job_cannot_be_accepted_and_decline_needs_reason(core: Core, world: World) -> None:
    desk = core.service_desk
    request = await desk.open_request(world.agent, ServiceRequestIn(customer_code="ACME", subject="x"))
    order = await desk.dispatch(
        world.agent, RepairOrderIn(service_request=request.ref, technician="tech.north")
    )
    with pytest.raises(ValidationFailed, match="why"):
        await desk.act_on_repair(world.tech_north, order.ref, RepairActionIn(action="decline"))
    declined = await desk.act_on_repair(
        world.tech_north, order.ref, RepairActionIn(action="decline", comment="too far")
    )
    assert (declined.status, declined.technician, declined.history[-1].comment) == ("open", None, "too far")
    with pytest.raises(NotFound):  # no longer theirs
        await desk.get_repair_order(world.tech_north, order.ref)
    order = await desk.dispatch(
        world.agent, RepairOrderIn(service_request=request.ref, technician="tech.north")
    )
    await desk.act_on_repair(
        world.agent, order.ref, RepairActionIn(action="cancel", comment="customer cancelled")
    )
    with pytest.raises(InvalidTransition, match="Cannot accept a job that is cancelled"):
        await desk.act_on_repair(world.tech_north, order.ref, RepairActionIn(action="accept"))


async def test_dispatch_in_the_past_or_to_a_non_technician_is_refused(core: Core, world: World) -> None:
    desk = core.service_desk
    request = await desk.open_request(world.agent, ServiceRequestIn(customer_code="ACME", subject="x"))
    with pytest.raises(ValidationFailed, match="past"):
        await desk.dispatch(
            world.agent,
            RepairOrderIn(
                service_request=request.ref,
                technician="tech.north",
                scheduled_at=core.clock.now() - timedelta(hours=1),
            ),
        )
    with pytest.raises(ValidationFailed, match="not an active technician"):
        await desk.dispatch(world.agent, RepairOrderIn(service_request=request.ref, technician="agent"))
    with pytest.raises(PermissionDenied):
        await desk.dispatch(
            world.tech_north, RepairOrderIn(service_request=request.ref, technician="tech.north")
        )
