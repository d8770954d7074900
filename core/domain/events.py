"""Domain events: facts the rest of the system (notifier, rules) reacts to after commit."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    """Base: `aggregate` names the table family, `aggregate_id` the row."""

    aggregate: ClassVar[str] = ""
    aggregate_id: int
    actor_id: int | None = None

    @property
    def name(self) -> str:
        """The event type stored in the outbox."""
        return type(self).__name__

    def payload(self) -> dict[str, Any]:
        """A JSON-safe dict of the event's fields."""
        return {key: _json_safe(value) for key, value in dataclasses.asdict(self).items()}


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


@dataclass(frozen=True, kw_only=True)
class CustomerCreated(DomainEvent):
    """A customer was created (by API, import or chat)."""

    aggregate: ClassVar[str] = "customer"
    code: str


@dataclass(frozen=True, kw_only=True)
class CustomerTierChanged(DomainEvent):
    """The value model moved a customer to another tier."""

    aggregate: ClassVar[str] = "customer"
    old_tier: str
    new_tier: str
    score: float


@dataclass(frozen=True, kw_only=True)
class CustomerLifecycleChanged(DomainEvent):
    """The lifecycle rules moved a customer to another stage (e.g. active → at_risk)."""

    aggregate: ClassVar[str] = "customer"
    old_stage: str
    new_stage: str


@dataclass(frozen=True, kw_only=True)
class InstalledProductRegistered(DomainEvent):
    """A unit was delivered/registered at a customer."""

    aggregate: ClassVar[str] = "installed_product"
    serial_number: str
    customer_id: int
    warranty_ends_on: date


@dataclass(frozen=True, kw_only=True)
class ServiceRequestOpened(DomainEvent):
    """A repair request or complaint was opened."""

    aggregate: ClassVar[str] = "service_request"
    customer_id: int
    requester_id: int | None
    kind: str
    severity: str
    channel: str


@dataclass(frozen=True, kw_only=True)
class ServiceRequestAssigned(DomainEvent):
    """Someone became responsible for a request."""

    aggregate: ClassVar[str] = "service_request"
    assignee_id: int
    customer_id: int


@dataclass(frozen=True, kw_only=True)
class ServiceRequestStatusChanged(DomainEvent):
    """Any other status move (in progress, on hold, reopened…)."""

    aggregate: ClassVar[str] = "service_request"
    customer_id: int
    from_status: str
    to_status: str


@dataclass(frozen=True, kw_only=True)
class ServiceRequestEscalated(DomainEvent):
    """A request went up the organisation."""

    aggregate: ClassVar[str] = "service_request"
    customer_id: int
    level: int
    escalated_to_id: int | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class ServiceRequestResolved(DomainEvent):
    """Work on a request is done."""

    aggregate: ClassVar[str] = "service_request"
    customer_id: int
    resolution: str


@dataclass(frozen=True, kw_only=True)
class ServiceRequestClosed(DomainEvent):
    """The case is closed for good (a survey may follow)."""

    aggregate: ClassVar[str] = "service_request"
    customer_id: int


@dataclass(frozen=True, kw_only=True)
class RepairDispatched(DomainEvent):
    """A repair order was sent to a technician."""

    aggregate: ClassVar[str] = "repair_order"
    service_request_id: int
    technician_id: int
    scheduled_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class RepairAccepted(DomainEvent):
    """The technician accepted the job."""

    aggregate: ClassVar[str] = "repair_order"
    service_request_id: int
    technician_id: int
    scheduled_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class RepairDeclined(DomainEvent):
    """The technician declined the job."""

    aggregate: ClassVar[str] = "repair_order"
    service_request_id: int
    technician_id: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class RepairStarted(DomainEvent):
    """The technician is on site / working."""

    aggregate: ClassVar[str] = "repair_order"
    service_request_id: int
    technician_id: int


@dataclass(frozen=True, kw_only=True)
class RepairCompleted(DomainEvent):
    """Work finished; charge computed."""

    aggregate: ClassVar[str] = "repair_order"
    service_request_id: int
    technician_id: int
    in_warranty: bool
    total_charge: Decimal
    currency: str


@dataclass(frozen=True, kw_only=True)
class RepairDeparted(DomainEvent):
    """The technician is on the way to the customer and expects to arrive at `eta`."""

    aggregate: ClassVar[str] = "repair_order"
    service_request_id: int
    technician_id: int
    eta: datetime | None


@dataclass(frozen=True, kw_only=True)
class RepairRescheduleProposed(DomainEvent):
    """A new visit time was proposed; the customer is asked to confirm it."""

    aggregate: ClassVar[str] = "repair_order"
    service_request_id: int
    technician_id: int
    proposed_at: datetime
    previous_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class RepairRescheduleAnswered(DomainEvent):
    """The customer confirmed or refused a proposed visit time (and may have suggested another)."""

    aggregate: ClassVar[str] = "repair_order"
    service_request_id: int
    technician_id: int
    accepted: bool
    proposed_at: datetime
    proposed_by_id: int | None
    suggested_at: datetime | None
    comment: str


