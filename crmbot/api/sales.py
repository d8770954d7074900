"""Opportunities with their history, visits, and follow-up tasks."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query

from core.domain.enums import OpportunityStage, TaskStatus
from core.schemas import (
    OpportunityDetail,
    OpportunityIn,
    OpportunityOut,
    OpportunityPatch,
    Page,
    PipelineReportOut,
    TaskOut,
    VisitIn,
    VisitOut,
)
from crmbot.api.deps import ActorDep, CoreDep, PagingDep, RefPath

router = APIRouter()


# --- opportunities --------------------------------------------------------------------------------


@router.get("/opportunities", tags=["opportunities"])
async def list_opportunities(
    actor: ActorDep,
    core: CoreDep,
    paging: PagingDep,
    stage: OpportunityStage | None = None,
    owner: Annotated[str | None, Query(max_length=64, description="Owner's username.")] = None,
    customer: Annotated[str | None, Query(max_length=64, description="Customer code.")] = None,
    open_only: Annotated[bool, Query(alias="open", description="Only deals not yet won or lost.")] = False,
    closing_before: Annotated[date | None, Query(description="Expected to close before this day.")] = None,
    closing_from: Annotated[date | None, Query(description="Expected to close on or after this day.")] = None,
    min_amount: Annotated[Decimal | None, Query(ge=0, description="At least this amount.")] = None,
) -> Page[OpportunityOut]:
    """Deals of the caller and their team, by expected close date."""
    return await core.sales.list_opportunities(
        actor, stage=stage.value if stage else None, owner=owner, customer_code=customer, open_only=open_only,
        closing_before=closing_before, closing_from=closing_from, min_amount=min_amount, limit=paging.limit,
        offset=paging.offset,
    )


@router.post("/opportunities", status_code=201, tags=["opportunities"])
async def create_opportunity(body: OpportunityIn, actor: ActorDep, core: CoreDep) -> OpportunityOut:
    """Open a deal."""
    return await core.sales.create_opportunity(actor, body)


@router.get("/opportunities/{ref}", tags=["opportunities"])
async def get_opportunity(ref: RefPath, actor: ActorDep, core: CoreDep) -> OpportunityDetail:
    """A deal with every recorded change."""
    return await core.sales.get_opportunity(actor, ref)


@router.patch("/opportunities/{ref}", tags=["opportunities"])
async def update_opportunity(
    ref: RefPath, body: OpportunityPatch, actor: ActorDep, core: CoreDep
) -> OpportunityDetail:
    """Change a deal's stage, amount, dates or owner; each change is recorded."""
    return await core.sales.update_opportunity(actor, ref, body)


@router.get("/pipeline", tags=["opportunities"])
async def pipeline_report(
    actor: ActorDep,
    core: CoreDep,
    close_from: Annotated[date | None, Query(description="Expected to close on or after this day.")] = None,
    close_to: Annotated[date | None, Query(description="Expected to close on or before this day.")] = None,
    rep: Annotated[str | None, Query(max_length=200, description="One rep (username or name).")] = None,
    team: Annotated[str | None, Query(max_length=200, description="A team: department code or name.")] = None,
) -> PipelineReportOut:
    """Funnel by stage, weighted forecast by month, per rep, stage conversion and age of the caller's team."""
    return await core.pipeline.report(actor, close_from, close_to, rep=rep, team=team)


# --- visits and tasks -----------------------------------------------------------------------------


@router.get("/visits", tags=["visits"])
async def list_visits(
    actor: ActorDep,
    core: CoreDep,
    paging: PagingDep,
    rep: Annotated[str | None, Query(max_length=64, description="Rep's username.")] = None,
    customer: Annotated[str | None, Query(max_length=64, description="Customer code.")] = None,
    since: date | None = None,
    until: date | None = None,
) -> Page[VisitOut]:
    """Visits by the caller and their team, newest first."""
    return await core.sales.visits(
        actor, rep=rep, customer_code=customer, since=since, until=until,
        limit=paging.limit, offset=paging.offset,
    )


@router.post("/visits", status_code=201, tags=["visits"])
async def log_visit(body: VisitIn, actor: ActorDep, core: CoreDep) -> VisitOut:
    """Log a visit (by the rep who made it: a personal token); a dated next step becomes a task."""
    return await core.sales.log_visit(actor, body)


@router.get("/tasks", tags=["visits"])
async def list_tasks(
    actor: ActorDep,
    core: CoreDep,
    status: TaskStatus = TaskStatus.OPEN,
    due_before: Annotated[datetime | None, Query(description="ISO date-time with a timezone offset.")] = None,
) -> list[TaskOut]:
    """The caller's tasks (a manager's include their team's), soonest due first."""
    return await core.sales.tasks(actor, status=status.value, due_before=due_before)
