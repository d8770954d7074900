"""Managers' alerts: a YAML file of rules says which events, under which conditions, reach whom, how.

The rules come from `notifier/alert_rules.yml` (built in) or the operator's file (`CRMBOT_ALERT_RULES`).
`load_rules` reads and checks one, refusing a bad file with every mistake as `FILE:LINE: reason`; the
resulting `AlertRules` is a rule of the Notifier (called for every routed event) and gives the sweeps of
this module their thresholds (stalled deals, key customers not visited).

Facts and recipients are read in the routing transaction, once, and stored with each notification, so a
message delivered late still says what was true when the event happened.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.container import Core
from core.db.models import (
    Customer,
    Department,
    NotificationPreference,
    Opportunity,
    OutboxEvent,
    Part,
    PartStock,
    RepairOrder,
    ServiceRequest,
    ServiceStation,
    Survey,
    User,
    Visit,
)
from core.domain import events as domain_events
from core.domain.enums import (
    Channel,
    CustomerType,
    OpportunityStage,
    RequestKind,
    RequestStatus,
    Role,
    Severity,
    TaskKind,
    ValueTier,
)
from core.services.base import ref
from core.services.watch import VISIT_KINDS
from core.settings import Settings
from notifier.routing import Message, Route, Target
from notifier.scheduler import Sweep
from notifier.types import ALL_CHANNELS, CHAT_CHANNELS

__all__ = [
    "BUILTIN_RULES",
    "ROUTES",
    "SWEEPS",
    "AlertRules",
    "Condition",
    "Recipient",
    "Rule",
    "RulesError",
    "active_rules",
    "load_rules",
    "parse_rules",
]

log = logging.getLogger("crmbot.alerts")

BUILTIN_RULES = Path(__file__).with_name("alert_rules.yml")
DEFAULT_MESSAGE = "alert"
# The default message comes with a chat button where one helps: the request's status, the customer's page.
REQUEST_MESSAGE, CUSTOMER_MESSAGE = "alert_request", "alert_customer"
MAX_PAYLOAD_BYTES = 64

# Events the sweeps of this module raise, with the `params:` entry and built-in number of days they use.
TIMED_EVENTS = {
    "DealStalled": ("stalled_deal_days", 14),
    "KeyCustomerNotVisited": ("unvisited_key_customer_days", 30),
}
# A linking code is a secret on its way to one person; no rule may copy it anywhere.
HIDDEN_EVENTS = frozenset({"LinkCodeRequested"})

RULE_KEYS = (
    "name",
    "description",
    "event",
    "when",
    "notify",
    "fallback",
    "channels",
    "urgency",
    "message",
    "include_actor",
    "days",
    "enabled",
)
TOP_KEYS = ("params", "rules")
RECIPIENT_KINDS = ("role", "user", "department", "person", "manager_of", "head_of")
PEOPLE = ("assignee", "owner", "technician", "customer_owner", "actor")
STATION = "station"
URGENCIES = ("normal", "urgent")
CHAT_ALIAS = "chat"
ALERT_ROLES = tuple(role.value for role in Role if role is not Role.CUSTOMER)

NUMBER, TEXT, FLAG = "number", "text", "yes/no"
NUMERIC_OPERATORS = ("at_least", "at_most", "above", "below")
LIST_OPERATORS = ("one_of", "not_one_of")
OPERATORS = ("is", "is_not", *LIST_OPERATORS, *NUMERIC_OPERATORS)


class RulesError(Exception):
    """An alert rules file that cannot be used; `errors` are `FILE:LINE: reason` lines."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# --- what each event type offers a rule -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A field a condition can test: its type and, for a closed vocabulary, the values it can take."""

    type: str
    values: tuple[str, ...] = ()
    what: str = ""


def _closed(enum: type[StrEnum], what: str) -> FieldSpec:
    return FieldSpec(TEXT, tuple(member.value for member in enum), what)


SEVERITY = _closed(Severity, "severity")
REQUEST_KIND = _closed(RequestKind, "request kind")
STAGE = _closed(OpportunityStage, "deal stage")
TIER = _closed(ValueTier, "customer tier")
STATUS = _closed(RequestStatus, "request status")
CHANNEL = _closed(Channel, "channel")
SLA_TARGET = FieldSpec(TEXT, ("response", "resolution"), "SLA target")

REQUEST_FACTS = {
    "ticket": FieldSpec(TEXT),
    "kind": REQUEST_KIND,
    "severity": SEVERITY,
    "status": STATUS,
    "channel": CHANNEL,
    "escalation_level": FieldSpec(NUMBER),
}
DEAL_FIELDS = {"stage": STAGE, "amount": FieldSpec(NUMBER), "probability": FieldSpec(NUMBER)}
CUSTOMER_FIELDS = {
    "customer": FieldSpec(TEXT),
    "customer_tier": TIER,
    "customer_segment": FieldSpec(TEXT),
    "customer_type": _closed(CustomerType, "customer type"),
}
STOCK_FIELDS = {"part": FieldSpec(TEXT), "station": FieldSpec(TEXT)}
PAYLOAD_VOCABULARIES = {
    "severity": SEVERITY,
    "stage": STAGE,
    "from_stage": STAGE,
    "to_stage": STAGE,
    "tier": TIER,
    "old_tier": TIER,
    "new_tier": TIER,
    "from_status": STATUS,
    "to_status": STATUS,
    "target": SLA_TARGET,
}


