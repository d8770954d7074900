"""A small, fully known organisation for tests (the demo dataset is for people, this is for asserts)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from core.auth import SYSTEM, Actor
from core.container import Core
from core.domain.enums import CustomerType, DepartmentKind, Role
from core.schemas import CustomerIn, InstalledProductIn, KbArticleIn, ProductIn, UserIn


@dataclass
class World:
    """Who and what exists; actors are loaded after creation so their teams are right."""

    admin: Actor
    director: Actor  # heads the group: sees everyone's sales
    north_manager: Actor  # manages rep_north and the north service desk
    rep_north: Actor  # owns ACME
    south_manager: Actor
    rep_south: Actor  # owns GLOBEX
    agent: Actor  # service desk, north
    tech_north: Actor
    tech_south: Actor
    acme_customer: Actor  # a person at ACME
    globex_customer: Actor  # a person at GLOBEX
    acme_serial: str  # in warranty
    acme_old_serial: str  # out of warranty
    globex_serial: str


async def build_world(core: Core) -> World:
    """Create the organisation through the core services, as an admin would."""
    org = core.org
    await org.add_department(SYSTEM, code="GRP", name="Head office", kind=DepartmentKind.GROUP)
    await org.add_department(
        SYSTEM, code="NORTH", name="North branch", kind=DepartmentKind.BRANCH, parent_code="GRP"
    )
    await org.add_department(
        SYSTEM, code="SOUTH", name="South branch", kind=DepartmentKind.BRANCH, parent_code="GRP"
    )
    await org.add_department(
        SYSTEM, code="NORTH-SVC", name="North service", kind=DepartmentKind.DEPARTMENT, parent_code="NORTH"
    )
    await core.service_desk.upsert_station(SYSTEM, code="ST-N", name="North station", department_code="NORTH")
    await core.service_desk.upsert_station(SYSTEM, code="ST-S", name="South station", department_code="SOUTH")

    async def user(username: str, role: Role, **extra: object) -> None:
        await org.add_user(
            SYSTEM,
            UserIn(
                username=username,
                role=role,
                name=username.replace(".", " ").title(),
                email=f"{username}@example.com",
                **extra,
            ),
        )

    await user("admin", Role.ADMIN)
    await user("director", Role.MANAGER, department="GRP")
    await user("north.manager", Role.MANAGER, manager="director", department="NORTH")
    await user("south.manager", Role.MANAGER, manager="director", department="SOUTH")
    await user("rep.north", Role.REP, manager="north.manager", department="NORTH")
    await user("rep.south", Role.REP, manager="south.manager", department="SOUTH")
    await user("agent", Role.AGENT, manager="north.manager", department="NORTH-SVC")
    await user("tech.north", Role.TECHNICIAN, manager="north.manager", department="NORTH-SVC")
    await user("tech.south", Role.TECHNICIAN, manager="south.manager", department="SOUTH")
    await org.add_department(
        SYSTEM, code="GRP", name="Head office", kind=DepartmentKind.GROUP, head_username="director"
    )
    await core.service_desk.assign_station(SYSTEM, technician="tech.north", station_code="ST-N")
    await core.service_desk.assign_station(SYSTEM, technician="tech.south", station_code="ST-S")

    customers = core.customers
    await customers.create(
        SYSTEM,
        CustomerIn(
            code="ACME", name="Acme Corp", type=CustomerType.INTERMEDIATE, segment="retail", owner="rep.north"
        ),
    )
    await customers.create(
        SYSTEM,
        CustomerIn(
            code="GLOBEX", name="Globex Ltd", type=CustomerType.END, segment="hospitality", owner="rep.south"
        ),
    )
    await user("acme.buyer", Role.CUSTOMER, customer_code="ACME", identities=["rest:acme-buyer"])
    await user("globex.buyer", Role.CUSTOMER, customer_code="GLOBEX")

    installed = core.installed
    await installed.upsert_product(
        SYSTEM,
        ProductIn(
            code="WM-2023",
            name="Washing machine WM-2023",
            category="washing_machine",
            default_warranty_months=24,
            maintenance_interval_months=12,
        ),
    )
    await installed.upsert_product(
        SYSTEM, ProductIn(code="DW-500", name="Dishwasher DW-500", category="dishwasher")
    )
    today = core.clock.now().date()
    await installed.register(
        SYSTEM,
        InstalledProductIn(
            serial_number="WM2023-00917",
            product_code="WM-2023",
            customer_code="ACME",
            sold_on=today - timedelta(days=200),
        ),
    )
    await installed.register(
        SYSTEM,
        InstalledProductIn(
            serial_number="DW500-00001",
            product_code="DW-500",
            customer_code="ACME",
            sold_on=date(2020, 1, 10),
        ),
    )
    await installed.register(
        SYSTEM,
        InstalledProductIn(
            serial_number="AB12345",
            product_code="DW-500",
            customer_code="GLOBEX",
            sold_on=today - timedelta(days=30),
        ),
    )
    await core.knowledge.upsert(
        SYSTEM,
        KbArticleIn(
            code="KB-DW-E13",
            title="Dishwasher shows error E13",
            category="dishwasher/errors",
            product_code="DW-500",
            symptoms="Error E13 on the display, water not heating",
            solution="Reset the heater fuse; if it repeats, book a repair.",
        ),
    )
    await core.service_desk.upsert_part(SYSTEM, code="P-100", name="Drain pump", unit_price=Decimal("180.00"))
    await core.service_desk.set_stock(
        SYSTEM, station_code="ST-N", part_code="P-100", quantity=3, min_quantity=1
    )
    await core.service_desk.set_stock(
        SYSTEM, station_code="ST-S", part_code="P-100", quantity=1, min_quantity=0
    )

    for username in ("admin", "director", "north.manager", "south.manager", "rep.north", "rep.south", "agent",
                     "tech.north", "tech.south", "globex.buyer"):
        await org.link_identity(SYSTEM, username, f"rest:{username}")

    actor = org.actor_for_username
    return World(
        admin=await actor("admin"),
        director=await actor("director"),
        north_manager=await actor("north.manager"),
        rep_north=await actor("rep.north"),
        south_manager=await actor("south.manager"),
        rep_south=await actor("rep.south"),
        agent=await actor("agent"),
        tech_north=await actor("tech.north"),
        tech_south=await actor("tech.south"),
        acme_customer=await actor("acme.buyer"),
        globex_customer=await actor("globex.buyer"),
        acme_serial="WM2023-00917",
        acme_old_serial="DW500-00001",
        globex_serial="AB12345",
    )
