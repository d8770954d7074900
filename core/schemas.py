"""Data shapes going in and out of core services (also the admin API's bodies and responses)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator

from core.domain.enums import (
    Channel,
    CustomerType,
    LifecycleStage,
    OpportunityStage,
    RequestKind,
    Role,
    Severity,
    WarrantyType,
)

Code = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"
    ),
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=300)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=10_000)]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9][0-9 ()-]{4,24}$")]
Lang = Annotated[str, StringConstraints(pattern=r"^(en|zh)$")]
T = TypeVar("T")


class Out(BaseModel):
    """Base of response shapes: built from ORM rows or dicts."""

    model_config = ConfigDict(from_attributes=True)


class In(BaseModel):
    """Base of input shapes: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


# --- organisation -------------------------------------------------------------------------------


class UserIn(In):
    """A new user."""

    username: Annotated[
        str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")
    ]
    role: Role
    name: Name | None = None
    email: EmailStr | None = None
    phone: Phone | None = None
    customer_code: Code | None = None
    manager: str | None = None
    department: Code | None = None
    lang: Lang = "en"
    timezone: str | None = None
    identities: list[str] = Field(default_factory=list)


class UserOut(Out):
    """A user as shown to admins."""

    id: int
    username: str
    name: str
    role: str
    email: str | None
    phone: str | None
    lang: str
    timezone: str | None
    customer_code: str | None = None
    manager: str | None = None
    identities: list[str] = Field(default_factory=list)


# --- customers ----------------------------------------------------------------------------------


class CustomerIn(In):
    """A customer to create."""

    code: Code
    name: Name
    type: CustomerType
    segment: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] = ""
    phone: Phone | None = None
    email: EmailStr | None = None
    address: ShortText = ""
    owner: str | None = None
    lifecycle_stage: LifecycleStage = LifecycleStage.NEW


class CustomerPatch(In):
    """Fields of a customer that may change."""

    name: Name | None = None
    type: CustomerType | None = None
    segment: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    phone: Phone | None = None
    email: EmailStr | None = None
    address: ShortText | None = None
    owner: str | None = None
    lifecycle_stage: LifecycleStage | None = None


class CustomerOut(Out):
    """A customer's profile."""

    id: int
    code: str
    name: str
    type: str
    segment: str
    lifecycle_stage: str
    owner: str | None
    phone: str | None
    email: str | None
    address: str
    value_score: float
    tier: str


class CustomerInsightOut(Out):
    """What the value model and surveys say about a customer: score, tier move, lifecycle and CSAT."""

    code: str
    value_score: float
    tier: str
    previous_tier: str | None
    lifecycle_stage: str
    csat_average: float | None
    csat_count: int
    last_comment: str | None
    last_comment_at: datetime | None
    # The latest answered surveys of the period, newest first.
    recent: list[SurveyOut] = Field(default_factory=list)


class CustomerRankOut(Out):
    """A customer in a value ranking (top customers, or those that moved tier)."""

    rank: int
    code: str
    name: str
    owner: str | None
    value_score: float
    tier: str
    previous_tier: str | None
    lifecycle_stage: str


class ContactIn(In):
    """A person at a customer."""

    name: Name
    title: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""
    phone: Phone | None = None
    email: EmailStr | None = None
    lang: Lang = "en"


class ContactOut(Out):
    """A contact."""

    id: int
    customer_code: str
    name: str
    title: str
    phone: str | None
    email: str | None
    lang: str


# --- installed base -----------------------------------------------------------------------------


class ProductIn(In):
    """A catalogue model."""

    code: Code
    name: Name
    category: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] = ""
    default_warranty_months: int = Field(default=12, ge=0, le=240)
    maintenance_interval_months: int | None = Field(default=None, ge=1, le=120)


class ProductOut(Out):
    """A catalogue model."""

    id: int
    code: str
    name: str
    category: str
    default_warranty_months: int
    maintenance_interval_months: int | None


