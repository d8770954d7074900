"""Managers' alert rules: the built-in rules on real events, the people they reach, the rules file's
checks, the inactivity sweeps, and a real Notifier delivering alerts to recording senders."""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from core.auth import SYSTEM, Actor
from core.clock import FrozenClock
from core.container import Core
from core.db.models import Customer, Notification, NotificationPreference, OutboxEvent, User
from core.domain.enums import DepartmentKind, OpportunityStage, RequestKind, Severity
from core.domain.events import DomainEvent, ServiceRequestSlaAtRisk, ServiceRequestSlaBreached
from core.schemas import (
    OpportunityIn,
    OpportunityPatch,
    PartUsedIn,
    RepairActionIn,
    RepairOrderIn,
    ServiceRequestIn,
    TransitionIn,
    VisitIn,
)
from notifier.alerts import (
    BLANK_CONTEXT,
    SWEEPS,
    AlertRules,
    RulesError,
    active_rules,
    load_rules,
    parse_rules,
)
from notifier.dispatcher import Notifier
from notifier.routing import Message
from notifier.templates import MAX_PAYLOAD_BYTES, Templates
from notifier.types import ALL_CHANNELS, CHAT_CHANNELS, EMAIL, SMS
from tests.notify import Recorder
from tests.world import World

TZ = "Asia/Shanghai"




@pytest.fixture(scope="module")
def rules() -> AlertRules:
    return load_rules(None)


async def alerts(core: Core, rules: AlertRules) -> list[tuple[str, Message]]:
    """Run the rules over every event not looked at yet: (recipient's username, message), in order."""
    found: list[tuple[str, Message]] = []
    async with core.uow() as uow:
        session = uow.session
        events = (
            await session.execute(
                select(OutboxEvent).where(OutboxEvent.processed_at.is_(None)).order_by(OutboxEvent.id)
            )
        ).scalars()
        for event in events:
            for message in await rules(session, event):
                assert message.target.user_id is not None
                user = await session.get(User, message.target.user_id)
                assert user is not None
                found.append((user.username, message))
        await session.execute(update(OutboxEvent).values(processed_at=core.clock.now()))
        await uow.commit()
    return found


def who(found: list[tuple[str, Message]]) -> list[str]:
    return [username for username, _message in found]


async def emit(core: Core, event: DomainEvent) -> None:
    async with core.uow() as uow:
        uow.emit(event)
        await uow.commit()


async def open_request(core: Core, actor: Actor, **extra: Any) -> str:
    data = ServiceRequestIn(subject="The technician was two hours late", **extra)
    return (await core.service_desk.open_request(actor, data)).ref


async def new_deal(core: Core, actor: Actor, amount: str, name: str = "Acme renewal") -> str:
    data = OpportunityIn(
        customer_code="ACME", name=name, stage=OpportunityStage.NEGOTIATION, amount=Decimal(amount)
    )
    return (await core.sales.create_opportunity(actor, data)).ref


async def make_key(core: Core, code: str) -> None:
    async with core.uow() as uow:
        await uow.session.execute(update(Customer).where(Customer.code == code).values(tier="key"))
        await uow.commit()


async def request_id(core: Core, ticket: str) -> tuple[int, int]:
    detail = await core.service_desk.get_request(SYSTEM, ticket)
    async with core.uow() as uow:
        customer = (
            await uow.session.execute(select(Customer).where(Customer.code == detail.customer_code))
        ).scalar_one()
    return detail.id, customer.id


async def user_id(core: Core, username: str) -> int:
    async with core.uow() as uow:
        return (await uow.session.execute(select(User.id).where(User.username == username))).scalar_one()


# --- the built-in rules, one by one -------------------------------------------------------------------


def test_the_built_in_rules_load(rules: AlertRules) -> None:
    assert [rule.name for rule in rules.rules] == [
        "high-severity-complaint",
        "sla-breached",
        "low-csat",
        "large-deal-closed",
        "deal-stalled",
        "key-customer-not-visited",
        "part-stock-low",
    ]
    assert [rule.name for rule in rules.rules if rule.urgent] == ["sla-breached"]
    assert rules.thresholds("DealStalled") == [14]
    assert rules.thresholds("KeyCustomerNotVisited") == [30]
    assert rules.thresholds("PartStockLow") == []


