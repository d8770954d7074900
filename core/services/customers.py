"""Customers, their contacts, and the value model that ranks them."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import ColumnElement, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import Actor, customer_scope, require_role, require_staff
from core.clock import Clock
from core.db.models import (
    Contact,
    Customer,
    InstalledProduct,
    Opportunity,
    RepairOrder,
    ServiceRequest,
    Survey,
    User,
    Visit,
)
from core.domain.enums import OpportunityStage, RequestKind, RequestStatus, Role, SurveyStatus, ValueTier
from core.domain.events import CustomerCreated, CustomerLifecycleChanged, CustomerTierChanged
from core.domain.lifecycle import LifecycleFacts, LifecycleRules
from core.domain.value import ValueModel, moved_down, moved_up
from core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from core.schemas import (
    ContactIn,
    ContactOut,
    CustomerIn,
    CustomerInsightOut,
    CustomerOut,
    CustomerPatch,
    CustomerRankOut,
    Page,
    SurveyOut,
)
from core.services.base import Service, UowFactory, fetch_page, ref, user_by_username


def customer_out(customer: Customer, owner: str | None) -> CustomerOut:
    """Shape a customer row for callers."""
    return CustomerOut(
        id=customer.id,
        code=customer.code,
        name=customer.name,
        type=customer.type,
        segment=customer.segment,
        lifecycle_stage=customer.lifecycle_stage,
        owner=owner,
        phone=customer.phone,
        email=customer.email,
        address=customer.address,
        value_score=customer.value_score,
        tier=customer.tier,
    )


async def visible_customer(session: AsyncSession, actor: Actor, code: str) -> Customer:
    """A customer the actor may see; an invisible one is reported exactly like a missing one."""
    customer = (
        await session.execute(select(Customer).where(Customer.code == code.strip(), customer_scope(actor)))
    ).scalar_one_or_none()
    if customer is None:
        raise NotFound(f"No customer with code '{code[:64]}'.", field="customer_code")
    return customer


async def _valid_owner(session: AsyncSession, username: str) -> User:
    owner = await user_by_username(session, username)
    if owner.role not in (Role.REP, Role.MANAGER, Role.ADMIN):
        raise ValidationFailed(f"'{username}' is a {owner.role}, not a sales rep or manager.", field="owner")
    return owner


class CustomerService(Service):
    """Customer records and contacts, always within the actor's scope."""

    def __init__(
        self,
        uow: UowFactory,
        clock: Clock,
        timezone: str = "UTC",
        value_model: ValueModel | None = None,
        lifecycle_rules: LifecycleRules | None = None,
    ) -> None:
        super().__init__(uow, clock, timezone)
        self._value_model = value_model or ValueModel()
        self._lifecycle = lifecycle_rules or LifecycleRules()

    async def create(self, actor: Actor, data: CustomerIn) -> CustomerOut:
        """Create a customer; a rep creating one becomes its owner unless they name a teammate."""
        require_role(actor, Role.MANAGER, Role.REP, doing="create customers")
        async with self._uow() as uow:
            session = uow.session
            if (await session.execute(select(Customer.id).where(Customer.code == data.code))).first():
                raise Conflict(f"Customer code '{data.code}' is already used.", field="code")
            owner = await _valid_owner(session, data.owner) if data.owner else None
            if owner is None and actor.role in (Role.REP, Role.MANAGER):
                owner = await user_by_username(session, actor.username)
            if owner is not None and not actor.is_admin and owner.id not in actor.team_ids:
                raise PermissionDenied("You can only give customers to yourself or your team.", field="owner")
            now = self._clock.now()
            customer = Customer(
                code=data.code,
                name=data.name,
                type=data.type.value,
                segment=data.segment,
                lifecycle_stage=data.lifecycle_stage.value,
                owner_id=owner.id if owner else None,
                phone=data.phone,
                email=str(data.email) if data.email else None,
                address=data.address,
                value_score=0.0,
                tier="regular",
                created_at=now,
                updated_at=now,
            )
            session.add(customer)
            await session.flush()
            uow.emit(CustomerCreated(aggregate_id=customer.id, actor_id=actor.user_id, code=customer.code))
            await uow.commit()
            return customer_out(customer, owner.username if owner else None)

    async def update(self, actor: Actor, code: str, patch: CustomerPatch) -> CustomerOut:
        """Change a customer's fields (owner changes stay within the actor's team)."""
        require_role(actor, Role.MANAGER, Role.REP, doing="change customers")
        async with self._uow() as uow:
            session = uow.session
            customer = await visible_customer(session, actor, code)
            changes = patch.model_dump(exclude_unset=True)
            if "owner" in changes:
                owner_name = changes.pop("owner")
                if owner_name is None:
                    customer.owner_id = None
                else:
                    owner = await _valid_owner(session, owner_name)
                    if not actor.is_admin and owner.id not in actor.team_ids:
                        raise PermissionDenied(
                            "You can only give customers to yourself or your team.", field="owner"
                        )
                    customer.owner_id = owner.id
            for field_name, value in changes.items():
                if value is None and field_name in ("name", "type"):
                    raise ValidationFailed(f"{field_name} cannot be empty.", field=field_name)
                setattr(customer, field_name, value.value if hasattr(value, "value") else value)
            customer.updated_at = self._clock.now()
            await uow.commit()
            current_owner = await session.get(User, customer.owner_id) if customer.owner_id else None
            return customer_out(customer, current_owner.username if current_owner else None)

    async def get(self, actor: Actor, code: str) -> CustomerOut:
        """One customer, if visible."""
        async with self._uow() as uow:
            customer = await visible_customer(uow.session, actor, code)
            owner = await uow.session.get(User, customer.owner_id) if customer.owner_id else None
            return customer_out(customer, owner.username if owner else None)

    async def list(
        self,
        actor: Actor,
        *,
        query: str | None = None,
        type: str | None = None,
        tier: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[CustomerOut]:
        """Customers in scope, filtered and paged, by name."""
        require_staff(actor, doing="list customers")
        conditions: list[ColumnElement[bool]] = [customer_scope(actor)]
        if query:
            pattern = f"%{query.strip()[:100]}%"
            conditions.append(or_(Customer.name.ilike(pattern), Customer.code.ilike(pattern)))
        if type:
            conditions.append(Customer.type == type)
        if tier:
            conditions.append(Customer.tier == tier)
        async with self._uow() as uow:
            session = uow.session
            if owner:
                conditions.append(Customer.owner_id == (await user_by_username(session, owner)).id)
            listing = (
                select(Customer, User.username)
                .outerjoin(User, User.id == Customer.owner_id)
                .where(*conditions)
                .order_by(Customer.name, Customer.id)
            )
            total, rows = await fetch_page(session, listing, limit=limit, offset=offset)
            return Page[CustomerOut](
                items=[customer_out(customer, username) for customer, username in rows],
                total=total,
                limit=limit,
                offset=offset,
            )

    async def names_in_scope(self, actor: Actor) -> builtins.list[tuple[str, str]]:
        """(code, name) of every customer the actor may see, for matching names typed in chat."""
        async with self._uow() as uow:
            rows = await uow.session.execute(
                select(Customer.code, Customer.name).where(customer_scope(actor)).order_by(Customer.name)
            )
            return [(code, name) for code, name in rows.tuples()]

    async def add_contact(self, actor: Actor, customer_code: str, data: ContactIn) -> ContactOut:
        """Add a person to a customer in scope."""
        require_role(actor, Role.MANAGER, Role.REP, Role.AGENT, doing="add contacts")
        async with self._uow() as uow:
            customer = await visible_customer(uow.session, actor, customer_code)
            contact = Contact(
                customer_id=customer.id,
                name=data.name,
                title=data.title,
                phone=data.phone,
                email=str(data.email) if data.email else None,
                lang=data.lang,
            )
            uow.session.add(contact)
            await uow.session.flush()
            await uow.commit()
            return _contact_out(contact, customer.code)

    async def contacts(self, actor: Actor, customer_code: str) -> builtins.list[ContactOut]:
        """Contacts of a customer in scope."""
        async with self._uow() as uow:
            customer = await visible_customer(uow.session, actor, customer_code)
            rows = (
                await uow.session.execute(
                    select(Contact).where(Contact.customer_id == customer.id).order_by(Contact.id)
                )
            ).scalars()
            return [_contact_out(contact, customer.code) for contact in rows]

    async def recompute_values(self, actor: Actor, *, window_days: int = 365) -> dict[str, int]:
        """Score every customer with the value model and re-tier them; tier moves become events.

        Returns how many customers ended in each tier.
        """
        require_role(actor, doing="recompute customer values")
        since = self._clock.now() - timedelta(days=window_days)
        async with self._uow() as uow:
            session = uow.session
            customers = (await session.execute(select(Customer))).scalars().all()
            metrics: dict[int, dict[str, float]] = {
                customer.id: {"revenue": 0.0, "order_frequency": 0.0, "service_cost": 0.0, "csat": 3.0}
                for customer in customers
            }
            won = await session.execute(
                select(Opportunity.customer_id, func.sum(Opportunity.amount), func.count())
                .where(Opportunity.stage == OpportunityStage.CLOSED_WON, Opportunity.closed_at >= since)
                .group_by(Opportunity.customer_id)
            )
            for customer_id, revenue, orders in won.tuples():
                metrics[customer_id]["revenue"] = float(revenue or 0)
                metrics[customer_id]["order_frequency"] = float(orders)
            requests = await session.execute(
                select(ServiceRequest.customer_id, func.count())
                .where(ServiceRequest.created_at >= since)
                .group_by(ServiceRequest.customer_id)
            )
            for customer_id, count in requests.tuples():
                metrics[customer_id]["service_cost"] += float(count)
            repairs = await session.execute(
                select(ServiceRequest.customer_id, func.count())
                .join(RepairOrder, RepairOrder.service_request_id == ServiceRequest.id)
                .where(RepairOrder.created_at >= since)
                .group_by(ServiceRequest.customer_id)
            )
            for customer_id, count in repairs.tuples():
                metrics[customer_id]["service_cost"] += 2.0 * float(count)
            csat = await session.execute(
                select(Survey.customer_id, func.avg(Survey.score), func.count())
                .where(Survey.score.is_not(None), Survey.answered_at >= since)
                .group_by(Survey.customer_id)
            )
            answers: dict[int, int] = {}
            for customer_id, average, answered in csat.tuples():
                metrics[customer_id]["csat"] = float(average)
                answers[customer_id] = int(answered)
            scores = self._value_model.score(metrics)
            tiers = self._value_model.tiers(scores)
            facts = await self._lifecycle_facts(session, since, csat_answers=answers, metrics=metrics)
            today = self.today()
            counts: dict[str, int] = {}
            for customer in customers:
                new_tier = tiers[customer.id].value
                counts[new_tier] = counts.get(new_tier, 0) + 1
                # Never scored yet: the tier is the placeholder every new customer starts with, so the first
                # real one is not a "move" for the managers' moving-down list (the event still says it).
                first_scoring = customer.previous_tier is None and not customer.value_score
                customer.value_score = scores[customer.id]
                if new_tier != customer.tier:
                    uow.emit(
                        CustomerTierChanged(
                            aggregate_id=customer.id,
                            actor_id=actor.user_id,
                            old_tier=customer.tier,
                            new_tier=new_tier,
                            score=scores[customer.id],
                        )
                    )
                    customer.previous_tier = None if first_scoring else customer.tier
                    customer.tier = new_tier
                stage = self._lifecycle.stage(facts.get(customer.id, LifecycleFacts()), today).value
                if stage != customer.lifecycle_stage:
                    uow.emit(
                        CustomerLifecycleChanged(
                            aggregate_id=customer.id,
                            actor_id=actor.user_id,
                            old_stage=customer.lifecycle_stage,
                            new_stage=stage,
                        )
                    )
                    customer.lifecycle_stage = stage
            await uow.commit()
            return counts

    async def _lifecycle_facts(
        self,
        session: AsyncSession,
        since: datetime,
        *,
        csat_answers: dict[int, int],
        metrics: dict[int, dict[str, float]],
    ) -> dict[int, LifecycleFacts]:
        """What the lifecycle rules need, for every customer, in a handful of grouped queries."""
        first: dict[int, date] = {}
        last: dict[int, date] = {}
        orders: dict[int, int] = {}

        def seen(customer_id: int, earliest: date | None, latest: date | None) -> None:
            if earliest is not None:
                first[customer_id] = min(first.get(customer_id, earliest), earliest)
            if latest is not None:
                last[customer_id] = max(last.get(customer_id, latest), latest)

        won = await session.execute(
            select(
                Opportunity.customer_id,
                func.min(Opportunity.closed_at),
                func.max(Opportunity.closed_at),
                func.sum(case((Opportunity.closed_at >= since, 1), else_=0)),
            )
            .where(Opportunity.stage == OpportunityStage.CLOSED_WON, Opportunity.closed_at.is_not(None))
            .group_by(Opportunity.customer_id)
        )
        for customer_id, earliest, latest, recent in won.tuples():
            seen(customer_id, self._local_day(earliest), self._local_day(latest))
            orders[customer_id] = orders.get(customer_id, 0) + int(recent or 0)
        since_day = since.astimezone(self._tz).date()
        units = await session.execute(
            select(
                InstalledProduct.customer_id,
                func.min(InstalledProduct.sold_on),
                func.max(InstalledProduct.sold_on),
                func.sum(case((InstalledProduct.sold_on >= since_day, 1), else_=0)),
            ).group_by(InstalledProduct.customer_id)
        )
        for customer_id, earliest, latest, recent in units.tuples():
            seen(customer_id, earliest, latest)
            orders[customer_id] = orders.get(customer_id, 0) + int(recent or 0)
        # Visits and service requests are activity, not purchases: they keep a customer warm.
        visits = await session.execute(
            select(Visit.customer_id, func.max(Visit.visited_on)).group_by(Visit.customer_id)
        )
        for customer_id, latest in visits.tuples():
            seen(customer_id, None, latest)
        requests = await session.execute(
            select(ServiceRequest.customer_id, func.max(ServiceRequest.created_at)).group_by(
                ServiceRequest.customer_id
            )
        )
        for customer_id, latest in requests.tuples():
            seen(customer_id, None, self._local_day(latest))
        complaints = dict(
            (
                await session.execute(
                    select(ServiceRequest.customer_id, func.count())
                    .where(
                        ServiceRequest.kind == RequestKind.COMPLAINT.value,
                        ServiceRequest.created_at
                        <= self._clock.now() - timedelta(days=self._lifecycle.complaint_days),
                        ServiceRequest.status.not_in(
                            (RequestStatus.RESOLVED.value, RequestStatus.CLOSED.value)
                        ),
                    )
                    .group_by(ServiceRequest.customer_id)
                )
            ).tuples().all()
        )
        return {
            customer_id: LifecycleFacts(
                first_purchase=first.get(customer_id),
                last_activity=last.get(customer_id),
                orders_last_year=orders.get(customer_id, 0),
                csat_average=metrics[customer_id]["csat"] if customer_id in csat_answers else None,
                csat_answers=csat_answers.get(customer_id, 0),
                open_complaints=int(complaints.get(customer_id, 0)),
            )
            for customer_id in metrics
        }

    def _local_day(self, moment: datetime | None) -> date | None:
        """The business day of a stored instant (SQLite hands back naive UTC)."""
        if moment is None:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(self._tz).date()

    async def insight(
        self, actor: Actor, code: str, *, months: int = 12, recent_limit: int = 5
    ) -> CustomerInsightOut:
        """Value score, tier move, lifecycle stage and CSAT of the last `months` of a customer in scope."""
        require_staff(actor, doing="see customer insights")
        since = self._clock.now() - timedelta(days=round(months * 365 / 12))
        async with self._uow() as uow:
            session = uow.session
            customer = await visible_customer(session, actor, code)
            answered = (
                Survey.customer_id == customer.id,
                Survey.status == SurveyStatus.ANSWERED.value,
                Survey.score.is_not(None),
                Survey.answered_at >= since,
            )
            average, count = (
                await session.execute(select(func.avg(Survey.score), func.count()).where(*answered))
            ).one()
            recent = (
                (
                    await session.execute(
                        select(Survey)
                        .where(*answered)
                        .order_by(Survey.answered_at.desc(), Survey.id.desc())
                        .limit(max(1, min(recent_limit, 50)))
                    )
                )
                .scalars()
                .all()
            )
            comment = (
                await session.execute(
                    select(Survey.comment, Survey.answered_at)
                    .where(*answered, Survey.comment.is_not(None), Survey.comment != "")
                    .order_by(Survey.answered_at.desc(), Survey.id.desc())
                    .limit(1)
                )
            ).first()
            return CustomerInsightOut(
                code=customer.code,
                value_score=customer.value_score,
                tier=customer.tier,
                previous_tier=customer.previous_tier,
                lifecycle_stage=customer.lifecycle_stage,
                csat_average=round(float(average), 2) if average is not None else None,
                csat_count=int(count),
                last_comment=comment[0] if comment else None,
                last_comment_at=comment[1].replace(tzinfo=comment[1].tzinfo or UTC) if comment else None,
                recent=[
                    SurveyOut(
                        id=survey.id,
                        service_request_ref=ref("SR", survey.service_request_id)
                        if survey.service_request_id
                        else None,
                        customer_code=customer.code,
                        status=survey.status,
                        score=survey.score,
                        comment=survey.comment,
                        created_at=survey.created_at,
                        answered_at=survey.answered_at,
                    )
                    for survey in recent
                ],
            )

    async def ranking(
        self, actor: Actor, *, limit: int = 10, moved: str | None = None, tier: str | None = None
    ) -> builtins.list[CustomerRankOut]:
        """Customers in scope by value score, best first; `moved="down"`/`"up"`: only those whose tier is
        below/above the one they had before the last recompute. Scoped like `list`."""
        require_role(actor, Role.MANAGER, Role.REP, doing="rank customers")
        if moved not in (None, "down", "up"):
            raise ValidationFailed("moved must be 'down' or 'up'.", field="moved")
        if tier is not None and tier not in {item.value for item in ValueTier}:
            raise ValidationFailed(f"Unknown tier '{tier[:20]}'.", field="tier")
        limit = max(1, min(limit, 100))
        conditions: builtins.list[ColumnElement[bool]] = [customer_scope(actor)]
        if tier:
            conditions.append(Customer.tier == tier)
        if moved:
            conditions += [Customer.previous_tier.is_not(None), Customer.previous_tier != Customer.tier]
        query = (
            select(Customer, User.username)
            .outerjoin(User, User.id == Customer.owner_id)
            .where(*conditions)
            .order_by(Customer.value_score.desc(), Customer.name, Customer.id)
        )
        async with self._uow() as uow:
            rows = (await uow.session.execute(query if moved else query.limit(limit))).tuples().all()
        check = moved_down if moved == "down" else moved_up
        picked = [(customer, owner) for customer, owner in rows if not moved or check(customer.previous_tier,
                                                                                        customer.tier)]
        return [
            CustomerRankOut(
                rank=index,
                code=customer.code,
                name=customer.name,
                owner=owner,
                value_score=customer.value_score,
                tier=customer.tier,
                previous_tier=customer.previous_tier,
                lifecycle_stage=customer.lifecycle_stage,
            )
            for index, (customer, owner) in enumerate(picked[:limit], start=1)
        ]


def _contact_out(contact: Contact, customer_code: str) -> ContactOut:
    return ContactOut(
        id=contact.id,
        customer_code=customer_code,
        name=contact.name,
        title=contact.title,
        phone=contact.phone,
        email=contact.email,
        lang=contact.lang,
    )


__all__: Sequence[str] = ("CustomerService", "customer_out", "visible_customer")
