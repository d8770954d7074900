"""The NLU contract: what any engine (embedded or Rasa) returns for a message."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

INTENTS: tuple[str, ...] = (
    "greet", "goodbye", "help", "affirm", "deny", "cancel", "human_handoff",
    "open_service_request", "file_complaint", "check_request_status", "check_warranty", "search_knowledge",
    "rate_service", "log_visit", "update_deal", "pipeline_summary", "customer_overview",
    "my_jobs", "accept_job", "complete_job", "notification_settings", "csat_summary", "out_of_scope",
    "customer_ranking",
    "dispatch_job", "on_my_way", "reschedule_job",
    "list_visits", "list_deals",
)
FALLBACK_INTENT = "nlu_fallback"
ENTITIES: tuple[str, ...] = (
    "serial_number", "ticket_id", "job_id", "customer", "product", "amount", "rating", "stage",
    "date", "time", "email", "phone", "part", "notification_kind", "channel",
)


@dataclass(frozen=True, slots=True)
class Entity:
    """One thing found in the text: `value` is normalised (ISO date, SR-12, 50000.00, closed_won…)."""

    entity: str
    value: str
    start: int
    end: int
    text: str = ""
    confidence: float = 1.0
    extractor: str = "crmbot"


@dataclass(frozen=True, slots=True)
class ParseResult:
    """Intent with calibrated confidence, the ranking behind it, and the entities."""

    text: str
    intent: str
    confidence: float
    entities: tuple[Entity, ...] = ()
    ranking: tuple[tuple[str, float], ...] = ()
    lang: str = "en"

    def entity(self, name: str) -> Entity | None:
        """The first entity of a kind, if any."""
        return next((item for item in self.entities if item.entity == name), None)

    def values(self, name: str) -> list[str]:
        """Every value of one entity kind, in order."""
        return [item.value for item in self.entities if item.entity == name]


@dataclass(frozen=True, slots=True)
class ParseContext:
    """What entity resolution needs to know: now, and the person's timezone and language."""

    now: datetime
    timezone: str = "Asia/Shanghai"
    lang: str | None = None
    known: dict[str, tuple[str, ...]] = field(default_factory=dict)


class NluEngine(Protocol):
    """Anything that turns text into a ParseResult."""

    async def parse(self, text: str, context: ParseContext) -> ParseResult: ...