@dataclass(frozen=True, slots=True)
class EventSchema:
    """One event type as rules see it: the fields conditions may test and the people it concerns."""

    name: str
    aggregate: str
    fields: dict[str, FieldSpec]
    people: tuple[str, ...]
    request: bool
    deal: bool
    customer: bool
    stock: bool


def _payload_type(hint: Any) -> str:
    options = [option for option in typing.get_args(hint) if option is not type(None)] or [hint]
    if bool in options:
        return FLAG
    if any(option in (int, float, Decimal) for option in options):
        return NUMBER
    return TEXT


def _schema(name: str, cls: type[domain_events.DomainEvent]) -> EventSchema:
    hints = typing.get_type_hints(cls)
    payload = {item.name: _payload_type(hints[item.name]) for item in dataclasses.fields(cls)}
    aggregate = cls.aggregate
    request = aggregate == "service_request" or "service_request_id" in payload
    deal = aggregate == "opportunity"
    stock = aggregate == "part_stock"
    customer = request or deal or aggregate == "customer" or "customer_id" in payload
    fields: dict[str, FieldSpec] = {}
    if request:
        fields.update(REQUEST_FACTS)
    if deal:
        fields.update(DEAL_FIELDS)
    if customer:
        fields.update(CUSTOMER_FIELDS)
    if stock:
        fields.update(STOCK_FIELDS)
    for field_name, kind in payload.items():
        spec = PAYLOAD_VOCABULARIES.get(field_name, FieldSpec(kind))
        if field_name == "kind":
            spec = (
                REQUEST_KIND if request else _closed(TaskKind, "task kind") if aggregate == "task" else spec
            )
        if field_name == "channel" and request:
            spec = CHANNEL
        fields[field_name] = spec
    people = ["actor"]
    if request or "assignee_id" in payload:
        people.append("assignee")
    if request or "technician_id" in payload:
        people.append("technician")
    if deal or customer:
        people.append("owner")
    if customer:
        people.append("customer_owner")
    return EventSchema(name, aggregate, fields, tuple(people), request, deal, customer, stock)


@lru_cache(maxsize=1)
def event_schemas() -> dict[str, EventSchema]:
    """Every event type in core/domain/events.py that rules may follow."""
    found: dict[str, EventSchema] = {}
    for name, value in vars(domain_events).items():
        if (
            isinstance(value, type)
            and issubclass(value, domain_events.DomainEvent)
            and value is not domain_events.DomainEvent
            and name not in HIDDEN_EVENTS
        ):
            found[name] = _schema(name, value)
    return found


@lru_cache(maxsize=1)
def _alert_kinds() -> frozenset[str]:
    from notifier.templates import Templates

    return frozenset(kind for kind in Templates().kinds("en") if kind.startswith("alert"))


# --- the rules --------------------------------------------------------------------------------------


def _number(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value).strip().replace(",", "").replace("_", ""))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _normal(value: Any, kind: str) -> Any:
    """A value in the form conditions compare: numbers as Decimal, texts without case, flags as bool."""
    if value is None:
        return None
    if kind == NUMBER:
        return _number(value)
    if kind == FLAG:
        return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "yes", "1")
    return str(value).strip().casefold()


@dataclass(frozen=True, slots=True)
class Condition:
    """`field operator value`, e.g. severity one_of (high, critical), amount at_least 100000."""

    field: str
    operator: str
    value: Any
    kind: str
    line: int

    def holds(self, actual: Any) -> bool:
        """Whether the event's value satisfies this condition (an unknown value satisfies only negations)."""
        value = _normal(actual, self.kind)
        if self.operator == "is":
            return value is not None and value == self.value
        if self.operator == "is_not":
            return value is None or value != self.value
        if self.operator == "one_of":
            return value is not None and value in self.value
        if self.operator == "not_one_of":
            return value is None or value not in self.value
        if value is None:
            return False
        if self.operator == "at_least":
            return bool(value >= self.value)
        if self.operator == "at_most":
            return bool(value <= self.value)
        if self.operator == "above":
            return bool(value > self.value)
        return bool(value < self.value)


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who a rule notifies: `kind` is role, user, department, person, manager_of or head_of."""

    kind: str
    value: str
    role: str | None
    line: int


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule, checked and ready to evaluate."""

    name: str
    event: str
    conditions: tuple[Condition, ...]
    notify: tuple[Recipient, ...]
    fallback: tuple[Recipient, ...]
    channels: tuple[str, ...] | None
    urgent: bool
    message: str
    include_actor: bool
    days: int | None
    line: int
    description: str = ""

    def matches(self, values: Mapping[str, Any]) -> bool:
        """Whether every condition (and the rule's number of days, for timed events) holds."""
        if self.days is not None and _number(values.get("days")) != Decimal(self.days):
            return False
        return all(condition.holds(values.get(condition.field)) for condition in self.conditions)