async def test_a_high_severity_complaint_reaches_the_head_above_the_customers_owner(
    core: Core, world: World, rules: AlertRules
) -> None:
    ticket = await open_request(core, world.acme_customer, kind=RequestKind.COMPLAINT, severity=Severity.HIGH)
    # ACME's owner is rep.north; the North branch has no head, so the group's head hears of it.
    [(username, message)] = await alerts(core, rules)
    assert username == "director"
    assert message.kind == "alert_request" and not message.urgent and message.channels is None
    assert message.context["ticket"] == ticket and message.context["customer_name"] == "Acme Corp"
    assert message.context["rule"] == "high-severity-complaint"
    assert (message.context["kind"], message.context["severity"]) == ("complaint", "high")

    await core.org.add_department(
        SYSTEM,
        code="NORTH",
        name="North branch",
        kind=DepartmentKind.BRANCH,
        parent_code="GRP",
        head_username="north.manager",
    )
    await open_request(core, world.acme_customer, kind=RequestKind.COMPLAINT, severity=Severity.CRITICAL)
    assert who(await alerts(core, rules)) == ["north.manager"]


async def test_a_medium_complaint_or_a_critical_repair_request_alerts_nobody(
    core: Core, world: World, rules: AlertRules
) -> None:
    await open_request(core, world.acme_customer, kind=RequestKind.COMPLAINT, severity=Severity.MEDIUM)
    await open_request(core, world.acme_customer, kind=RequestKind.REQUEST, severity=Severity.CRITICAL)
    assert await alerts(core, rules) == []


async def test_an_sla_breach_reaches_the_assignee_urgently(
    core: Core, world: World, rules: AlertRules
) -> None:
    ticket = await open_request(core, world.acme_customer, kind=RequestKind.COMPLAINT, severity=Severity.HIGH)
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="assign", assignee="agent"))
    await alerts(core, rules)
    number, customer_id = await request_id(core, ticket)
    due = core.clock.now() - timedelta(hours=1)
    agent = await user_id(core, "agent")
    facts = {"aggregate_id": number, "customer_id": customer_id, "target": "response", "due_at": due}
    await emit(core, ServiceRequestSlaBreached(**facts, assignee_id=agent))
    # The assignee's manager hears of it through the escalation the SLA watch makes, not from this rule.
    [(username, message)] = await alerts(core, rules)
    assert username == "agent" and message.urgent
    assert message.context["target"] == "response" and message.context["due_at"] == due.isoformat()
    assert message.context["assignee_name"] == "Agent"
    # Only at risk, not breached: the near miss alerts nobody.
    await emit(core, ServiceRequestSlaAtRisk(**facts, assignee_id=agent))
    assert await alerts(core, rules) == []


async def test_an_sla_breach_with_nobody_assigned_goes_to_the_administrators(
    core: Core, world: World, rules: AlertRules
) -> None:
    ticket = await open_request(core, world.acme_customer)
    await alerts(core, rules)
    number, customer_id = await request_id(core, ticket)
    await emit(
        core,
        ServiceRequestSlaBreached(
            aggregate_id=number,
            customer_id=customer_id,
            target="response",
            due_at=core.clock.now(),
            assignee_id=None,
        ),
    )
    [(username, message)] = await alerts(core, rules)
    assert username == "admin" and message.urgent and message.context["assignee_name"] == ""


async def _resolved_by_repair(core: Core, world: World, technician: Actor) -> str:
    ticket = await open_request(core, world.acme_customer, serial_number=world.acme_serial)
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="assign", assignee="agent"))
    order = await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=ticket, technician=technician.username)
    )
    await core.service_desk.act_on_repair(technician, order.ref, RepairActionIn(action="accept"))
    await core.service_desk.act_on_repair(
        technician, order.ref, RepairActionIn(action="complete", work_summary="Replaced the door seal")
    )
    await core.surveys.create_for_request(world.agent, ticket)
    return ticket


async def test_a_low_rating_reaches_the_technicians_manager(
    core: Core, world: World, rules: AlertRules
) -> None:
    # The agent (north) handles the case; tech.south (managed by south.manager) did the work.
    ticket = await _resolved_by_repair(core, world, world.tech_south)
    await alerts(core, rules)
    await core.surveys.answer(world.acme_customer, ticket, 2, "Muddy boots on the carpet")
    [(username, message)] = await alerts(core, rules)
    assert username == "south.manager"
    assert message.context["score"] == 2 and message.context["comment"] == "Muddy boots on the carpet"
    assert message.context["technician_name"] == "Tech South" and message.kind == "alert_request"


async def test_a_low_rating_without_a_technician_reaches_the_assignees_manager(
    core: Core, world: World, rules: AlertRules
) -> None:
    ticket = await open_request(core, world.acme_customer)
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="assign", assignee="agent"))
    await core.service_desk.transition(
        world.agent, ticket, TransitionIn(action="resolve", resolution="Refund")
    )
    await core.surveys.create_for_request(world.agent, ticket)
    await alerts(core, rules)
    await core.surveys.answer(world.acme_customer, ticket, 1)
    assert who(await alerts(core, rules)) == ["north.manager"]


