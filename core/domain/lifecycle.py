"""Lifecycle stage rules: where a customer stands in the relationship, decided from facts only.

The rules, first match wins (days are counted back from "today"):

1. prospect — nothing bought yet: no won deal and no installed unit.
2. churned  — no activity (won deal, delivered unit, visit, service request) for `churned_days` (540).
3. at_risk  — no activity for `at_risk_days` (270); or an average CSAT below `low_csat` (3.0) over the
              last year from at least `csat_answers` (2) surveys (one bad score already raises the
              low-CSAT alert and a follow-up task); or at least `complaints` (1) complaint still open
              `complaint_days` (3) after it was made (a fresh one is the service desk's, under its SLA).
4. new      — the first purchase was less than `new_days` (90) ago.
5. loyal    — a customer for at least `loyal_days` (730) with at least `loyal_orders` (2) orders (won
              deals plus delivered units) in the last year.
6. active   — everyone else.

Appliances are bought every few years, so the day thresholds are long: 270 days without a purchase, visit
or service request is when a customer deserves a call. Risk signals come before "new" on purpose: a
brand-new customer with an unanswered complaint needs a call, not a welcome pack. Thresholds are
configurable with CRMBOT_LIFECYCLE_THRESHOLDS (a JSON object of the names above).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import date

from core.domain.enums import LifecycleStage


@dataclass(frozen=True, slots=True)
class LifecycleFacts:
    """What the rules look at for one customer."""

    first_purchase: date | None = None
    last_activity: date | None = None
    orders_last_year: int = 0
    csat_average: float | None = None
    csat_answers: int = 0
    # Complaints still open `complaint_days` after they were made (fresh ones are the desk's job first).
    open_complaints: int = 0


@dataclass(frozen=True, slots=True)
class LifecycleRules:
    """Thresholds of the stage rules (see the module docstring)."""

    new_days: int = 90
    at_risk_days: int = 270
    churned_days: int = 540
    low_csat: float = 3.0
    csat_answers: int = 2
    complaints: int = 1
    complaint_days: int = 3
    loyal_days: int = 730
    loyal_orders: int = 2

    def __post_init__(self) -> None:
        if (
            min(self.new_days, self.at_risk_days, self.churned_days, self.loyal_days) < 1
            or self.complaint_days < 0
        ):
            raise ValueError("lifecycle day thresholds must be at least 1")
        if self.at_risk_days > self.churned_days:
            raise ValueError("at_risk_days must not be more than churned_days")
        if not 1.0 <= self.low_csat <= 5.0:
            raise ValueError("low_csat must be between 1 and 5")
        if self.complaints < 1 or self.loyal_orders < 1 or self.csat_answers < 1:
            raise ValueError("complaints, csat_answers and loyal_orders must be at least 1")

    def stage(self, facts: LifecycleFacts, today: date) -> LifecycleStage:
        """The stage these facts put a customer in today."""
        if facts.first_purchase is None:
            return LifecycleStage.PROSPECT
        last = max(facts.last_activity or facts.first_purchase, facts.first_purchase)
        idle = (today - last).days
        if idle >= self.churned_days:
            return LifecycleStage.CHURNED
        unhappy = (
            facts.csat_average is not None
            and facts.csat_answers >= self.csat_answers
            and facts.csat_average < self.low_csat
        )
        if idle >= self.at_risk_days or unhappy or facts.open_complaints >= self.complaints:
            return LifecycleStage.AT_RISK
        tenure = (today - facts.first_purchase).days
        if tenure < self.new_days:
            return LifecycleStage.NEW
        if tenure >= self.loyal_days and facts.orders_last_year >= self.loyal_orders:
            return LifecycleStage.LOYAL
        return LifecycleStage.ACTIVE


def lifecycle_rules_from_config(thresholds: Mapping[str, float]) -> LifecycleRules:
    """Rules with the configured thresholds over the defaults, refusing unknown names clearly."""
    known = {item.name: item.type for item in fields(LifecycleRules)}
    unknown = set(thresholds) - set(known)
    if unknown:
        raise ValueError(f"unknown lifecycle thresholds {sorted(unknown)}; known: {sorted(known)}")
    values: dict[str, float | int] = {
        name: float(value) if name == "low_csat" else int(value) for name, value in thresholds.items()
    }
    return replace(LifecycleRules(), **values)  # type: ignore[arg-type]
