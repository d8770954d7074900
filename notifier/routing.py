"""Routing: which committed events become which messages, to whom, with what facts in them.

Each route reads the facts the message needs once, when the event is routed, and stores them with the
notification: a retry hours later says what was true when it happened, and rendering needs no database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import (
    Customer,
    InstalledProduct,
    KbArticle,
    OutboxEvent,
    Product,
    RepairOrder,
    RepairOrderChange,
    ServiceRequest,
    User,
)
from core.domain.enums import RepairStatus, Role
from core.kb_index import KbDocument, KbIndex
from core.links import VisitLinks, visit_link_expiry
from core.services.base import ref
from core.services.linking import CODE_TTL
from core.settings import Settings
from notifier.types import CHAT_CHANNELS, EMAIL, SMS


@dataclass(frozen=True, slots=True)
class Target:
    """A CRM user, or a bare address on one channel (a linking code, a customer with no account)."""

    user_id: int | None = None
    channel: str | None = None
    address: str = ""
    lang: str | None = None

    @property
    def key(self) -> str:
        """A stable name for the dedupe key."""
        return f"u{self.user_id}" if self.user_id is not None else f"{self.channel}:{self.address.lower()}"


@dataclass(frozen=True, slots=True)
class Message:
    """One message decided by a route, before it is addressed to channels.

    `channels=None`: the first reachable channel in the person's order, falling back along it. A tuple:
    each of those channels the person is reachable on, with no fallback (a receipt by email *and* chat).
    """

    kind: str
    target: Target
    context: dict[str, Any]
    urgent: bool = False
    channels: tuple[str, ...] | None = None
    expires_at: datetime | None = None
    purpose: str = field(default="")


Route = Callable[[AsyncSession, OutboxEvent], Awaitable[list[Message]]]

# The settings of the notifier routing right now: a route that needs configuration (where survey links
# point, how they are signed) reads it here instead of from global state.
_routing_settings: ContextVar[Settings | None] = ContextVar("crmbot_routing_settings", default=None)


def routing_settings() -> Settings:
    """The settings of the notifier that is routing this event (only inside a route)."""
    settings = _routing_settings.get()
    if settings is None:
        raise RuntimeError("routing_settings() is only available while a Notifier routes events")
    return settings


@contextmanager
def routing_with(settings: Settings) -> Iterator[None]:
    """Routes called inside see `settings` through routing_settings()."""
    token = _routing_settings.set(settings)
    try:
        yield
    finally:
        _routing_settings.reset(token)


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def _parse_iso(value: str) -> datetime | None:
    """A time-zone-aware moment from an event's ISO text; None for anything else."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


async def customer_targets(
    session: AsyncSession, customer_id: int, requester_id: int | None = None
) -> list[Target]:
    """Who hears about a customer's affairs: the customer user who asked, else the customer's users, else
    the customer's email on file."""
    if requester_id is not None:
        requester = await session.get(User, requester_id)
        if requester is not None and requester.role == Role.CUSTOMER and requester.active:
            return [Target(user_id=requester.id)]
    users = (
        await session.execute(
            select(User.id)
            .where(User.customer_id == customer_id, User.role == Role.CUSTOMER, User.active.is_(True))
            .order_by(User.id)
        )
    ).scalars()
    targets = [Target(user_id=user_id) for user_id in users]
    if targets:
        return targets
    customer = await session.get(Customer, customer_id)
    if customer is not None and customer.email:
        return [Target(channel=EMAIL, address=customer.email)]
    return []


async def request_facts(
    session: AsyncSession, request_id: int
) -> tuple[ServiceRequest, dict[str, Any]] | None:
    """A request and the facts messages about it show (ticket, subject, customer, product, assignee)."""
    request = await session.get(ServiceRequest, request_id)
    if request is None:
        return None
    customer = await session.get(Customer, request.customer_id)
    product_name = serial = ""
    if request.installed_product_id is not None:
        unit = await session.get(InstalledProduct, request.installed_product_id)
        if unit is not None:
            serial = unit.serial_number
            product = await session.get(Product, unit.product_id)
            product_name = product.name if product is not None else ""
    assignee_name = ""
    if request.assignee_id is not None:
        assignee = await session.get(User, request.assignee_id)
        assignee_name = assignee.name if assignee is not None else ""
    facts: dict[str, Any] = {
        "ticket": ref("SR", request.id),
        "subject": request.subject,
        "kind": request.kind,
        "severity": request.severity,
        "product": product_name,
        "serial": serial,
        "customer_name": customer.name if customer is not None else "",
        "response_due": _iso(request.response_due_at),
        "assignee_name": assignee_name,
        "resolution": request.resolution or "",
    }
    return request, facts