async def test_a_rating_of_three_alerts_nobody(core: Core, world: World, rules: AlertRules) -> None:
    ticket = await _resolved_by_repair(core, world, world.tech_north)
    await alerts(core, rules)
    await core.surveys.answer(world.acme_customer, ticket, 3)
    assert await alerts(core, rules) == []


async def test_a_large_deal_won_or_lost_reaches_the_owners_manager(
    core: Core, world: World, rules: AlertRules
) -> None:
    won = await new_deal(core, world.rep_north, "120000")
    lost = await new_deal(core, world.rep_north, "100000", "Acme second site")
    small = await new_deal(core, world.rep_north, "99999.99", "Acme spares")
    moved = await new_deal(core, world.rep_north, "500000", "Acme head office")
    await alerts(core, rules)
    sales = core.sales
    await sales.update_opportunity(world.rep_north, won, OpportunityPatch(stage=OpportunityStage.CLOSED_WON))
    await sales.update_opportunity(
        world.rep_north, lost, OpportunityPatch(stage=OpportunityStage.CLOSED_LOST, lost_reason="Price")
    )
    await sales.update_opportunity(
        world.rep_north, small, OpportunityPatch(stage=OpportunityStage.CLOSED_WON)
    )
    await sales.update_opportunity(world.rep_north, moved, OpportunityPatch(stage=OpportunityStage.PROPOSAL))
    found = await alerts(core, rules)
    assert [
        (username, message.context["deal"], message.context["to_stage"]) for username, message in found
    ] == [
        ("north.manager", won, "closed_won"),
        ("north.manager", lost, "closed_lost"),
    ]
    message = found[0][1]
    assert message.kind == "alert_customer" and message.context["amount"] == "120000.00"
    assert message.context["owner_name"] == "Rep North" and message.context["actor_name"] == "Rep North"


async def test_nobody_is_alerted_about_their_own_action(core: Core, world: World, rules: AlertRules) -> None:
    deal = await new_deal(core, world.rep_north, "300000")
    await alerts(core, rules)
    # The manager closes his rep's deal himself: the alert would go to him, so it goes nowhere.
    await core.sales.update_opportunity(
        world.north_manager, deal, OpportunityPatch(stage=OpportunityStage.CLOSED_WON)
    )
    assert await alerts(core, rules) == []
    mine = parse_rules(
        """
rules:
  - name: big-wins
    event: OpportunityStageChanged
    when: {to_stage: closed_won}
    notify: [{manager_of: owner}]
    include_actor: true
"""
    )
    deal = await new_deal(core, world.rep_north, "300000", "Acme west")
    await alerts(core, mine)
    await core.sales.update_opportunity(
        world.north_manager, deal, OpportunityPatch(stage=OpportunityStage.CLOSED_WON)
    )
    assert who(await alerts(core, mine)) == ["north.manager"]


async def test_a_part_below_its_minimum_reaches_the_stations_department_head(
    core: Core, world: World, rules: AlertRules
) -> None:
    ticket = await open_request(core, world.acme_customer, serial_number=world.acme_serial)
    order = await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=ticket, technician="tech.north")
    )
    await core.service_desk.act_on_repair(world.tech_north, order.ref, RepairActionIn(action="accept"))
    await alerts(core, rules)
    # ST-N held 3 of P-100 with a minimum of 1: using 2 leaves 1.
    await core.service_desk.act_on_repair(
        world.tech_north,
        order.ref,
        RepairActionIn(
            action="complete", work_summary="Pump", parts=[PartUsedIn(part_code="P-100", quantity=2)]
        ),
    )
    found = await alerts(core, rules)
    assert who(found) == ["director"]  # ST-N belongs to North (no head): the group's head
    context = found[0][1].context
    assert (context["part_code"], context["part_name"], context["station_name"]) == (
        "P-100",
        "Drain pump",
        "North station",
    )
    assert (context["quantity"], context["min_quantity"]) == (1, 1)
    assert found[0][1].kind == "alert"


