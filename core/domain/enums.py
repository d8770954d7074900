"""Closed vocabularies of the domain; stored as their string values."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a user is in the organisation; decides what they may see and do."""

    ADMIN = "admin"
    MANAGER = "manager"
    REP = "rep"
    TECHNICIAN = "technician"
    AGENT = "agent"
    CUSTOMER = "customer"


STAFF_ROLES = frozenset({Role.ADMIN, Role.MANAGER, Role.REP, Role.TECHNICIAN, Role.AGENT})


class DepartmentKind(StrEnum):
    """Levels of the organisation tree."""

    GROUP = "group"
    BRANCH = "branch"
    DEPARTMENT = "department"


class CustomerType(StrEnum):
    """End customers buy for themselves; intermediates resell; public are institutions."""

    END = "end"
    INTERMEDIATE = "intermediate"
    PUBLIC = "public"


class LifecycleStage(StrEnum):
    """Where a customer stands in the relationship."""

    PROSPECT = "prospect"
    NEW = "new"
    ACTIVE = "active"
    LOYAL = "loyal"
    AT_RISK = "at_risk"
    CHURNED = "churned"


class ValueTier(StrEnum):
    """Pyramid tiers of the customer value model, top first."""

    KEY = "key"
    MAJOR = "major"
    REGULAR = "regular"
    MINOR = "minor"


class OpportunityStage(StrEnum):
    """Sales stages in pipeline order; the last two are terminal."""

    QUALIFICATION = "qualification"
    NEEDS_ANALYSIS = "needs_analysis"
    PROPOSAL = "proposal"
    NEGOTIATION = "negotiation"
    CLOSED_WON = "closed_won"
    CLOSED_LOST = "closed_lost"


OPEN_STAGES = (
    OpportunityStage.QUALIFICATION,
    OpportunityStage.NEEDS_ANALYSIS,
    OpportunityStage.PROPOSAL,
    OpportunityStage.NEGOTIATION,
)
DEFAULT_STAGE_PROBABILITY = {
    OpportunityStage.QUALIFICATION: 10,
    OpportunityStage.NEEDS_ANALYSIS: 25,
    OpportunityStage.PROPOSAL: 50,
    OpportunityStage.NEGOTIATION: 75,
    OpportunityStage.CLOSED_WON: 100,
    OpportunityStage.CLOSED_LOST: 0,
}


class LeadStatus(StrEnum):
    """Lead qualification states."""

    NEW = "new"
    QUALIFIED = "qualified"
    DISQUALIFIED = "disqualified"
    CONVERTED = "converted"


class TaskStatus(StrEnum):
    """Follow-up task states."""

    OPEN = "open"
    DONE = "done"
    CANCELLED = "cancelled"


class TaskKind(StrEnum):
    """Why a task exists."""

    FOLLOW_UP = "follow_up"
    CARE = "care"
    HANDOFF = "handoff"
    CSAT_FOLLOW_UP = "csat_follow_up"


class WarrantyType(StrEnum):
    """Kinds of cover on an installed product."""

    STANDARD = "standard"
    EXTENDED = "extended"
    NONE = "none"


class RequestKind(StrEnum):
    """A service request asks for work; a complaint reports dissatisfaction."""

    REQUEST = "request"
    COMPLAINT = "complaint"


class Severity(StrEnum):
    """How urgent a case is; decides SLA targets."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Channel(StrEnum):
    """Where a case or message came from or goes to."""

    TELEGRAM = "telegram"
    SLACK = "slack"
    WEB = "web"
    REST = "rest"
    TERMINAL = "terminal"
    API = "api"
    EMAIL = "email"
    SMS = "sms"
    PHONE = "phone"


class RequestStatus(StrEnum):
    """Service request lifecycle."""

    NEW = "new"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    ON_HOLD = "on_hold"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    CLOSED = "closed"


class RepairStatus(StrEnum):
    """Repair order lifecycle."""

    OPEN = "open"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    SETTLED = "settled"
    CANCELLED = "cancelled"


class SurveyStatus(StrEnum):
    """Satisfaction survey lifecycle."""

    PENDING = "pending"
    SENT = "sent"
    ANSWERED = "answered"
    EXPIRED = "expired"
