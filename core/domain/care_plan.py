"""The care plan: what the company does for a customer at each lifecycle stage, per customer segment.

A YAML list of activities, each: `segment` (a segment name or "*"), `stage` (a lifecycle stage),
`after_days` (how long the customer has been in that stage), and what to do: `message` (a notification
kind sent to the customer's people) and/or `task` (a follow-up title for the customer's owner, with
`{customer}` standing for the customer's name). A bad plan is refused with `FILE:LINE: reason`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.domain.enums import LifecycleStage

DEFAULT_PLAN = Path(__file__).resolve().parent.parent / "care_plan.yml"
MESSAGE_KINDS = ("care_welcome", "care_checkin", "care_anniversary")
_FIELDS = {"name", "segment", "stage", "after_days", "message", "task"}


class CarePlanError(ValueError):
    """The plan file cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class CareActivity:
    """One planned activity."""

    name: str
    segment: str
    stage: str
    after_days: int
    message: str | None
    task: str | None

    def applies_to(self, segment: str, stage: str) -> bool:
        """Whether a customer of this segment and stage gets it."""
        return self.stage == stage and self.segment in ("*", segment)


def load_care_plan(path: Path | None = None) -> tuple[CareActivity, ...]:
    """The plan in `path` (the built-in one when None); CarePlanError names the file and line."""
    source = path or DEFAULT_PLAN
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise CarePlanError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    return parse_care_plan(text, str(source))


def parse_care_plan(text: str, source: str = "<care plan>") -> tuple[CareActivity, ...]:
    """Parse and check a plan; every mistake is reported with its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", 0) + 1
        raise CarePlanError(f"{source}:{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if root is None:
        return ()
    if not isinstance(root, yaml.SequenceNode):
        raise CarePlanError(f"{source}:{root.start_mark.line + 1}: the plan must be a list of activities")
    activities: list[CareActivity] = []
    names: set[str] = set()
    stages = {stage.value for stage in LifecycleStage}
    for node in root.value:
        line = node.start_mark.line + 1
        where = f"{source}:{line}"
        if not isinstance(node, yaml.MappingNode):
            raise CarePlanError(f"{where}: an activity must be a mapping of fields")
        fields: dict[str, tuple[Any, int]] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key not in _FIELDS:
                raise CarePlanError(
                    f"{source}:{key_node.start_mark.line + 1}: unknown field '{key}' "
                    f"(use {', '.join(sorted(_FIELDS))})"
                )
            fields[key] = (yaml.safe_load(yaml.serialize(value_node)), value_node.start_mark.line + 1)

        name = _text(fields, "name", where, line, source, required=True) or ""
        if name in names:
            raise CarePlanError(f"{where}: a second activity named '{name}'")
        names.add(name)
        segment = _text(fields, "segment", where, line, source) or "*"
        stage = _text(fields, "stage", where, line, source, required=True) or ""
        if stage not in stages:
            raise CarePlanError(f"{where}: unknown stage '{stage}' (use {', '.join(sorted(stages))})")
        after, at = fields.get("after_days", (0, line))
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= 3650:
            raise CarePlanError(f"{source}:{at}: 'after_days' must be a whole number of days from 0 to 3650")
        message = _text(fields, "message", where, line, source)
        if message is not None and message not in MESSAGE_KINDS:
            raise CarePlanError(f"{where}: unknown message '{message}' (use {', '.join(MESSAGE_KINDS)})")
        task = _text(fields, "task", where, line, source)
        if message is None and task is None:
            raise CarePlanError(f"{where}: an activity needs a 'message', a 'task' or both")
        activities.append(CareActivity(name, segment, stage, after, message, task))
    return tuple(activities)


def _text(
    fields: dict[str, tuple[Any, int]],
    name: str,
    where: str,
    line: int,
    source: str,
    *,
    required: bool = False,
) -> str | None:
    """A text field of an activity, or None; mistakes name the line."""
    value, at = fields.get(name, (None, line))
    if value is None:
        if required:
            raise CarePlanError(f"{where}: '{name}' is missing")
        return None
    if not isinstance(value, str) or not value.strip():
        raise CarePlanError(f"{source}:{at}: '{name}' must be a text")
    return value.strip()