class InstalledProductIn(In):
    """A delivery from the ERP: this serial is now at this customer."""

    serial_number: Code
    product_code: Code
    product_name: Name | None = None
    customer_code: Code
    sold_on: date
    warranty_months: int | None = Field(default=None, ge=0, le=240)
    warranty_type: WarrantyType = WarrantyType.STANDARD

    @field_validator("sold_on")
    @classmethod
    def _plausible_date(cls, value: date) -> date:
        if value.year < 1970:
            raise ValueError("sold_on is before 1970")
        return value


class InstalledProductOut(Out):
    """A unit at a customer with its warranty."""

    id: int
    serial_number: str
    product_code: str
    product_name: str
    customer_code: str
    customer_name: str
    sold_on: date
    warranty_months: int
    warranty_type: str
    warranty_ends_on: date
    in_warranty: bool
    days_left: int
    next_maintenance_on: date | None


class WarrantyOut(Out):
    """The contract shape of GET /api/v1/warranty/{serial}."""

    serial_number: str
    product: str
    customer: str
    warranty_type: str
    starts_on: date
    ends_on: date
    in_warranty: bool
    days_left: int


# --- service ------------------------------------------------------------------------------------


class ServiceRequestIn(In):
    """A new repair request or complaint."""

    customer_code: Code | None = None
    kind: RequestKind = RequestKind.REQUEST
    severity: Severity = Severity.MEDIUM
    channel: Channel = Channel.API
    subject: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    description: LongText = ""
    serial_number: Code | None = None
    kb_article_code: Code | None = None
    preferred_time: datetime | None = None

    @field_validator("preferred_time")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("preferred_time needs a timezone offset, e.g. 2026-12-01T09:00:00+08:00")
        return value


class TransitionIn(In):
    """Move a service request: assign, start, hold, escalate, resolve, close, reopen."""

    action: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
    comment: LongText = ""
    resolution: LongText | None = None
    assignee: str | None = None


class HistoryEntryOut(Out):
    """One step in a case's history."""

    at: datetime
    actor: str | None
    action: str
    from_status: str | None
    to_status: str | None
    comment: str


class ServiceRequestOut(Out):
    """A service request summary."""

    id: int
    ref: str
    customer_code: str
    customer_name: str
    kind: str
    severity: str
    channel: str
    status: str
    subject: str
    description: str
    serial_number: str | None
    kb_article_code: str | None
    assignee: str | None
    preferred_time: datetime | None
    response_due_at: datetime | None
    resolution_due_at: datetime | None
    resolution: str | None
    escalation_level: int
    created_at: datetime
    updated_at: datetime


class AttachmentOut(Out):
    """A file attached to a request (the bytes are fetched separately)."""

    id: int
    filename: str
    content_type: str
    size: int
    channel: str
    created_at: datetime


class ServiceRequestDetail(ServiceRequestOut):
    """A service request with its history, repair orders and attachments."""

    history: list[HistoryEntryOut]
    repair_orders: list[str]
    attachments: list[AttachmentOut] = Field(default_factory=list)


