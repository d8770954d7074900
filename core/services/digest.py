"""The managers' morning digest: when it is due (once per manager per local day) and what it says.

`due` is the scheduler's sweep: at or after the digest hour on each manager's own wall clock it raises
`DigestDue` for that local day, marked once in the same transaction, so a re-run, a second scheduler or a
restart never raises it twice, and a scheduler that was down at 08:00 still raises today's digest when it
comes back the same day (never yesterday's). `build_summary` is what the digest says, computed within the
manager's subtree only: the notifier calls it from its routing transaction, `DigestService.summary` from
its own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import ColumnElement, and_, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import Actor, require_role
from core.clock import Clock
from core.db.models import (
    Customer,
    Department,
    Opportunity,
    OpportunityChange,
    ServiceRequest,
    Survey,
    SweepMark,
    User,
)
from core.domain.enums import OPEN_STAGES, OpportunityStage, Role
from core.domain.events import DigestDue
from core.domain.workflow import REQUEST_OPEN_STATES
from core.errors import NotFound
from core.services.base import Service, UowFactory, ref
from core.services.marks import mark_once

__all__ = [
    "BreachedRequest",
    "DealMove",
    "DigestService",
    "DigestSummary",
    "StageTotal",
    "build_summary",
    "digest_moment",
    "user_timezone",
]

MARK_KIND = "digest"
# "Since yesterday": the 24 hours before the digest; CSAT over the week before it.
WINDOW = timedelta(days=1)
CSAT_WINDOW = timedelta(days=7)
# Lists in the summary are the most relevant few; the counts beside them are complete.
LIST_LIMIT = 10
OPEN_STAGE_VALUES: tuple[str, ...] = tuple(stage.value for stage in OPEN_STAGES)
WON, LOST = OpportunityStage.CLOSED_WON.value, OpportunityStage.CLOSED_LOST.value
DEFAULT_CURRENCY = "CNY"


@dataclass(frozen=True, slots=True)
class StageTotal:
    """Open deals at one stage of the pipeline."""

    stage: str
    count: int
    amount: Decimal


@dataclass(frozen=True, slots=True)
class BreachedRequest:
    """An open request past its response or resolution target (`target`: "response" or "resolution")."""

    ref: str
    subject: str
    customer: str
    severity: str
    target: str
    due_at: datetime
    assignee: str


@dataclass(frozen=True, slots=True)
class DealMove:
    """A deal that moved in the window: the stage it first left, the one it last reached, the amount."""

    ref: str
    name: str
    customer: str
    owner: str
    from_stage: str
    to_stage: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class DigestSummary:
    """What one manager's digest says, for their subtree (themselves and everyone below them)."""

    user_id: int
    name: str
    day: date
    since: datetime
    until: datetime
    currency: str
    open_requests: int
    breached_count: int
    breached: tuple[BreachedRequest, ...]
    opened: int
    closed: int
    moves: tuple[DealMove, ...]
    won: tuple[DealMove, ...]
    lost: tuple[DealMove, ...]
    pipeline: tuple[StageTotal, ...]
    csat_count: int
    csat_average: Decimal | None

    @property
    def won_amount(self) -> Decimal:
        """The amount of the deals won in the window."""
        return sum((move.amount for move in self.won), Decimal("0.00"))

    @property
    def lost_amount(self) -> Decimal:
        """The amount of the deals lost in the window."""
        return sum((move.amount for move in self.lost), Decimal("0.00"))

    @property
    def pipeline_count(self) -> int:
        """Open deals in all."""
        return sum(stage.count for stage in self.pipeline)

    @property
    def pipeline_amount(self) -> Decimal:
        """The amount of every open deal."""
        return sum((stage.amount for stage in self.pipeline), Decimal("0.00"))


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _first_zone(*names: str | None) -> str:
    for name in names:
        if _zone(name) is not None:
            assert name is not None
            return name
    return "UTC"


