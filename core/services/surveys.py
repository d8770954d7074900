"""Satisfaction surveys: one per case, sent after a delay, answered 1–5 with an optional comment.

A survey is created by the scheduler's sweep (or by staff) once a case is resolved or closed, sent
(`SurveyDue`) when its delay is over, answered in chat, through the API or on a small web page reached
by a signed link, and expires after its lifetime. A low score opens a follow-up task for the service
manager in the same transaction as the answer; managers read CSAT by technician, team and month.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel
from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import Actor, customer_scope, require_role
from core.db.models import (
    Customer,
    Department,
    InstalledProduct,
    Product,
    RepairOrder,
    ServiceRequest,
    Survey,
    Task,
    User,
)
from core.domain.enums import RequestStatus, Role, SurveyStatus, TaskKind, TaskStatus
from core.domain.events import SurveyAnswered, SurveyDue
from core.errors import Conflict, InvalidTransition, NotFound, ValidationFailed
from core.links import LinkSigner
from core.schemas import Page, SurveyOut
from core.services.base import Service, fetch_page, open_task, parse_ref, ref
from core.services.marks import insert_ignoring_duplicates
from core.uow import UnitOfWork

if TYPE_CHECKING:
    from core.settings import Settings

SURVEY_LIFETIME = timedelta(days=14)
# A score at or below this opens a follow-up task for the service manager.
FOLLOW_UP_MAX_SCORE = 2
# Surveys handled per transaction by the sweep (a backlog is worked through batch by batch).
SWEEP_BATCH = 200
MAX_COMMENT = 2000
# The follow-up is due by the end of the next working day, business time.
FOLLOW_UP_DUE_TIME = time(18, 0)
OPEN_STATES = (SurveyStatus.PENDING.value, SurveyStatus.SENT.value)
CsatGrouping = Literal["technician", "team", "month"]
CSAT_GROUPINGS: tuple[str, ...] = ("technician", "team", "month")


# --- signed links ---------------------------------------------------------------------------------

_LINK_KEY_LABEL = b"crmbot survey link v1\0"


@dataclass(frozen=True, slots=True)
class SurveyClaims:
    """What a valid link token says: which survey, and until when the link works."""

    survey_id: int
    expires_at: datetime


class SurveyLinks:
    """Signed survey links `{base_url}/survey/{token}`; the token names the survey and its expiry.

    token = survey id . expiry (Unix seconds) . HMAC-SHA256 of both (128 bits), so it is short enough for
    an SMS and cannot be pointed at another survey or made to live longer. The key is derived from the admin
    API token (a key of its own: a link says nothing about the token); changing that token voids old links.
    Signed by core.links.LinkSigner, under a label of its own (a survey token is never a visit token).
    """

    def __init__(self, secret: str | bytes, base_url: str = "") -> None:
        self._signer = LinkSigner(secret, _LINK_KEY_LABEL)
        self.base_url = base_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> SurveyLinks:
        """Links signed with a key derived from the admin API token, pointing at the public base URL."""
        token, _generated = settings.resolve_api_token()
        return cls(token, settings.base_url)

    def token(self, survey_id: int, expires_at: datetime) -> str:
        """The token for one survey, valid until `expires_at`."""
        return self._signer.sign(survey_id, int(expires_at.timestamp()))

    def url(self, survey_id: int, expires_at: datetime) -> str:
        """The full link people open."""
        return f"{self.base_url}/survey/{self.token(survey_id, expires_at)}"

    def read(self, token: str) -> SurveyClaims | None:
        """The claims of a token this server signed; None for anything malformed or tampered with."""
        numbers = self._signer.verify(token, 2)
        if numbers is None or numbers[0] <= 0:
            return None
        try:
            return SurveyClaims(survey_id=numbers[0], expires_at=datetime.fromtimestamp(numbers[1], UTC))
        except (OverflowError, OSError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class SurveyView:
    """What the survey page shows: the case, and whether the survey is open, answered or expired."""

    survey_id: int
    ticket: str
    subject: str
    product: str
    technician_name: str
    customer_name: str
    state: Literal["open", "answered", "expired"]
    score: int | None
    comment: str | None
    expires_at: datetime | None
    lang: str | None


# --- CSAT -------------------------------------------------------------------------------------------


class CsatRow(BaseModel):
    """Satisfaction of one group: answered surveys, average score, share of 4 and 5 ("CSAT %")."""

    group: str
    name: str
    count: int
    average: float
    csat_percent: float


class CsatReport(BaseModel):
    """CSAT per technician, team (department) or month, and overall, for answers in [since, until]."""

    by: str
    since: date | None
    until: date | None
    rows: list[CsatRow]
    overall: CsatRow


def _csat_row(group: str, name: str, scores: list[int]) -> CsatRow:
    count = len(scores)
    if count == 0:
        return CsatRow(group=group, name=name, count=0, average=0.0, csat_percent=0.0)
    satisfied = sum(1 for score in scores if score >= 4)
    return CsatRow(
        group=group,
        name=name,
        count=count,
        average=round(sum(scores) / count, 2),
        csat_percent=round(100.0 * satisfied / count, 1),
    )


# --- the service ------------------------------------------------------------------------------------


class SurveyService(Service):
    """Creating surveys for closed cases, sending them when due, taking answers, and CSAT figures."""

    async def create_for_request(
        self, actor: Actor, reference: str | int, *, delay: timedelta = timedelta(0)
    ) -> SurveyOut:
        """Create the survey of a resolved or closed request (idempotent: one survey per case).

        The scheduler's sweep sends it once `delay` is over.
        """
        require_role(actor, Role.AGENT, Role.MANAGER, doing="create surveys")
        number = parse_ref(reference, "SR")
        async with self._uow() as uow:
            session = uow.session
            request = await session.get(ServiceRequest, number)
            if request is None:
                raise NotFound(f"No service request {ref('SR', number)} found.")
            if request.status not in (RequestStatus.RESOLVED, RequestStatus.CLOSED):
                raise InvalidTransition(f"{ref('SR', number)} is not resolved yet: no survey.")
            existing = (
                await session.execute(select(Survey).where(Survey.service_request_id == number))
            ).scalar_one_or_none()
            if existing is not None:
                return await self._out(session, existing)
            order_id, technician_id = (await _last_orders(session, [number])).get(number, (None, None))
            now = self._clock.now()
            survey = Survey(
                service_request_id=number,
                repair_order_id=order_id,
                customer_id=request.customer_id,
                recipient_id=request.requester_id,
                technician_id=technician_id,
                status=SurveyStatus.PENDING.value,
                created_at=now,
                due_at=now + delay,
                expires_at=now + delay + SURVEY_LIFETIME,
            )
            session.add(survey)
            await session.flush()
            await uow.commit()
            return await self._out(session, survey)

    # --- the scheduler's pass -------------------------------------------------------------------

    async def sweep(
        self,
        now: datetime,
        *,
        delay: timedelta,
        lifetime: timedelta = SURVEY_LIFETIME,
        batch: int = SWEEP_BATCH,
    ) -> int:
        """One idempotent pass at `now`: create the survey of every case resolved or closed at least `delay`
        ago that has none, send (`SurveyDue`) every survey whose time has come, expire the ones past their
        end. Returns how many surveys were sent or expired.

        Safe to run twice or in two processes at once: a survey is inserted only if its case has none (the
        unique key decides), and sent only by the transaction that moves it from pending to sent.
        """
        done = 0
        while True:
            sent, more = await self._sweep_batch(now, delay, lifetime, batch)
            done += sent
            if not more:
                break
        async with self._uow() as uow:
            result = await uow.session.execute(
                update(Survey)
                .where(
                    Survey.status.in_(OPEN_STATES),
                    Survey.expires_at.is_not(None),
                    Survey.expires_at <= now,
                )
                .values(status=SurveyStatus.EXPIRED.value)
                .execution_options(synchronize_session=False)
            )
            await uow.commit()
        return done + max(0, int(getattr(result, "rowcount", 0) or 0))

    async def _sweep_batch(
        self, now: datetime, delay: timedelta, lifetime: timedelta, batch: int
    ) -> tuple[int, bool]:
        async with self._uow() as uow:
            session = uow.session
            finished_at = func.coalesce(ServiceRequest.resolved_at, ServiceRequest.closed_at)
            # Cases finished longer ago than a survey lives are not surveyed any more: switching surveys on
            # over years of closed cases, or a scheduler that was down for weeks, must not flood customers.
            candidates = (
                await session.execute(
                    select(
                        ServiceRequest.id,
                        ServiceRequest.customer_id,
                        ServiceRequest.requester_id,
                        finished_at,
                    )
                    .outerjoin(Survey, Survey.service_request_id == ServiceRequest.id)
                    .where(
                        Survey.id.is_(None),
                        ServiceRequest.status.in_([RequestStatus.RESOLVED.value, RequestStatus.CLOSED.value]),
                        finished_at.is_not(None),
                        finished_at <= now - delay,
                        finished_at > now - delay - lifetime,
                    )
                    .order_by(ServiceRequest.id)
                    .limit(batch)
                )
            ).all()
            orders = await _last_orders(session, [row[0] for row in candidates])
            await insert_ignoring_duplicates(
                session,
                Survey,
                [
                    {
                        "service_request_id": request_id,
                        "repair_order_id": orders.get(request_id, (None, None))[0],
                        "customer_id": customer_id,
                        "recipient_id": requester_id,
                        "technician_id": orders.get(request_id, (None, None))[1],
                        "status": SurveyStatus.PENDING.value,
                        "created_at": now,
                        "due_at": finished + delay,
                        "expires_at": now + lifetime,
                    }
                    for request_id, customer_id, requester_id, finished in candidates
                ],
                ["service_request_id"],
            )
            due = (
                (
                    await session.execute(
                        select(Survey)
                        .where(
                            Survey.status == SurveyStatus.PENDING.value,
                            or_(Survey.due_at.is_(None), Survey.due_at <= now),
                            or_(Survey.expires_at.is_(None), Survey.expires_at > now),
                        )
                        .order_by(Survey.id)
                        .limit(batch)
                    )
                )
                .scalars()
                .all()
            )
            sent = 0
            for survey in due:
                # Only the transaction that moves it out of "pending" sends it (another scheduler, racing,
                # finds it "sent" once this one commits, and updates nothing).
                moved = await session.execute(
                    update(Survey)
                    .where(Survey.id == survey.id, Survey.status == SurveyStatus.PENDING.value)
                    .values(status=SurveyStatus.SENT.value)
                    .execution_options(synchronize_session=False)
                )
                if int(getattr(moved, "rowcount", 0) or 0) != 1:
                    continue
                uow.emit(
                    SurveyDue(
                        aggregate_id=survey.id,
                        customer_id=survey.customer_id,
                        recipient_id=survey.recipient_id,
                        service_request_id=survey.service_request_id,
                        expires_at=survey.expires_at,
                    )
                )
                sent += 1
            await uow.commit()
        return sent, len(candidates) == batch or len(due) == batch

    # --- answers --------------------------------------------------------------------------------

    async def answer(
        self, actor: Actor, reference: str | int, score: int, comment: str | None = None
    ) -> SurveyOut:
        """Record a customer's rating of their case (1–5)."""
        _check_score(score)
        number = parse_ref(reference, "SR")
        async with self._uow() as uow:
            session = uow.session
            survey = await self._own_survey(session, actor, number)
            now = self._clock.now()
            if survey.status == SurveyStatus.ANSWERED:
                raise Conflict(f"{ref('SR', number)} was already rated {survey.score}/5. Thank you!")
            if _expired(survey, now):
                survey.status = SurveyStatus.EXPIRED.value
                await uow.commit()
                raise InvalidTransition(f"The survey for {ref('SR', number)} has expired.")
            await self._record(uow, survey, score, comment, actor.user_id, now)
            await uow.commit()
            return await self._out(session, survey)

    async def add_comment(self, actor: Actor, reference: str | int, comment: str) -> SurveyOut:
        """Add the customer's comment to the rating they just gave (once; the chat asks after the score)."""
        text = _clean_comment(comment)
        if text is None:
            raise ValidationFailed("The comment is empty.", field="comment")
        number = parse_ref(reference, "SR")
        async with self._uow() as uow:
            session = uow.session
            survey = await self._own_survey(session, actor, number)
            if survey.status != SurveyStatus.ANSWERED:
                raise InvalidTransition(f"{ref('SR', number)} has no rating to add a comment to.")
            if survey.comment:
                raise Conflict(f"There is already a comment on the rating of {ref('SR', number)}.")
            survey.comment = text
            # The manager's follow-up (opened with the score) gets the customer's words in its title.
            if survey.score is not None and survey.score <= FOLLOW_UP_MAX_SCORE:
                task = (
                    (
                        await session.execute(
                            select(Task).where(
                                Task.service_request_id == number,
                                Task.kind == TaskKind.FOLLOW_UP.value,
                                Task.status == TaskStatus.OPEN.value,
                                Task.created_at == survey.answered_at,
                            )
                        )
                    )
                    .scalars()
                    .first()
                )
                if task is not None:
                    task.title = _with_comment(task.title, text)
            await uow.commit()
            return await self._out(session, survey)

    async def view_by_token(self, token: str, links: SurveyLinks) -> SurveyView:
        """The survey a link points at (NotFound for a link that is not ours or was altered)."""
        claims = links.read(token)
        if claims is None:
            raise NotFound("This survey link is not valid.")
        async with self._uow() as uow:
            session = uow.session
            survey = await session.get(Survey, claims.survey_id)
            if survey is None:
                raise NotFound("This survey link is not valid.")
            return await self._view(session, survey, claims, self._clock.now())

    async def answer_by_token(
        self, token: str, links: SurveyLinks, score: int, comment: str | None = None
    ) -> SurveyView:
        """Record the answer given on the survey page: the signed link is the customer's credential."""
        claims = links.read(token)
        if claims is None:
            raise NotFound("This survey link is not valid.")
        _check_score(score)
        now = self._clock.now()
        async with self._uow() as uow:
            session = uow.session
            survey = await session.get(Survey, claims.survey_id)
            if survey is None:
                raise NotFound("This survey link is not valid.")
            number = survey.service_request_id
            label = ref("SR", number) if number is not None else "this case"
            if survey.status == SurveyStatus.ANSWERED:
                raise Conflict(f"{label} was already rated {survey.score}/5. Thank you!")
            if claims.expires_at <= now or _expired(survey, now):
                raise InvalidTransition(f"The survey for {label} has expired.")
            await self._record(uow, survey, score, comment, survey.recipient_id, now)
            await uow.commit()
            return await self._view(session, survey, claims, now)

    async def _own_survey(self, session: AsyncSession, actor: Actor, number: int) -> Survey:
        """The survey of a case of the actor's own company (admins: any); everyone else: NotFound."""
        survey = (
            await session.execute(
                select(Survey)
                .join(Customer, Customer.id == Survey.customer_id)
                .where(Survey.service_request_id == number, customer_scope(actor))
            )
        ).scalar_one_or_none()
        if survey is None or (actor.is_staff and not actor.is_admin):
            raise NotFound(f"There is no survey to answer for {ref('SR', number)}.")
        return survey

    async def _record(
        self,
        uow: UnitOfWork,
        survey: Survey,
        score: int,
        comment: str | None,
        actor_id: int | None,
        now: datetime,
    ) -> None:
        """The answer, its event and (for a low score) the follow-up task, in the caller's transaction."""
        session = uow.session
        text = _clean_comment(comment)
        # Two answers racing (the page and the chat): only the one that finds the survey still open records.
        moved = await session.execute(
            update(Survey)
            .where(Survey.id == survey.id, Survey.status.in_(OPEN_STATES))
            .values(status=SurveyStatus.ANSWERED.value, score=score, comment=text, answered_at=now)
            .execution_options(synchronize_session=False)
        )
        if int(getattr(moved, "rowcount", 0) or 0) != 1:
            raise Conflict("This survey was answered a moment ago. Thank you!")
        await session.refresh(survey)
        uow.emit(
            SurveyAnswered(
                aggregate_id=survey.id,
                actor_id=actor_id,
                customer_id=survey.customer_id,
                score=score,
                service_request_id=survey.service_request_id,
                technician_id=survey.technician_id,
            )
        )
        if score <= FOLLOW_UP_MAX_SCORE and survey.service_request_id is not None:
            await self._open_follow_up(uow, survey, score, text, actor_id, now)

    async def _open_follow_up(
        self,
        uow: UnitOfWork,
        survey: Survey,
        score: int,
        comment: str | None,
        actor_id: int | None,
        now: datetime,
    ) -> None:
        session = uow.session
        assert survey.service_request_id is not None
        request = await session.get(ServiceRequest, survey.service_request_id)
        if request is None:
            return
        customer = await session.get(Customer, survey.customer_id)
        manager_id = await service_manager(session, request.assignee_id, survey.technician_id)
        ticket = ref("SR", request.id)
        who = customer.name if customer is not None else "the customer"
        base = f"{ticket} rated {score}/5 by {who}: call them back"
        await open_task(
            uow,
            title=_with_comment(base, comment),
            kind=TaskKind.FOLLOW_UP.value,
            assignee_id=manager_id,
            due_at=self._next_working_day_end(now),
            now=now,
            actor_id=actor_id,
            customer_id=survey.customer_id,
            service_request_id=request.id,
        )

    def _next_working_day_end(self, now: datetime) -> datetime:
        """18:00 business time on the next weekday after today."""
        day = now.astimezone(self._tz).date() + timedelta(days=1)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        return datetime.combine(day, FOLLOW_UP_DUE_TIME, tzinfo=self._tz).astimezone(UTC)

    async def _view(
        self, session: AsyncSession, survey: Survey, claims: SurveyClaims, now: datetime
    ) -> SurveyView:
        request = (
            await session.get(ServiceRequest, survey.service_request_id)
            if survey.service_request_id is not None
            else None
        )
        product = ""
        if request is not None and request.installed_product_id is not None:
            unit = await session.get(InstalledProduct, request.installed_product_id)
            model = await session.get(Product, unit.product_id) if unit is not None else None
            product = model.name if model is not None else ""
        technician = await session.get(User, survey.technician_id) if survey.technician_id else None
        customer = await session.get(Customer, survey.customer_id)
        recipient = await session.get(User, survey.recipient_id) if survey.recipient_id else None
        state: Literal["open", "answered", "expired"] = "open"
        if survey.status == SurveyStatus.ANSWERED:
            state = "answered"
        elif claims.expires_at <= now or _expired(survey, now):
            state = "expired"
        return SurveyView(
            survey_id=survey.id,
            ticket=ref("SR", survey.service_request_id) if survey.service_request_id else "",
            subject=request.subject if request is not None else "",
            product=product,
            technician_name=technician.name if technician is not None else "",
            customer_name=customer.name if customer is not None else "",
            state=state,
            score=survey.score,
            comment=survey.comment,
            expires_at=survey.expires_at or claims.expires_at,
            lang=recipient.lang if recipient is not None else None,
        )

    # --- reading ------------------------------------------------------------------------------------

    async def list(
        self, actor: Actor, *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[SurveyOut]:
        """Surveys of customers in scope (staff) or of the customer's own company, newest first."""
        conditions: builtins.list[ColumnElement[bool]] = [customer_scope(actor)]
        if status:
            conditions.append(Survey.status == status)
        base = (
            select(Survey, Customer.code).join(Customer, Customer.id == Survey.customer_id).where(*conditions)
        )
        async with self._uow() as uow:
            total, rows = await fetch_page(
                uow.session, base.order_by(Survey.id.desc()), limit=limit, offset=offset
            )
        return Page[SurveyOut](
            items=[_survey_out(survey, code) for survey, code in rows],
            total=total,
            limit=limit,
            offset=offset,
        )

    async def csat(
        self, actor: Actor, *, by: str = "technician", since: date | None = None, until: date | None = None
    ) -> CsatReport:
        """CSAT of answered surveys by technician, team (department) or month (business time), counting
        answers given from `since` to `until` inclusive. Managers see the people below them, admins all."""
        require_role(actor, Role.MANAGER, doing="see satisfaction figures")
        if by not in CSAT_GROUPINGS:
            raise ValidationFailed("Group CSAT by technician, team or month.", field="by")
        if since is not None and until is not None and since > until:
            raise ValidationFailed("'since' is after 'until'.", field="since")
        # Whose work a survey judges: the technician who did the repair, else the request's assignee.
        handler = func.coalesce(Survey.technician_id, ServiceRequest.assignee_id)
        query = (
            select(
                Survey.score, Survey.answered_at, User.username, User.name, Department.code, Department.name
            )
            .select_from(Survey)
            .outerjoin(ServiceRequest, ServiceRequest.id == Survey.service_request_id)
            .outerjoin(User, User.id == handler)
            .outerjoin(Department, Department.id == User.department_id)
            .where(Survey.status == SurveyStatus.ANSWERED.value, Survey.score.is_not(None))
        )
        if since is not None:
            query = query.where(Survey.answered_at >= self._local_midnight(since))
        if until is not None:
            query = query.where(Survey.answered_at < self._local_midnight(until + timedelta(days=1)))
        if not actor.is_admin:
            query = query.where(handler.in_(actor.team_ids))
        async with self._uow() as uow:
            rows = (await uow.session.execute(query)).all()
        groups: dict[str, tuple[str, builtins.list[int]]] = {}
        everything: builtins.list[int] = []
        for score, answered_at, username, name, department_code, department_name in rows:
            if by == "technician":
                key, label = (username, name) if username else ("-", "nobody assigned")
            elif by == "team":
                key, label = (department_code, department_name) if department_code else ("-", "no team")
            else:
                key = label = answered_at.astimezone(self._tz).strftime("%Y-%m") if answered_at else "-"
            groups.setdefault(key, (label, []))[1].append(int(score))
            everything.append(int(score))
        return CsatReport(
            by=by,
            since=since,
            until=until,
            rows=[_csat_row(key, label, scores) for key, (label, scores) in sorted(groups.items())],
            overall=_csat_row("all", "all", everything),
        )

    def _local_midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0, 0), tzinfo=self._tz).astimezone(UTC)

    async def _out(self, session: AsyncSession, survey: Survey) -> SurveyOut:
        customer = await session.get(Customer, survey.customer_id)
        assert customer is not None
        return _survey_out(survey, customer.code)


