"""State machines of service requests and repair orders, as data: action → (from states, to state)."""

from __future__ import annotations

from dataclasses import dataclass

from core.domain.enums import RepairStatus, RequestStatus
from core.errors import InvalidTransition

R = RequestStatus


@dataclass(frozen=True, slots=True)
class Move:
    """One named transition allowed from some states."""

    sources: frozenset[str]
    target: str


REQUEST_ACTIONS: dict[str, Move] = {
    "assign": Move(frozenset({R.NEW, R.ASSIGNED, R.ESCALATED, R.ON_HOLD}), R.ASSIGNED),
    "start": Move(frozenset({R.ASSIGNED, R.ON_HOLD, R.ESCALATED}), R.IN_PROGRESS),
    "hold": Move(frozenset({R.ASSIGNED, R.IN_PROGRESS, R.ESCALATED}), R.ON_HOLD),
    "escalate": Move(frozenset({R.NEW, R.ASSIGNED, R.IN_PROGRESS, R.ON_HOLD, R.ESCALATED}), R.ESCALATED),
    "resolve": Move(frozenset({R.ASSIGNED, R.IN_PROGRESS, R.ON_HOLD, R.ESCALATED}), R.RESOLVED),
    "close": Move(frozenset({R.RESOLVED}), R.CLOSED),
    "reopen": Move(frozenset({R.RESOLVED, R.CLOSED}), R.IN_PROGRESS),
}

REQUEST_OPEN_STATES = frozenset({R.NEW, R.ASSIGNED, R.IN_PROGRESS, R.ON_HOLD, R.ESCALATED})


def request_move(action: str, current: str) -> str:
    """Target status for `action` from `current`, or a typed error saying what is possible."""
    move = REQUEST_ACTIONS.get(action)
    if move is None:
        raise InvalidTransition(
            f"Unknown action '{action}'. Possible: {', '.join(sorted(REQUEST_ACTIONS))}.", field="action"
        )
    if current not in move.sources:
        if action == "close" and current in REQUEST_OPEN_STATES:
            raise InvalidTransition(
                f"A request that is {current.replace('_', ' ')} cannot be closed: "
                "resolve it first, with a resolution."
            )
        possible = [name for name, candidate in REQUEST_ACTIONS.items() if current in candidate.sources]
        raise InvalidTransition(
            f"Cannot {action} a request that is {current.replace('_', ' ')}."
            + (f" Possible now: {', '.join(possible)}." if possible else "")
        )
    return move.target


Job = RepairStatus

REPAIR_ACTIONS: dict[str, Move] = {
    "dispatch": Move(frozenset({Job.OPEN}), Job.DISPATCHED),
    "accept": Move(frozenset({Job.DISPATCHED}), Job.ACCEPTED),
    "decline": Move(frozenset({Job.DISPATCHED}), Job.OPEN),
    "start": Move(frozenset({Job.ACCEPTED}), Job.IN_PROGRESS),
    "complete": Move(frozenset({Job.ACCEPTED, Job.IN_PROGRESS}), Job.COMPLETED),
    "settle": Move(frozenset({Job.COMPLETED}), Job.SETTLED),
    "cancel": Move(frozenset({Job.OPEN, Job.DISPATCHED, Job.ACCEPTED, Job.IN_PROGRESS}), Job.CANCELLED),
}

REPAIR_ACTIVE_STATES = frozenset({Job.OPEN, Job.DISPATCHED, Job.ACCEPTED, Job.IN_PROGRESS})

# Steps that are recorded in a job's history without changing its status (None: the status stays).
# "depart" ("on my way") also starts an accepted job: the technician is working on it from then on.
REPAIR_STEPS: dict[str, tuple[frozenset[str], str | None]] = {
    "depart": (frozenset({Job.ACCEPTED, Job.IN_PROGRESS}), Job.IN_PROGRESS),
    "reschedule": (frozenset({Job.DISPATCHED, Job.ACCEPTED, Job.IN_PROGRESS}), None),
    "confirm_time": (frozenset({Job.DISPATCHED, Job.ACCEPTED, Job.IN_PROGRESS}), None),
    "refuse_time": (frozenset({Job.DISPATCHED, Job.ACCEPTED, Job.IN_PROGRESS}), None),
}


def repair_move(action: str, current: str) -> str:
    """Target status for a repair-order action, or a typed error."""
    step = REPAIR_STEPS.get(action)
    if step is not None:
        sources, target = step
        if current not in sources:
            doing, status = action.replace("_", " "), current.replace("_", " ")
            raise InvalidTransition(f"Cannot {doing} a job that is {status}.")
        return target or current
    move = REPAIR_ACTIONS.get(action)
    if move is None:
        possible = sorted([*REPAIR_ACTIONS, *REPAIR_STEPS])
        raise InvalidTransition(
            f"Unknown action '{action}'. Possible: {', '.join(possible)}.", field="action"
        )
    if current not in move.sources:
        raise InvalidTransition(f"Cannot {action} a job that is {current.replace('_', ' ')}.")
    return move.target
