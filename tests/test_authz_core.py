"""Authorization matrix at the core: every service refuses outsiders, leaks nothing, changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from core.auth import Actor
from core.container import Core
from core.db.models import Base
from core.domain.enums import CustomerType, OpportunityStage
from core.errors import DomainError, NotFound, PermissionDenied
from core.schemas import (
    ContactIn,
    CustomerIn,
    CustomerPatch,
    InstalledProductIn,
    OpportunityIn,
    OpportunityPatch,
    RepairActionIn,
    RepairOrderIn,
    ServiceRequestIn,
    TransitionIn,
    VisitIn,
)
from tests.world import World


@dataclass
class Acme:
    """Records of ACME (north) that outsiders must not reach."""

    request_ref: str
    order_ref: str
    deal_ref: str


async def acme_records(core: Core, world: World) -> Acme:
    request = await core.service_desk.open_request(
        world.acme_customer, ServiceRequestIn(subject="Acme secret leak", serial_number=world.acme_serial)
    )
    order = await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=request.ref, technician="tech.north")
    )
    deal = await core.sales.create_opportunity(
        world.rep_north, OpportunityIn(customer_code="ACME", name="Acme renewal", amount=Decimal("50000"))
    )
    await core.sales.log_visit(
        world.rep_north,
        VisitIn(customer_code="ACME", visited_on=date(2026, 6, 14), summary="Acme secret plans"),
    )
    return Acme(request_ref=request.ref, order_ref=order.ref, deal_ref=deal.ref)


Operation = Callable[[Core, Actor, Acme, World], Awaitable[object]]

OPERATIONS: dict[str, Operation] = {
    "customer.get": lambda c, a, r, w: c.customers.get(a, "ACME"),
    "customer.update": lambda c, a, r, w: c.customers.update(a, "ACME", CustomerPatch(name="Pwned")),
    "customer.contacts": lambda c, a, r, w: c.customers.contacts(a, "ACME"),
    "customer.add_contact": lambda c, a, r, w: c.customers.add_contact(a, "ACME", ContactIn(name="Mallory")),
    "customer.create": lambda c, a, r, w: c.customers.create(
        a, CustomerIn(code="NEW1", name="N", type=CustomerType.END, owner="rep.north")
    ),
    "warranty": lambda c, a, r, w: c.installed.warranty(a, w.acme_serial),
    "installed.register": lambda c, a, r, w: c.installed.register(
        a,
        InstalledProductIn(
            serial_number="ZZ-1", product_code="WM-2023", customer_code="ACME", sold_on=date(2026, 1, 1)
        ),
    ),
    "request.get": lambda c, a, r, w: c.service_desk.get_request(a, r.request_ref),
    "request.open_for_acme": lambda c, a, r, w: c.service_desk.open_request(
        a, ServiceRequestIn(customer_code="ACME", subject="x", serial_number=w.acme_serial)
    ),
    "request.transition": lambda c, a, r, w: c.service_desk.transition(
        a, r.request_ref, TransitionIn(action="escalate")
    ),
    "request.comment": lambda c, a, r, w: c.service_desk.add_comment(a, r.request_ref, "hello"),
    "repair.get": lambda c, a, r, w: c.service_desk.get_repair_order(a, r.order_ref),
    "repair.accept": lambda c, a, r, w: c.service_desk.act_on_repair(
        a, r.order_ref, RepairActionIn(action="accept")
    ),
    "repair.cancel": lambda c, a, r, w: c.service_desk.act_on_repair(
        a, r.order_ref, RepairActionIn(action="cancel", comment="x")
    ),
    "repair.dispatch": lambda c, a, r, w: c.service_desk.dispatch(
        a, RepairOrderIn(service_request=r.request_ref, technician="tech.south")
    ),
    "deal.get": lambda c, a, r, w: c.sales.get_opportunity(a, r.deal_ref),
    "deal.update": lambda c, a, r, w: c.sales.update_opportunity(
        a, r.deal_ref, OpportunityPatch(stage=OpportunityStage.NEGOTIATION)
    ),
    "deal.create_for_acme": lambda c, a, r, w: c.sales.create_opportunity(
        a, OpportunityIn(customer_code="ACME", name="steal", amount=Decimal("1"))
    ),
    "visit.log_for_acme": lambda c, a, r, w: c.sales.log_visit(
        a, VisitIn(customer_code="ACME", visited_on=date(2026, 6, 14))
    ),
    "survey.answer": lambda c, a, r, w: c.surveys.answer(a, r.request_ref, 1),
    "org.add_user": lambda c, a, r, w: c.org.issue_api_token(a, "admin"),
}

OUTSIDERS = ["globex_customer", "rep_south", "tech_south"]

# Where an outsider is allowed to act at all, but not on ACME; everything else must be refused.
ALLOWED: set[tuple[str, str]] = {
    # Technicians look up any serial's warranty on site (DESIGN J2: staff may look up any).
    ("tech_south", "warranty"),
    # The field and the desk need any customer's profile and contacts.
    ("tech_south", "customer.get"),
    ("tech_south", "customer.contacts"),
    ("rep_south", "warranty"),
}


async def snapshot(core: Core) -> dict[str, int]:
    async with core.uow() as uow:
        return {
            table.name: (await uow.session.execute(select(func.count()).select_from(table))).scalar_one()
            for table in Base.metadata.sorted_tables
        }


@pytest.mark.parametrize("outsider", OUTSIDERS)
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
async def test_outsiders_are_refused_and_nothing_changes(
    core: Core, world: World, outsider: str, operation: str
) -> None:
    records = await acme_records(core, world)
    actor: Actor = getattr(world, outsider)
    before = await snapshot(core)
    if (outsider, operation) in ALLOWED:
        result = await OPERATIONS[operation](core, actor, records, world)
        assert result is not None
        return
    with pytest.raises((NotFound, PermissionDenied)) as refused:
        await OPERATIONS[operation](core, actor, records, world)
    message = refused.value.message
    assert "Acme" not in message and "secret" not in message and "rep.north" not in message
    assert await snapshot(core) == before


INSIDERS: dict[str, list[str]] = {
    "acme_customer": ["customer.get", "warranty", "request.get", "repair.get", "request.open_for_acme"],
    "rep_north": [
        "customer.get",
        "customer.update",
        "customer.contacts",
        "customer.add_contact",
        "deal.get",
        "deal.update",
        "deal.create_for_acme",
        "visit.log_for_acme",
        "request.get",
        "request.transition",
        "warranty",
    ],
    "north_manager": [
        "customer.get",
        "deal.get",
        "deal.update",
        "request.get",
        "repair.get",
        "repair.cancel",
    ],
    "director": ["customer.get", "deal.get", "deal.create_for_acme"],
    "tech_north": ["repair.get", "repair.accept", "request.get", "warranty"],
    "agent": [
        "request.get",
        "request.transition",
        "request.comment",
        "repair.get",
        "repair.cancel",
        "installed.register",
    ],
}


@pytest.mark.parametrize(
    ("insider", "operation"),
    [(insider, operation) for insider, operations in INSIDERS.items() for operation in operations],
)
async def test_the_right_people_can(core: Core, world: World, insider: str, operation: str) -> None:
    records = await acme_records(core, world)
    result = await OPERATIONS[operation](core, getattr(world, insider), records, world)
    assert result is not None or operation == "request.comment"


async def test_lists_return_only_what_the_actor_may_see(core: Core, world: World) -> None:
    await acme_records(core, world)
    globex = await core.service_desk.open_request(
        world.globex_customer, ServiceRequestIn(subject="Globex thing")
    )
    mine = await core.service_desk.list_requests(world.globex_customer)
    assert [item.ref for item in mine.items] == [globex.ref] and mine.total == 1
    assert (await core.service_desk.list_requests(world.tech_south)).total == 0
    assert (await core.service_desk.list_repair_orders(world.tech_south)).total == 0
    assert (await core.service_desk.list_repair_orders(world.tech_north)).total == 1
    assert [item.code for item in (await core.customers.list(world.rep_south)).items] == ["GLOBEX"]
    assert [item.code for item in (await core.customers.list(world.rep_north)).items] == ["ACME"]
    assert {item.code for item in (await core.customers.list(world.director)).items} == {"ACME", "GLOBEX"}
    assert (await core.sales.list_opportunities(world.rep_south)).total == 0
    assert (await core.sales.list_opportunities(world.north_manager)).total == 1
    assert (await core.sales.visits(world.rep_south)).total == 0
    assert [unit.serial_number for unit in (await core.installed.list(world.globex_customer)).items] == [
        "AB12345"
    ]
    with pytest.raises(PermissionDenied):
        await core.customers.list(world.globex_customer)
    with pytest.raises(PermissionDenied):
        await core.sales.list_opportunities(world.tech_north)


async def test_a_manager_sees_the_team_below_but_not_another_branch(core: Core, world: World) -> None:
    await acme_records(core, world)
    await core.sales.create_opportunity(
        world.rep_south, OpportunityIn(customer_code="GLOBEX", name="Globex deal", amount=Decimal("900"))
    )
    north = await core.sales.list_opportunities(world.north_manager)
    south = await core.sales.list_opportunities(world.south_manager)
    everyone = await core.sales.list_opportunities(world.director)
    assert [deal.name for deal in north.items] == ["Acme renewal"]
    assert [deal.name for deal in south.items] == ["Globex deal"]
    assert everyone.total == 2


async def test_unlinked_customer_user_and_bad_references(core: Core, world: World) -> None:
    records = await acme_records(core, world)
    with pytest.raises(DomainError):
        await core.service_desk.get_request(world.globex_customer, "SR-1; DROP TABLE service_requests")
    with pytest.raises(NotFound) as missing:
        await core.service_desk.get_request(world.globex_customer, records.request_ref)
    with pytest.raises(NotFound) as unknown:
        await core.service_desk.get_request(world.globex_customer, "SR-99999")
    # Someone else's request and a request that does not exist read exactly alike.
    assert missing.value.message.replace(records.request_ref, "SR-?") == unknown.value.message.replace(
        "SR-99999", "SR-?"
    )
    assert (await core.installed.warranty(world.agent, world.acme_serial)).days_left > 0


async def test_the_parts_catalogue_is_for_staff(core: Core, world: World) -> None:
    """A technician names parts by what they are; customers have no use for the catalogue and prices."""
    parts = await core.service_desk.parts(world.tech_north)
    assert [(part.code, part.name) for part in parts][:1] == [("P-100", "Drain pump")]
    with pytest.raises(PermissionDenied):
        await core.service_desk.parts(world.acme_customer)
