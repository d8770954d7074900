"""Satisfaction surveys: the sweep that creates and sends them, and the message each one becomes.

The customer gets one message on their first reachable channel: in chat a question with five score buttons
(the assistant's `rate_service` takes the tap and then asks for a comment), by email and SMS a signed link
to the survey page (`crmbot/survey_page.py`). The same text carries the link in chat too, for a comment.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.container import Core
from core.db.models import Customer, InstalledProduct, OutboxEvent, Product, ServiceRequest, Survey, User
from core.domain.enums import SurveyStatus
from core.services.base import ref
from core.services.surveys import SurveyLinks
from notifier.routing import Message, Route, customer_targets, routing_settings
from notifier.scheduler import Sweep

KIND = "survey_invite"


def links() -> SurveyLinks:
    """The survey link signer of the notifier routing now (its settings: public URL and secret)."""
    return SurveyLinks.from_settings(routing_settings())


async def survey_due(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The survey, to the customer: score buttons in chat, a signed link by email and SMS."""
    survey = await session.get(Survey, event.aggregate_id)
    if survey is None or survey.status not in (SurveyStatus.PENDING, SurveyStatus.SENT):
        return []  # answered in chat before the message went out, or expired meanwhile
    if survey.service_request_id is None or survey.expires_at is None:
        return []
    request = await session.get(ServiceRequest, survey.service_request_id)
    if request is None:
        return []
    product = ""
    if request.installed_product_id is not None:
        unit = await session.get(InstalledProduct, request.installed_product_id)
        model = await session.get(Product, unit.product_id) if unit is not None else None
        product = model.name if model is not None else ""
    technician = await session.get(User, survey.technician_id) if survey.technician_id else None
    customer = await session.get(Customer, survey.customer_id)
    context: dict[str, Any] = {
        "ticket": ref("SR", request.id),
        "subject": request.subject,
        "product": product,
        "technician_name": technician.name if technician is not None else "",
        "customer_name": customer.name if customer is not None else "",
        "link": links().url(survey.id, survey.expires_at),
        "expires_at": survey.expires_at.isoformat(),
    }
    return [
        Message(kind=KIND, target=target, context=context, expires_at=survey.expires_at)
        for target in await customer_targets(session, survey.customer_id, survey.recipient_id)
    ]


async def sweep_surveys(core: Core, now: datetime) -> int:
    """Create, send and expire surveys as of `now` (see SurveyService.sweep)."""
    settings = core.settings
    return await core.surveys.sweep(
        now,
        delay=timedelta(hours=settings.survey_delay_hours),
        lifetime=timedelta(days=settings.survey_lifetime_days),
    )


ROUTES: dict[str, Route] = {"SurveyDue": survey_due}
SWEEPS: list[Sweep] = [Sweep("surveys", sweep_surveys)]
