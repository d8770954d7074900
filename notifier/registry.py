"""Every area's event routes and sweeps in one place, so the notifier and the scheduler see them all."""

from __future__ import annotations

from notifier.routing import ROUTES, Route
from notifier.scheduler import Sweep


def event_routes() -> dict[str, Route]:
    """Event type → route; an event type claimed by two areas is a wiring mistake, refused at start."""
    from notifier import alerts, care, digest, survey_flow

    merged: dict[str, Route] = dict(ROUTES)
    for area in (care, survey_flow, alerts, digest):
        for event_type, route in area.ROUTES.items():
            if event_type in merged:
                raise RuntimeError(f"event {event_type} is routed twice (again in {area.__name__})")
            merged[event_type] = route
    return merged


def all_sweeps() -> list[Sweep]:
    """Everything the scheduler runs, in a stable order."""
    from notifier import alerts, care, digest, survey_flow

    return [*care.SWEEPS, *survey_flow.SWEEPS, *alerts.SWEEPS, *digest.SWEEPS]
