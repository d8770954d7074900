"""The managers' morning digest: the sweep that raises it, and the route that words it for the manager.

The sweep (`core.digest.due`) raises `DigestDue` once per manager per local day from the digest hour on;
the route reads the manager's subtree in the routing transaction and stores the facts with the
notification (numbers and short lists, JSON-safe), so the text and the chart (`notifier.charts`) are drawn
from what was true when the digest was due.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import load_actor
from core.container import Core
from core.db.models import OutboxEvent, User
from core.domain.enums import Role
from core.services.digest import DealMove, DigestSummary, build_summary
from notifier.routing import Message, Route, Target
from notifier.scheduler import Sweep

__all__ = ["KIND", "ROUTES", "SWEEPS", "digest_context", "digest_due", "run_digest_sweep"]

KIND = "digest"
# How many lines of each list the message shows (the counts beside them are complete).
SHOWN = 5


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def digest_context(summary: DigestSummary) -> dict[str, Any]:
    """The notification context of a digest: JSON-safe numbers and short lists."""

    def move(item: DealMove) -> dict[str, str]:
        return {
            "deal": item.ref,
            "name": item.name,
            "customer": item.customer,
            "owner": item.owner,
            "from_stage": item.from_stage,
            "to_stage": item.to_stage,
            "amount": _money(item.amount),
        }

    return {
        "day": summary.day.isoformat(),
        "since": summary.since.isoformat(),
        "until": summary.until.isoformat(),
        "currency": summary.currency,
        "open_requests": summary.open_requests,
        "breached_count": summary.breached_count,
        "breached": [
            {
                "ticket": item.ref,
                "subject": item.subject,
                "customer": item.customer,
                "severity": item.severity,
                "target": item.target,
                "due": item.due_at.isoformat(),
                "assignee": item.assignee,
            }
            for item in summary.breached[:SHOWN]
        ],
        "opened": summary.opened,
        "closed": summary.closed,
        "moves_count": len(summary.moves),
        "moves": [move(item) for item in summary.moves[:SHOWN]],
        "won_count": len(summary.won),
        "won_amount": _money(summary.won_amount),
        "won": [move(item) for item in summary.won[:SHOWN]],
        "lost_count": len(summary.lost),
        "lost_amount": _money(summary.lost_amount),
        "lost": [move(item) for item in summary.lost[:SHOWN]],
        "pipeline": [
            {"stage": stage.stage, "count": stage.count, "amount": _money(stage.amount)}
            for stage in summary.pipeline
        ],
        "pipeline_count": summary.pipeline_count,
        "pipeline_amount": _money(summary.pipeline_amount),
        "csat_count": summary.csat_count,
        "csat_average": f"{summary.csat_average:.1f}" if summary.csat_average is not None else "",
    }


async def digest_due(session: AsyncSession, event: OutboxEvent) -> list[Message]:
    """The digest to the manager it is for, about their subtree as of the moment it fell due."""
    user = await session.get(User, event.aggregate_id)
    if user is None or not user.active or user.role not in (Role.MANAGER.value, Role.ADMIN.value):
        return []
    try:
        day = date.fromisoformat(str(event.payload.get("day") or ""))
    except ValueError:
        return []
    actor = await load_actor(session, user)
    # The 24 hours up to the moment the sweep raised it: the manager's digest hour, or a little after when
    # the scheduler was late.
    until: datetime = event.occurred_at
    summary = await build_summary(session, actor, day=day, until=until)
    return [Message(kind=KIND, target=Target(user_id=user.id), context=digest_context(summary))]


async def run_digest_sweep(core: Core, now: datetime) -> int:
    """One pass: raise every digest that is due at `now`."""
    return await core.digest.due(now)


ROUTES: dict[str, Route] = {"DigestDue": digest_due}
SWEEPS: list[Sweep] = [Sweep("digest", run_digest_sweep)]