@dataclass(frozen=True, kw_only=True)
class RepairCancelled(DomainEvent):
    """The repair order was cancelled."""

    aggregate: ClassVar[str] = "repair_order"
    service_request_id: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class PartStockLow(DomainEvent):
    """A part at a station fell to or below its minimum."""

    aggregate: ClassVar[str] = "part_stock"
    station_id: int
    part_id: int
    quantity: int
    min_quantity: int


@dataclass(frozen=True, kw_only=True)
class OpportunityCreated(DomainEvent):
    """A new deal entered the pipeline."""

    aggregate: ClassVar[str] = "opportunity"
    customer_id: int
    owner_id: int
    stage: str
    amount: Decimal


@dataclass(frozen=True, kw_only=True)
class OpportunityStageChanged(DomainEvent):
    """A deal moved stage (including won and lost)."""

    aggregate: ClassVar[str] = "opportunity"
    customer_id: int
    owner_id: int
    from_stage: str
    to_stage: str
    amount: Decimal


@dataclass(frozen=True, kw_only=True)
class OpportunityAmountChanged(DomainEvent):
    """A deal's amount changed."""

    aggregate: ClassVar[str] = "opportunity"
    customer_id: int
    owner_id: int
    old_amount: Decimal
    new_amount: Decimal


@dataclass(frozen=True, kw_only=True)
class VisitLogged(DomainEvent):
    """A rep recorded a visit."""

    aggregate: ClassVar[str] = "visit"
    customer_id: int
    rep_id: int


@dataclass(frozen=True, kw_only=True)
class TaskCreated(DomainEvent):
    """A follow-up or care task was created."""

    aggregate: ClassVar[str] = "task"
    assignee_id: int | None
    due_at: datetime | None
    kind: str


@dataclass(frozen=True, kw_only=True)
class SurveyAnswered(DomainEvent):
    """A customer answered a satisfaction survey."""

    aggregate: ClassVar[str] = "survey"
    customer_id: int
    score: int
    service_request_id: int | None
    technician_id: int | None


@dataclass(frozen=True, kw_only=True)
class LinkCodeRequested(DomainEvent):
    """A linking code was issued for a destination that belongs to a user; the notifier delivers it.

    The code travels in the outbox payload on purpose: the notifier must put it in the message, the row
    is marked processed once delivered, and the code is dead 10 minutes after issue anyway. Only its
    hash is kept on the link_codes row.
    """

    aggregate: ClassVar[str] = "link_code"
    destination: str
    channel: str
    code: str
    lang: str


# --- raised by the scheduler's sweeps -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WarrantyExpiring(DomainEvent):
    """A unit's warranty ends soon: `stage` is the reminder (30 or 7 days before)."""

    aggregate: ClassVar[str] = "installed_product"
    customer_id: int
    serial_number: str
    ends_on: date
    days_left: int
    stage: int


@dataclass(frozen=True, kw_only=True)
class MaintenanceDue(DomainEvent):
    """A unit's periodic maintenance falls due on `due_on`."""

    aggregate: ClassVar[str] = "installed_product"
    customer_id: int
    serial_number: str
    due_on: date


@dataclass(frozen=True, kw_only=True)
class TaskDue(DomainEvent):
    """An open follow-up task is due today."""

    aggregate: ClassVar[str] = "task"
    assignee_id: int
    due_at: datetime


@dataclass(frozen=True, kw_only=True)
class ServiceRequestSlaAtRisk(DomainEvent):
    """Most of a request's response or resolution time is gone: `target` is "response" or "resolution"."""

    aggregate: ClassVar[str] = "service_request"
    customer_id: int
    target: str
    due_at: datetime
    assignee_id: int | None


@dataclass(frozen=True, kw_only=True)
class ServiceRequestSlaBreached(DomainEvent):
    """A request missed its response or resolution target (the escalation follows as its own event)."""

    aggregate: ClassVar[str] = "service_request"
    customer_id: int
    target: str
    due_at: datetime
    assignee_id: int | None


@dataclass(frozen=True, kw_only=True)
class SurveyDue(DomainEvent):
    """A satisfaction survey is ready to be sent to the customer."""

    aggregate: ClassVar[str] = "survey"
    customer_id: int
    recipient_id: int | None
    service_request_id: int | None
    expires_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class DealStalled(DomainEvent):
    """An open deal has not changed for `days` days."""

    aggregate: ClassVar[str] = "opportunity"
    customer_id: int
    owner_id: int
    days: int
    amount: Decimal


@dataclass(frozen=True, kw_only=True)
class KeyCustomerNotVisited(DomainEvent):
    """A customer of a top tier has had no visit for `days` days."""

    aggregate: ClassVar[str] = "customer"
    owner_id: int | None
    tier: str
    days: int


@dataclass(frozen=True, kw_only=True)
class DigestDue(DomainEvent):
    """A manager's morning digest for `day` (their local date) is due."""

    aggregate: ClassVar[str] = "user"
    day: date


@dataclass(frozen=True, kw_only=True)
class CareActivityDue(DomainEvent):
    """A care plan activity's message is due for a customer (`message` is the notification kind)."""

    aggregate: ClassVar[str] = "customer"
    activity: str
    message: str
    stage: str