async def test_a_manager_who_muted_alerts_gets_only_the_urgent_ones(
    core: Core, world: World, senders: dict[str, Recorder]
) -> None:
    await core.org.link_identity(SYSTEM, "north.manager", "telegram:7001")
    manager = await user_id(core, "north.manager")
    async with core.uow() as uow:
        preference = await uow.session.get(NotificationPreference, manager)
        assert preference is not None
        preference.muted_kinds = ["alert"]
        await uow.commit()
    own_rules = parse_rules(
        "rules:\n"
        "  - name: big-deal\n"
        "    event: OpportunityStageChanged\n"
        "    when:\n"
        "      to_stage: [closed_won, closed_lost]\n"
        "      amount: {at_least: 100000}\n"
        "    notify:\n"
        "      - manager_of: owner\n"
        "  - name: sla-to-the-manager\n"
        "    event: ServiceRequestSlaBreached\n"
        "    notify:\n"
        "      - manager_of: assignee\n"
        "    urgency: urgent\n",
        "own.yml",
    )
    notifier = Notifier(core, senders, rules=[own_rules])
    deal = await new_deal(core, world.rep_north, "250000")
    await core.sales.update_opportunity(
        world.rep_north, deal, OpportunityPatch(stage=OpportunityStage.CLOSED_WON)
    )
    ticket = await open_request(core, world.acme_customer)
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="assign", assignee="agent"))
    number, customer_id = await request_id(core, ticket)
    await emit(
        core,
        ServiceRequestSlaBreached(
            aggregate_id=number,
            customer_id=customer_id,
            target="response",
            due_at=core.clock.now(),
            assignee_id=await user_id(core, "agent"),
        ),
    )
    await notifier.run_once()
    async with core.uow() as uow:
        rows = (
            await uow.session.execute(
                select(Notification.kind, Notification.status, Notification.urgent)
                .where(Notification.user_id == manager)
                .order_by(Notification.id)
            )
        ).all()
    assert [tuple(row) for row in rows] == [("alert", "skipped", False), ("alert", "sent", True)]
    [chat] = senders["telegram"].sent
    assert chat.content.subject.startswith(f"SLA breached: {ticket}") and chat.content.buttons == ()


# --- the inactivity sweeps ------------------------------------------------------------------------


def sweep(name: str) -> Any:
    [found] = [item for item in SWEEPS if item.name == name]
    return found.run


async def test_a_stalled_deal_is_raised_once_and_again_after_it_moved_and_stalled_again(
    core: Core, world: World, clock: FrozenClock, rules: AlertRules
) -> None:
    deal = await new_deal(core, world.rep_north, "80000")
    await new_deal(core, world.rep_north, "90000", "Acme lost one")
    await core.sales.update_opportunity(
        world.rep_north, "OP-2", OpportunityPatch(stage=OpportunityStage.CLOSED_LOST, lost_reason="Budget")
    )
    await alerts(core, rules)
    stalled = sweep("alerts.stalled_deals")
    start = clock.now()
    assert await stalled(core, start + timedelta(days=13, hours=23)) == 0
    assert await stalled(core, start + timedelta(days=14)) == 1  # the closed deal never stalls
    assert await stalled(core, start + timedelta(days=14, minutes=1)) == 0
    assert await stalled(core, start + timedelta(days=20)) == 0
    found = await alerts(core, rules)
    assert who(found) == ["rep.north", "north.manager"]
    assert found[0][1].context["days"] == 14 and found[0][1].context["deal"] == deal
    # The rep moves it on day 20; fourteen quiet days later it is stalled again.
    clock.set(start + timedelta(days=20))
    await core.sales.update_opportunity(world.rep_north, deal, OpportunityPatch(amount=Decimal("85000")))
    await alerts(core, rules)
    assert await stalled(core, start + timedelta(days=33)) == 0
    assert await stalled(core, start + timedelta(days=34)) == 1
    assert await stalled(core, start + timedelta(days=34)) == 0
    assert who(await alerts(core, rules)) == ["rep.north", "north.manager"]


async def test_a_key_customer_not_visited_is_raised_once_per_absence(
    core: Core, world: World, clock: FrozenClock, rules: AlertRules
) -> None:
    await make_key(core, "ACME")
    unvisited = sweep("alerts.unvisited_key_customers")
    start = clock.now()
    # GLOBEX is not a key customer; ACME was created today and never visited.
    assert await unvisited(core, start + timedelta(days=29)) == 0
    assert await unvisited(core, start + timedelta(days=30)) == 1
    assert await unvisited(core, start + timedelta(days=31)) == 0
    found = await alerts(core, rules)
    assert who(found) == ["rep.north", "north.manager"]
    assert found[0][1].kind == "alert_customer" and found[0][1].context["last_visit"] == ""
    # A phone call is not a visit; a visit on day 40 starts the count again.
    clock.set(start + timedelta(days=40))
    today = date(2026, 7, 25)
    await core.sales.log_visit(world.rep_north, VisitIn(customer_code="ACME", visited_on=today, kind="call"))
    assert await unvisited(core, start + timedelta(days=41)) == 0
    await core.sales.log_visit(
        world.rep_north, VisitIn(customer_code="ACME", visited_on=today, summary="Review")
    )
    await alerts(core, rules)
    assert await unvisited(core, start + timedelta(days=69)) == 0
    assert await unvisited(core, start + timedelta(days=70)) == 1
    found = await alerts(core, rules)
    assert who(found) == ["rep.north", "north.manager"] and found[0][1].context["last_visit"] == "2026-07-25"