async def user_timezone(session: AsyncSession, user: User, default: str) -> str:
    """The user's own timezone, else their department's, else `default` (unknown names are skipped)."""
    department_tz = None
    if user.department_id is not None:
        department = await session.get(Department, user.department_id)
        department_tz = department.timezone if department is not None else None
    return _first_zone(user.timezone, department_tz, default)


def digest_moment(day: date, timezone: str, hour: int) -> datetime:
    """The moment a digest for the local `day` is due: `hour`:00 on that day's wall clock in `timezone`."""
    zone = _zone(timezone) or ZoneInfo("UTC")
    return datetime.combine(day, time(hour), tzinfo=zone)


def _request_scope(team: frozenset[int]) -> ColumnElement[bool]:
    """Requests of a subtree: assigned to someone in it, or of a customer someone in it owns.

    Built from the team, not from `service_request_scope`: an admin's digest covers their own subtree,
    not the whole company the admin may otherwise see.
    """
    if not team:
        return false()
    owned = select(Customer.id).where(Customer.owner_id.in_(team))
    return or_(ServiceRequest.assignee_id.in_(team), ServiceRequest.customer_id.in_(owned))


def _deal_scope(team: frozenset[int]) -> ColumnElement[bool]:
    return Opportunity.owner_id.in_(team) if team else false()


def _amount(text: str | None) -> Decimal | None:
    """An amount recorded in opportunity_history ('50000.00', or 'proposal 50000.00' on creation)."""
    if not text:
        return None
    try:
        return Decimal(text.split()[-1])
    except (ArithmeticError, ValueError):
        return None


async def build_summary(session: AsyncSession, actor: Actor, *, day: date, until: datetime) -> DigestSummary:
    """The digest of `actor`'s subtree for the local `day`, covering the 24 hours before `until`."""
    if actor.user_id is None:
        raise NotFound("The digest is for a person.")
    team = actor.team_ids or frozenset({actor.user_id})
    until = until.astimezone(UTC)
    since = until - WINDOW
    requests = _request_scope(team)
    open_state = ServiceRequest.status.in_([status.value for status in REQUEST_OPEN_STATES])

    open_requests = (
        await session.execute(select(func.count()).select_from(ServiceRequest).where(requests, open_state))
    ).scalar_one()
    response_missed = and_(ServiceRequest.first_response_at.is_(None), ServiceRequest.response_due_at < until)
    resolution_missed = ServiceRequest.resolution_due_at < until
    breached_rows = (
        await session.execute(
            select(ServiceRequest, Customer.name, User.name)
            .join(Customer, Customer.id == ServiceRequest.customer_id)
            .outerjoin(User, User.id == ServiceRequest.assignee_id)
            .where(requests, open_state, or_(response_missed, resolution_missed))
            .order_by(ServiceRequest.id)
        )
    ).all()
    breached: list[BreachedRequest] = []
    for request, customer_name, assignee_name in breached_rows:
        # The first target missed is the one to name: no answer at all is worse than a slow repair.
        response_late = (
            request.first_response_at is None
            and request.response_due_at is not None
            and request.response_due_at < until
        )
        due = request.response_due_at if response_late else request.resolution_due_at
        assert due is not None
        breached.append(
            BreachedRequest(
                ref=ref("SR", request.id),
                subject=request.subject,
                customer=customer_name,
                severity=request.severity,
                target="response" if response_late else "resolution",
                due_at=due,
                assignee=assignee_name or "",
            )
        )
    breached.sort(key=lambda item: (item.due_at, item.ref))

    opened = (
        await session.execute(
            select(func.count())
            .select_from(ServiceRequest)
            .where(requests, ServiceRequest.created_at >= since, ServiceRequest.created_at < until)
        )
    ).scalar_one()
    # Resolving is when the work is done (closing follows later, often after the survey); a reopened
    # request has its resolved_at cleared and counts again when it is resolved again.
    closed = (
        await session.execute(
            select(func.count())
            .select_from(ServiceRequest)
            .where(requests, ServiceRequest.resolved_at >= since, ServiceRequest.resolved_at < until)
        )
    ).scalar_one()

    deals = _deal_scope(team)
    open_deals = (
        await session.execute(
            select(Opportunity.stage, Opportunity.amount, Opportunity.currency).where(
                deals, Opportunity.stage.in_(OPEN_STAGE_VALUES)
            )
        )
    ).all()
    counts = dict.fromkeys(OPEN_STAGE_VALUES, 0)
    amounts = dict.fromkeys(OPEN_STAGE_VALUES, Decimal("0.00"))
    currencies: Counter[str] = Counter()
    for stage, amount, currency in open_deals:
        counts[stage] += 1
        amounts[stage] += amount
        currencies[currency] += 1
    pipeline = tuple(StageTotal(stage, counts[stage], amounts[stage]) for stage in OPEN_STAGE_VALUES)

    moves, won, lost = await _deal_moves(session, deals, since, until)

    survey_requests = select(ServiceRequest.id).where(requests)
    csat = (
        await session.execute(
            select(func.count(Survey.score), func.sum(Survey.score)).where(
                Survey.score.is_not(None),
                Survey.answered_at >= until - CSAT_WINDOW,
                Survey.answered_at < until,
                or_(Survey.service_request_id.in_(survey_requests), Survey.technician_id.in_(team)),
            )
        )
    ).one()
    csat_count = int(csat[0] or 0)
    csat_average = (
        (Decimal(int(csat[1])) / csat_count).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
        if csat_count
        else None
    )
    user = await session.get(User, actor.user_id)
    return DigestSummary(
        user_id=actor.user_id,
        name=user.name if user is not None else actor.name,
        day=day,
        since=since,
        until=until,
        currency=currencies.most_common(1)[0][0] if currencies else DEFAULT_CURRENCY,
        open_requests=int(open_requests),
        breached_count=len(breached),
        breached=tuple(breached[:LIST_LIMIT]),
        opened=int(opened),
        closed=int(closed),
        moves=moves,
        won=won,
        lost=lost,
        pipeline=pipeline,
        csat_count=csat_count,
        csat_average=csat_average,
    )