# --- helpers ------------------------------------------------------------------------------------------


async def service_manager(
    session: AsyncSession, assignee_id: int | None, technician_id: int | None
) -> int | None:
    """Who follows up on a case: the manager of its assignee, else of its technician, else the head of the
    assignee's (else the technician's) department or the nearest department above that has one."""
    people = [await session.get(User, user_id) for user_id in (assignee_id, technician_id) if user_id]
    for person in people:
        if person is not None and person.manager_id is not None:
            manager = await session.get(User, person.manager_id)
            if manager is not None and manager.active:
                return manager.id
    for person in people:
        if person is None:
            continue
        department_id, seen = person.department_id, set[int]()
        while department_id is not None and department_id not in seen:
            seen.add(department_id)
            department = await session.get(Department, department_id)
            if department is None:
                break
            if department.head_id is not None and department.head_id != person.id:
                head = await session.get(User, department.head_id)
                if head is not None and head.active:
                    return head.id
            department_id = department.parent_id
    return None


async def _last_orders(
    session: AsyncSession, request_ids: Iterable[int]
) -> dict[int, tuple[int | None, int | None]]:
    """Request id → (its latest repair order, that order's technician)."""
    wanted = builtins.list(request_ids)
    if not wanted:
        return {}
    rows = await session.execute(
        select(RepairOrder.service_request_id, RepairOrder.id, RepairOrder.technician_id)
        .where(RepairOrder.service_request_id.in_(wanted))
        .order_by(RepairOrder.id)
    )
    return {request_id: (order_id, technician_id) for request_id, order_id, technician_id in rows.tuples()}


def _check_score(score: int) -> None:
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise ValidationFailed("The rating must be a whole number from 1 to 5.", field="score")


def _clean_comment(comment: str | None) -> str | None:
    return (comment or "").strip()[:MAX_COMMENT] or None


def _expired(survey: Survey, now: datetime) -> bool:
    return survey.status == SurveyStatus.EXPIRED or (
        survey.expires_at is not None and survey.expires_at <= now
    )


def _with_comment(base: str, comment: str | None) -> str:
    """A follow-up's title with the customer's words quoted at the end, within the column's 300 characters."""
    if not comment:
        return base[:300]
    quoted = " ".join(comment.split())
    room = 300 - len(base) - 4
    if room < 20:
        return base[:300]
    if len(quoted) > room:
        quoted = quoted[: room - 1] + "…"
    return f"{base} — “{quoted}”"


def _survey_out(survey: Survey, customer_code: str) -> SurveyOut:
    return SurveyOut(
        id=survey.id,
        service_request_ref=ref("SR", survey.service_request_id) if survey.service_request_id else None,
        customer_code=customer_code,
        status=survey.status,
        score=survey.score,
        comment=survey.comment,
        created_at=survey.created_at,
        answered_at=survey.answered_at,
    )
