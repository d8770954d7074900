"""Sales: visits and follow-up tasks, leads, opportunities with a full change history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import Actor, customer_scope, require_role, sales_scope_owner
from core.db.models import Customer, Lead, Opportunity, OpportunityChange, Task, User, Visit
from core.domain.enums import (
    DEFAULT_STAGE_PROBABILITY,
    LeadStatus,
    OpportunityStage,
    Role,
    TaskKind,
    TaskStatus,
)
from core.domain.events import (
    OpportunityAmountChanged,
    OpportunityCreated,
    OpportunityStageChanged,
    VisitLogged,
)
from core.errors import InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from core.schemas import (
    OpportunityChangeOut,
    OpportunityDetail,
    OpportunityIn,
    OpportunityOut,
    OpportunityPatch,
    Page,
    PipelineOut,
    PipelineStageOut,
    TaskOut,
    UnvisitedCustomerOut,
    VisitIn,
    VisitOut,
)
from core.services.base import Service, fetch_page, open_task, parse_ref, ref, user_by_username, usernames
from core.services.customers import visible_customer
from core.services.watch import unvisited_key_customers

SALES_ROLES = (Role.REP, Role.MANAGER)
CLOSED_STAGES = frozenset({OpportunityStage.CLOSED_WON.value, OpportunityStage.CLOSED_LOST.value})


class SalesService(Service):
    """Everything a rep records, scoped to their own and their team's customers."""

    # --- visits and tasks -----------------------------------------------------------------------

    async def log_visit(self, actor: Actor, data: VisitIn) -> VisitOut:
        """Record a visit; a next step with a due date becomes a follow-up task for the rep."""
        require_role(actor, *SALES_ROLES, doing="log visits")
        if data.visited_on > self.today():
            raise ValidationFailed("A visit cannot be logged for a future date.", field="visited_on")
        if data.next_step_due is not None and data.next_step_due < self._clock.now():
            raise ValidationFailed("The next step's due date is in the past.", field="next_step_due")
        if data.next_step_due is not None and not data.next_step.strip():
            raise ValidationFailed("Say what the next step is.", field="next_step")
        async with self._uow() as uow:
            session = uow.session
            customer = await visible_customer(session, actor, data.customer_code)
            if actor.user_id is None:
                raise PermissionDenied("Visits are logged by a person.")
            now = self._clock.now()
            visit = Visit(
                customer_id=customer.id,
                rep_id=actor.user_id,
                visited_on=data.visited_on,
                kind=data.kind,
                contacts_met=list(data.contacts_met),
                summary=data.summary,
                outcome=data.outcome,
                next_step=data.next_step,
                created_at=now,
            )
            session.add(visit)
            await session.flush()
            uow.emit(
                VisitLogged(
                    aggregate_id=visit.id,
                    actor_id=actor.user_id,
                    customer_id=customer.id,
                    rep_id=actor.user_id,
                )
            )
            task_id = None
            if data.next_step.strip():
                task = await open_task(
                    uow,
                    title=data.next_step,
                    kind=TaskKind.FOLLOW_UP.value,
                    assignee_id=actor.user_id,
                    due_at=data.next_step_due,
                    now=now,
                    actor_id=actor.user_id,
                    customer_id=customer.id,
                    visit_id=visit.id,
                )
                task_id = task.id
            await uow.commit()
            return _visit_out(visit, customer, actor.username, task_id)

    async def visits(
        self,
        actor: Actor,
        *,
        rep: str | None = None,
        customer_code: str | None = None,
        since: date | None = None,
        until: date | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[VisitOut]:
        """Visits by the actor and their team, newest first."""
        require_role(actor, *SALES_ROLES, doing="see visits")
        conditions: list[ColumnElement[bool]] = [sales_scope_owner(actor, Visit.rep_id)]
        if since:
            conditions.append(Visit.visited_on >= since)
        if until:
            conditions.append(Visit.visited_on <= until)
        async with self._uow() as uow:
            session = uow.session
            if rep:
                conditions.append(Visit.rep_id == (await user_by_username(session, rep)).id)
            if customer_code:
                conditions.append(
                    Visit.customer_id == (await visible_customer(session, actor, customer_code)).id
                )
            query = (
                select(Visit, Customer, User.username)
                .join(Customer, Customer.id == Visit.customer_id)
                .join(User, User.id == Visit.rep_id)
                .where(*conditions)
                .order_by(Visit.visited_on.desc(), Visit.id.desc())
            )
            total, rows = await fetch_page(session, query, limit=limit, offset=offset)
            return Page[VisitOut](
                items=[_visit_out(visit, customer, username, None) for visit, customer, username in rows],
                total=total,
                limit=limit,
                offset=offset,
            )

    async def unvisited_key_customers(self, actor: Actor, *, days: int) -> list[UnvisitedCustomerOut]:
        """Key-tier customers in the actor's scope with no visit (or meeting) for `days` days, longest first.

        The same rule as the alert sweep (core/services/watch.py): counted from the last visit or meeting or,
        never visited, from when the customer was created; so the chat and the alert agree.
        """
        require_role(actor, *SALES_ROLES, doing="see visits")
        if isinstance(days, bool) or days < 1:
            raise ValidationFailed("The watch window is at least one day.", field="days")
        async with self._uow() as uow:
            session = uow.session
            unvisited = await unvisited_key_customers(
                session, today=self.today(), days=days, tz=self._tz, scope=customer_scope(actor)
            )
            names = await usernames(session, {item.owner_id for item in unvisited if item.owner_id})
        found = [
            UnvisitedCustomerOut(
                customer_code=item.code,
                customer_name=item.name,
                owner=names.get(item.owner_id) if item.owner_id else None,
                last_visited_on=item.last_visited_on,
                days=item.days,
            )
            for item in unvisited
        ]
        found.sort(key=lambda item: (-item.days, item.customer_name))
        return found

    async def tasks(
        self, actor: Actor, *, status: str | None = "open", due_before: datetime | None = None
    ) -> list[TaskOut]:
        """The actor's own tasks (managers: their team's too)."""
        require_role(actor, Role.REP, Role.MANAGER, Role.AGENT, Role.TECHNICIAN, doing="see tasks")
        team = actor.team_ids or frozenset({actor.user_id or 0})
        conditions: list[ColumnElement[bool]] = [] if actor.is_admin else [Task.assignee_id.in_(team)]
        if status:
            conditions.append(Task.status == status)
        if due_before:
            conditions.append(Task.due_at < due_before)
        async with self._uow() as uow:
            session = uow.session
            rows = (
                (
                    await session.execute(
                        select(Task)
                        .where(*conditions)
                        .order_by(Task.due_at.is_(None), Task.due_at, Task.id)
                        .limit(200)
                    )
                )
                .scalars()
                .all()
            )
            names = await usernames(session, {task.assignee_id for task in rows})
            codes = dict(
                (
                    await session.execute(
                        select(Customer.id, Customer.code).where(
                            Customer.id.in_({t.customer_id for t in rows if t.customer_id})
                        )
                    )
                )
                .tuples()
                .all()
            )
            return [_task_out(task, names, codes) for task in rows]

    async def add_follow_up(
        self, actor: Actor, customer_code: str, title: str, due_at: datetime | None
    ) -> TaskOut:
        """A follow-up task for the actor on one of their customers (a visit still to come, say), reminded
        on its day like a visit's next step."""
        require_role(actor, *SALES_ROLES, doing="add follow-up tasks")
        if not title.strip():
            raise ValidationFailed("Say what the follow-up is.", field="title")
        now = self._clock.now()
        if due_at is not None and due_at < now:
            raise ValidationFailed("The follow-up's due date is in the past.", field="due_at")
        async with self._uow() as uow:
            customer = await visible_customer(uow.session, actor, customer_code)
            task = await open_task(uow, title=title, kind=TaskKind.FOLLOW_UP.value, assignee_id=actor.user_id,
                                   due_at=due_at, now=now, actor_id=actor.user_id, customer_id=customer.id)
            await uow.commit()
            names = await usernames(uow.session, {task.assignee_id})
            return _task_out(task, names, {customer.id: customer.code})

    async def complete_task(self, actor: Actor, task_id: int) -> TaskOut:
        """Mark one of the actor's tasks done."""
        async with self._uow() as uow:
            session = uow.session
            task = await session.get(Task, task_id)
            team = actor.team_ids or frozenset({actor.user_id or 0})
            if task is None or (not actor.is_admin and task.assignee_id not in team):
                raise NotFound(f"No task {task_id} found.")
            if task.status != TaskStatus.OPEN:
                raise InvalidTransition(f"Task {task_id} is already {task.status}.")
            task.status, task.completed_at = TaskStatus.DONE.value, self._clock.now()
            await uow.commit()
            names = await usernames(session, {task.assignee_id})
            customer = await session.get(Customer, task.customer_id) if task.customer_id else None
            codes = {customer.id: customer.code} if customer else {}
            return _task_out(task, names, codes)

    # --- leads ----------------------------------------------------------------------------------

    async def add_lead(
        self,
        actor: Actor,
        *,
        name: str,
        company: str = "",
        source: str = "",
        phone: str | None = None,
        email: str | None = None,
    ) -> int:
        """Record a lead owned by the actor."""
        require_role(actor, *SALES_ROLES, doing="add leads")
        if not name.strip():
            raise ValidationFailed("A lead needs a name.", field="name")
        async with self._uow() as uow:
            lead = Lead(
                name=name.strip()[:200],
                company=company.strip()[:200],
                source=source[:64],
                status=LeadStatus.NEW.value,
                owner_id=actor.user_id,
                phone=phone,
                email=email,
                created_at=self._clock.now(),
            )
            uow.session.add(lead)
            await uow.session.flush()
            await uow.commit()
            return lead.id

    # --- opportunities --------------------------------------------------------------------------

    async def create_opportunity(self, actor: Actor, data: OpportunityIn) -> OpportunityOut:
        """Open a deal for a customer in scope; probability defaults by stage."""
        require_role(actor, *SALES_ROLES, doing="create deals")
        async with self._uow() as uow:
            session = uow.session
            customer = await visible_customer(session, actor, data.customer_code)
            owner = await self._owner(session, actor, data.owner)
            now = self._clock.now()
            stage = data.stage.value
            opportunity = Opportunity(
                customer_id=customer.id,
                owner_id=owner.id,
                name=data.name,
                stage=stage,
                amount=data.amount,
                currency="CNY",
                probability=data.probability
                if data.probability is not None
                else DEFAULT_STAGE_PROBABILITY[data.stage],
                expected_close=data.expected_close,
                created_at=now,
                updated_at=now,
                stage_changed_at=now,
                closed_at=now if stage in CLOSED_STAGES else None,
            )
            session.add(opportunity)
            await session.flush()
            session.add(
                OpportunityChange(
                    opportunity_id=opportunity.id,
                    actor_id=actor.user_id,
                    at=now,
                    field="created",
                    old_value=None,
                    new_value=f"{stage} {_text(data.amount)}",
                )
            )
            uow.emit(
                OpportunityCreated(
                    aggregate_id=opportunity.id,
                    actor_id=actor.user_id,
                    customer_id=customer.id,
                    owner_id=owner.id,
                    stage=stage,
                    amount=data.amount,
                )
            )
            await uow.commit()
            return _opportunity_out(opportunity, customer, owner.username)

    async def update_opportunity(
        self, actor: Actor, reference: str | int, patch: OpportunityPatch
    ) -> OpportunityDetail:
        """Change a deal; each changed field is recorded; won/lost close it; lost needs a reason."""
        require_role(actor, *SALES_ROLES, doing="change deals")
        async with self._uow() as uow:
            session = uow.session
            opportunity = await self._visible_opportunity(session, actor, reference)
            changes = patch.model_dump(exclude_unset=True)
            if not changes:
                raise ValidationFailed("Nothing to change.")
            now = self._clock.now()
            old_stage, old_amount = opportunity.stage, opportunity.amount
            if (
                opportunity.stage in CLOSED_STAGES
                and changes.get("stage") is None
                and set(changes) - {"lost_reason", "competitor"}
            ):
                raise InvalidTransition(
                    f"{ref('OP', opportunity.id)} is closed ({opportunity.stage}); "
                    "reopen it by moving its stage."
                )
            new_stage = changes.get("stage")
            if new_stage is not None:
                new_stage = OpportunityStage(new_stage).value
                if new_stage == OpportunityStage.CLOSED_LOST and not (
                    patch.lost_reason or opportunity.lost_reason
                ):
                    raise ValidationFailed(
                        "Marking a deal lost needs the reason (and the competitor, if any).",
                        field="lost_reason",
                    )
                changes["stage"] = new_stage
                if "probability" not in changes:
                    changes["probability"] = DEFAULT_STAGE_PROBABILITY[OpportunityStage(new_stage)]
            if "owner" in changes:
                owner = await self._owner(session, actor, changes.pop("owner"))
                changes["owner_id"] = owner.id
            for field_name, value in changes.items():
                if value is None and field_name in ("stage", "amount", "name", "probability", "owner_id"):
                    raise ValidationFailed(f"{field_name} cannot be empty.", field=field_name)
                old = getattr(opportunity, field_name)
                if old == value:
                    continue
                session.add(
                    OpportunityChange(
                        opportunity_id=opportunity.id,
                        actor_id=actor.user_id,
                        at=now,
                        field=field_name,
                        old_value=_text(old),
                        new_value=_text(value),
                    )
                )
                setattr(opportunity, field_name, value)
            opportunity.updated_at = now
            if opportunity.stage != old_stage:
                opportunity.stage_changed_at = now
                opportunity.closed_at = now if opportunity.stage in CLOSED_STAGES else None
                uow.emit(
                    OpportunityStageChanged(
                        aggregate_id=opportunity.id,
                        actor_id=actor.user_id,
                        customer_id=opportunity.customer_id,
                        owner_id=opportunity.owner_id,
                        from_stage=old_stage,
                        to_stage=opportunity.stage,
                        amount=opportunity.amount,
                    )
                )
            if opportunity.amount != old_amount:
                uow.emit(
                    OpportunityAmountChanged(
                        aggregate_id=opportunity.id,
                        actor_id=actor.user_id,
                        customer_id=opportunity.customer_id,
                        owner_id=opportunity.owner_id,
                        old_amount=old_amount,
                        new_amount=opportunity.amount,
                    )
                )
            await uow.commit()
        return await self.get_opportunity(actor, opportunity.id)

    async def get_opportunity(self, actor: Actor, reference: str | int) -> OpportunityDetail:
        """A deal with its history."""
        require_role(actor, *SALES_ROLES, doing="see deals")
        async with self._uow() as uow:
            session = uow.session
            opportunity = await self._visible_opportunity(session, actor, reference)
            customer = await session.get(Customer, opportunity.customer_id)
            assert customer is not None
            changes = (
                (
                    await session.execute(
                        select(OpportunityChange)
                        .where(OpportunityChange.opportunity_id == opportunity.id)
                        .order_by(OpportunityChange.id)
                    )
                )
                .scalars()
                .all()
            )
            names = await usernames(session, {opportunity.owner_id, *(change.actor_id for change in changes)})
            summary = _opportunity_out(opportunity, customer, names.get(opportunity.owner_id, ""))
            return OpportunityDetail(
                **summary.model_dump(),
                history=[
                    OpportunityChangeOut(
                        at=change.at,
                        actor=names.get(change.actor_id) if change.actor_id else "system",
                        field=change.field,
                        old_value=change.old_value,
                        new_value=change.new_value,
                    )
                    for change in changes
                ],
            )

    async def list_opportunities(
        self,
        actor: Actor,
        *,
        stage: str | None = None,
        owner: str | None = None,
        customer_code: str | None = None,
        open_only: bool = False,
        closing_before: date | None = None,
        closing_from: date | None = None,
        min_amount: Decimal | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[OpportunityOut]:
        """Deals in scope, by expected close date (closing in [closing_from, closing_before))."""
        require_role(actor, *SALES_ROLES, doing="see deals")
        conditions: list[ColumnElement[bool]] = [sales_scope_owner(actor, Opportunity.owner_id)]
        if stage:
            conditions.append(Opportunity.stage == stage)
        if open_only:
            conditions.append(Opportunity.stage.not_in(CLOSED_STAGES))
        if closing_before:
            conditions.append(Opportunity.expected_close < closing_before)
        if closing_from:
            conditions.append(Opportunity.expected_close >= closing_from)
        if min_amount is not None:
            conditions.append(Opportunity.amount >= min_amount)
        async with self._uow() as uow:
            session = uow.session
            if owner:
                conditions.append(Opportunity.owner_id == (await user_by_username(session, owner)).id)
            if customer_code:
                conditions.append(
                    Opportunity.customer_id == (await visible_customer(session, actor, customer_code)).id
                )
            query = (
                select(Opportunity, Customer, User.username)
                .join(Customer, Customer.id == Opportunity.customer_id)
                .join(User, User.id == Opportunity.owner_id)
                .where(*conditions)
                .order_by(Opportunity.expected_close.is_(None), Opportunity.expected_close, Opportunity.id)
            )
            total, rows = await fetch_page(session, query, limit=limit, offset=offset)
            return Page[OpportunityOut](
                items=[_opportunity_out(o, customer, username) for o, customer, username in rows],
                total=total,
                limit=limit,
                offset=offset,
            )

    async def pipeline(
        self, actor: Actor, *, close_from: date | None = None, close_to: date | None = None
    ) -> PipelineOut:
        """Funnel of the actor's (and their team's) deals expected to close in [close_from, close_to]."""
        require_role(actor, *SALES_ROLES, doing="see the pipeline")
        conditions: list[ColumnElement[bool]] = [sales_scope_owner(actor, Opportunity.owner_id)]
        if close_from:
            conditions.append(Opportunity.expected_close >= close_from)
        if close_to:
            conditions.append(Opportunity.expected_close <= close_to)
        async with self._uow() as uow:
            rows = (
                (
                    await uow.session.execute(
                        select(
                            Opportunity.stage,
                            Opportunity.amount,
                            Opportunity.probability,
                            Opportunity.expected_close,
                        ).where(*conditions)
                    )
                )
                .tuples()
                .all()
            )
        zero = Decimal("0.00")
        counts = dict.fromkeys((stage.value for stage in OpportunityStage), 0)
        amounts = dict.fromkeys(counts, zero)
        weighted_amounts = dict.fromkeys(counts, zero)
        by_month: dict[str, Decimal] = {}
        for stage, amount, probability, expected_close in rows:
            weighted = (amount * probability / 100).quantize(Decimal("0.01"))
            counts[stage] += 1
            amounts[stage] += amount
            weighted_amounts[stage] += weighted
            if stage not in CLOSED_STAGES and expected_close is not None:
                month = expected_close.strftime("%Y-%m")
                by_month[month] = by_month.get(month, zero) + weighted
        stages = [
            PipelineStageOut(
                stage=stage, count=counts[stage], amount=amounts[stage], weighted=weighted_amounts[stage]
            )
            for stage in counts
        ]
        open_stages = [entry for entry in stages if entry.stage not in CLOSED_STAGES]
        return PipelineOut(
            close_from=close_from,
            close_to=close_to,
            stages=stages,
            open_count=sum(entry.count for entry in open_stages),
            open_amount=sum((entry.amount for entry in open_stages), zero),
            weighted_forecast=sum((entry.weighted for entry in open_stages), zero),
            won_amount=amounts[OpportunityStage.CLOSED_WON.value],
            forecast_by_month=dict(sorted(by_month.items())),
        )

    async def _visible_opportunity(
        self, session: AsyncSession, actor: Actor, reference: str | int
    ) -> Opportunity:
        number = parse_ref(reference, "OP")
        opportunity = (
            await session.execute(
                select(Opportunity).where(
                    Opportunity.id == number, sales_scope_owner(actor, Opportunity.owner_id)
                )
            )
        ).scalar_one_or_none()
        if opportunity is None:
            raise NotFound(f"No deal {ref('OP', number)} found.", field="opportunity")
        return opportunity

    async def _owner(self, session: AsyncSession, actor: Actor, username: str | None) -> User:
        if username is None:
            if actor.user_id is None:
                raise ValidationFailed("Say who owns the deal.", field="owner")
            owner = await session.get(User, actor.user_id)
            assert owner is not None
            return owner
        owner = await user_by_username(session, username)
        if owner.role not in (Role.REP, Role.MANAGER):
            raise ValidationFailed(f"{owner.username} is not a sales rep or manager.", field="owner")
        if not actor.is_admin and owner.id not in actor.team_ids:
            raise PermissionDenied("Deals can only be given to you or your team.", field="owner")
        return owner


async def customer_in_scope(session: AsyncSession, actor: Actor, customer_id: int) -> bool:
    """Whether a customer id is within the actor's customer scope."""
    found = await session.execute(
        select(Customer.id).where(Customer.id == customer_id, customer_scope(actor))
    )
    return found.first() is not None


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _visit_out(visit: Visit, customer: Customer, rep: str, task_id: int | None) -> VisitOut:
    return VisitOut(
        id=visit.id,
        customer_code=customer.code,
        customer_name=customer.name,
        rep=rep,
        visited_on=visit.visited_on,
        kind=visit.kind,
        contacts_met=list(visit.contacts_met or []),
        summary=visit.summary,
        outcome=visit.outcome,
        next_step=visit.next_step,
        follow_up_task_id=task_id,
    )


def _task_out(task: Task, names: dict[int, str], codes: dict[int, str]) -> TaskOut:
    return TaskOut(
        id=task.id,
        title=task.title,
        kind=task.kind,
        status=task.status,
        due_at=task.due_at,
        assignee=names.get(task.assignee_id) if task.assignee_id else None,
        customer_code=codes.get(task.customer_id) if task.customer_id else None,
    )


def _opportunity_out(opportunity: Opportunity, customer: Customer, owner: str) -> OpportunityOut:
    return OpportunityOut(
        id=opportunity.id,
        ref=ref("OP", opportunity.id),
        customer_code=customer.code,
        customer_name=customer.name,
        owner=owner,
        name=opportunity.name,
        stage=opportunity.stage,
        amount=opportunity.amount,
        currency=opportunity.currency,
        probability=opportunity.probability,
        expected_close=opportunity.expected_close,
        lost_reason=opportunity.lost_reason,
        competitor=opportunity.competitor,
        created_at=opportunity.created_at,
        updated_at=opportunity.updated_at,
    )


__all__: Sequence[str] = ("SalesService",)