async def _deal_moves(
    session: AsyncSession,
    deals: ColumnElement[bool],
    since: datetime,
    until: datetime,
) -> tuple[tuple[DealMove, ...], tuple[DealMove, ...], tuple[DealMove, ...]]:
    """Stage changes of the window from opportunity_history, one line per deal (first from, last to),
    with the deal's amount as it stood at its last move."""
    changes = (
        await session.execute(
            select(OpportunityChange, Opportunity, Customer.name, User.name)
            .join(Opportunity, Opportunity.id == OpportunityChange.opportunity_id)
            .join(Customer, Customer.id == Opportunity.customer_id)
            .join(User, User.id == Opportunity.owner_id)
            .where(
                deals,
                OpportunityChange.field == "stage",
                OpportunityChange.at >= since,
                OpportunityChange.at < until,
            )
            .order_by(OpportunityChange.at, OpportunityChange.id)
        )
    ).all()
    if not changes:
        return (), (), ()
    first: dict[int, tuple[OpportunityChange, Opportunity, str, str]] = {}
    last: dict[int, OpportunityChange] = {}
    for change, opportunity, customer_name, owner_name in changes:
        first.setdefault(opportunity.id, (change, opportunity, customer_name, owner_name))
        last[opportunity.id] = change
    history = (
        await session.execute(
            select(OpportunityChange)
            .where(
                OpportunityChange.opportunity_id.in_(list(first)),
                OpportunityChange.field.in_(("amount", "created")),
                OpportunityChange.at < until,
            )
            .order_by(OpportunityChange.at, OpportunityChange.id)
        )
    ).scalars()
    amounts_before: dict[int, list[OpportunityChange]] = {}
    for change in history:
        amounts_before.setdefault(change.opportunity_id, []).append(change)
    moves: list[DealMove] = []
    won: list[DealMove] = []
    lost: list[DealMove] = []
    for opportunity_id, (start, opportunity, customer_name, owner_name) in first.items():
        end = last[opportunity_id]
        from_stage, to_stage = start.old_value or "", end.new_value or ""
        if from_stage == to_stage:
            continue  # moved and moved back: nothing to report
        amount = opportunity.amount
        for change in amounts_before.get(opportunity_id, []):
            # The amount as it stood when the deal last moved (changed together with the stage counts).
            if change.at <= end.at:
                amount = _amount(change.new_value) or amount
        move = DealMove(
            ref=ref("OP", opportunity.id),
            name=opportunity.name,
            customer=customer_name,
            owner=owner_name,
            from_stage=from_stage,
            to_stage=to_stage,
            amount=amount,
        )
        if to_stage == WON:
            won.append(move)
        elif to_stage == LOST:
            lost.append(move)
        else:
            moves.append(move)
    return (
        tuple(sorted(moves, key=_biggest_first)[:LIST_LIMIT]),
        tuple(sorted(won, key=_biggest_first)),
        tuple(sorted(lost, key=_biggest_first)),
    )