async def test_the_rules_file_sets_the_sweeps_days(
    core: Core, world: World, clock: FrozenClock, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(
        """
params:
  stalled_deal_days: 5
rules:
  - name: early-warning
    event: DealStalled
    notify: [{person: owner}]
  - name: escalate-long-stalls
    event: DealStalled
    days: 10
    notify: [{manager_of: owner}]
""",
        encoding="utf-8",
    )
    core.settings.alert_rules = path
    mine = active_rules(core.settings)
    assert mine.thresholds("DealStalled") == [5, 10] and mine.thresholds("KeyCustomerNotVisited") == []
    await new_deal(core, world.rep_north, "80000")
    await alerts(core, mine)
    stalled = sweep("alerts.stalled_deals")
    assert await stalled(core, clock.now() + timedelta(days=5)) == 1
    assert who(await alerts(core, mine)) == ["rep.north"]
    assert await stalled(core, clock.now() + timedelta(days=10)) == 1
    assert who(await alerts(core, mine)) == ["north.manager"]
    assert await sweep("alerts.unvisited_key_customers")(core, clock.now() + timedelta(days=99)) == 0


# --- rules of your own ------------------------------------------------------------------------------


async def test_one_person_matched_by_several_rules_gets_one_message(
    core: Core, world: World, rules: AlertRules
) -> None:
    mine = parse_rules(
        """
rules:
  - name: every-complaint
    event: ServiceRequestOpened
    when: {kind: complaint}
    notify:
      - user: north.manager
      - department: NORTH-SVC
        role: technician
    channels: [email, chat]
  - name: critical-anything
    event: ServiceRequestOpened
    when:
      severity: {one_of: [critical]}
      customer_tier: {is_not: key}
    notify:
      - manager_of: customer_owner
      - role: admin
    urgency: urgent
"""
    )
    await open_request(core, world.acme_customer, kind=RequestKind.COMPLAINT, severity=Severity.CRITICAL)
    found = await alerts(core, mine)
    assert who(found) == ["north.manager", "tech.north", "admin"]
    first = found[0][1]
    assert first.context["rule"] == "every-complaint" and first.urgent  # one of its rules is urgent
    assert first.channels == (EMAIL, *CHAT_CHANNELS)
    assert not found[1][1].urgent and found[2][1].urgent and found[2][1].channels is None
    await open_request(core, world.acme_customer, kind=RequestKind.REQUEST, severity=Severity.LOW)
    assert await alerts(core, mine) == []


async def test_an_alert_never_goes_to_a_customer(core: Core, world: World) -> None:
    mine = parse_rules(
        """
rules:
  - name: tell-whoever-did-it
    event: ServiceRequestOpened
    notify: [{person: actor}]
    include_actor: true
"""
    )
    await open_request(core, world.acme_customer)
    await open_request(core, world.agent, customer_code="GLOBEX")
    assert who(await alerts(core, mine)) == ["agent"]


# --- a bad rules file ---------------------------------------------------------------------------------

BAD = """\
params:
  stalled_deal_days: soon
rules:
  - name: complaints
    event: ServiceRequestOpend
    notify: [{role: admin}]
  - name: complaints
    event: ServiceRequestOpened
    when:
      colour: red
      severity: {roughly: high}
    notify: [{role: boss}]
  - name: csat
    event: SurveyAnswered
    when:
      score: {at_most: low}
      severity: hgh
    notify:
      - manager_of: technician
      - team: north
    channels: [email, pigeon]
    urgency: asap
  - name: deals
    event: OpportunityStageChanged
    notify:
      - manager_of: technician
    days: 3
    include_actor: maybe
  - event: PartStockLow
    notify: [{head_of: station}]
"""


def test_a_bad_rules_file_names_every_mistake_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yml"
    path.write_text(BAD, encoding="utf-8")
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    errors = caught.value.errors
    text = str(caught.value)
    assert all(line.startswith(f"{path}:") for line in text.splitlines())
    expected = [
        (2, "params.stalled_deal_days must be a whole number of days"),
        (5, "unknown event type 'ServiceRequestOpend'"),
        (10, "ServiceRequestOpened has no field 'colour'"),
        (11, "unknown test 'roughly'"),
        (12, "unknown role 'boss'"),
        (16, "at_most needs a number, not 'low'"),
        (17, "'hgh' is not a severity (one of: low, medium, high, critical)"),
        (20, "unknown recipient kind 'team'"),
        (21, "unknown channel 'pigeon'"),
        (22, "urgency must be normal or urgent, not 'asap'"),
        (26, "OpportunityStageChanged events have no technician"),
        (27, "`days:` is only for DealStalled, KeyCustomerNotVisited rules"),
        (28, "include_actor must be true or false, not 'maybe'"),
        (29, "a rule needs a `name:`"),
    ]
    for line, reason in expected:
        assert any(error.startswith(f"{path}:{line}: ") and reason in error for error in errors), (
            line,
            reason,
            errors,
        )
    # The second "complaints" is refused for its own mistakes; a clean duplicate is refused as one.
    duplicate = "rules:\n" + "  - name: a\n    event: DealStalled\n    notify: [{person: owner}]\n" * 2
    with pytest.raises(
        RulesError, match=r"^<alert rules>:5: rule 'a': the name is already used by the rule on line 2$"
    ):
        parse_rules(duplicate)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules:\n  - name: x\n    event: [DealStalled\n", r"^f.yml:4: not valid YAML"),
        ("", r"^f.yml:1: the file is empty"),
        ("rule:\n  - name: x\n", r"^f.yml:1: unknown section 'rule'"),
        ("rules:\n  name: x\n", r"^f.yml:2: rules must be a list"),
        (
            "rules:\n  - name: x\n    event: DealStalled\n    notify: []\n",
            r"^f.yml:4: rule 'x': `notify:` names nobody",
        ),
        (
            "rules:\n  - name: x\n    event: DealStalled\n    when: {amount: {at_least: 5, below: lots}}\n"
            "    notify: [{person: owner}]\n",
            r"^f.yml:4: rule 'x': amount: below needs a number",
        ),
        (
            "rules:\n  - name: x\n    event: PartStockLow\n    when: {part: {above: 3}}\n"
            "    notify: [{role: admin}]\n",
            r"^f.yml:4: rule 'x': part: above compares numbers, and part is not a number",
        ),
        (
            "rules:\n  - name: x\n    event: DealStalled\n    notify: [{role: customer}]\n",
            r"^f.yml:4: rule 'x': notify: alerts are for staff",
        ),
        (
            "rules:\n  - name: x\n    event: DealStalled\n    notify: [{person: owner}]\n"
            "    message: link_code\n",
            r"^f.yml:5: rule 'x': unknown message 'link_code'",
        ),
        (
            "rules:\n  - name: x\n    event: LinkCodeRequested\n    notify: [{role: admin}]\n",
            r"^f.yml:3: rule 'x': unknown event type 'LinkCodeRequested'",
        ),
        (
            "rules:\n  - name: x\n    event: DealStalled\n    notify: [{user: a, role: admin}]\n",
            r"^f.yml:4: rule 'x': notify: one recipient per line",
        ),
        ("rules:\n  - name: x\n    name: y\n", r"(?m)^f.yml:3: a rule: 'name' is given twice"),
    ],
)
def test_more_mistakes_are_refused_with_their_line(text: str, expected: str) -> None:
    with pytest.raises(RulesError, match=expected):
        parse_rules(text, "f.yml")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"nope.yml:1: cannot read the file"):
        load_rules(tmp_path / "nope.yml")


