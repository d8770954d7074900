"""Service requests and complaints, repair orders, satisfaction surveys."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import Field, StringConstraints

from core.domain.enums import RepairStatus, RequestKind, RequestStatus, Severity, SurveyStatus
from core.errors import ValidationFailed
from core.schemas import (
    In,
    Page,
    RepairActionIn,
    RepairOrderIn,
    RepairOrderOut,
    ServiceRequestDetail,
    ServiceRequestIn,
    ServiceRequestOut,
    SurveyOut,
    TechnicianSuggestionOut,
    TransitionIn,
)
from core.services.surveys import CsatReport
from crmbot.api.deps import ActorDep, CoreDep, PagingDep, RefPath

router = APIRouter()


class CommentIn(In):
    """A note added to a request's history."""

    comment: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)]


class SurveyAnswerIn(In):
    """A customer's rating of their case."""

    score: int = Field(ge=1, le=5)
    comment: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = None


# --- service requests -----------------------------------------------------------------------------


@router.get("/service-requests", tags=["service requests"])
async def list_service_requests(
    actor: ActorDep,
    core: CoreDep,
    paging: PagingDep,
    status: RequestStatus | None = None,
    kind: RequestKind | None = None,
    severity: Severity | None = None,
    customer: Annotated[str | None, Query(max_length=64, description="Customer code.")] = None,
    assignee: Annotated[str | None, Query(max_length=64, description="Assignee's username.")] = None,
    open_only: Annotated[bool, Query(alias="open", description="Only requests not yet resolved.")] = False,
) -> Page[ServiceRequestOut]:
    """Requests the caller may see, newest first."""
    return await core.service_desk.list_requests(
        actor, status=status.value if status else None, kind=kind.value if kind else None,
        severity=severity.value if severity else None, customer_code=customer, assignee=assignee,
        open_only=open_only, limit=paging.limit, offset=paging.offset,
    )


@router.post("/service-requests", status_code=201, tags=["service requests"])
async def open_service_request(body: ServiceRequestIn, actor: ActorDep, core: CoreDep) -> ServiceRequestOut:
    """Open a repair request or a complaint."""
    return await core.service_desk.open_request(actor, body)


@router.get("/service-requests/{ref}", tags=["service requests"])
async def get_service_request(ref: RefPath, actor: ActorDep, core: CoreDep) -> ServiceRequestDetail:
    """A request with its history."""
    return await core.service_desk.get_request(actor, ref)


@router.post("/service-requests/{ref}/transitions", tags=["service requests"])
async def transition_service_request(
    ref: RefPath, body: TransitionIn, actor: ActorDep, core: CoreDep
) -> ServiceRequestDetail:
    """Assign, start, hold, escalate, resolve, close or reopen a request."""
    return await core.service_desk.transition(actor, ref, body)


@router.get("/service-requests/{ref}/technician-suggestions", tags=["repair orders"])
async def suggest_technicians(
    ref: RefPath,
    actor: ActorDep,
    core: CoreDep,
    at: Annotated[datetime | None, Query(description="Planned visit time (ISO, with offset).")] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 3,
) -> list[TechnicianSuggestionOut]:
    """Technicians who could take the request, best first, with the reasons (same region, skills, load)."""
    if at is not None and at.tzinfo is None:
        raise ValidationFailed("`at` needs a timezone offset.", field="at")
    return await core.service_desk.suggest_technicians(actor, ref, at, limit=limit)


@router.post(
    "/service-requests/{ref}/comments", status_code=204, response_class=Response, tags=["service requests"]
)
async def comment_service_request(ref: RefPath, body: CommentIn, actor: ActorDep, core: CoreDep) -> Response:
    """Add a note to a request's history without changing its status."""
    await core.service_desk.add_comment(actor, ref, body.comment)
    return Response(status_code=204)


@router.post("/service-requests/{ref}/survey", tags=["surveys"])
async def answer_survey(ref: RefPath, body: SurveyAnswerIn, actor: ActorDep, core: CoreDep) -> SurveyOut:
    """The customer rates their case, 1 to 5."""
    return await core.surveys.answer(actor, ref, body.score, body.comment)


@router.get("/surveys/csat", tags=["surveys"])
async def survey_csat(
    actor: ActorDep,
    core: CoreDep,
    by: Annotated[Literal["technician", "team", "month"], Query(description="How to group the answers.")] = (
        "technician"
    ),
    since: Annotated[date | None, Query(description="First day of answers counted (business time).")] = None,
    until: Annotated[date | None, Query(description="Last day of answers counted (business time).")] = None,
) -> CsatReport:
    """Satisfaction by technician, team or month: answers, average score, share of 4-5 (managers, admins)."""
    return await core.surveys.csat(actor, by=by, since=since, until=until)


@router.get("/surveys", tags=["surveys"])
async def list_surveys(
    actor: ActorDep, core: CoreDep, paging: PagingDep, status: SurveyStatus | None = None
) -> Page[SurveyOut]:
    """Surveys of customers the caller may see, newest first."""
    return await core.surveys.list(
        actor, status=status.value if status else None, limit=paging.limit, offset=paging.offset
    )


# --- repair orders --------------------------------------------------------------------------------


@router.get("/repair-orders", tags=["repair orders"])
async def list_repair_orders(
    actor: ActorDep,
    core: CoreDep,
    paging: PagingDep,
    technician: Annotated[str | None, Query(max_length=64, description="Technician's username.")] = None,
    status: RepairStatus | None = None,
    active_only: Annotated[bool, Query(alias="active", description="Only jobs not yet done.")] = False,
) -> Page[RepairOrderOut]:
    """Repair orders the caller may see, by scheduled time."""
    return await core.service_desk.list_repair_orders(
        actor, technician=technician, status=status.value if status else None, active_only=active_only,
        limit=paging.limit, offset=paging.offset,
    )


@router.post("/repair-orders", status_code=201, tags=["repair orders"])
async def dispatch_repair_order(body: RepairOrderIn, actor: ActorDep, core: CoreDep) -> RepairOrderOut:
    """Send a technician to an open request."""
    return await core.service_desk.dispatch(actor, body)


@router.get("/repair-orders/{ref}", tags=["repair orders"])
async def get_repair_order(ref: RefPath, actor: ActorDep, core: CoreDep) -> RepairOrderOut:
    """A repair order with its parts and history."""
    return await core.service_desk.get_repair_order(actor, ref)


@router.post("/repair-orders/{ref}/actions", tags=["repair orders"])
async def act_on_repair_order(
    ref: RefPath, body: RepairActionIn, actor: ActorDep, core: CoreDep
) -> RepairOrderOut:
    """Accept, decline, start, complete, settle or cancel a job."""
    return await core.service_desk.act_on_repair(actor, ref, body)