def _biggest_first(move: DealMove) -> tuple[Decimal, str]:
    return -move.amount, move.ref


class DigestService(Service):
    """When each manager's digest is due, and what it says."""

    def __init__(self, uow: UowFactory, clock: Clock, timezone: str = "UTC", *, digest_hour: int = 8) -> None:
        super().__init__(uow, clock, timezone)
        self._hour = digest_hour
        self._tz_name = timezone

    async def due(self, now: datetime | None = None) -> int:
        """Raise DigestDue for every active manager (and admin with a department) whose local clock is at
        or past the digest hour and who has not had today's; returns how many were raised."""
        moment = now or self._clock.now()
        raised = 0
        async with self._uow() as uow:
            session = uow.session
            rows = (
                await session.execute(
                    select(User.id, User.timezone, Department.timezone)
                    .outerjoin(Department, Department.id == User.department_id)
                    .where(
                        User.active.is_(True),
                        or_(
                            User.role == Role.MANAGER.value,
                            and_(User.role == Role.ADMIN.value, User.department_id.is_not(None)),
                        ),
                    )
                    .order_by(User.id)
                )
            ).all()
            wanted: dict[str, tuple[int, date]] = {}
            for user_id, own_tz, department_tz in rows:
                local = moment.astimezone(ZoneInfo(_first_zone(own_tz, department_tz, self._tz_name)))
                # Only today's, and only from the hour on: a scheduler back after midnight sends no
                # stale digest for the day before.
                if local.hour >= self._hour:
                    wanted[f"user:{user_id}"] = (user_id, local.date())
            if not wanted:
                return 0
            done = set(
                (
                    await session.execute(
                        select(SweepMark.subject, SweepMark.mark).where(
                            SweepMark.kind == MARK_KIND, SweepMark.subject.in_(list(wanted))
                        )
                    )
                ).tuples()
            )
            for subject, (user_id, day) in wanted.items():
                if (subject, day.isoformat()) in done:
                    continue
                if await mark_once(session, MARK_KIND, subject, day.isoformat(), moment):
                    uow.emit(DigestDue(aggregate_id=user_id, day=day))
                    raised += 1
            await uow.commit()
        return raised

    async def summary(self, actor: Actor, day: date | None = None) -> DigestSummary:
        """The digest `actor` (a manager) gets for their local `day` (default today), as of that day's
        digest hour, or as of now when that is still ahead."""
        require_role(actor, Role.MANAGER, doing="see the managers' digest")
        if actor.user_id is None:
            raise NotFound("The digest is for a person.")
        async with self._uow() as uow:
            session = uow.session
            user = await session.get(User, actor.user_id)
            if user is None:
                raise NotFound("No such user.")
            tz = await user_timezone(session, user, self._tz_name)
            now = self._clock.now()
            wanted = day or now.astimezone(ZoneInfo(tz)).date()
            until = min(digest_moment(wanted, tz, self._hour), now)
            return await build_summary(session, actor, day=wanted, until=until)