async def _to_customer(
    session: AsyncSession, request: ServiceRequest, kind: str, context: dict[str, Any], **options: Any
) -> list[Message]:
    return [
        Message(kind=kind, target=target, context=context, **options)
        for target in await customer_targets(session, request.customer_id, request.requester_id)
    ]


async def request_opened(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The customer's receipt: by email always (a record to keep) and in chat when the request did not
    come from a chat, where the assistant's own answer already acknowledged it."""
    found = await request_facts(session, event.aggregate_id)
    if found is None:
        return []
    request, facts = found
    channels: tuple[str, ...] = (
        (EMAIL,) if request.channel in (*CHAT_CHANNELS, "terminal", "rest") else (EMAIL, *CHAT_CHANNELS)
    )
    messages = []
    for target in await customer_targets(session, request.customer_id, request.requester_id):
        # One chat channel is enough: the first of the person's chat channels that is reachable wins.
        messages.append(Message(kind="request_acknowledged", target=target, context=facts, channels=channels))
    return messages


async def request_assigned(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The new assignee learns of the case (unless they took it themselves or a dispatch card covers it);
    the customer learns someone is on it."""
    found = await request_facts(session, event.aggregate_id)
    if found is None:
        return []
    request, facts = found
    assignee_id = int(event.payload.get("assignee_id") or 0)
    messages: list[Message] = []
    assignee = await session.get(User, assignee_id)
    dispatched = (
        await session.execute(
            select(RepairOrder.id).where(
                RepairOrder.service_request_id == request.id,
                RepairOrder.technician_id == assignee_id,
                RepairOrder.status.in_([RepairStatus.DISPATCHED, RepairStatus.ACCEPTED]),
            )
        )
    ).first()
    if assignee is not None and assignee_id != event.payload.get("actor_id") and dispatched is None:
        staff_facts = {**facts, "due": facts["response_due"], "recipient_name": assignee.name}
        messages.append(
            Message(kind="request_assigned", target=Target(user_id=assignee_id), context=staff_facts)
        )
    customer_facts = {
        **facts,
        "to_status": "assigned",
        "assignee_name": assignee.name if assignee is not None else "",
    }
    messages += await _to_customer(session, request, "request_status", customer_facts)
    return messages


async def request_status_changed(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The customer hears of every move of their case."""
    found = await request_facts(session, event.aggregate_id)
    if found is None:
        return []
    request, facts = found
    to_status = str(event.payload.get("to_status") or request.status)
    return await _to_customer(session, request, "request_status", {**facts, "to_status": to_status})


async def request_resolved(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """ "Resolved, here is what was done" — unless a completed repair said it already (job_completed)."""
    found = await request_facts(session, event.aggregate_id)
    if found is None:
        return []
    request, facts = found
    by_repair = (
        await session.execute(
            select(RepairOrder.id).where(
                RepairOrder.service_request_id == request.id,
                RepairOrder.status == RepairStatus.COMPLETED,
                RepairOrder.completed_at == request.resolved_at,
            )
        )
    ).first()
    if by_repair is not None:
        return []
    context = {**facts, "to_status": "resolved", "resolution": str(event.payload.get("resolution") or "")}
    return await _to_customer(session, request, "request_status", context)


async def request_closed(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """A closing thank-you."""
    found = await request_facts(session, event.aggregate_id)
    if found is None:
        return []
    request, facts = found
    return await _to_customer(session, request, "request_status", {**facts, "to_status": "closed"})


async def _order_facts(
    session: AsyncSession, order_id: int
) -> tuple[RepairOrder, ServiceRequest, dict[str, Any]] | None:
    order = await session.get(RepairOrder, order_id)
    if order is None:
        return None
    found = await request_facts(session, order.service_request_id)
    if found is None:
        return None
    request, facts = found
    technician = await session.get(User, order.technician_id) if order.technician_id else None
    facts = {
        **facts,
        "job": ref("RO", order.id),
        "technician_name": technician.name if technician is not None else "",
        "scheduled_at": _iso(order.scheduled_at or request.preferred_time),
    }
    return order, request, facts


async def repair_dispatched(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The technician's dispatch card: everything needed to go, and an Accept button."""
    found = await _order_facts(session, event.aggregate_id)
    if found is None:
        return []
    order, request, facts = found
    if order.technician_id is None:
        return []
    technician = await session.get(User, order.technician_id)
    customer = await session.get(Customer, request.customer_id)
    warranty, warranty_ends_on = "unknown", ""
    product_id: int | None = None
    if request.installed_product_id is not None:
        unit = await session.get(InstalledProduct, request.installed_product_id)
        if unit is not None:
            product_id = unit.product_id
            today = event.occurred_at.date()
            warranty = "in" if unit.warranty_ends_on >= today else "out"
            warranty_ends_on = unit.warranty_ends_on.isoformat()
    articles = await defect_articles(session, request, product_id)
    context = {
        **facts,
        "address": customer.address if customer is not None else "",
        "phone": (customer.phone or "") if customer is not None else "",
        "warranty": warranty,
        "warranty_ends_on": warranty_ends_on,
        "symptom": request.description or request.subject,
        "articles": articles,
        "recipient_name": technician.name if technician is not None else "",
    }
    return [Message(kind="dispatch_card", target=Target(user_id=order.technician_id), context=context)]


# How many articles a dispatch card lists, and how many candidates the symptom is matched against.
CARD_ARTICLES = 3
SYMPTOM_POOL = 400
SYMPTOM_MIN_SCORE = 20.0


async def defect_articles(
    session: AsyncSession, request: ServiceRequest, product_id: int | None
) -> list[dict[str, str]]:
    """The articles that may help on site: the one the request came from, then those whose symptoms match
    the customer's description (among the product's articles and the general ones), then the product's
    most often successful ones."""
    chosen: list[KbArticle] = []
    if request.kb_article_id is not None:
        article = await session.get(KbArticle, request.kb_article_id)
        if article is not None:
            chosen.append(article)
    product_code = None
    conditions: list[ColumnElement[bool]] = [KbArticle.product_id.is_(None)]
    if product_id is not None:
        product = await session.get(Product, product_id)
        product_code = product.code if product is not None else None
        conditions.append(KbArticle.product_id == product_id)
    # A small index over the articles that can apply to this product: the description is matched the way
    # the knowledge search matches a customer's words (typos, synonyms, error codes, Chinese).
    pool = list(
        (
            await session.execute(
                select(KbArticle)
                .where(or_(*conditions))
                .order_by(KbArticle.product_id.is_(None), KbArticle.solved_count.desc(), KbArticle.id)
                .limit(SYMPTOM_POOL)
            )
        ).scalars()
    )
    symptom = f"{request.subject}\n{request.description or ''}"
    if pool and symptom.strip():
        index = KbIndex()
        by_id = {article.id: article for article in pool}
        for article in pool:
            index.add(
                KbDocument(
                    id=article.id,
                    code=article.code,
                    title=article.title,
                    symptoms=article.symptoms,
                    solution=article.solution,
                    lang=article.lang,
                    product_code=product_code if article.product_id == product_id else None,
                )
            )
        for hit in index.search(symptom, CARD_ARTICLES + 1, product_code=product_code):
            if hit.score >= SYMPTOM_MIN_SCORE and hit.id in by_id:
                chosen.append(by_id[hit.id])
    chosen += [article for article in pool if product_id is not None and article.product_id == product_id]
    unique = list({article.id: article for article in chosen}.values())
    return [{"code": article.code, "title": article.title} for article in unique[:CARD_ARTICLES]]


async def repair_accepted(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The customer learns who comes, and when."""
    found = await _order_facts(session, event.aggregate_id)
    if found is None:
        return []
    _, request, facts = found
    return await _to_customer(session, request, "job_accepted", facts)


async def _dispatcher(session: AsyncSession, order_id: int) -> int | None:
    """Who last dispatched the job (None when it was never dispatched by a person on record)."""
    found: int | None = (
        await session.execute(
            select(RepairOrderChange.actor_id)
            .where(RepairOrderChange.repair_order_id == order_id, RepairOrderChange.action == "dispatch")
            .order_by(RepairOrderChange.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return found


async def repair_declined(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The job goes back to whoever dispatched it (else the first manager up from the request), with the
    technician's reason."""
    found = await _order_facts(session, event.aggregate_id)
    if found is None:
        return []
    order, request, facts = found
    dispatcher = await _dispatcher(session, order.id)
    if dispatcher is None:
        from core.services.sla import escalation_chain

        chain = await escalation_chain(session, request)
        dispatcher = chain[0].id if chain else None
    technician = await session.get(User, int(event.payload.get("technician_id") or 0))
    context = {
        **facts,
        "technician_name": technician.name if technician is not None else "",
        "reason": str(event.payload.get("reason") or ""),
    }
    if dispatcher is None:
        return []
    return [Message(kind="job_declined", target=Target(user_id=dispatcher), context=context)]


async def repair_completed(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The customer's summary: what was done and what it costs."""
    found = await _order_facts(session, event.aggregate_id)
    if found is None:
        return []
    order, request, facts = found
    context = {
        **facts,
        "summary": order.work_summary,
        "in_warranty": bool(order.in_warranty),
        "total_charge": f"{order.total_charge:.2f}",
        "currency": order.currency,
    }
    return await _to_customer(session, request, "job_completed", context)


async def repair_departed(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The customer learns the technician is on the way, and when they should arrive."""
    found = await _order_facts(session, event.aggregate_id)
    if found is None:
        return []
    _, request, facts = found
    context = {**facts, "eta": str(event.payload.get("eta") or "")}
    # Urgent: an arrival time is worth nothing after the arrival, so quiet hours do not hold it back.
    return await _to_customer(session, request, "job_on_the_way", context, urgent=True)


async def reschedule_proposed(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The customer is asked to confirm a new visit time, with [Confirm] [Another time] in chat and a signed
    link to the visit page (crmbot/visit_page.py) for email and SMS."""
    found = await _order_facts(session, event.aggregate_id)
    if found is None:
        return []
    order, request, facts = found
    proposed = str(event.payload.get("proposed_at") or "")
    targets = await customer_targets(session, request.customer_id, request.requester_id)
    link = ""
    moment = _parse_iso(proposed)
    # The page answers as a customer user: a customer known only by its email on file gets no link.
    if moment is not None and any(target.user_id is not None for target in targets):
        # From the event, not the clock: a retry routes the same link.
        expires = visit_link_expiry(moment, event.occurred_at)
        link = VisitLinks.from_settings(routing_settings()).url(order.id, moment, expires)
    context = {
        **facts,
        "proposed_at": proposed,
        "previous_at": str(event.payload.get("previous_at") or ""),
        "link": link,
    }
    return [Message(kind="job_time_proposed", target=target, context=context) for target in targets]


async def reschedule_answered(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The technician, whoever proposed the time and whoever dispatched the job hear the customer's answer."""
    found = await _order_facts(session, event.aggregate_id)
    if found is None:
        return []
    order, _request, facts = found
    payload = event.payload
    dispatcher = await _dispatcher(session, order.id)
    accepted = bool(payload.get("accepted"))
    wanted = [order.technician_id, payload.get("proposed_by_id")] + ([] if accepted else [dispatcher])
    recipients = list(dict.fromkeys(int(user_id) for user_id in wanted if user_id))
    context = {
        **facts,
        "proposed_at": str(payload.get("proposed_at") or ""),
        "suggested_at": str(payload.get("suggested_at") or ""),
        "comment": str(payload.get("comment") or ""),
    }
    kind = "job_time_confirmed" if accepted else "job_time_refused"
    messages = []
    for user_id in recipients:
        user = await session.get(User, user_id)
        if user is None or user.role == Role.CUSTOMER:
            continue
        messages.append(
            Message(
                kind=kind, target=Target(user_id=user_id), context={**context, "recipient_name": user.name}
            )
        )
    return messages


async def link_code(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """A one-time code, to the address the person gave; urgent (they are waiting), dead after its TTL."""
    payload = event.payload
    destination, code = str(payload.get("destination") or ""), str(payload.get("code") or "")
    if not destination or not code or code == "******":
        return []
    channel = EMAIL if "@" in destination else SMS
    lang = str(payload.get("lang") or "en")
    context = {
        "code": code,
        "channel": str(payload.get("channel") or ""),
        "minutes": int(CODE_TTL.total_seconds() // 60),
    }
    return [
        Message(
            kind="link_code",
            target=Target(channel=channel, address=destination, lang=lang),
            context=context,
            urgent=True,
            expires_at=event.occurred_at + CODE_TTL,
        )
    ]


ROUTES: dict[str, Route] = {
    "ServiceRequestOpened": request_opened,
    "ServiceRequestAssigned": request_assigned,
    "ServiceRequestStatusChanged": request_status_changed,
    "ServiceRequestResolved": request_resolved,
    "ServiceRequestClosed": request_closed,
    "RepairDispatched": repair_dispatched,
    "RepairAccepted": repair_accepted,
    "RepairDeclined": repair_declined,
    "RepairCompleted": repair_completed,
    "RepairDeparted": repair_departed,
    "RepairRescheduleProposed": reschedule_proposed,
    "RepairRescheduleAnswered": reschedule_answered,
    "LinkCodeRequested": link_code,
}

# Payload fields that must not outlive routing in the outbox (they now live on the notification only).
SECRET_FIELDS: dict[str, tuple[str, ...]] = {"LinkCodeRequested": ("code",)}