async def test_users_and_departments_are_checked_against_the_database(core: Core, world: World) -> None:
    good = parse_rules(
        """
rules:
  - name: x
    event: DealStalled
    notify:
      - user: north.manager
      - department: NORTH-SVC
"""
    )
    await good.check_against(core)
    bad = parse_rules(
        """
rules:
  - name: x
    event: DealStalled
    notify:
      - user: nobody.here
      - department: MOON
    fallback:
      - user: acme.buyer
""",
        "mine.yml",
    )
    with pytest.raises(RulesError) as caught:
        await bad.check_against(core)
    assert caught.value.errors == [
        "mine.yml:6: rule 'x': unknown user 'nobody.here'",
        "mine.yml:7: rule 'x': unknown department 'MOON'",
        "mine.yml:9: rule 'x': 'acme.buyer' is a customer; alerts are for staff",
    ]
    await load_rules(None).check_against(core)


# --- end to end through a real Notifier ---------------------------------------------------------------


@pytest.fixture
def senders() -> dict[str, Recorder]:
    return {name: Recorder(name) for name in ("email", "sms", "telegram", "slack")}


async def test_the_notifier_delivers_alerts_by_the_rules(
    core: Core, world: World, senders: dict[str, Recorder], clock: FrozenClock
) -> None:
    notifier = Notifier(core, senders, rules=[load_rules(None)])
    async with core.uow() as uow:  # the director reads Chinese
        await uow.session.execute(update(User).where(User.username == "director").values(lang="zh"))
        await uow.commit()
    await core.org.link_identity(SYSTEM, "north.manager", "telegram:7001")
    await core.org.link_identity(SYSTEM, "agent", "telegram:7003")
    deal = await new_deal(core, world.rep_north, "250000")
    await notifier.run_once()
    assert senders["telegram"].sent == [] and senders["email"].sent == []
    await core.sales.update_opportunity(
        world.rep_north, deal, OpportunityPatch(stage=OpportunityStage.CLOSED_WON)
    )
    await notifier.run_once()
    [chat] = senders["telegram"].sent
    assert chat.content.subject == f"Deal won: {deal} Acme renewal — CNY 250,000.00"
    assert "Customer: Acme Corp (ACME)" in chat.content.text and "Owner: Rep North" in chat.content.text
    assert [(button.title, button.payload) for button in chat.content.buttons] == [
        ("Customer overview", '/customer_overview{"customer":"ACME"}')
    ]
    assert senders["email"].sent == []  # one channel: the first the manager can be reached on

    # At 23:00 in Shanghai a normal alert waits for the morning; an SLA breach goes out now.
    clock.set(datetime.fromisoformat("2026-06-15T23:00:00+08:00"))
    ticket = await open_request(core, world.acme_customer, kind=RequestKind.COMPLAINT, severity=Severity.HIGH)
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="assign", assignee="agent"))
    number, customer_id = await request_id(core, ticket)
    agent = await user_id(core, "agent")
    await emit(
        core,
        ServiceRequestSlaBreached(
            aggregate_id=number,
            customer_id=customer_id,
            target="response",
            due_at=clock.now() - timedelta(minutes=30),
            assignee_id=agent,
        ),
    )
    await notifier.run_once()
    urgent = senders["telegram"].sent[-1]
    assert urgent.user_id == agent
    assert urgent.content.subject == (
        f"SLA breached: {ticket} (complaint, high) — first response was due Mon 15 Jun 2026, 22:30, "
        "assigned to Agent"
    )
    assert urgent.content.buttons[0].payload == f'/check_request_status{{"ticket_id":"{ticket}"}}'
    async with core.uow() as uow:
        waiting = (
            await uow.session.execute(
                select(Notification).where(
                    Notification.kind == "alert_request", Notification.status == "pending"
                )
            )
        ).scalar_one()
    assert waiting.user_id == (await user_id(core, "director")) and not waiting.urgent  # the complaint

    # The complaint waited for the morning, in Chinese for the director, by email.
    clock.set(datetime.fromisoformat("2026-06-16T09:00:00+08:00"))
    await make_key(core, "GLOBEX")
    await sweep("alerts.unvisited_key_customers")(core, clock.now() + timedelta(days=30))
    await notifier.run_once()
    zh = [message for message in senders["email"].sent if message.address == "director@example.com"]
    assert [message.content.subject for message in zh] == [
        "客户投诉 " + ticket + "（严重程度：高）：Acme Corp"
    ]
    south = [message for message in senders["email"].sent if message.address == "south.manager@example.com"]
    assert south[0].content.subject == "Key customer not visited: Globex Ltd — no visit for 30 days"
    assert "Last visit: none on record" in south[0].content.text
    assert 'the alert rule "key-customer-not-visited" sends it' in south[0].content.text