class _Reader:
    """Walks the YAML node tree, so every mistake is reported with its line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []
        self._lines: list[int] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def error(self, node: yaml.Node | None, reason: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.errors.append(f"{self.source}:{line}: {reason}")
        self._lines.append(line)

    def sorted_errors(self) -> list[str]:
        """The mistakes in the order of the file."""
        order = sorted(range(len(self.errors)), key=lambda index: self._lines[index])
        return [self.errors[index] for index in order]

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return _NOT_SCALAR
        return self._constructor.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping of `name: value` lines")
            return None
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node)
            if not isinstance(key, str):
                self.error(key_node, f"{what}: a key must be a word, not {_show(key)}")
                continue
            if key in entries:
                self.error(key_node, f"{what}: '{key}' is given twice")
                continue
            entries[key] = (key_node, value_node)
        return entries

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list (lines starting with '- ')")
            return None
        return list(node.value)

    def text(self, node: yaml.Node, what: str) -> str | None:
        value = self.scalar(node)
        if not isinstance(value, str) or not value.strip():
            self.error(node, f"{what} must be a text, not {_show(value)}")
            return None
        return value.strip()

    def flag(self, node: yaml.Node, what: str) -> bool | None:
        value = self.scalar(node)
        if not isinstance(value, bool):
            self.error(node, f"{what} must be true or false, not {_show(value)}")
            return None
        return value

    def whole(self, node: yaml.Node, what: str) -> int | None:
        value = self.scalar(node)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.error(node, f"{what} must be a whole number of days (1 or more), not {_show(value)}")
            return None
        return value


_NOT_SCALAR = object()


def _show(value: Any) -> str:
    if value is _NOT_SCALAR:
        return "a list or mapping"
    if value is None:
        return "nothing"
    return repr(value)


def _one_of(values: Iterable[str]) -> str:
    return ", ".join(values)


def parse_rules(text: str, source: str = "<alert rules>") -> AlertRules:
    """Alert rules from YAML text; RulesError lists every mistake as `SOURCE:LINE: reason`."""
    reader = _Reader(source)
    try:
        root = yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise RulesError([f"{source}:{line}: not valid YAML: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise RulesError([f"{source}:1: not valid YAML: {exc}"]) from None
    if root is None:
        raise RulesError([f"{source}:1: the file is empty; it needs a `rules:` list"])
    top = reader.mapping(root, "the file")
    params: dict[str, int] = {name: days for name, days in TIMED_EVENTS.values()}
    rules: list[Rule] = []
    if top is not None:
        for key, (key_node, _value) in top.items():
            if key not in TOP_KEYS:
                reader.error(key_node, f"unknown section '{key}' (the sections are: {_one_of(TOP_KEYS)})")
        if "params" in top:
            params.update(_params(reader, top["params"][1]))
        if "rules" not in top:
            reader.error(root, "the file needs a `rules:` list")
        else:
            rules = _rules(reader, top["rules"][1], params)
    if reader.errors:
        raise RulesError(reader.sorted_errors())
    return AlertRules(rules, source=source, params=params)


def load_rules(path: Path | None = None) -> AlertRules:
    """The operator's rules file (`settings.alert_rules`), or the built-in rules when `path` is None."""
    target = path if path is not None else BUILTIN_RULES
    try:
        text = target.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RulesError([f"{target}:1: not UTF-8 text ({exc.reason})"]) from None
    except OSError as exc:
        raise RulesError([f"{target}:1: cannot read the file: {exc.strerror or exc}"]) from None
    return parse_rules(text, str(target))


def _params(reader: _Reader, node: yaml.Node) -> dict[str, int]:
    entries = reader.mapping(node, "params")
    found: dict[str, int] = {}
    known = [name for name, _days in TIMED_EVENTS.values()]
    for key, (key_node, value_node) in (entries or {}).items():
        if key not in known:
            reader.error(key_node, f"unknown parameter '{key}' (known: {_one_of(known)})")
            continue
        days = reader.whole(value_node, f"params.{key}")
        if days is not None:
            found[key] = days
    return found


def _rules(reader: _Reader, node: yaml.Node, params: Mapping[str, int]) -> list[Rule]:
    items = reader.sequence(node, "rules")
    rules: list[Rule] = []
    names: dict[str, int] = {}
    for item in items or []:
        # Names are unique among all rules, switched off or broken ones too.
        name = _name_of(item)
        line = item.start_mark.line + 1
        if name is not None and name in names:
            reader.error(item, f"rule '{name}': the name is already used by the rule on line {names[name]}")
        elif name is not None:
            names[name] = line
        rule = _rule(reader, item, params)
        if rule is not None and names.get(rule.name) == line:
            rules.append(rule)
    return rules


def _name_of(node: yaml.Node) -> str | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "name" and isinstance(value, yaml.ScalarNode):
            return str(value.value).strip() or None
    return None


