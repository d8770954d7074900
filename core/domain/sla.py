"""Service-level targets per kind and severity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from core.domain.enums import RequestKind, Severity


@dataclass(frozen=True, slots=True)
class SlaTarget:
    """How soon someone must respond to, and resolve, a case."""

    response: timedelta
    resolution: timedelta


# Complaints get half the time of repair requests: an unhappy customer waiting is what loses them.
DEFAULT_SLA: dict[tuple[str, str], SlaTarget] = {
    (RequestKind.REQUEST, Severity.LOW): SlaTarget(timedelta(hours=24), timedelta(days=7)),
    (RequestKind.REQUEST, Severity.MEDIUM): SlaTarget(timedelta(hours=8), timedelta(days=3)),
    (RequestKind.REQUEST, Severity.HIGH): SlaTarget(timedelta(hours=4), timedelta(days=1)),
    (RequestKind.REQUEST, Severity.CRITICAL): SlaTarget(timedelta(hours=1), timedelta(hours=8)),
    (RequestKind.COMPLAINT, Severity.LOW): SlaTarget(timedelta(hours=12), timedelta(days=3)),
    (RequestKind.COMPLAINT, Severity.MEDIUM): SlaTarget(timedelta(hours=4), timedelta(days=2)),
    (RequestKind.COMPLAINT, Severity.HIGH): SlaTarget(timedelta(hours=2), timedelta(days=1)),
    (RequestKind.COMPLAINT, Severity.CRITICAL): SlaTarget(timedelta(minutes=30), timedelta(hours=4)),
}


def sla_due(kind: str, severity: str, opened_at: datetime) -> tuple[datetime, datetime]:
    """Response and resolution due times for a case opened at `opened_at`."""
    target = DEFAULT_SLA[(kind, severity)]
    return opened_at + target.response, opened_at + target.resolution