# --- the alert texts ------------------------------------------------------------------------------

LONG_NAME = "阿卜杜热合曼·买买提国际贸易有限公司华东区分公司"


def samples() -> list[dict[str, Any]]:
    """A context for each default rule's event (and two others), with long names."""
    base = {**BLANK_CONTEXT, "recipient_name": "North Manager", "currency": "CNY", "rule": "some-rule"}
    request = {
        "ticket": "SR-123456",
        "subject": "洗衣机脱水时剧烈晃动，噪音很大，门封处一直漏水，显示屏反复报错E13",
        "kind": "complaint",
        "severity": "critical",
        "status": "assigned",
        "customer_name": LONG_NAME,
        "customer_code": "ACME",
        "tier": "key",
        "owner_name": "Rep North",
        "assignee_name": "司马建国",
        "actor_name": "Acme Buyer",
        "due_at": "2026-06-15T06:00:00+00:00",
    }
    deal = {
        "deal": "OP-4567",
        "deal_name": "Acme head office renewal with three years of service",
        "stage": "closed_won",
        "from_stage": "negotiation",
        "to_stage": "closed_won",
        "amount": "1234567.89",
        "customer_name": LONG_NAME,
        "customer_code": "ACME",
        "tier": "key",
        "owner_name": "Rep North",
    }
    return [
        {**base, **request, "event": "ServiceRequestOpened"},
        {**base, **request, "event": "ServiceRequestSlaBreached", "target": "resolution"},
        {**base, **request, "event": "ServiceRequestSlaBreached", "target": "response", "assignee_name": ""},
        {**base, **request, "event": "ServiceRequestEscalated", "level": 2, "escalated_to_name": "Director"},
        {
            **base,
            **request,
            "event": "SurveyAnswered",
            "score": 1,
            "comment": "Never again",
            "technician_name": "Tom",
        },
        {**base, **deal, "event": "OpportunityStageChanged"},
        {
            **base,
            **deal,
            "event": "OpportunityStageChanged",
            "to_stage": "closed_lost",
            "stage": "closed_lost",
        },
        {
            **base,
            **deal,
            "event": "OpportunityAmountChanged",
            "stage": "proposal",
            "to_stage": "",
            "old_amount": "5",
        },
        {
            **base,
            **deal,
            "event": "DealStalled",
            "stage": "proposal",
            "to_stage": "",
            "from_stage": "",
            "days": 14,
        },
        {
            **base,
            "event": "KeyCustomerNotVisited",
            "customer_name": LONG_NAME,
            "customer_code": "ACME",
            "days": 30,
            "tier": "key",
            "owner_name": "Rep North",
            "last_visit": "2026-05-01",
        },
        {
            **base,
            "event": "PartStockLow",
            "part_code": "P-100",
            "part_name": "Drain pump for WM-2023 front loaders",
            "station_name": "North station, Harbour Road depot",
            "quantity": 0,
            "min_quantity": 2,
        },
        {
            **base,
            "event": "RepairDeclined",
            "job": "RO-77",
            "ticket": "SR-5",
            "kind": "request",
            "severity": "low",
        },
    ]