def _rule(reader: _Reader, node: yaml.Node, params: Mapping[str, int]) -> Rule | None:
    entries = reader.mapping(node, "a rule")
    if entries is None:
        return None
    before = len(reader.errors)
    name_node = entries.get("name")
    name = reader.text(name_node[1], "name") if name_node else None
    if name_node is None:
        reader.error(node, "a rule needs a `name:`")
    label = f"rule '{name}'" if name else "rule"
    for key, (key_node, _value) in entries.items():
        if key not in RULE_KEYS:
            reader.error(
                key_node, f"{label}: unknown setting '{key}' (the settings are: {_one_of(RULE_KEYS)})"
            )
    schemas = event_schemas()
    schema: EventSchema | None = None
    if "event" not in entries:
        reader.error(node, f"{label} needs an `event:` (an event type such as ServiceRequestOpened)")
    else:
        event_node = entries["event"][1]
        event = reader.text(event_node, f"{label}: event")
        if event is not None:
            schema = schemas.get(event)
            if schema is None:
                reader.error(
                    event_node, f"{label}: unknown event type '{event}' (known: {_one_of(sorted(schemas))})"
                )
    conditions: list[Condition] = []
    if "when" in entries and schema is not None:
        conditions = _conditions(reader, entries["when"][1], schema, label)
    notify: list[Recipient] = []
    if "notify" not in entries:
        reader.error(node, f"{label} needs a `notify:` list (who hears about it)")
    elif schema is not None:
        notify = _recipients(reader, entries["notify"][1], schema, f"{label}: notify")
        if not notify and len(reader.errors) == before:
            reader.error(entries["notify"][1], f"{label}: `notify:` names nobody")
    fallback: list[Recipient] = []
    if "fallback" in entries and schema is not None:
        fallback = _recipients(reader, entries["fallback"][1], schema, f"{label}: fallback")
    channels = _channels(reader, entries["channels"][1], label) if "channels" in entries else None
    urgent = False
    if "urgency" in entries:
        urgency_node = entries["urgency"][1]
        urgency = reader.scalar(urgency_node)
        if urgency not in URGENCIES:
            reader.error(urgency_node, f"{label}: urgency must be normal or urgent, not {_show(urgency)}")
        urgent = urgency == "urgent"
    message = DEFAULT_MESSAGE
    if "message" in entries:
        message_node = entries["message"][1]
        kind = reader.text(message_node, f"{label}: message")
        if kind is not None and kind not in _alert_kinds():
            reader.error(
                message_node,
                f"{label}: unknown message '{kind}' (alert messages: {_one_of(sorted(_alert_kinds()))})",
            )
        message = kind or DEFAULT_MESSAGE
    include_actor = False
    if "include_actor" in entries:
        include_actor = bool(reader.flag(entries["include_actor"][1], f"{label}: include_actor"))
    enabled = True
    if "enabled" in entries:
        enabled = reader.flag(entries["enabled"][1], f"{label}: enabled") is not False
    description = ""
    if "description" in entries:
        description = reader.text(entries["description"][1], f"{label}: description") or ""
    days: int | None = None
    if schema is not None and schema.name in TIMED_EVENTS:
        param, _default = TIMED_EVENTS[schema.name]
        days = params[param]
        if "days" in entries:
            days = reader.whole(entries["days"][1], f"{label}: days") or days
    elif "days" in entries:
        reader.error(
            entries["days"][0],
            f"{label}: `days:` is only for {_one_of(TIMED_EVENTS)} rules (use `when:` here)",
        )
    if len(reader.errors) > before or name is None or schema is None or not enabled:
        return None
    return Rule(
        name=name,
        event=schema.name,
        conditions=tuple(conditions),
        notify=tuple(notify),
        fallback=tuple(fallback),
        channels=channels,
        urgent=urgent,
        message=message,
        include_actor=include_actor,
        days=days,
        line=node.start_mark.line + 1,
        description=description,
    )


def _conditions(reader: _Reader, node: yaml.Node, schema: EventSchema, label: str) -> list[Condition]:
    entries = reader.mapping(node, f"{label}: when")
    conditions: list[Condition] = []
    for field_name, (key_node, value_node) in (entries or {}).items():
        spec = schema.fields.get(field_name)
        if spec is None:
            reader.error(
                key_node,
                f"{label}: {schema.name} has no field '{field_name}' "
                f"(its fields: {_one_of(sorted(schema.fields))})",
            )
            continue
        where = f"{label}: {field_name}"
        if isinstance(value_node, yaml.MappingNode):
            tests = reader.mapping(value_node, where) or {}
            pairs = [(operator, op_node, test_node) for operator, (op_node, test_node) in tests.items()]
            if not pairs:
                reader.error(value_node, f"{where}: no test given")
        elif isinstance(value_node, yaml.SequenceNode):
            pairs = [("one_of", value_node, value_node)]
        else:
            pairs = [("is", value_node, value_node)]
        for operator, op_node, test_node in pairs:
            condition = _condition(reader, field_name, spec, operator, op_node, test_node, where)
            if condition is not None:
                conditions.append(condition)
    return conditions


def _condition(
    reader: _Reader,
    field_name: str,
    spec: FieldSpec,
    operator: str,
    op_node: yaml.Node,
    node: yaml.Node,
    where: str,
) -> Condition | None:
    line = node.start_mark.line + 1
    if operator not in OPERATORS:
        reader.error(op_node, f"{where}: unknown test '{operator}' (the tests are: {_one_of(OPERATORS)})")
        return None
    if operator in NUMERIC_OPERATORS:
        if spec.type != NUMBER:
            reader.error(op_node, f"{where}: {operator} compares numbers, and {field_name} is not a number")
            return None
        raw = reader.scalar(node)
        number = None if isinstance(raw, str) else _number(raw)
        if number is None:
            reader.error(node, f"{where}: {operator} needs a number, not {_show(raw)}")
            return None
        return Condition(field_name, operator, number, spec.type, line)
    if operator in LIST_OPERATORS:
        items = reader.sequence(node, f"{where}: {operator}")
        if items is None:
            return None
        if not items:
            reader.error(node, f"{where}: {operator} needs at least one value")
            return None
        values = [_value(reader, field_name, spec, item, where) for item in items]
        if any(value is None for value in values):
            return None
        return Condition(field_name, operator, frozenset(values), spec.type, line)
    value = _value(reader, field_name, spec, node, where)
    if value is None:
        return None
    return Condition(field_name, operator, value, spec.type, line)


