"""Service requests, complaints, repair orders and spare-part stock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import (
    Actor,
    customer_scope,
    load_actor,
    repair_order_scope,
    require_role,
    require_staff,
    service_request_scope,
)
from core.clock import Clock
from core.db.models import (
    Attachment,
    Customer,
    Department,
    InstalledProduct,
    KbArticle,
    Part,
    PartStock,
    Product,
    RepairOrder,
    RepairOrderChange,
    RepairPart,
    ServiceRequest,
    ServiceRequestChange,
    ServiceStation,
    Task,
    User,
)
from core.domain import events
from core.domain.enums import DepartmentKind, RepairStatus, RequestStatus, Role, TaskKind, TaskStatus
from core.domain.pricing import PartLine, PriceList, compute_charge
from core.domain.sla import sla_due
from core.domain.warranty import WarrantyStatus
from core.domain.workflow import REPAIR_STEPS, REQUEST_OPEN_STATES, repair_move, request_move
from core.errors import (
    Conflict,
    InsufficientStock,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from core.links import VisitClaims, VisitLinks
from core.schemas import (
    AttachmentOut,
    HistoryEntryOut,
    Page,
    PartCheckOut,
    PartOut,
    PartUsedIn,
    RepairActionIn,
    RepairOrderIn,
    RepairOrderOut,
    RepairPartOut,
    ServiceRequestDetail,
    ServiceRequestIn,
    ServiceRequestOut,
    TaskOut,
    TechnicianSuggestionOut,
    TransitionIn,
)
from core.services.base import (
    Service,
    UowFactory,
    fetch_page,
    open_task,
    parse_ref,
    ref,
    user_by_username,
    usernames,
)
from core.services.installed import normalise_serial
from core.services.sla import escalation_chain
from core.uow import UnitOfWork

MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024

# Who may take which action on a service request (admins may take all).
REQUEST_ACTION_ROLES: dict[str, frozenset[Role]] = {
    "assign": frozenset({Role.AGENT, Role.MANAGER}),
    "start": frozenset({Role.AGENT, Role.MANAGER, Role.TECHNICIAN}),
    "hold": frozenset({Role.AGENT, Role.MANAGER, Role.TECHNICIAN}),
    "escalate": frozenset({Role.AGENT, Role.MANAGER, Role.REP}),
    "resolve": frozenset({Role.AGENT, Role.MANAGER, Role.TECHNICIAN}),
    # A customer confirms the fix by closing, or says it is not fixed by reopening.
    "close": frozenset({Role.AGENT, Role.MANAGER, Role.CUSTOMER}),
    "reopen": frozenset({Role.AGENT, Role.MANAGER, Role.CUSTOMER}),
}
REPAIR_TECHNICIAN_ACTIONS = frozenset({"accept", "decline", "start", "complete", "depart"})
REPAIR_DESK_ACTIONS = frozenset({"settle", "cancel"})
# A visit time may be moved by the technician or the desk; it takes effect when the customer confirms
# (or the desk confirms on their behalf, after a phone call).
REPAIR_RESCHEDULE_ROLES = (Role.TECHNICIAN, Role.AGENT, Role.MANAGER)
REPAIR_CUSTOMER_ACTIONS = frozenset({"confirm_time", "refuse_time"})
REPAIR_CUSTOMER_ROLES = (Role.CUSTOMER, Role.AGENT, Role.MANAGER)
# How far ahead an "on my way" arrival time may be.
MAX_ETA = timedelta(hours=12)
# Active jobs: what counts as a technician's load.
ACTIVE_JOB_STATES = (RepairStatus.DISPATCHED, RepairStatus.ACCEPTED, RepairStatus.IN_PROGRESS)
# What the customer may write on the visit page when a proposed time does not suit them.
MAX_VISIT_NOTE = 500
VisitState = Literal["open", "confirmed", "refused", "outdated", "expired", "closed"]


@dataclass(frozen=True, slots=True)
class VisitView:
    """What the visit page shows: the job, the old and the proposed time, and whether it can be answered."""

    job: str
    ticket: str
    subject: str
    product: str
    customer_name: str
    technician_name: str
    previous_at: datetime | None
    proposed_at: datetime
    expires_at: datetime
    state: VisitState
    lang: str | None
    timezone: str | None


class ServiceDesk(Service):
    """Cases from opening to closing, and the field work behind them."""

    def __init__(
        self, uow: UowFactory, clock: Clock, timezone: str = "UTC", price_list: PriceList | None = None
    ) -> None:
        super().__init__(uow, clock, timezone)
        self._price_list = price_list or PriceList()

    # --- service requests -----------------------------------------------------------------------

    async def open_request(self, actor: Actor, data: ServiceRequestIn) -> ServiceRequestOut:
        """Open a repair request or complaint; customers always for their own company."""
        require_role(actor, Role.CUSTOMER, Role.AGENT, Role.MANAGER, Role.REP, doing="open service requests")
        async with self._uow() as uow:
            session = uow.session
            unit: InstalledProduct | None = None
            if data.serial_number:
                unit = (
                    await session.execute(
                        select(InstalledProduct)
                        .join(Customer, Customer.id == InstalledProduct.customer_id)
                        .where(
                            InstalledProduct.serial_number == normalise_serial(data.serial_number),
                            customer_scope(actor),
                        )
                    )
                ).scalar_one_or_none()
                if unit is None:
                    raise NotFound(
                        f"No product with serial number '{data.serial_number[:64]}' found.",
                        field="serial_number",
                    )
            customer = await self._requesting_customer(session, actor, data.customer_code, unit)
            if unit is not None and unit.customer_id != customer.id:
                raise ValidationFailed(
                    f"Serial {unit.serial_number} does not belong to customer {customer.code}.",
                    field="serial_number",
                )
            article_id = None
            if data.kb_article_code:
                article = (
                    await session.execute(select(KbArticle).where(KbArticle.code == data.kb_article_code))
                ).scalar_one_or_none()
                if article is None:
                    raise NotFound(f"No knowledge article '{data.kb_article_code}'.", field="kb_article_code")
                article_id = article.id
            now = self._clock.now()
            if data.preferred_time is not None and data.preferred_time < now:
                raise ValidationFailed("The preferred visit time is in the past.", field="preferred_time")
            response_due, resolution_due = sla_due(data.kind.value, data.severity.value, now)
            request = ServiceRequest(
                customer_id=customer.id,
                requester_id=actor.user_id,
                kind=data.kind.value,
                severity=data.severity.value,
                channel=data.channel.value,
                status=RequestStatus.NEW.value,
                subject=data.subject,
                description=data.description,
                installed_product_id=unit.id if unit else None,
                kb_article_id=article_id,
                preferred_time=data.preferred_time,
                response_due_at=response_due,
                resolution_due_at=resolution_due,
                escalation_level=0,
                created_at=now,
                updated_at=now,
            )
            session.add(request)
            await session.flush()
            self._record(session, request, actor, "open", None, RequestStatus.NEW, data.subject)
            uow.emit(
                events.ServiceRequestOpened(
                    aggregate_id=request.id,
                    actor_id=actor.user_id,
                    customer_id=customer.id,
                    requester_id=actor.user_id,
                    kind=request.kind,
                    severity=request.severity,
                    channel=request.channel,
                )
            )
            await uow.commit()
            return (await self._outs(session, [request], actor))[0]

    async def get_request(self, actor: Actor, reference: str | int) -> ServiceRequestDetail:
        """A request with its history, if the actor may see it."""
        async with self._uow() as uow:
            session = uow.session
            request = await self._visible_request(session, actor, reference)
            summary = (await self._outs(session, [request], actor))[0]
            changes = (
                (
                    await session.execute(
                        select(ServiceRequestChange)
                        .where(ServiceRequestChange.service_request_id == request.id)
                        .order_by(ServiceRequestChange.id)
                    )
                )
                .scalars()
                .all()
            )
            names = await usernames(session, {change.actor_id for change in changes})
            orders_query = select(RepairOrder.id).where(RepairOrder.service_request_id == request.id)
            if actor.role is Role.TECHNICIAN:
                orders_query = orders_query.where(repair_order_scope(actor))
            orders = (await session.execute(orders_query.order_by(RepairOrder.id))).scalars().all()
            files = (
                (
                    await session.execute(
                        select(Attachment)
                        .where(Attachment.service_request_id == request.id)
                        .order_by(Attachment.id)
                    )
                )
                .scalars()
                .all()
            )
            return ServiceRequestDetail(
                **summary.model_dump(),
                history=[
                    HistoryEntryOut(
                        at=change.at,
                        actor=_actor_label(names, change.actor_id, actor),
                        action=change.action,
                        from_status=change.from_status,
                        to_status=change.to_status,
                        comment=change.comment,
                    )
                    for change in changes
                ],
                repair_orders=[ref("RO", order_id) for order_id in orders],
                attachments=[
                    AttachmentOut(
                        id=file.id,
                        filename=file.filename,
                        content_type=file.content_type,
                        size=file.size,
                        channel=file.channel,
                        created_at=file.created_at,
                    )
                    for file in files
                ],
            )

    async def list_requests(
        self,
        actor: Actor,
        *,
        status: str | None = None,
        kind: str | None = None,
        severity: str | None = None,
        customer_code: str | None = None,
        assignee: str | None = None,
        open_only: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[ServiceRequestOut]:
        """Requests in scope, newest first."""
        conditions: list[ColumnElement[bool]] = [service_request_scope(actor)]
        if status:
            conditions.append(ServiceRequest.status == status)
        if open_only:
            conditions.append(ServiceRequest.status.in_([state.value for state in REQUEST_OPEN_STATES]))
        if kind:
            conditions.append(ServiceRequest.kind == kind)
        if severity:
            conditions.append(ServiceRequest.severity == severity)
        async with self._uow() as uow:
            session = uow.session
            if customer_code:
                conditions.append(
                    ServiceRequest.customer_id.in_(select(Customer.id).where(Customer.code == customer_code))
                )
            if assignee:
                conditions.append(
                    ServiceRequest.assignee_id == (await user_by_username(session, assignee)).id
                )
            query = (
                select(ServiceRequest)
                .where(*conditions)
                .order_by(ServiceRequest.created_at.desc(), ServiceRequest.id.desc())
            )
            total, rows = await fetch_page(session, query, limit=limit, offset=offset)
            return Page[ServiceRequestOut](
                items=await self._outs(session, [request for (request,) in rows], actor),
                total=total,
                limit=limit,
                offset=offset,
            )

    async def transition(
        self, actor: Actor, reference: str | int, data: TransitionIn
    ) -> ServiceRequestDetail:
        """Move a request through its lifecycle; every move is recorded with actor, time and comment."""
        action = data.action.strip().lower()
        allowed = REQUEST_ACTION_ROLES.get(action)
        if allowed is None:
            request_move(action, RequestStatus.NEW)  # raises the "unknown action" error with the list
        assert allowed is not None
        if not actor.is_admin and actor.role not in allowed:
            raise PermissionDenied(f"Your role ({actor.role.value}) cannot {action} service requests.")
        async with self._uow() as uow:
            session = uow.session
            request = await self._visible_request(session, actor, reference)
            old_status = request.status
            new_status = request_move(action, old_status)
            now = self._clock.now()
            comment = data.comment
            if action == "assign":
                if not data.assignee:
                    raise ValidationFailed("Say who to assign it to.", field="assignee")
                assignee = await user_by_username(session, data.assignee)
                if assignee.role not in (Role.AGENT, Role.TECHNICIAN, Role.MANAGER) or not assignee.active:
                    raise ValidationFailed(
                        f"{assignee.username} cannot take service requests.", field="assignee"
                    )
                request.assignee_id = assignee.id
                request.first_response_at = request.first_response_at or now
                comment = comment or f"assigned to {assignee.username}"
                uow.emit(
                    events.ServiceRequestAssigned(
                        aggregate_id=request.id,
                        actor_id=actor.user_id,
                        assignee_id=assignee.id,
                        customer_id=request.customer_id,
                    )
                )
            elif action == "resolve":
                resolution = (data.resolution or "").strip()
                if not resolution:
                    raise ValidationFailed("Resolving needs a resolution: what was done.", field="resolution")
                request.resolution, request.resolved_at = resolution, now
                uow.emit(
                    events.ServiceRequestResolved(
                        aggregate_id=request.id,
                        actor_id=actor.user_id,
                        customer_id=request.customer_id,
                        resolution=resolution,
                    )
                )
            elif action == "close":
                if not request.resolution:
                    raise InvalidTransition("A request cannot be closed without a resolution.")
                request.closed_at = now
                uow.emit(
                    events.ServiceRequestClosed(
                        aggregate_id=request.id, actor_id=actor.user_id, customer_id=request.customer_id
                    )
                )
            elif action == "escalate":
                target = await self._escalation_target(session, request)
                request.escalation_level += 1
                if target is not None:
                    comment = comment or f"escalated to {target.username}"
                uow.emit(
                    events.ServiceRequestEscalated(
                        aggregate_id=request.id,
                        actor_id=actor.user_id,
                        customer_id=request.customer_id,
                        level=request.escalation_level,
                        escalated_to_id=target.id if target else None,
                        reason=data.comment or "manual escalation",
                    )
                )
            else:
                if action == "reopen":
                    request.resolved_at = request.closed_at = None
                if action == "start":
                    request.first_response_at = request.first_response_at or now
                uow.emit(
                    events.ServiceRequestStatusChanged(
                        aggregate_id=request.id,
                        actor_id=actor.user_id,
                        customer_id=request.customer_id,
                        from_status=old_status,
                        to_status=new_status,
                    )
                )
            request.status = new_status
            request.updated_at = now
            self._record(session, request, actor, action, old_status, new_status, comment)
            await uow.commit()
        return await self.get_request(actor, request.id)

    async def add_comment(self, actor: Actor, reference: str | int, comment: str) -> None:
        """Add a note to a request's history without changing its status."""
        text = comment.strip()
        if not text:
            raise ValidationFailed("The comment is empty.", field="comment")
        async with self._uow() as uow:
            request = await self._visible_request(uow.session, actor, reference)
            self._record(
                uow.session, request, actor, "comment", request.status, request.status, text[:10_000]
            )
            request.updated_at = self._clock.now()
            await uow.commit()

    # --- repair orders --------------------------------------------------------------------------

    async def dispatch(self, actor: Actor, data: RepairOrderIn) -> RepairOrderOut:
        """Create a repair order for an open request and send it to a technician."""
        require_role(actor, Role.AGENT, Role.MANAGER, doing="dispatch technicians")
        async with self._uow() as uow:
            session = uow.session
            request = await self._visible_request(session, actor, data.service_request)
            if request.status not in REQUEST_OPEN_STATES:
                raise InvalidTransition(
                    f"{ref('SR', request.id)} is {request.status}: reopen it before dispatching."
                )
            technician = await user_by_username(session, data.technician)
            if technician.role != Role.TECHNICIAN or not technician.active:
                raise ValidationFailed(
                    f"{technician.username} is not an active technician.", field="technician"
                )
            if actor.role is Role.MANAGER and technician.id not in actor.team_ids:
                # A manager dispatches their own team; another team's technician reads as unknown.
                raise NotFound(f"No user named '{data.technician[:64]}'.", field="username")
            now = self._clock.now()
            if data.scheduled_at is not None and data.scheduled_at < now:
                raise ValidationFailed("The visit time is in the past.", field="scheduled_at")
            station_id = technician.station_id
            if data.station_code:
                station = (
                    await session.execute(
                        select(ServiceStation).where(ServiceStation.code == data.station_code)
                    )
                ).scalar_one_or_none()
                if station is None:
                    raise NotFound(f"No service station '{data.station_code}'.", field="station_code")
                station_id = station.id
            # A job a technician declined waits, open, for someone else: it is sent again rather than
            # left behind as a second, never-finished order of the same request.
            order = (
                await session.execute(
                    select(RepairOrder)
                    .where(
                        RepairOrder.service_request_id == request.id,
                        RepairOrder.status == RepairStatus.OPEN,
                        RepairOrder.technician_id.is_(None),
                    )
                    .order_by(RepairOrder.id.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            if order is None:
                order = RepairOrder(
                    service_request_id=request.id,
                    work_summary="",
                    labour_minutes=0,
                    currency="CNY",
                    created_at=now,
                )
                session.add(order)
            order.technician_id, order.station_id = technician.id, station_id
            order.status = repair_move("dispatch", RepairStatus.OPEN)
            order.scheduled_at, order.proposed_at, order.proposed_by_id = data.scheduled_at, None, None
            order.updated_at = now
            await session.flush()
            self._record(
                session, order, actor, "dispatch", RepairStatus.OPEN, order.status, technician.username
            )
            if request.status == RequestStatus.NEW:
                request.assignee_id = request.assignee_id or technician.id
                request.first_response_at = request.first_response_at or now
                self._record(
                    session,
                    request,
                    actor,
                    "assign",
                    request.status,
                    RequestStatus.ASSIGNED,
                    f"{ref('RO', order.id)} dispatched to {technician.username}",
                )
                request.status = RequestStatus.ASSIGNED
                uow.emit(
                    events.ServiceRequestAssigned(
                        aggregate_id=request.id,
                        actor_id=actor.user_id,
                        assignee_id=request.assignee_id,
                        customer_id=request.customer_id,
                    )
                )
            elif request.assignee_id is None:
                request.assignee_id = technician.id
            request.updated_at = now
            uow.emit(
                events.RepairDispatched(
                    aggregate_id=order.id,
                    actor_id=actor.user_id,
                    service_request_id=request.id,
                    technician_id=technician.id,
                    scheduled_at=order.scheduled_at,
                )
            )
            await uow.commit()
        return await self.get_repair_order(actor, order.id)

    async def act_on_repair(
        self,
        actor: Actor,
        reference: str | int,
        data: RepairActionIn,
        *,
        expect_proposed_at: datetime | None = None,
    ) -> RepairOrderOut:
        """Accept, decline, start, complete, settle or cancel a repair order.

        `expect_proposed_at` (the visit page): the customer's answer counts only for that proposed time.
        """
        action = data.action.strip().lower()
        if action in REPAIR_TECHNICIAN_ACTIONS:
            require_role(actor, Role.TECHNICIAN, doing=f"{action} jobs")
        elif action in REPAIR_DESK_ACTIONS:
            require_role(actor, Role.AGENT, Role.MANAGER, doing=f"{action} jobs")
        elif action == "reschedule":
            require_role(actor, *REPAIR_RESCHEDULE_ROLES, doing="reschedule jobs")
        elif action in REPAIR_CUSTOMER_ACTIONS:
            require_role(actor, *REPAIR_CUSTOMER_ROLES, doing="answer a proposed visit time")
        else:
            repair_move(action, RepairStatus.OPEN)  # raises the "unknown action" error
        async with self._uow() as uow:
            session = uow.session
            order = await self._visible_order(session, actor, reference)
            if (
                action in REPAIR_TECHNICIAN_ACTIONS
                and not actor.is_admin
                and order.technician_id != actor.user_id
            ):
                raise PermissionDenied(f"{ref('RO', order.id)} is not assigned to you.")
            old_status = order.status
            new_status = repair_move(action, old_status)
            request = await session.get(ServiceRequest, order.service_request_id)
            assert request is not None
            now = self._clock.now()
            comment = data.comment
            technician_id = order.technician_id or 0
            if action == "accept":
                order.accepted_at = now
                uow.emit(
                    events.RepairAccepted(
                        aggregate_id=order.id,
                        actor_id=actor.user_id,
                        service_request_id=request.id,
                        technician_id=technician_id,
                        scheduled_at=order.scheduled_at,
                    )
                )
            elif action == "decline":
                if not comment.strip():
                    raise ValidationFailed("Say why you decline the job.", field="comment")
                order.decline_reason = comment
                order.technician_id = None
                if request.assignee_id == technician_id:
                    # The case is nobody's until it is dispatched again.
                    request.assignee_id = None
                uow.emit(
                    events.RepairDeclined(
                        aggregate_id=order.id,
                        actor_id=actor.user_id,
                        service_request_id=request.id,
                        technician_id=technician_id,
                        reason=comment,
                    )
                )
            elif action == "start":
                order.started_at = now
                self._start_request(session, actor, order, request)
                uow.emit(
                    events.RepairStarted(
                        aggregate_id=order.id,
                        actor_id=actor.user_id,
                        service_request_id=request.id,
                        technician_id=technician_id,
                    )
                )
            elif action == "complete":
                await self._complete(session, uow, actor, order, request, data, now)
                comment = comment or data.work_summary
            elif action == "depart":
                comment = self._depart(session, uow, actor, order, request, data, now) or comment
            elif action == "reschedule":
                comment = self._propose_time(uow, actor, order, request, data, now) or comment
            elif action in REPAIR_CUSTOMER_ACTIONS:
                expected = expect_proposed_at
                if expected is not None and not _same_second(order.proposed_at, expected):
                    # A link made for an earlier proposal must not answer a newer one.
                    raise Conflict(f"The visit time of {ref('RO', order.id)} was answered or changed.")
                comment = self._answer_time(uow, actor, order, request, data, now, action) or comment
            elif action == "settle":
                pass
            elif action == "cancel":
                if not comment.strip():
                    raise ValidationFailed("Say why the job is cancelled.", field="comment")
                uow.emit(
                    events.RepairCancelled(
                        aggregate_id=order.id,
                        actor_id=actor.user_id,
                        service_request_id=request.id,
                        reason=comment,
                    )
                )
            order.status = new_status
            order.updated_at = request.updated_at = now
            self._record(session, order, actor, action, old_status, new_status, comment)
            await uow.commit()
            # Shaped in this session, not re-read through the actor's scope: a technician who just
            # declined the job can no longer see it, yet must get the declined order back.
            return (await self._order_outs(session, actor, [order]))[0]

    def _start_request(
        self, session: AsyncSession, actor: Actor, order: RepairOrder, request: ServiceRequest
    ) -> None:
        """Work on the job has begun: the request is in progress too."""
        if request.status in (RequestStatus.ASSIGNED, RequestStatus.ON_HOLD, RequestStatus.ESCALATED):
            self._record(
                session,
                request,
                actor,
                "start",
                request.status,
                RequestStatus.IN_PROGRESS,
                f"{ref('RO', order.id)} started",
            )
            request.status = RequestStatus.IN_PROGRESS

    def _depart(
        self,
        session: AsyncSession,
        uow: UnitOfWork,
        actor: Actor,
        order: RepairOrder,
        request: ServiceRequest,
        data: RepairActionIn,
        now: datetime,
    ) -> str:
        """On my way: the arrival time is recorded, the job starts, the customer is told."""
        eta = data.eta
        if eta is not None:
            if eta < now - timedelta(minutes=1):
                raise ValidationFailed("The arrival time is in the past.", field="eta")
            if eta > now + MAX_ETA:
                raise ValidationFailed("The arrival time is more than 12 hours away.", field="eta")
        order.departed_at, order.eta_at = now, eta
        if order.started_at is None:
            order.started_at = now
        self._start_request(session, actor, order, request)
        uow.emit(
            events.RepairDeparted(
                aggregate_id=order.id,
                actor_id=actor.user_id,
                service_request_id=request.id,
                technician_id=order.technician_id or 0,
                eta=eta,
            )
        )
        return f"on the way, arriving about {eta.isoformat()}" if eta else "on the way"

    def _propose_time(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: RepairOrder,
        request: ServiceRequest,
        data: RepairActionIn,
        now: datetime,
    ) -> str:
        """A new visit time, kept as a proposal until the customer confirms it."""
        proposed = data.scheduled_at
        if proposed is None:
            raise ValidationFailed("Say the new visit time.", field="scheduled_at")
        if proposed <= now:
            raise ValidationFailed("The new visit time is in the past.", field="scheduled_at")
        if order.scheduled_at is not None and proposed == order.scheduled_at:
            raise ValidationFailed(
                f"{ref('RO', order.id)} is already planned for that time.", field="scheduled_at"
            )
        order.proposed_at, order.proposed_by_id = proposed, actor.user_id
        uow.emit(
            events.RepairRescheduleProposed(
                aggregate_id=order.id,
                actor_id=actor.user_id,
                service_request_id=request.id,
                technician_id=order.technician_id or 0,
                proposed_at=proposed,
                previous_at=order.scheduled_at,
            )
        )
        return f"new time proposed: {proposed.isoformat()}"

    def _answer_time(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: RepairOrder,
        request: ServiceRequest,
        data: RepairActionIn,
        now: datetime,
        action: str,
    ) -> str:
        """The customer's yes (the visit moves) or no (the proposal lapses; their own time is noted)."""
        proposed = order.proposed_at
        if proposed is None:
            raise InvalidTransition(f"{ref('RO', order.id)} has no new visit time waiting for an answer.")
        accepted = action == "confirm_time"
        suggested = None if accepted else data.scheduled_at
        if accepted and proposed <= now:
            raise InvalidTransition("The proposed time has already passed: ask for another one.")
        if suggested is not None and suggested <= now:
            raise ValidationFailed("The time you suggest is in the past.", field="scheduled_at")
        proposed_by = order.proposed_by_id
        order.proposed_at = order.proposed_by_id = None
        if accepted:
            order.scheduled_at = proposed
        elif suggested is not None:
            request.preferred_time = suggested
        uow.emit(
            events.RepairRescheduleAnswered(
                aggregate_id=order.id,
                actor_id=actor.user_id,
                service_request_id=request.id,
                technician_id=order.technician_id or 0,
                accepted=accepted,
                proposed_at=proposed,
                proposed_by_id=proposed_by,
                suggested_at=suggested,
                comment=data.comment.strip()[:500],
            )
        )
        if accepted:
            return f"visit moved to {proposed.isoformat()}"
        return f"new time refused{'; customer suggests ' + suggested.isoformat() if suggested else ''}"

    async def _complete(
        self,
        session: AsyncSession,
        uow: UnitOfWork,
        actor: Actor,
        order: RepairOrder,
        request: ServiceRequest,
        data: RepairActionIn,
        now: datetime,
    ) -> None:
        """Deduct parts from the station, price the job by warranty status, resolve the request."""
        if not data.work_summary.strip():
            raise ValidationFailed("Say what was done.", field="work_summary")
        lines: list[PartLine] = []
        for used in data.parts:
            part = (
                await session.execute(select(Part).where(Part.code == used.part_code))
            ).scalar_one_or_none()
            if part is None:
                raise NotFound(f"No part with code '{used.part_code}'.", field="parts")
            if order.station_id is None:
                raise InsufficientStock(f"{ref('RO', order.id)} has no service station to take parts from.")
            stock = (
                await session.execute(
                    select(PartStock).where(
                        PartStock.station_id == order.station_id, PartStock.part_id == part.id
                    )
                )
            ).scalar_one_or_none()
            available = stock.quantity if stock else 0
            if stock is None or available < used.quantity:
                raise InsufficientStock(
                    f"Only {available} of part {part.code} in stock at your station; {used.quantity} needed."
                )
            stock.quantity -= used.quantity
            if stock.quantity <= stock.min_quantity:
                uow.emit(
                    events.PartStockLow(
                        aggregate_id=stock.id,
                        actor_id=actor.user_id,
                        station_id=stock.station_id,
                        part_id=part.id,
                        quantity=stock.quantity,
                        min_quantity=stock.min_quantity,
                    )
                )
            session.add(
                RepairPart(
                    repair_order_id=order.id,
                    part_id=part.id,
                    quantity=used.quantity,
                    unit_price=part.unit_price,
                    charged=True,
                )
            )
            lines.append(PartLine(quantity=used.quantity, unit_price=part.unit_price))
        in_warranty = False
        if request.installed_product_id is not None:
            unit = await session.get(InstalledProduct, request.installed_product_id)
            assert unit is not None
            in_warranty = WarrantyStatus.on(unit.sold_on, unit.warranty_months, self.today()).in_warranty
        charge = compute_charge(
            in_warranty=in_warranty,
            parts=lines,
            labour_minutes=data.labour_minutes,
            price_list=self._price_list,
            warranty_excluded=data.warranty_excluded,
        )
        order.completed_at = now
        order.work_summary = data.work_summary.strip()
        order.labour_minutes = data.labour_minutes
        order.in_warranty = charge.in_warranty
        order.parts_charge, order.labour_charge, order.total_charge = (
            charge.parts,
            charge.labour,
            charge.total,
        )
        if request.status in REQUEST_OPEN_STATES and request.status != RequestStatus.NEW:
            self._record(
                session,
                request,
                actor,
                "resolve",
                request.status,
                RequestStatus.RESOLVED,
                f"{ref('RO', order.id)}: {order.work_summary}",
            )
            request.status = RequestStatus.RESOLVED
            request.resolution = order.work_summary
            request.resolved_at = now
            uow.emit(
                events.ServiceRequestResolved(
                    aggregate_id=request.id,
                    actor_id=actor.user_id,
                    customer_id=request.customer_id,
                    resolution=order.work_summary,
                )
            )
        uow.emit(
            events.RepairCompleted(
                aggregate_id=order.id,
                actor_id=actor.user_id,
                service_request_id=request.id,
                technician_id=order.technician_id or 0,
                in_warranty=charge.in_warranty,
                total_charge=charge.total,
                currency=order.currency,
            )
        )

    # --- the visit page: a signed link answers a proposed visit time ------------------------------

    async def visit_by_token(self, token: str, links: VisitLinks) -> VisitView:
        """What a visit link shows (NotFound: a link not ours, altered, or with nobody to answer it)."""
        claims = links.read(token)
        if claims is None:
            raise NotFound("This link is not valid.")
        async with self._uow() as uow:
            order, request, customer = await self._visit_of(uow.session, claims)
            return await self._visit_view(uow.session, order, request, customer, claims)

    async def answer_visit_by_token(
        self, token: str, links: VisitLinks, *, accept: bool, note: str = ""
    ) -> VisitView:
        """The customer's answer on the visit page, as the request's customer user, with the chat's rules.

        Conflict when already answered; InvalidTransition when expired, outdated or the job is closed.
        """
        claims = links.read(token)
        if claims is None:
            raise NotFound("This link is not valid.")
        async with self._uow() as uow:
            session = uow.session
            order, request, customer = await self._visit_of(session, claims)
            view = await self._visit_view(session, order, request, customer, claims)
            actor = await load_actor(session, customer)
        if view.state in ("confirmed", "refused"):
            raise Conflict(f"The new visit time for {view.job} was already answered.")
        if view.state != "open":
            raise InvalidTransition(f"The new visit time for {view.job} can no longer be answered here.")
        action = "confirm_time" if accept else "refuse_time"
        await self.act_on_repair(
            actor,
            order.id,
            RepairActionIn(action=action, comment=note.strip()[:MAX_VISIT_NOTE]),
            expect_proposed_at=claims.proposed_at,
        )
        return await self.visit_by_token(token, links)

    async def _visit_of(
        self, session: AsyncSession, claims: VisitClaims
    ) -> tuple[RepairOrder, ServiceRequest, User]:
        """The job a link names, its request, and the customer user who answers for it."""
        order = await session.get(RepairOrder, claims.order_id)
        request = await session.get(ServiceRequest, order.service_request_id) if order is not None else None
        customer = await _visit_customer(session, request) if request is not None else None
        if order is None or request is None or customer is None:
            raise NotFound("This link is not valid.")
        return order, request, customer

    async def _visit_view(
        self,
        session: AsyncSession,
        order: RepairOrder,
        request: ServiceRequest,
        customer: User,
        claims: VisitClaims,
    ) -> VisitView:
        now = self._clock.now()
        state: VisitState
        if _same_second(order.proposed_at, claims.proposed_at):
            if order.status not in REPAIR_STEPS["confirm_time"][0]:
                state = "closed"
            elif claims.expires_at <= now or claims.proposed_at <= now:
                state = "expired"
            else:
                state = "open"
        else:
            state = await _visit_answer(session, order, claims.proposed_at)
        product = ""
        if request.installed_product_id is not None:
            unit = await session.get(InstalledProduct, request.installed_product_id)
            model = await session.get(Product, unit.product_id) if unit is not None else None
            product = model.name if model is not None else ""
        technician = await session.get(User, order.technician_id) if order.technician_id else None
        company = await session.get(Customer, request.customer_id)
        return VisitView(
            job=ref("RO", order.id),
            ticket=ref("SR", request.id),
            subject=request.subject,
            product=product,
            customer_name=company.name if company is not None else "",
            technician_name=technician.name if technician is not None else "",
            previous_at=order.scheduled_at if state == "open" else None,
            proposed_at=claims.proposed_at,
            expires_at=claims.expires_at,
            state=state,
            lang=customer.lang,
            timezone=customer.timezone,
        )

    async def get_repair_order(self, actor: Actor, reference: str | int) -> RepairOrderOut:
        """A repair order with parts and history, if visible."""
        async with self._uow() as uow:
            session = uow.session
            order = await self._visible_order(session, actor, reference)
            return (await self._order_outs(session, actor, [order]))[0]

    async def list_repair_orders(
        self,
        actor: Actor,
        *,
        technician: str | None = None,
        status: str | None = None,
        scheduled_from: datetime | None = None,
        scheduled_to: datetime | None = None,
        active_only: bool = False,
        team: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[RepairOrderOut]:
        """Repair orders in scope, by scheduled time; `team`: a manager's board of their technicians' jobs."""
        conditions: list[ColumnElement[bool]] = [repair_order_scope(actor)]
        if team and actor.role is Role.MANAGER:
            # The board is whatever the manager's own technicians are doing, for whichever customer.
            conditions = [RepairOrder.technician_id.in_(actor.team_ids)]
        if status:
            conditions.append(RepairOrder.status == status)
        if active_only:
            conditions.append(
                RepairOrder.status.in_(
                    [RepairStatus.DISPATCHED, RepairStatus.ACCEPTED, RepairStatus.IN_PROGRESS]
                )
            )
        if scheduled_from:
            conditions.append(RepairOrder.scheduled_at >= scheduled_from)
        if scheduled_to:
            conditions.append(RepairOrder.scheduled_at < scheduled_to)
        async with self._uow() as uow:
            session = uow.session
            if technician:
                conditions.append(
                    RepairOrder.technician_id == (await user_by_username(session, technician)).id
                )
            query = (
                select(RepairOrder)
                .where(*conditions)
                .order_by(RepairOrder.scheduled_at.is_(None), RepairOrder.scheduled_at, RepairOrder.id)
            )
            total, rows = await fetch_page(session, query, limit=limit, offset=offset)
            return Page[RepairOrderOut](
                items=await self._order_outs(session, actor, [order for (order,) in rows]),
                total=total,
                limit=limit,
                offset=offset,
            )

    # --- dispatching ----------------------------------------------------------------------------

    async def suggest_technicians(
        self, actor: Actor, request_ref: str | int, at: datetime | None = None, *, limit: int = 3
    ) -> list[TechnicianSuggestionOut]:
        """Who could take a request, best first.

        The rule, in order: a technician of the same region first (region = the branch above the
        technician's station, else their department; for the request, the branch of its assignee, else
        of the customer's owner), then skills (the product's code, then its category, in User.skills),
        then the fewest active jobs on the day of the visit (`at`, else today), then the fewest active
        jobs overall. Only technicians the dispatcher may send are considered (a manager: their team).
        """
        require_role(actor, Role.AGENT, Role.MANAGER, doing="dispatch technicians")
        async with self._uow() as uow:
            session = uow.session
            request = await self._visible_request(session, actor, request_ref)
            if request.status not in REQUEST_OPEN_STATES:
                raise InvalidTransition(
                    f"{ref('SR', request.id)} is {request.status}: reopen it before dispatching."
                )
            technicians = await self._dispatchable(session, actor)
            if not technicians:
                return []
            product: Product | None = None
            if request.installed_product_id is not None:
                unit = await session.get(InstalledProduct, request.installed_product_id)
                product = await session.get(Product, unit.product_id) if unit is not None else None
            branch_of = await _branches(session)
            stations = {
                station.id: station
                for station in (await session.execute(select(ServiceStation))).scalars()
            }
            home_department = None
            for user_id in (request.assignee_id, await self._owner_id(session, request.customer_id)):
                person = await session.get(User, user_id) if user_id else None
                if person is not None and person.role != Role.CUSTOMER and person.department_id:
                    home_department = person.department_id
                    break
            home = branch_of.get(home_department) if home_department else None
            day = (at or self._clock.now()).astimezone(self._tz).date()
            start = datetime.combine(day, datetime.min.time(), tzinfo=self._tz)
            ids = [user.id for user in technicians]
            open_load = await self._load(session, ids)
            day_load = await self._load(session, ids, start, start + timedelta(days=1))
            suggestions: list[tuple[tuple[Any, ...], TechnicianSuggestionOut]] = []
            for user in technicians:
                skills = {skill.strip().casefold() for skill in (user.skills or [])}
                match = ""
                if product is not None and product.code.casefold() in skills:
                    match = "product"
                elif product is not None and product.category and product.category.casefold() in skills:
                    match = "category"
                station = stations.get(user.station_id) if user.station_id else None
                department = (station.department_id if station else None) or user.department_id
                region = branch_of.get(department) if department else None
                same = home is not None and region == home
                reasons = []
                if match and product is not None:
                    reasons.append(f"skilled in {product.code if match == 'product' else product.category}")
                if same:
                    reasons.append("same region")
                reasons.append(f"{day_load.get(user.id, 0)} jobs that day")
                reasons.append(f"{open_load.get(user.id, 0)} open jobs")
                key = (not same, {"product": 0, "category": 1}.get(match, 2), day_load.get(user.id, 0),
                       open_load.get(user.id, 0), user.username)
                suggestions.append((key, TechnicianSuggestionOut(
                    username=user.username,
                    name=user.name,
                    station_code=station.code if station else None,
                    skill_match=match,
                    same_region=same,
                    jobs_that_day=day_load.get(user.id, 0),
                    open_jobs=open_load.get(user.id, 0),
                    reasons=reasons,
                )))
            suggestions.sort(key=lambda item: item[0])
            return [suggestion for _key, suggestion in suggestions[: max(1, min(limit, 50))]]

    async def dispatchable_technicians(self, actor: Actor) -> list[tuple[str, str]]:
        """(username, name) of the active technicians this dispatcher may send (a manager: their team)."""
        require_role(actor, Role.AGENT, Role.MANAGER, doing="dispatch technicians")
        async with self._uow() as uow:
            return [(user.username, user.name) for user in await self._dispatchable(uow.session, actor)]

    async def set_skills(self, actor: Actor, *, technician: str, skills: Sequence[str]) -> None:
        """What a technician is qualified for: product codes and categories (used to suggest them)."""
        require_role(actor, Role.MANAGER, doing="set technicians' skills")
        cleaned = list(dict.fromkeys(skill.strip()[:64] for skill in skills if skill.strip()))[:50]
        async with self._uow() as uow:
            user = await user_by_username(uow.session, technician)
            if user.role != Role.TECHNICIAN:
                raise ValidationFailed(f"{user.username} is not a technician.", field="technician")
            user.skills = cleaned
            await uow.commit()

    async def _dispatchable(self, session: AsyncSession, actor: Actor) -> list[User]:
        """Active technicians the actor may send: a manager only their own team."""
        conditions: list[ColumnElement[bool]] = [User.role == Role.TECHNICIAN, User.active.is_(True)]
        if actor.role is Role.MANAGER:
            conditions.append(User.id.in_(actor.team_ids))
        query = select(User).where(*conditions).order_by(User.username)
        return list((await session.execute(query)).scalars())

    async def _owner_id(self, session: AsyncSession, customer_id: int) -> int | None:
        """The rep who owns a customer."""
        customer = await session.get(Customer, customer_id)
        return customer.owner_id if customer is not None else None

    async def _load(
        self,
        session: AsyncSession,
        ids: list[int],
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[int, int]:
        """Active jobs per technician (between `start` and `end` when given)."""
        query = select(RepairOrder.technician_id, func.count()).where(
            RepairOrder.technician_id.in_(ids), RepairOrder.status.in_(ACTIVE_JOB_STATES)
        )
        if start is not None and end is not None:
            query = query.where(RepairOrder.scheduled_at >= start, RepairOrder.scheduled_at < end)
        rows = await session.execute(query.group_by(RepairOrder.technician_id))
        return {int(user_id): int(total) for user_id, total in rows.tuples() if user_id is not None}

    # --- attachments ----------------------------------------------------------------------------

    async def store_attachment(
        self, actor: Actor, *, channel: str, filename: str, content_type: str, data: bytes
    ) -> int:
        """Keep a photo or document someone sent, not yet tied to a request; returns its id."""
        if actor.user_id is None:
            raise PermissionDenied("Attachments are sent by a person.")
        if not data:
            raise ValidationFailed("The file is empty.", field="attachment")
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise ValidationFailed("The file is larger than 10 MB.", field="attachment")
        kind = content_type.split(";")[0].strip().lower()
        if not (kind.startswith("image/") or kind == "application/pdf"):
            raise ValidationFailed("Only photos and PDF documents can be attached.", field="attachment")
        async with self._uow() as uow:
            attachment = Attachment(
                service_request_id=None,
                uploaded_by_id=actor.user_id,
                channel=channel[:20],
                filename=(filename or "file")[:255],
                content_type=kind[:100],
                size=len(data),
                data=data,
                created_at=self._clock.now(),
            )
            uow.session.add(attachment)
            await uow.session.flush()
            await uow.commit()
            return attachment.id

    async def attach(self, actor: Actor, reference: str | int, attachment_ids: Sequence[int]) -> int:
        """Tie the actor's own unattached files to a request they may see; returns how many were tied."""
        async with self._uow() as uow:
            session = uow.session
            request = await self._visible_request(session, actor, reference)
            files = (
                (
                    await session.execute(
                        select(Attachment).where(
                            Attachment.id.in_(list(attachment_ids)[:50]),
                            Attachment.uploaded_by_id == actor.user_id,
                            Attachment.service_request_id.is_(None),
                        )
                    )
                )
                .scalars()
                .all()
            )
            for file in files:
                file.service_request_id = request.id
            if files:
                names = ", ".join(file.filename for file in files)
                self._record(session, request, actor, "attach", request.status, request.status, names[:500])
                request.updated_at = self._clock.now()
            await uow.commit()
            return len(files)

    # --- hand-off to a person --------------------------------------------------------------------

    async def request_handoff(self, actor: Actor, *, summary: str, channel: str) -> TaskOut:
        """Someone asked for a human: a hand-off task for the least busy agent, due within the hour."""
        text = " ".join(summary.split())[:250] or "(no message)"
        async with self._uow() as uow:
            session = uow.session
            open_load = (
                select(Task.assignee_id, func.count().label("load"))
                .where(Task.status == TaskStatus.OPEN, Task.kind == TaskKind.HANDOFF)
                .group_by(Task.assignee_id)
                .subquery()
            )
            agent = (
                await session.execute(
                    select(User)
                    .outerjoin(open_load, open_load.c.assignee_id == User.id)
                    .where(User.role == Role.AGENT, User.active.is_(True))
                    .order_by(func.coalesce(open_load.c.load, 0), User.id)
                    .limit(1)
                )
            ).scalar_one_or_none()
            now = self._clock.now()
            who = actor.name or actor.username
            task = await open_task(
                uow,
                title=f"Hand-off ({channel}) from {who}: {text}",
                kind=TaskKind.HANDOFF.value,
                assignee_id=agent.id if agent else None,
                due_at=now + timedelta(hours=1),
                now=now,
                actor_id=actor.user_id,
                customer_id=actor.customer_id,
            )
            await uow.commit()
            customer = await session.get(Customer, actor.customer_id) if actor.customer_id else None
            return TaskOut(
                id=task.id,
                title=task.title,
                kind=task.kind,
                status=task.status,
                due_at=task.due_at,
                assignee=agent.username if agent else None,
                customer_code=customer.code if customer else None,
            )

    # --- stock ----------------------------------------------------------------------------------

    async def upsert_station(
        self, actor: Actor, *, code: str, name: str, address: str = "", department_code: str | None = None
    ) -> int:
        """Create or update a service station."""
        require_role(actor, Role.MANAGER, doing="manage service stations")
        async with self._uow() as uow:
            session = uow.session
            department_id = None
            if department_code:
                department_id = (
                    await session.execute(select(Department.id).where(Department.code == department_code))
                ).scalar_one_or_none()
                if department_id is None:
                    raise NotFound(f"No department '{department_code}'.", field="department")
            station = (
                await session.execute(select(ServiceStation).where(ServiceStation.code == code))
            ).scalar_one_or_none()
            if station is None:
                station = ServiceStation(code=code, name=name)
                session.add(station)
            station.name, station.address, station.department_id = name, address, department_id
            await session.flush()
            await uow.commit()
            return station.id

    async def upsert_part(self, actor: Actor, *, code: str, name: str, unit_price: Decimal) -> int:
        """Create or update a spare part."""
        require_role(actor, Role.MANAGER, doing="manage spare parts")
        if unit_price < 0:
            raise ValidationFailed("A price cannot be negative.", field="unit_price")
        async with self._uow() as uow:
            part = (await uow.session.execute(select(Part).where(Part.code == code))).scalar_one_or_none()
            if part is None:
                part = Part(code=code, name=name, unit_price=unit_price)
                uow.session.add(part)
            part.name, part.unit_price = name, unit_price
            await uow.session.flush()
            await uow.commit()
            return part.id

    async def set_stock(
        self, actor: Actor, *, station_code: str, part_code: str, quantity: int, min_quantity: int = 0
    ) -> None:
        """Set the counted stock of a part at a station."""
        require_role(actor, Role.MANAGER, Role.AGENT, doing="change stock")
        if quantity < 0 or min_quantity < 0:
            raise ValidationFailed("Stock cannot be negative.", field="quantity")
        async with self._uow() as uow:
            session = uow.session
            station = (
                await session.execute(select(ServiceStation).where(ServiceStation.code == station_code))
            ).scalar_one_or_none()
            part = (await session.execute(select(Part).where(Part.code == part_code))).scalar_one_or_none()
            if station is None or part is None:
                raise NotFound(f"Unknown station '{station_code}' or part '{part_code}'.")
            stock = (
                await session.execute(
                    select(PartStock).where(PartStock.station_id == station.id, PartStock.part_id == part.id)
                )
            ).scalar_one_or_none()
            if stock is None:
                stock = PartStock(station_id=station.id, part_id=part.id)
                session.add(stock)
            stock.quantity, stock.min_quantity = quantity, min_quantity
            await uow.commit()

    async def assign_station(self, actor: Actor, *, technician: str, station_code: str) -> None:
        """Base a technician at a service station (their parts come from its stock)."""
        require_role(actor, Role.MANAGER, doing="assign technicians to stations")
        async with self._uow() as uow:
            session = uow.session
            user = await user_by_username(session, technician)
            if user.role != Role.TECHNICIAN:
                raise ValidationFailed(f"{user.username} is not a technician.", field="technician")
            station_id = (
                await session.execute(select(ServiceStation.id).where(ServiceStation.code == station_code))
            ).scalar_one_or_none()
            if station_id is None:
                raise NotFound(f"No service station '{station_code}'.", field="station_code")
            user.station_id = station_id
            await uow.commit()

    async def parts(self, actor: Actor) -> list[PartOut]:
        """The spare-parts catalogue, by code (for staff: a technician names a part by what it is)."""
        require_staff(actor, doing="look up spare parts")
        async with self._uow() as uow:
            rows = (await uow.session.execute(select(Part).order_by(Part.code))).scalars()
            return [PartOut(code=part.code, name=part.name) for part in rows]

    async def check_parts(
        self, actor: Actor, reference: str | int, parts: Sequence[PartUsedIn]
    ) -> list[PartCheckOut]:
        """Before a job is completed: which of the parts exist, and how many the job's station holds.

        Nothing changes; completing still checks again under its own transaction.
        """
        require_role(actor, Role.MANAGER, Role.AGENT, Role.TECHNICIAN, doing="see stock")
        async with self._uow() as uow:
            session = uow.session
            order = await self._visible_order(session, actor, reference)
            station = await session.get(ServiceStation, order.station_id) if order.station_id else None
            codes = [used.part_code for used in parts]
            known = {
                part.code: part
                for part in (await session.execute(select(Part).where(Part.code.in_(codes)))).scalars()
            }
            stock: dict[int, int] = {}
            if station is not None and known:
                rows = await session.execute(
                    select(PartStock.part_id, PartStock.quantity).where(
                        PartStock.station_id == station.id,
                        PartStock.part_id.in_([part.id for part in known.values()]),
                    )
                )
                stock = dict(rows.tuples().all())
            return [
                PartCheckOut(
                    part_code=used.part_code,
                    part_name=known[used.part_code].name if used.part_code in known else None,
                    needed=used.quantity,
                    in_stock=stock.get(known[used.part_code].id, 0) if used.part_code in known else 0,
                    station_code=station.code if station is not None else None,
                )
                for used in parts
            ]

    async def stock_level(self, actor: Actor, station_code: str, part_code: str) -> int:
        """How many of a part a station holds (0 when none is recorded)."""
        require_role(actor, Role.MANAGER, Role.AGENT, Role.TECHNICIAN, doing="see stock")
        async with self._uow() as uow:
            quantity = (
                await uow.session.execute(
                    select(PartStock.quantity)
                    .join(ServiceStation, ServiceStation.id == PartStock.station_id)
                    .join(Part, Part.id == PartStock.part_id)
                    .where(ServiceStation.code == station_code, Part.code == part_code)
                )
            ).scalar_one_or_none()
            return quantity or 0

    # --- helpers --------------------------------------------------------------------------------

    async def _requesting_customer(
        self, session: AsyncSession, actor: Actor, customer_code: str | None, unit: InstalledProduct | None
    ) -> Customer:
        if actor.is_customer:
            if actor.customer_id is None:
                raise PermissionDenied("Your account is not linked to a customer.")
            customer = await session.get(Customer, actor.customer_id)
            assert customer is not None
            if customer_code and customer_code != customer.code:
                raise NotFound(f"No customer with code '{customer_code[:64]}'.", field="customer_code")
            return customer
        if customer_code:
            customer = (
                await session.execute(
                    select(Customer).where(Customer.code == customer_code, customer_scope(actor))
                )
            ).scalar_one_or_none()
            if customer is None:
                raise NotFound(f"No customer with code '{customer_code[:64]}'.", field="customer_code")
            return customer
        if unit is not None:
            customer = await session.get(Customer, unit.customer_id)
            assert customer is not None
            return customer
        raise ValidationFailed(
            "Say which customer this is for (customer_code) or give a serial number.", field="customer_code"
        )

    async def _visible_request(
        self, session: AsyncSession, actor: Actor, reference: str | int
    ) -> ServiceRequest:
        number = parse_ref(reference, "SR")
        request = (
            await session.execute(
                select(ServiceRequest).where(ServiceRequest.id == number, service_request_scope(actor))
            )
        ).scalar_one_or_none()
        if request is None:
            raise NotFound(f"No service request {ref('SR', number)} found.", field="service_request")
        return request

    async def _visible_order(self, session: AsyncSession, actor: Actor, reference: str | int) -> RepairOrder:
        number = parse_ref(reference, "RO")
        conditions: list[ColumnElement[bool]] = [RepairOrder.id == number]
        if actor.is_customer:
            conditions.append(
                RepairOrder.service_request_id.in_(
                    select(ServiceRequest.id).where(service_request_scope(actor))
                )
            )
        else:
            conditions.append(repair_order_scope(actor))
        order = (await session.execute(select(RepairOrder).where(*conditions))).scalar_one_or_none()
        if order is None:
            raise NotFound(f"No repair order {ref('RO', number)} found.", field="repair_order")
        return order

    async def _escalation_target(self, session: AsyncSession, request: ServiceRequest) -> User | None:
        """The next person up from the current escalation level (the SLA watch uses the same chain)."""
        chain = await escalation_chain(session, request)
        if not chain:
            return None
        return chain[min(request.escalation_level, len(chain) - 1)]

    def _record(
        self,
        session: AsyncSession,
        subject: ServiceRequest | RepairOrder,
        actor: Actor,
        action: str,
        from_status: str | None,
        to_status: str | None,
        comment: str,
    ) -> None:
        """One history row for a request or a repair order: who did what, when, and why."""
        step: dict[str, Any] = {
            "actor_id": actor.user_id,
            "at": self._clock.now(),
            "action": action,
            "from_status": from_status,
            "to_status": to_status,
            "comment": comment or "",
        }
        if isinstance(subject, ServiceRequest):
            session.add(ServiceRequestChange(service_request_id=subject.id, **step))
        else:
            session.add(RepairOrderChange(repair_order_id=subject.id, **step))

    async def _outs(
        self, session: AsyncSession, requests: Sequence[ServiceRequest], viewer: Actor
    ) -> list[ServiceRequestOut]:
        if not requests:
            return []
        customers = {
            customer.id: customer
            for customer in (
                await session.execute(
                    select(Customer).where(Customer.id.in_({r.customer_id for r in requests}))
                )
            ).scalars()
        }
        unit_ids = {r.installed_product_id for r in requests if r.installed_product_id}
        serials = (
            dict(
                (
                    await session.execute(
                        select(InstalledProduct.id, InstalledProduct.serial_number).where(
                            InstalledProduct.id.in_(unit_ids)
                        )
                    )
                )
                .tuples()
                .all()
            )
            if unit_ids
            else {}
        )
        article_ids = {r.kb_article_id for r in requests if r.kb_article_id}
        articles = (
            dict(
                (
                    await session.execute(
                        select(KbArticle.id, KbArticle.code).where(KbArticle.id.in_(article_ids))
                    )
                )
                .tuples()
                .all()
            )
            if article_ids
            else {}
        )
        names = await people(session, {r.assignee_id for r in requests}, viewer)
        return [
            ServiceRequestOut(
                id=r.id,
                ref=ref("SR", r.id),
                customer_code=customers[r.customer_id].code,
                customer_name=customers[r.customer_id].name,
                kind=r.kind,
                severity=r.severity,
                channel=r.channel,
                status=r.status,
                subject=r.subject,
                description=r.description,
                serial_number=serials.get(r.installed_product_id) if r.installed_product_id else None,
                kb_article_code=articles.get(r.kb_article_id) if r.kb_article_id else None,
                assignee=names.get(r.assignee_id) if r.assignee_id else None,
                preferred_time=r.preferred_time,
                response_due_at=r.response_due_at,
                resolution_due_at=r.resolution_due_at,
                resolution=r.resolution,
                escalation_level=r.escalation_level,
                created_at=r.created_at,
                updated_at=r.updated_at,
            )
            for r in requests
        ]

    async def _order_outs(
        self, session: AsyncSession, actor: Actor, orders: Sequence[RepairOrder]
    ) -> list[RepairOrderOut]:
        if not orders:
            return []
        order_ids = [order.id for order in orders]
        request_rows = (
            await session.execute(
                select(ServiceRequest, Customer, InstalledProduct, Product)
                .join(Customer, Customer.id == ServiceRequest.customer_id)
                .outerjoin(InstalledProduct, InstalledProduct.id == ServiceRequest.installed_product_id)
                .outerjoin(Product, Product.id == InstalledProduct.product_id)
                .where(ServiceRequest.id.in_({order.service_request_id for order in orders}))
            )
        ).tuples()
        about = {row[0].id: row for row in request_rows}
        stations = dict(
            (await session.execute(select(ServiceStation.id, ServiceStation.code))).tuples().all()
        )
        parts_rows = (
            (
                await session.execute(
                    select(RepairPart, Part)
                    .join(Part, Part.id == RepairPart.part_id)
                    .where(RepairPart.repair_order_id.in_(order_ids))
                    .order_by(RepairPart.id)
                )
            )
            .tuples()
            .all()
        )
        changes = (
            (
                await session.execute(
                    select(RepairOrderChange)
                    .where(RepairOrderChange.repair_order_id.in_(order_ids))
                    .order_by(RepairOrderChange.id)
                )
            )
            .scalars()
            .all()
        )
        names = await usernames(
            session, {order.technician_id for order in orders} | {change.actor_id for change in changes}
        )
        technicians = await people(session, {order.technician_id for order in orders}, actor)
        result = []
        for order in orders:
            request, customer, unit, product = about[order.service_request_id]
            result.append(
                RepairOrderOut(
                    id=order.id,
                    ref=ref("RO", order.id),
                    service_request_ref=ref("SR", order.service_request_id),
                    customer_code=customer.code,
                    customer_name=customer.name,
                    address=customer.address or "",
                    product_name=product.name if product is not None else "",
                    serial_number=unit.serial_number if unit is not None else None,
                    subject=request.subject,
                    eta_at=order.eta_at,
                    proposed_at=order.proposed_at,
                    technician=technicians.get(order.technician_id) if order.technician_id else None,
                    station_code=stations.get(order.station_id) if order.station_id else None,
                    status=order.status,
                    scheduled_at=order.scheduled_at,
                    accepted_at=order.accepted_at,
                    completed_at=order.completed_at,
                    work_summary=order.work_summary,
                    labour_minutes=order.labour_minutes,
                    in_warranty=order.in_warranty,
                    parts_charge=order.parts_charge,
                    labour_charge=order.labour_charge,
                    total_charge=order.total_charge,
                    currency=order.currency,
                    parts=[
                        RepairPartOut(
                            part_code=part.code,
                            part_name=part.name,
                            quantity=line.quantity,
                            unit_price=line.unit_price,
                        )
                        for line, part in parts_rows
                        if line.repair_order_id == order.id
                    ],
                    history=[
                        HistoryEntryOut(
                            at=change.at,
                            actor=_actor_label(names, change.actor_id, actor),
                            action=change.action,
                            from_status=change.from_status,
                            to_status=change.to_status,
                            comment=change.comment,
                        )
                        for change in changes
                        if change.repair_order_id == order.id
                    ],
                )
            )
        return result


async def people(session: AsyncSession, ids: set[int | None], viewer: Actor) -> dict[int, str]:
    """How staff are named to the viewer: usernames to staff, display names to customers (internal
    account names are not theirs to see)."""
    if not viewer.is_customer:
        return await usernames(session, ids)
    wanted = {user_id for user_id in ids if user_id is not None}
    if not wanted:
        return {}
    rows = await session.execute(select(User.id, User.name).where(User.id.in_(wanted)))
    return {user_id: name for user_id, name in rows.tuples()}


def _same_second(value: datetime | None, other: datetime) -> bool:
    """The same moment to the second (a link carries whole seconds)."""
    return value is not None and int(value.timestamp()) == int(other.timestamp())


async def _visit_customer(session: AsyncSession, request: ServiceRequest) -> User | None:
    """Who answers a proposed visit time on the visit page: the requester if a customer user, else the
    first customer user of the request's customer (as notifier.routing.customer_targets picks)."""
    if request.requester_id is not None:
        requester = await session.get(User, request.requester_id)
        if (
            requester is not None
            and requester.role == Role.CUSTOMER
            and requester.active
            and requester.customer_id == request.customer_id
        ):
            return requester
    found = await session.execute(
        select(User)
        .where(User.customer_id == request.customer_id, User.role == Role.CUSTOMER, User.active.is_(True))
        .order_by(User.id)
        .limit(1)
    )
    return found.scalar_one_or_none()


async def _visit_answer(session: AsyncSession, order: RepairOrder, proposed_at: datetime) -> VisitState:
    """Why a link's proposal is no longer the order's: answered (and how), or replaced or withdrawn."""
    rows = await session.execute(
        select(RepairOrderChange.action, RepairOrderChange.comment)
        .where(
            RepairOrderChange.repair_order_id == order.id,
            RepairOrderChange.action.in_(["dispatch", "reschedule", "confirm_time", "refuse_time"]),
        )
        .order_by(RepairOrderChange.id.desc())
        .limit(2)
    )
    last = list(rows.tuples())
    if not last:
        return "outdated"
    if last[0][0] == "confirm_time" and _same_second(order.scheduled_at, proposed_at):
        return "confirmed"
    if last[0][0] == "refuse_time" and len(last) == 2 and last[1][0] == "reschedule":
        # The refused proposal is the one the last "reschedule" step made (its comment names the time).
        _, _, stamp = last[1][1].partition("new time proposed: ")
        try:
            refused = datetime.fromisoformat(stamp.strip())
        except ValueError:
            return "outdated"
        if refused.tzinfo is not None and _same_second(refused, proposed_at):
            return "refused"
    return "outdated"


def _actor_label(names: dict[int, str], actor_id: int | None, viewer: Actor) -> str | None:
    """Staff usernames are shown to staff; customers see 'staff' rather than internal account names."""
    if actor_id is None:
        return "system"
    if viewer.is_customer and actor_id != viewer.user_id:
        return "staff"
    return names.get(actor_id)


async def _branches(session: AsyncSession) -> dict[int, int]:
    """Department → the branch it belongs to (itself for a branch; the top of its tree when no branch)."""
    query = select(Department.id, Department.parent_id, Department.kind)
    rows = (await session.execute(query)).tuples().all()
    parents = {department_id: parent_id for department_id, parent_id, _kind in rows}
    kinds = {department_id: kind for department_id, _parent, kind in rows}
    result: dict[int, int] = {}
    for department_id in parents:
        current, seen = department_id, set()
        while kinds.get(current) != DepartmentKind.BRANCH and parents.get(current) is not None:
            if current in seen:  # a cycle in bad data: stop where we are
                break
            seen.add(current)
            current = parents[current]  # type: ignore[assignment]
        result[department_id] = current
    return result