class RepairOrderIn(In):
    """Dispatch field work for a service request."""

    service_request: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
    technician: str
    scheduled_at: datetime | None = None
    station_code: Code | None = None

    @field_validator("scheduled_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("scheduled_at needs a timezone offset")
        return value


class PartUsedIn(In):
    """A part consumed on a job."""

    part_code: Code
    quantity: int = Field(default=1, ge=1, le=1000)


class RepairActionIn(In):
    """Act on a repair order: accept, decline, start, complete, settle, cancel."""

    action: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
    comment: LongText = ""
    work_summary: LongText = ""
    labour_minutes: int = Field(default=0, ge=0, le=24 * 60)
    parts: list[PartUsedIn] = Field(default_factory=list, max_length=50)
    warranty_excluded: bool = False
    # depart: the expected arrival; reschedule: the proposed visit time; refuse_time: the customer's
    # suggestion (optional).
    eta: datetime | None = None
    scheduled_at: datetime | None = None

    @field_validator("eta", "scheduled_at")
    @classmethod
    def _aware_times(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("times need a timezone offset")
        return value


class RepairPartOut(Out):
    """A part line on a job."""

    part_code: str
    part_name: str
    quantity: int
    unit_price: Decimal


class RepairOrderOut(Out):
    """A repair order."""

    id: int
    ref: str
    service_request_ref: str
    customer_code: str
    technician: str | None
    station_code: str | None
    status: str
    scheduled_at: datetime | None
    accepted_at: datetime | None
    completed_at: datetime | None
    work_summary: str
    labour_minutes: int
    in_warranty: bool | None
    parts_charge: Decimal
    labour_charge: Decimal
    total_charge: Decimal
    currency: str
    parts: list[RepairPartOut]
    history: list[HistoryEntryOut]
    # Who and where, so a job list needs no further calls (field service).
    customer_name: str = ""
    address: str = ""
    product_name: str = ""
    serial_number: str | None = None
    subject: str = ""
    eta_at: datetime | None = None
    proposed_at: datetime | None = None


class PartOut(Out):
    """A spare part of the catalogue, as the field staff name it."""

    code: str
    name: str


class PartCheckOut(Out):
    """Whether a part a technician says they used exists, and how many their job's station holds."""

    part_code: str
    part_name: str | None  # None: no such part in the catalogue
    needed: int
    in_stock: int
    station_code: str | None


class TechnicianSuggestionOut(Out):
    """A technician who could take a request, and why (best first)."""

    username: str
    name: str
    station_code: str | None
    skill_match: str  # "product", "category" or "" (no matching skill)
    same_region: bool
    jobs_that_day: int
    open_jobs: int
    reasons: list[str]


# --- sales --------------------------------------------------------------------------------------


class VisitIn(In):
    """A visit a rep logs."""

    customer_code: Code
    visited_on: date
    kind: Annotated[str, StringConstraints(pattern=r"^(visit|call|meeting|email)$")] = "visit"
    contacts_met: list[Name] = Field(default_factory=list, max_length=20)
    summary: LongText = ""
    outcome: LongText = ""
    next_step: LongText = ""
    next_step_due: datetime | None = None

    @field_validator("next_step_due")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("next_step_due needs a timezone offset")
        return value


class VisitOut(Out):
    """A logged visit."""

    id: int
    customer_code: str
    customer_name: str
    rep: str
    visited_on: date
    kind: str
    contacts_met: list[str]
    summary: str
    outcome: str
    next_step: str
    follow_up_task_id: int | None = None


class UnvisitedCustomerOut(Out):
    """A key-tier customer with no visit (or meeting) for at least the watch window."""

    customer_code: str
    customer_name: str
    owner: str | None
    last_visited_on: date | None
    days: int


class TaskOut(Out):
    """A task."""

    id: int
    title: str
    kind: str
    status: str
    due_at: datetime | None
    assignee: str | None
    customer_code: str | None


class OpportunityIn(In):
    """A new deal."""

    customer_code: Code
    name: Name
    stage: OpportunityStage = OpportunityStage.QUALIFICATION
    amount: Decimal = Field(ge=0, le=Decimal("1e12"), decimal_places=2)
    probability: int | None = Field(default=None, ge=0, le=100)
    expected_close: date | None = None
    owner: str | None = None

    @field_validator("amount")
    @classmethod
    def _amount_in_cents(cls, value: Decimal | None) -> Decimal | None:
        return _cents(value)


def _cents(value: Decimal | None) -> Decimal | None:
    """Money is kept to the cent; say so at the edge rather than round silently later."""
    return None if value is None else value.quantize(Decimal("0.01"))


class OpportunityPatch(In):
    """A change to a deal; marking it lost needs a reason."""

    stage: OpportunityStage | None = None
    amount: Decimal | None = Field(default=None, ge=0, le=Decimal("1e12"), decimal_places=2)
    probability: int | None = Field(default=None, ge=0, le=100)
    expected_close: date | None = None
    name: Name | None = None
    lost_reason: LongText | None = None
    competitor: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    owner: str | None = None

    @field_validator("amount")
    @classmethod
    def _amount_in_cents(cls, value: Decimal | None) -> Decimal | None:
        return _cents(value)


class OpportunityChangeOut(Out):
    """One recorded change of a deal."""

    at: datetime
    actor: str | None
    field: str
    old_value: str | None
    new_value: str | None


class OpportunityOut(Out):
    """A deal."""

    id: int
    ref: str
    customer_code: str
    customer_name: str
    owner: str
    name: str
    stage: str
    amount: Decimal
    currency: str
    probability: int
    expected_close: date | None
    lost_reason: str | None
    competitor: str | None
    created_at: datetime
    updated_at: datetime


class OpportunityDetail(OpportunityOut):
    """A deal with its history."""

    history: list[OpportunityChangeOut]


class PipelineStageOut(Out):
    """One stage of the funnel."""

    stage: str
    count: int
    amount: Decimal
    weighted: Decimal


class PipelineOut(Out):
    """Deals in scope closing in a period: the funnel and the weighted forecast by month."""

    close_from: date | None
    close_to: date | None
    stages: list[PipelineStageOut]
    open_count: int
    open_amount: Decimal
    weighted_forecast: Decimal
    won_amount: Decimal
    forecast_by_month: dict[str, Decimal]


class PipelineRepOut(Out):
    """One rep's share of the pipeline report."""

    username: str
    name: str
    open_count: int
    open_amount: Decimal
    weighted: Decimal
    won_count: int
    won_amount: Decimal


class PipelineConversionOut(Out):
    """Of the deals that reached `stage`, how many got further (`advanced`) and how many were won."""

    stage: str
    reached: int
    advanced: int
    rate: float | None
    won: int
    win_rate: float | None


class PipelineAgeOut(Out):
    """Open deals of one stage: how long they have sat in it and how old they are, in days."""

    stage: str
    count: int
    average_days_in_stage: float | None
    average_days_open: float | None


class PipelineReportOut(Out):
    """The manager's pipeline report: funnel, forecast by month, per rep, stage conversion and age."""

    close_from: date | None
    close_to: date | None
    rep: str | None
    team: str | None
    team_name: str | None = None
    stages: list[PipelineStageOut]
    open_count: int
    open_amount: Decimal
    weighted_forecast: Decimal
    won_amount: Decimal
    forecast_by_month: dict[str, Decimal]
    reps: list[PipelineRepOut]
    conversion: list[PipelineConversionOut]
    age: list[PipelineAgeOut]


# --- knowledge ----------------------------------------------------------------------------------


class KbArticleIn(In):
    """A knowledge article (a product defect when it has symptoms and a product)."""

    code: Code
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    category: Annotated[str, StringConstraints(strip_whitespace=True, max_length=300)] = ""
    product_code: Code | None = None
    symptoms: LongText = ""
    solution: LongText = ""
    lang: Lang = "en"


class KbArticleOut(Out):
    """A knowledge article."""

    id: int
    code: str
    title: str
    category: str
    product_code: str | None
    symptoms: str
    solution: str
    lang: str


class KbSearchHit(Out):
    """A search result."""

    code: str
    title: str
    score: float
    product_code: str | None
    lang: str
    solution: str


class SurveyOut(Out):
    """A satisfaction survey."""

    id: int
    service_request_ref: str | None
    customer_code: str
    status: str
    score: int | None
    comment: str | None
    created_at: datetime
    answered_at: datetime | None


class Page(BaseModel, Generic[T]):
    """A page of results with the total count."""

    items: list[T]
    total: int
    limit: int
    offset: int


# --- notifications ------------------------------------------------------------------------------


class NotificationOut(Out):
    """One message to one person on one channel, and how its delivery went (secrets never included)."""

    id: int
    kind: str
    channel: str
    username: str | None
    status: str
    urgent: bool
    attempts: int
    next_attempt_at: datetime
    provider_id: str | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


class NotificationStats(BaseModel):
    """The notifier at a glance: counts by status, the oldest message still waiting, dead letters."""

    counts: dict[str, int]
    oldest_pending_at: datetime | None
    dead: list[NotificationOut]