def _value(reader: _Reader, field_name: str, spec: FieldSpec, node: yaml.Node, where: str) -> Any:
    raw = reader.scalar(node)
    if raw is _NOT_SCALAR or raw is None:
        reader.error(node, f"{where}: expected a single value, not {_show(raw)}")
        return None
    if spec.type == NUMBER:
        number = None if isinstance(raw, str | bool) else _number(raw)
        if number is None:
            reader.error(node, f"{where}: {field_name} is a number, not {_show(raw)}")
        return number
    if spec.type == FLAG:
        if not isinstance(raw, bool):
            reader.error(node, f"{where}: {field_name} is true or false, not {_show(raw)}")
            return None
        return raw
    if isinstance(raw, bool | dict | list):
        reader.error(node, f"{where}: {field_name} is a text, not {_show(raw)}")
        return None
    text = str(raw).strip()
    if spec.values and text not in spec.values:
        reader.error(node, f"{where}: '{text}' is not a {spec.what} (one of: {_one_of(spec.values)})")
        return None
    return text.casefold()


def _recipients(reader: _Reader, node: yaml.Node, schema: EventSchema, where: str) -> list[Recipient]:
    items = reader.sequence(node, where)
    found: list[Recipient] = []
    for item in items or []:
        entries = reader.mapping(item, where)
        if entries is None:
            continue
        kinds = [key for key in entries if key in RECIPIENT_KINDS]
        unknown = [key for key in entries if key not in RECIPIENT_KINDS]
        for key in unknown:
            reader.error(
                entries[key][0],
                f"{where}: unknown recipient kind '{key}' (use one of: {_one_of(RECIPIENT_KINDS)})",
            )
        if unknown:
            continue
        role: str | None = None
        if set(kinds) == {"department", "role"}:
            kind = "department"
            role = _role(reader, entries["role"][1], where)
            if role is None:
                continue
        elif len(kinds) != 1:
            reader.error(
                item, f"{where}: one recipient per line (only `department:` may come with a `role:`)"
            )
            continue
        else:
            kind = kinds[0]
        value_node = entries[kind][1]
        value = reader.text(value_node, f"{where}: {kind}")
        if value is None:
            continue
        if kind == "role":
            if _role(reader, value_node, where) is None:
                continue
        elif kind in ("person", "manager_of", "head_of"):
            allowed = [*PEOPLE, STATION] if kind == "head_of" else list(PEOPLE)
            available = [*schema.people, *([STATION] if schema.stock and kind == "head_of" else [])]
            if value not in allowed:
                reader.error(
                    value_node, f"{where}: {kind} '{value}' is unknown (use one of: {_one_of(allowed)})"
                )
                continue
            if value not in available:
                reader.error(
                    value_node,
                    f"{where}: {schema.name} events have no {value} ({kind} can be: {_one_of(available)})",
                )
                continue
        found.append(Recipient(kind, value, role, value_node.start_mark.line + 1))
    return found


def _role(reader: _Reader, node: yaml.Node, where: str) -> str | None:
    value = reader.scalar(node)
    if value == Role.CUSTOMER.value:
        reader.error(node, f"{where}: alerts are for staff, not customers")
        return None
    if value not in ALERT_ROLES:
        reader.error(node, f"{where}: unknown role {_show(value)} (use one of: {_one_of(ALERT_ROLES)})")
        return None
    return str(value)


def _channels(reader: _Reader, node: yaml.Node, label: str) -> tuple[str, ...] | None:
    items = reader.sequence(node, f"{label}: channels")
    if items is None:
        return None
    channels: list[str] = []
    for item in items:
        value = reader.scalar(item)
        if value == CHAT_ALIAS:
            channels += [channel for channel in CHAT_CHANNELS if channel not in channels]
        elif value in ALL_CHANNELS:
            if value not in channels:
                channels.append(str(value))
        else:
            reader.error(
                item,
                f"{label}: unknown channel {_show(value)} "
                f"(use one of: {_one_of([*ALL_CHANNELS, CHAT_ALIAS])})",
            )
    if not channels:
        reader.error(
            node, f"{label}: `channels:` lists no channel (leave it out for the person's own choice)"
        )
        return None
    return tuple(channels)


# --- evaluating the rules for one event --------------------------------------------------------------

# Every alert context carries all of these, so any template can test any of them.
BLANK_CONTEXT: dict[str, Any] = dict.fromkeys(
    (
        "ticket",
        "subject",
        "kind",
        "severity",
        "status",
        "target",
        "due_at",
        "level",
        "escalated_to_name",
        "assignee_name",
        "technician_name",
        "job",
        "score",
        "comment",
        "customer_name",
        "customer_code",
        "tier",
        "old_tier",
        "deal",
        "deal_name",
        "stage",
        "from_stage",
        "to_stage",
        "amount",
        "old_amount",
        "currency",
        "owner_name",
        "days",
        "last_visit",
        "part_code",
        "part_name",
        "station_name",
        "quantity",
        "min_quantity",
        "actor_name",
    ),
    "",
)


@dataclass
class _Facts:
    """What one event is about: condition values, the people it concerns, and the message context."""

    values: dict[str, Any]
    people: dict[str, int | None]
    context: dict[str, Any]
    station_department_id: int | None = None


