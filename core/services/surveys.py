"""Satisfaction surveys: one per case, answered 1–5 with an optional comment."""

from __future__ import annotations

import builtins
from datetime import timedelta

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import Actor, customer_scope, require_role
from core.db.models import Customer, RepairOrder, ServiceRequest, Survey
from core.domain.enums import RequestStatus, Role, SurveyStatus
from core.domain.events import SurveyAnswered
from core.errors import Conflict, InvalidTransition, NotFound, ValidationFailed
from core.schemas import Page, SurveyOut
from core.services.base import Service, fetch_page, parse_ref, ref

SURVEY_LIFETIME = timedelta(days=14)


class SurveyService(Service):
    """Creating surveys for closed cases and taking the customer's answer."""

    async def create_for_request(
        self, actor: Actor, reference: str | int, *, delay: timedelta = timedelta(0)
    ) -> SurveyOut:
        """Create the survey of a resolved or closed request (idempotent: one survey per case)."""
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
            technician_id = (
                await session.execute(
                    select(RepairOrder.technician_id)
                    .where(RepairOrder.service_request_id == number)
                    .order_by(RepairOrder.id.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            now = self._clock.now()
            survey = Survey(
                service_request_id=number,
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

    async def answer(
        self, actor: Actor, reference: str | int, score: int, comment: str | None = None
    ) -> SurveyOut:
        """Record a customer's rating of their case (1–5)."""
        if not 1 <= score <= 5:
            raise ValidationFailed("The rating must be a whole number from 1 to 5.", field="score")
        number = parse_ref(reference, "SR")
        async with self._uow() as uow:
            session = uow.session
            survey = (
                await session.execute(
                    select(Survey)
                    .join(Customer, Customer.id == Survey.customer_id)
                    .where(Survey.service_request_id == number, customer_scope(actor))
                )
            ).scalar_one_or_none()
            if survey is None or (actor.is_staff and not actor.is_admin):
                raise NotFound(f"There is no survey to answer for {ref('SR', number)}.")
            now = self._clock.now()
            if survey.status == SurveyStatus.ANSWERED:
                raise Conflict(f"{ref('SR', number)} was already rated {survey.score}/5. Thank you!")
            if survey.expires_at is not None and survey.expires_at < now:
                survey.status = SurveyStatus.EXPIRED.value
                await uow.commit()
                raise InvalidTransition(f"The survey for {ref('SR', number)} has expired.")
            survey.score, survey.comment = score, (comment or "").strip()[:2000] or None
            survey.status, survey.answered_at = SurveyStatus.ANSWERED.value, now
            uow.emit(
                SurveyAnswered(
                    aggregate_id=survey.id,
                    actor_id=actor.user_id,
                    customer_id=survey.customer_id,
                    score=score,
                    service_request_id=number,
                    technician_id=survey.technician_id,
                )
            )
            await uow.commit()
            return await self._out(session, survey)

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

    async def _out(self, session: AsyncSession, survey: Survey) -> SurveyOut:
        customer = await session.get(Customer, survey.customer_id)
        assert customer is not None
        return _survey_out(survey, customer.code)


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