GSM = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)


def sms_parts(text: str) -> int:
    if all(char in GSM for char in text):
        return 1 if len(text) <= 160 else math.ceil(len(text) / 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_alert_renders_on_every_channel(lang: str) -> None:
    templates = Templates()
    assert {"alert", "alert_request", "alert_customer"} <= templates.kinds("zh")
    for context in samples():
        for kind in ("alert", "alert_request", "alert_customer"):
            if kind == "alert_request" and not context["ticket"]:
                continue
            for channel in ALL_CHANNELS:
                rendered = templates.render(kind, channel, lang, context, TZ)
                where = (context["event"], kind, channel, lang)
                assert rendered.subject.strip() and "\n" not in rendered.subject, where
                for text in (rendered.subject, rendered.text):
                    assert (
                        "None" not in text and "Undefined" not in text and "  " not in text.replace("\n", "")
                    ), (
                        where,
                        text,
                    )
                if lang == "zh":
                    assert re.search(r"[\u4e00-\u9fff]", rendered.subject), where
                key = (
                    context["job"]
                    or context["ticket"]
                    or context["deal"]
                    or context["part_code"]
                    or context["customer_name"][:8]
                )
                assert key in rendered.text, (where, rendered.text)
                if channel == SMS:
                    assert sms_parts(rendered.text) <= 2, (where, rendered.text)
                    assert rendered.text.startswith("【crmbot】" if lang == "zh" else "crmbot alert:"), where
                elif channel == EMAIL:
                    assert "some-rule" in rendered.text and rendered.html is not None
                else:
                    for button in rendered.buttons:
                        assert len(button.payload.encode()) <= MAX_PAYLOAD_BYTES
                    assert len(rendered.buttons) == (0 if kind == "alert" else 1)


def test_the_headlines_say_what_happened() -> None:
    templates = Templates()
    contexts = {context["event"] + context["to_stage"] + context["target"]: context for context in samples()}

    def subject(key: str, lang: str = "en") -> str:
        return templates.render("alert", EMAIL, lang, contexts[key], TZ).subject

    assert subject("ServiceRequestOpened") == f"Critical-severity complaint SR-123456: {LONG_NAME}"
    assert subject("ServiceRequestSlaBreachedresolution") == (
        "SLA breached: SR-123456 (complaint, critical) — resolution was due Mon 15 Jun 2026, 14:00, "
        "assigned to 司马建国"
    )
    assert subject("ServiceRequestSlaBreachedresponse", "zh") == (
        "SLA 已超时：SR-123456（投诉，特急）——首次响应时限为 2026年6月15日 周一 14:00，尚未分派"
    )
    assert subject("SurveyAnswered") == f"Low satisfaction: SR-123456 rated 1/5 by {LONG_NAME}"
    assert subject("OpportunityStageChangedclosed_won") == (
        "Deal won: OP-4567 Acme head office renewal with three years of service — CNY 1,234,567.89"
    )
    assert subject("OpportunityStageChangedclosed_won", "zh") == (
        "赢单：OP-4567 Acme head office renewal with three years of service，金额 ¥1,234,567.89"
    )
    assert subject("DealStalled", "zh").startswith("商机停滞：OP-4567")
    assert (
        subject("PartStockLow")
        == "Low stock: P-100 Drain pump for WM-2023 front loaders at North station, Harbour Road depot "
        "— 0 left"
    )
    assert subject("RepairDeclined") == "Job declined: RO-77"
    assert subject("RepairDeclined", "zh") == "工单被拒绝：RO-77"