def _id(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return str(value)


async def _name(session: AsyncSession, user_id: int | None) -> str:
    if user_id is None:
        return ""
    user = await session.get(User, user_id)
    return user.name if user is not None else ""


async def _facts(session: AsyncSession, event: OutboxEvent, schema: EventSchema) -> _Facts:
    payload = dict(event.payload or {})
    values: dict[str, Any] = {}
    people: dict[str, int | None] = dict.fromkeys(schema.people)
    people["actor"] = _id(payload.get("actor_id"))
    context = {**BLANK_CONTEXT, "event": event.event_type}
    facts = _Facts(values, people, context)
    customer_id = event.aggregate_id if event.aggregate == "customer" else _id(payload.get("customer_id"))

    if schema.request:
        request_id = (
            event.aggregate_id
            if event.aggregate == "service_request"
            else _id(payload.get("service_request_id"))
        )
        request = await session.get(ServiceRequest, request_id) if request_id else None
        if request is not None:
            ticket = ref("SR", request.id)
            values.update(
                ticket=ticket,
                kind=request.kind,
                severity=request.severity,
                status=request.status,
                channel=request.channel,
                escalation_level=request.escalation_level,
            )
            context.update(
                ticket=ticket,
                subject=request.subject,
                kind=request.kind,
                severity=request.severity,
                status=request.status,
                level=request.escalation_level or "",
            )
            customer_id = customer_id or request.customer_id
            people["assignee"] = request.assignee_id
            people["technician"] = (
                await session.execute(
                    select(RepairOrder.technician_id)
                    .where(
                        RepairOrder.service_request_id == request.id, RepairOrder.technician_id.is_not(None)
                    )
                    .order_by(RepairOrder.id.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            if request.resolved_at is None:
                # The next target the request has to meet; an SLA event names its own below.
                responded = request.first_response_at is not None
                context["target"] = "resolution" if responded else "response"
                context["due_at"] = _text(request.resolution_due_at if responded else request.response_due_at)
    if "assignee_id" in payload and "assignee" in people:
        people["assignee"] = _id(payload.get("assignee_id")) or people["assignee"]
    if "technician_id" in payload and "technician" in people:
        people["technician"] = _id(payload.get("technician_id")) or people["technician"]

    if schema.deal:
        deal = await session.get(Opportunity, event.aggregate_id)
        if deal is not None:
            values.update(stage=deal.stage, amount=deal.amount, probability=deal.probability)
            context.update(
                deal=ref("OP", deal.id),
                deal_name=deal.name,
                stage=deal.stage,
                amount=_text(deal.amount),
                currency=deal.currency,
            )
            people["owner"] = deal.owner_id
            customer_id = customer_id or deal.customer_id
        people["owner"] = _id(payload.get("owner_id")) or people.get("owner")

    if schema.customer and customer_id is not None:
        customer = await session.get(Customer, customer_id)
        if customer is not None:
            values.update(
                customer=customer.code,
                customer_tier=customer.tier,
                customer_segment=customer.segment,
                customer_type=customer.type,
            )
            context.update(customer_name=customer.name, customer_code=customer.code, tier=customer.tier)
            people["customer_owner"] = customer.owner_id
            if not schema.deal:
                people["owner"] = _id(payload.get("owner_id")) or customer.owner_id

    if schema.stock:
        stock = await session.get(PartStock, event.aggregate_id)
        part = await session.get(Part, stock.part_id) if stock is not None else None
        station = await session.get(ServiceStation, stock.station_id) if stock is not None else None
        if part is not None:
            values["part"] = part.code
            context.update(part_code=part.code, part_name=part.name)
        if station is not None:
            values["station"] = station.code
            context["station_name"] = station.name
            facts.station_department_id = station.department_id

    await _event_details(session, event, payload, facts)
    # The event's own fields say what was true when it happened; they win over today's rows.
    values.update({key: value for key, value in payload.items() if key in schema.fields})
    for role in ("assignee", "technician", "owner", "actor"):
        if role in people:
            context[f"{role}_name"] = await _name(session, people[role])
    return facts


async def _event_details(
    session: AsyncSession, event: OutboxEvent, payload: dict[str, Any], facts: _Facts
) -> None:
    """The facts particular to one event type that its headline needs."""
    context = facts.context
    kind = event.event_type
    if kind in ("ServiceRequestSlaBreached", "ServiceRequestSlaAtRisk"):
        context.update(target=_text(payload.get("target")), due_at=_text(payload.get("due_at")))
    elif kind == "ServiceRequestEscalated":
        context.update(
            level=payload.get("level") or "",
            escalated_to_name=await _name(session, _id(payload.get("escalated_to_id"))),
        )
    elif kind == "ServiceRequestOpened":
        context.update(kind=_text(payload.get("kind")), severity=_text(payload.get("severity")))
    elif kind in ("SurveyAnswered",):
        survey = await session.get(Survey, event.aggregate_id)
        context.update(score=payload.get("score") or "", comment=(survey.comment or "") if survey else "")
    elif kind == "OpportunityStageChanged":
        context.update(
            from_stage=_text(payload.get("from_stage")),
            to_stage=_text(payload.get("to_stage")),
            stage=_text(payload.get("to_stage")),
            amount=_text(_number(payload.get("amount")) or context["amount"]),
        )
    elif kind == "OpportunityAmountChanged":
        context.update(
            old_amount=_text(_number(payload.get("old_amount"))),
            amount=_text(_number(payload.get("new_amount"))),
        )
    elif kind in ("OpportunityCreated", "DealStalled"):
        context["amount"] = _text(_number(payload.get("amount")) or context["amount"])
    elif kind == "CustomerTierChanged":
        context.update(old_tier=_text(payload.get("old_tier")), tier=_text(payload.get("new_tier")))
    elif kind == "KeyCustomerNotVisited":
        context["tier"] = _text(payload.get("tier")) or context["tier"]
        last = (
            await session.execute(
                select(func.max(Visit.visited_on)).where(
                    Visit.customer_id == event.aggregate_id, Visit.kind.in_(VISIT_KINDS)
                )
            )
        ).scalar_one_or_none()
        context["last_visit"] = _text(last)
    elif kind == "PartStockLow":
        context.update(quantity=payload.get("quantity", ""), min_quantity=payload.get("min_quantity", ""))
    if event.aggregate == "repair_order":
        context["job"] = ref("RO", event.aggregate_id)
    if "days" in payload:
        context["days"] = payload.get("days") or ""


def _button_fits(intent: str, values: dict[str, str]) -> bool:
    """Whether the button payload the template will write stays within Telegram's 64 bytes."""
    encoded = json.dumps(values, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    # Jinja's tojson escapes these for HTML safety, which makes the payload longer.
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027")):
        encoded = encoded.replace(char, escaped)
    return len(f"/{intent}{encoded}".encode()) <= MAX_PAYLOAD_BYTES


def _message_kind(rule: Rule, context: Mapping[str, Any], muted: Iterable[str]) -> str:
    # People mute "alert" as a whole: the variants with a button are the same message to them.
    if rule.message != DEFAULT_MESSAGE or DEFAULT_MESSAGE in muted:
        return rule.message
    if context["ticket"] and _button_fits("check_request_status", {"ticket_id": context["ticket"]}):
        return REQUEST_MESSAGE
    if context["customer_code"] and _button_fits("customer_overview", {"customer": context["customer_code"]}):
        return CUSTOMER_MESSAGE
    return DEFAULT_MESSAGE


class AlertRules:
    """Checked alert rules: a rule of the Notifier, and the thresholds of the inactivity sweeps."""

    def __init__(
        self, rules: Sequence[Rule], *, source: str, params: Mapping[str, int] | None = None
    ) -> None:
        self.rules = tuple(rules)
        self.source = source
        self.params = dict(params or {})
        self._by_event: dict[str, list[Rule]] = {}
        for rule in self.rules:
            self._by_event.setdefault(rule.event, []).append(rule)
        self._event_types = frozenset(self._by_event)
        self._schemas = event_schemas()

    def __repr__(self) -> str:
        return f"AlertRules({len(self.rules)} rules from {self.source})"

    @property
    def event_types(self) -> frozenset[str]:
        """The event types some rule follows (the notifier skips the others without a look)."""
        return self._event_types

    def for_event(self, event_type: str) -> list[Rule]:
        """The rules following one event type, in file order."""
        return list(self._by_event.get(event_type, ()))

    def thresholds(self, event_type: str) -> list[int]:
        """The numbers of days the sweep raising `event_type` must check (one per distinct rule setting)."""
        return sorted({rule.days for rule in self._by_event.get(event_type, ()) if rule.days is not None})

    async def check_against(self, core: Core) -> None:
        """Check the users and departments the rules name against the database (at start: they change)."""
        usernames = {
            r.value for rule in self.rules for r in (*rule.notify, *rule.fallback) if r.kind == "user"
        }
        codes = {
            r.value for rule in self.rules for r in (*rule.notify, *rule.fallback) if r.kind == "department"
        }
        async with core.uow() as uow:
            session = uow.session
            users = {
                username: (role, active)
                for username, role, active in (
                    await session.execute(
                        select(User.username, User.role, User.active).where(User.username.in_(usernames))
                    )
                ).tuples()
            }
            departments = set(
                (await session.execute(select(Department.code).where(Department.code.in_(codes)))).scalars()
            )
        errors: list[str] = []
        for rule in self.rules:
            for recipient in (*rule.notify, *rule.fallback):
                where = f"{self.source}:{recipient.line}: rule '{rule.name}'"
                if recipient.kind == "user":
                    found = users.get(recipient.value)
                    if found is None:
                        errors.append(f"{where}: unknown user '{recipient.value}'")
                    elif found[0] == Role.CUSTOMER.value:
                        errors.append(f"{where}: '{recipient.value}' is a customer; alerts are for staff")
                    elif not found[1]:
                        errors.append(f"{where}: user '{recipient.value}' is deactivated")
                elif recipient.kind == "department" and recipient.value not in departments:
                    errors.append(f"{where}: unknown department '{recipient.value}'")
        if errors:
            raise RulesError(errors)

    async def __call__(self, session: AsyncSession, event: OutboxEvent) -> list[Message]:
        """The alerts one committed event causes: one message per person, whatever number of rules match."""
        rules = self._by_event.get(event.event_type)
        if not rules:
            return []
        schema = self._schemas[event.event_type]
        facts = await _facts(session, event, schema)
        chosen: dict[int, tuple[Rule, bool]] = {}
        for rule in rules:
            try:
                if not rule.matches(facts.values):
                    continue
                people = await self._people(session, rule, facts)
            except (ValueError, TypeError, ArithmeticError, LookupError):
                # A rule that cannot be evaluated on odd data must not cost the event its other messages.
                log.exception("alert rule %r failed on outbox event %s", rule.name, event.id)
                continue
            for user_id in people:
                first = chosen.get(user_id)
                chosen[user_id] = (first[0], first[1] or rule.urgent) if first else (rule, rule.urgent)
        messages: list[Message] = []
        for user_id, (rule, urgent) in chosen.items():
            preference = await session.get(NotificationPreference, user_id)
            muted = preference.muted_kinds or [] if preference is not None else []
            messages.append(
                Message(
                    kind=_message_kind(rule, facts.context, muted),
                    target=Target(user_id=user_id),
                    context={**facts.context, "rule": rule.name},
                    urgent=urgent,
                    channels=rule.channels,
                )
            )
        return messages

    async def _people(self, session: AsyncSession, rule: Rule, facts: _Facts) -> list[int]:
        found = await _resolve(session, rule.notify, facts)
        if not found and rule.fallback:
            found = await _resolve(session, rule.fallback, facts)
        actor = facts.people.get("actor")
        if not rule.include_actor and actor is not None:
            found = [user_id for user_id in found if user_id != actor]
        return found


async def _resolve(session: AsyncSession, recipients: Sequence[Recipient], facts: _Facts) -> list[int]:
    """Active staff named by `recipients`, in order, each once."""
    wanted: list[int] = []
    for recipient in recipients:
        wanted += await _resolve_one(session, recipient, facts)
    unique = list(dict.fromkeys(wanted))
    if not unique:
        return []
    staff = set(
        (
            await session.execute(
                select(User.id).where(
                    User.id.in_(unique), User.active.is_(True), User.role != Role.CUSTOMER.value
                )
            )
        ).scalars()
    )
    return [user_id for user_id in unique if user_id in staff]


async def _resolve_one(session: AsyncSession, recipient: Recipient, facts: _Facts) -> list[int]:
    kind, value = recipient.kind, recipient.value
    if kind == "role":
        rows = await session.execute(
            select(User.id).where(User.role == value, User.active.is_(True)).order_by(User.id)
        )
        return list(rows.scalars())
    if kind == "user":
        found = (await session.execute(select(User.id).where(User.username == value))).scalar_one_or_none()
        if found is None:
            log.warning("alert recipient user %r does not exist", value)
        return [found] if found is not None else []
    if kind == "department":
        department = (
            await session.execute(select(Department).where(Department.code == value))
        ).scalar_one_or_none()
        if department is None:
            log.warning("alert recipient department %r does not exist", value)
            return []
        if recipient.role is not None:
            return await _members(session, department.id, recipient.role)
        head = await _head_from(session, department.id, exclude=None)
        return [head] if head is not None else []
    if kind == "head_of" and value == STATION:
        if facts.station_department_id is None:
            return []
        head = await _head_from(session, facts.station_department_id, exclude=None)
        return [head] if head is not None else []
    person = facts.people.get(value)
    if person is None:
        return []
    if kind == "person":
        return [person]
    if kind == "manager_of":
        manager = await _manager_of(session, person)
        return [manager] if manager is not None else []
    user = await session.get(User, person)
    if user is None or user.department_id is None:
        return []
    head = await _head_from(session, user.department_id, exclude=user.id)
    return [head] if head is not None else []


async def _head_from(session: AsyncSession, department_id: int, *, exclude: int | None) -> int | None:
    """The head of a department, or of the nearest one above it that has an active head (not `exclude`)."""
    seen: set[int] = set()
    current: int | None = department_id
    while current is not None and current not in seen:
        seen.add(current)
        department = await session.get(Department, current)
        if department is None:
            return None
        if department.head_id is not None and department.head_id != exclude:
            head = await session.get(User, department.head_id)
            if head is not None and head.active:
                return head.id
        current = department.parent_id
    return None


async def _manager_of(session: AsyncSession, user_id: int) -> int | None:
    """A person's manager: up the manager chain to the first active one, else their department's head."""
    user = await session.get(User, user_id)
    if user is None:
        return None
    seen = {user.id}
    boss_id = user.manager_id
    while boss_id is not None and boss_id not in seen:
        seen.add(boss_id)
        boss = await session.get(User, boss_id)
        if boss is None:
            break
        if boss.active:
            return boss.id
        boss_id = boss.manager_id
    if user.department_id is None:
        return None
    return await _head_from(session, user.department_id, exclude=user.id)


async def _members(session: AsyncSession, department_id: int, role: str) -> list[int]:
    """Active users with `role` in a department and the departments below it."""
    tree = (await session.execute(select(Department.id, Department.parent_id))).tuples().all()
    children: dict[int, list[int]] = {}
    for child, parent in tree:
        if parent is not None:
            children.setdefault(parent, []).append(child)
    inside: set[int] = set()
    stack = [department_id]
    while stack:
        current = stack.pop()
        if current not in inside:
            inside.add(current)
            stack.extend(children.get(current, []))
    rows = await session.execute(
        select(User.id)
        .where(User.department_id.in_(inside), User.role == role, User.active.is_(True))
        .order_by(User.id)
    )
    return list(rows.scalars())


# --- the rules in force, and the sweeps -------------------------------------------------------------

_loaded: dict[str, tuple[int, AlertRules]] = {}


def active_rules(settings: Settings) -> AlertRules:
    """The rules in force (the operator's file, else the built-in ones), read again when the file changes."""
    path = settings.alert_rules or BUILTIN_RULES
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = -1
    cached = _loaded.get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    rules = load_rules(settings.alert_rules)
    _loaded[str(path)] = (stamp, rules)
    return rules


async def _stalled_deals(core: Core, now: datetime) -> int:
    raised = 0
    for days in active_rules(core.settings).thresholds("DealStalled"):
        raised += await core.watch.stalled_deals(now, days)
    return raised


async def _unvisited_key_customers(core: Core, now: datetime) -> int:
    raised = 0
    for days in active_rules(core.settings).thresholds("KeyCustomerNotVisited"):
        raised += await core.watch.unvisited_key_customers(now, days)
    return raised


# Rules look at every event (they are the Notifier's `rules`), so no event type is routed here.
ROUTES: dict[str, Route] = {}
SWEEPS: list[Sweep] = [
    Sweep("alerts.stalled_deals", _stalled_deals),
    Sweep("alerts.unvisited_key_customers", _unvisited_key_customers),
]
