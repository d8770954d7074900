"""Who may see and change what, through the API with personal tokens: the authorization matrix as a table.

Outsiders are a customer of another company (globex.buyer vs ACME), a rep and a manager of another
team (rep.south, south.manager vs ACME owned by rep.north) and a technician the job is not
dispatched to (tech.south vs tech.north). Every refusal must leak none of ACME's data and change
nothing; the right people, asked the same, get through.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import Core, build_core
from core.domain.enums import Channel
from core.schemas import ContactIn, OpportunityIn, RepairOrderIn, ServiceRequestIn, TransitionIn, VisitIn
from core.settings import Settings
from crmbot.app import create_app
from tests.conftest import TEST_NOW, wipe
from tests.world import build_world

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PEOPLE = (
    "globex.buyer",
    "acme.buyer",
    "rep.north",
    "north.manager",
    "rep.south",
    "south.manager",
    "tech.north",
    "tech.south",
)
# ACME's data no outsider may read back (a serial or code they typed themselves does not count).
ACME_SECRETS = (
    "Acme Corp",
    "ACME",
    "WM2023-00917",
    "DW500-00001",
    "Drum leaks water",
    "Wile",
    "wile@acme.example",
    "Roadrunner",
    "Anvil",
    "rep.north",
    "tech.north",
)
OUTSIDERS = frozenset({"globex.buyer", "rep.south", "south.manager", "tech.south"})


@dataclass
class Scene:
    """The shared, read-mostly world of this module: ACME's records and everybody's tokens."""

    core: Core
    client: httpx.AsyncClient
    refs: dict[str, str]
    tokens: dict[str, dict[str, str]]

    def fill(self, text: str) -> str:
        """Replace <sr>, <ro>, ... markers with this scene's references."""
        for key, value in self.refs.items():
            text = text.replace(f"<{key}>", value)
        return text


@pytest.fixture(scope="module")
async def scene(
    engine: AsyncEngine, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Scene]:
    """Built once for the module: many rows, each checking that its refusal changed nothing."""
    await wipe(engine)
    data_dir: Path = tmp_path_factory.mktemp("authz")
    settings = Settings(
        database_url=database_url,
        data_dir=data_dir,
        api_token=ADMIN_TOKEN,
        timezone="Asia/Shanghai",
        _env_file=None,
    )
    core = build_core(settings, clock=FrozenClock(TEST_NOW), engine=engine)
    world = await build_world(core)
    desk, sales = core.service_desk, core.sales

    acme_sr = await desk.open_request(
        world.acme_customer,
        ServiceRequestIn(
            serial_number=world.acme_serial,
            subject="Drum leaks water",
            description="Wile's laundry room floods",
            channel=Channel.WEB,
        ),
    )
    order = await desk.dispatch(
        world.agent, RepairOrderIn(service_request=acme_sr.ref, technician="tech.north")
    )
    done = await desk.open_request(
        world.acme_customer,
        ServiceRequestIn(serial_number=world.acme_old_serial, subject="Anvil-shaped dent on the door"),
    )
    await desk.transition(world.agent, done.ref, TransitionIn(action="assign", assignee="agent"))
    await desk.transition(
        world.agent, done.ref, TransitionIn(action="resolve", resolution="Anvil dent polished")
    )
    await core.surveys.create_for_request(SYSTEM, done.ref)
    await core.customers.add_contact(
        world.rep_north, "ACME", ContactIn(name="Wile Coyote", email="wile@acme.example")
    )
    deal = await sales.create_opportunity(
        world.rep_north,
        OpportunityIn(customer_code="ACME", name="Roadrunner renewal", amount=Decimal("50000.00")),
    )
    await sales.log_visit(
        world.rep_north,
        VisitIn(
            customer_code="ACME",
            visited_on=date(2026, 6, 15),
            summary="Anvil discount discussed",
            next_step="Send the Roadrunner quote",
            next_step_due=datetime(2026, 6, 19, 10, tzinfo=UTC),
        ),
    )
    globex_sr = await desk.open_request(
        world.globex_customer,
        ServiceRequestIn(serial_number=world.globex_serial, subject="Globex dishwasher is noisy"),
    )
    globex_deal = await sales.create_opportunity(
        world.rep_south,
        OpportunityIn(customer_code="GLOBEX", name="Globex fit-out", amount=Decimal("9000.00")),
    )

    tokens = {
        username: {"Authorization": f"Bearer {await core.org.issue_api_token(SYSTEM, username)}"}
        for username in PEOPLE
    }
    refs = {
        "sr": acme_sr.ref,
        "ro": order.ref,
        "sr_done": done.ref,
        "op": deal.ref,
        "serial": world.acme_serial,
        "globex_sr": globex_sr.ref,
        "globex_op": globex_deal.ref,
    }
    transport = httpx.ASGITransport(app=create_app(core, ADMIN_TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Scene(core=core, client=client, refs=refs, tokens=tokens)


async def snapshot(scene: Scene) -> dict[str, Any]:
    """Everything an admin can read about the records in play, plus part stock."""
    paths = [
        "/api/v1/customers?limit=200",
        "/api/v1/customers/ACME",
        "/api/v1/customers/ACME/contacts",
        "/api/v1/service-requests?limit=200",
        "/api/v1/service-requests/<sr>",
        "/api/v1/service-requests/<sr_done>",
        "/api/v1/repair-orders?limit=200",
        "/api/v1/opportunities?limit=200",
        "/api/v1/opportunities/<op>",
        "/api/v1/visits?limit=200",
        "/api/v1/tasks",
        "/api/v1/surveys?limit=200",
        "/api/v1/installed-products?limit=200",
        "/api/v1/kb/articles",
        "/api/v1/users",
        "/api/v1/products",
    ]
    state: dict[str, Any] = {}
    for path in paths:
        response = await scene.client.get(scene.fill(path), headers=ADMIN)
        assert response.status_code == 200, (path, response.text)
        state[path] = response.json()
    for station in ("ST-N", "ST-S"):
        state[station] = await scene.core.service_desk.stock_level(SYSTEM, station, "P-100")
    return state


def leaked(response: httpx.Response, request_text: str) -> list[str]:
    """ACME secrets in the response that the caller did not type themselves."""
    return [secret for secret in ACME_SECRETS if secret not in request_text and secret in response.text]


@dataclass(frozen=True)
class Refusal:
    """One row of the matrix: who asks what, and the status they must get."""

    who: str
    method: str
    path: str
    status: int
    body: dict[str, Any] | None = None

    def __str__(self) -> str:
        action = f" {self.body['action']}" if self.body and "action" in self.body else ""
        return f"{self.who} {self.method} {self.path}{action}"


REFUSALS = [
    # A customer of another company: ACME's records do not exist for them (404); staff-only actions are 403.
    Refusal("globex.buyer", "GET", "/api/v1/customers/ACME", 404),
    Refusal("globex.buyer", "PATCH", "/api/v1/customers/ACME", 403, {"name": "Pwned"}),
    Refusal("globex.buyer", "GET", "/api/v1/customers/ACME/contacts", 404),
    Refusal("globex.buyer", "POST", "/api/v1/customers/ACME/contacts", 403, {"name": "Mallory"}),
    Refusal("globex.buyer", "GET", "/api/v1/customers/ACME/installed-products", 404),
    Refusal("globex.buyer", "GET", "/api/v1/customers", 403),
    Refusal("globex.buyer", "GET", "/api/v1/installed-products/<serial>", 404),
    Refusal("globex.buyer", "GET", "/api/v1/warranty/<serial>", 404),
    Refusal(
        "globex.buyer",
        "POST",
        "/api/v1/installed-products",
        403,
        {
            "serial_number": "NEW-1",
            "product_code": "WM-2023",
            "customer_code": "ACME",
            "sold_on": "2026-06-01",
        },
    ),
    Refusal("globex.buyer", "GET", "/api/v1/service-requests/<sr>", 404),
    Refusal("globex.buyer", "GET", "/api/v1/service-requests/<sr_done>", 404),
    Refusal("globex.buyer", "POST", "/api/v1/service-requests/<sr>/transitions", 403, {"action": "escalate"}),
    Refusal(
        "globex.buyer", "POST", "/api/v1/service-requests/<sr_done>/transitions", 404, {"action": "close"}
    ),
    Refusal(
        "globex.buyer", "POST", "/api/v1/service-requests/<sr_done>/transitions", 404, {"action": "reopen"}
    ),
    Refusal(
        "globex.buyer",
        "POST",
        "/api/v1/service-requests/<sr>/transitions",
        403,
        {"action": "assign", "assignee": "agent"},
    ),
    Refusal("globex.buyer", "POST", "/api/v1/service-requests/<sr>/comments", 404, {"comment": "hello?"}),
    Refusal(
        "globex.buyer", "POST", "/api/v1/service-requests", 404, {"customer_code": "ACME", "subject": "x"}
    ),
    Refusal(
        "globex.buyer", "POST", "/api/v1/service-requests", 404, {"serial_number": "<serial>", "subject": "x"}
    ),
    Refusal("globex.buyer", "POST", "/api/v1/service-requests/<sr_done>/survey", 404, {"score": 1}),
    Refusal("globex.buyer", "GET", "/api/v1/repair-orders/<ro>", 404),
    Refusal("globex.buyer", "POST", "/api/v1/repair-orders/<ro>/actions", 403, {"action": "accept"}),
    Refusal(
        "globex.buyer",
        "POST",
        "/api/v1/repair-orders/<ro>/actions",
        403,
        {"action": "cancel", "comment": "x"},
    ),
    Refusal(
        "globex.buyer",
        "POST",
        "/api/v1/repair-orders",
        403,
        {"service_request": "<sr>", "technician": "tech.south"},
    ),
    Refusal("globex.buyer", "GET", "/api/v1/opportunities/<op>", 403),
    Refusal("globex.buyer", "PATCH", "/api/v1/opportunities/<op>", 403, {"amount": 1}),
    Refusal("globex.buyer", "GET", "/api/v1/opportunities", 403),
    Refusal("globex.buyer", "GET", "/api/v1/visits", 403),
    Refusal("globex.buyer", "GET", "/api/v1/users", 403),
    Refusal("globex.buyer", "POST", "/api/v1/users/acme.buyer/tokens", 403),
    Refusal("globex.buyer", "POST", "/api/v1/users", 403, {"username": "evil", "role": "admin"}),
    Refusal(
        "globex.buyer", "PUT", "/api/v1/kb/articles/KB-DW-E13", 403, {"code": "KB-DW-E13", "title": "Defaced"}
    ),
    Refusal("globex.buyer", "POST", "/api/v1/products", 403, {"code": "WM-2023", "name": "Defaced"}),
    # A rep and a manager of another team: ACME and its deals are not theirs to know about.
    Refusal("rep.south", "GET", "/api/v1/customers/ACME", 404),
    Refusal("rep.south", "PATCH", "/api/v1/customers/ACME", 404, {"segment": "stolen"}),
    Refusal("rep.south", "GET", "/api/v1/customers/ACME/contacts", 404),
    Refusal("rep.south", "POST", "/api/v1/customers/ACME/contacts", 404, {"name": "Mallory"}),
    Refusal("rep.south", "GET", "/api/v1/customers/ACME/installed-products", 404),
    Refusal("rep.south", "GET", "/api/v1/opportunities/<op>", 404),
    Refusal("rep.south", "PATCH", "/api/v1/opportunities/<op>", 404, {"stage": "negotiation", "amount": 1}),
    Refusal("rep.south", "PATCH", "/api/v1/opportunities/<op>", 404, {"owner": "rep.south"}),
    Refusal(
        "rep.south",
        "POST",
        "/api/v1/opportunities",
        404,
        {"customer_code": "ACME", "name": "Mine", "amount": 1},
    ),
    Refusal("rep.south", "GET", "/api/v1/opportunities?customer=ACME", 404),
    Refusal(
        "rep.south", "POST", "/api/v1/visits", 404, {"customer_code": "ACME", "visited_on": "2026-06-15"}
    ),
    Refusal("rep.south", "GET", "/api/v1/visits?customer=ACME", 404),
    Refusal("rep.south", "GET", "/api/v1/service-requests/<sr>", 404),
    Refusal("rep.south", "POST", "/api/v1/service-requests/<sr>/transitions", 404, {"action": "escalate"}),
    Refusal("rep.south", "POST", "/api/v1/service-requests/<sr>/comments", 404, {"comment": "peek"}),
    Refusal("rep.south", "POST", "/api/v1/service-requests", 404, {"customer_code": "ACME", "subject": "x"}),
    Refusal("rep.south", "GET", "/api/v1/repair-orders/<ro>", 404),
    Refusal(
        "rep.south",
        "POST",
        "/api/v1/repair-orders",
        403,
        {"service_request": "<sr>", "technician": "tech.south"},
    ),
    Refusal(
        "rep.south",
        "POST",
        "/api/v1/installed-products",
        403,
        {
            "serial_number": "NEW-2",
            "product_code": "WM-2023",
            "customer_code": "GLOBEX",
            "sold_on": "2026-06-01",
        },
    ),
    Refusal("rep.south", "POST", "/api/v1/service-requests/<sr_done>/survey", 404, {"score": 5}),
    Refusal("south.manager", "GET", "/api/v1/customers/ACME", 404),
    Refusal("south.manager", "PATCH", "/api/v1/customers/ACME", 404, {"owner": "rep.south"}),
    Refusal("south.manager", "GET", "/api/v1/opportunities/<op>", 404),
    Refusal(
        "south.manager",
        "PATCH",
        "/api/v1/opportunities/<op>",
        404,
        {"stage": "closed_lost", "lost_reason": "x"},
    ),
    Refusal("south.manager", "GET", "/api/v1/service-requests/<sr>", 404),
    # A technician the job was not dispatched to.
    Refusal("tech.south", "GET", "/api/v1/repair-orders/<ro>", 404),
    Refusal("tech.south", "POST", "/api/v1/repair-orders/<ro>/actions", 404, {"action": "accept"}),
    Refusal(
        "tech.south",
        "POST",
        "/api/v1/repair-orders/<ro>/actions",
        404,
        {"action": "decline", "comment": "no"},
    ),
    Refusal(
        "tech.south",
        "POST",
        "/api/v1/repair-orders/<ro>/actions",
        404,
        {"action": "complete", "work_summary": "fake", "parts": [{"part_code": "P-100", "quantity": 1}]},
    ),
    Refusal(
        "tech.south", "POST", "/api/v1/repair-orders/<ro>/actions", 403, {"action": "cancel", "comment": "x"}
    ),
    Refusal("tech.south", "GET", "/api/v1/service-requests/<sr>", 404),
    Refusal("tech.south", "POST", "/api/v1/service-requests/<sr>/transitions", 404, {"action": "start"}),
    Refusal(
        "tech.south",
        "POST",
        "/api/v1/service-requests/<sr>/transitions",
        404,
        {"action": "resolve", "resolution": "fake"},
    ),
    Refusal("tech.south", "POST", "/api/v1/service-requests/<sr>/comments", 404, {"comment": "peek"}),
    Refusal(
        "tech.south",
        "POST",
        "/api/v1/repair-orders",
        403,
        {"service_request": "<sr>", "technician": "tech.south"},
    ),
    Refusal("tech.south", "GET", "/api/v1/opportunities/<op>", 403),
    Refusal("tech.south", "POST", "/api/v1/service-requests", 403, {"customer_code": "ACME", "subject": "x"}),
    # Even the right technician may not do the desk's part, nor act on a job after it was taken from them.
    Refusal("tech.north", "POST", "/api/v1/repair-orders/<ro>/actions", 403, {"action": "settle"}),
    Refusal("tech.north", "PATCH", "/api/v1/customers/ACME", 403, {"segment": "x"}),
    Refusal("rep.north", "POST", "/api/v1/repair-orders/<ro>/actions", 403, {"action": "accept"}),
]


@pytest.mark.parametrize("row", REFUSALS, ids=str)
async def test_refused_without_leaking_or_changing_anything(scene: Scene, row: Refusal) -> None:
    path = scene.fill(row.path)
    body_text = scene.fill(json.dumps(row.body)) if row.body is not None else None
    before = await snapshot(scene)
    response = await scene.client.request(
        row.method,
        path,
        headers={**scene.tokens[row.who], "content-type": "application/json"},
        content=body_text,
    )
    assert response.status_code == row.status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == {403: "forbidden", 404: "not_found"}[row.status]
    assert error["message"]
    assert leaked(response, path + (body_text or "")) == []
    assert await snapshot(scene) == before


@pytest.mark.parametrize(
    ("who", "template", "hidden", "ghost"),
    [
        ("globex.buyer", "/api/v1/service-requests/{id}", "<sr>", "SR-999"),
        ("globex.buyer", "/api/v1/repair-orders/{id}", "<ro>", "RO-999"),
        ("globex.buyer", "/api/v1/customers/{id}", "ACME", "NOSUCH"),
        ("globex.buyer", "/api/v1/warranty/{id}", "<serial>", "NOSUCH-1"),
        ("rep.south", "/api/v1/opportunities/{id}", "<op>", "OP-999"),
        ("rep.south", "/api/v1/customers/{id}/contacts", "ACME", "NOSUCH"),
        ("tech.south", "/api/v1/repair-orders/{id}", "<ro>", "RO-999"),
    ],
)
async def test_a_hidden_record_looks_exactly_like_a_missing_one(
    scene: Scene, who: str, template: str, hidden: str, ghost: str
) -> None:
    hidden = scene.fill(hidden)
    seen = await scene.client.get(template.format(id=hidden), headers=scene.tokens[who])
    missing = await scene.client.get(template.format(id=ghost), headers=scene.tokens[who])
    assert seen.status_code == missing.status_code == 404
    assert seen.text.replace(hidden, "X") == missing.text.replace(ghost, "X")


@pytest.mark.parametrize(
    ("who", "path", "expected"),
    [
        ("globex.buyer", "/api/v1/service-requests", ["<globex_sr>"]),
        ("globex.buyer", "/api/v1/service-requests?customer=ACME", []),
        ("globex.buyer", "/api/v1/service-requests?open=true", ["<globex_sr>"]),
        ("globex.buyer", "/api/v1/repair-orders", []),
        ("globex.buyer", "/api/v1/installed-products", ["AB12345"]),
        ("globex.buyer", "/api/v1/installed-products?customer=ACME", []),
        ("globex.buyer", "/api/v1/surveys", []),
        ("acme.buyer", "/api/v1/service-requests", ["<sr_done>", "<sr>"]),
        ("acme.buyer", "/api/v1/installed-products", ["DW500-00001", "WM2023-00917"]),
        ("acme.buyer", "/api/v1/surveys", ["<sr_done>"]),
        ("rep.south", "/api/v1/customers", ["GLOBEX"]),
        ("rep.south", "/api/v1/customers?q=Acme", []),
        ("rep.south", "/api/v1/opportunities", ["<globex_op>"]),
        ("rep.south", "/api/v1/visits", []),
        ("rep.south", "/api/v1/tasks", []),
        ("rep.south", "/api/v1/service-requests", ["<globex_sr>"]),
        ("rep.south", "/api/v1/repair-orders", []),
        ("south.manager", "/api/v1/opportunities", ["<globex_op>"]),
        ("rep.north", "/api/v1/customers", ["ACME"]),
        ("rep.north", "/api/v1/opportunities", ["<op>"]),
        ("north.manager", "/api/v1/opportunities", ["<op>"]),
        ("tech.south", "/api/v1/repair-orders", []),
        ("tech.south", "/api/v1/repair-orders?technician=tech.north", []),
        ("tech.south", "/api/v1/service-requests", []),
        ("tech.north", "/api/v1/repair-orders", ["<ro>"]),
        ("tech.north", "/api/v1/service-requests", ["<sr>"]),
    ],
)
async def test_lists_hold_only_the_callers_records(
    scene: Scene, who: str, path: str, expected: list[str]
) -> None:
    response = await scene.client.get(path, headers=scene.tokens[who])
    assert response.status_code == 200, response.text
    body = response.json()
    items = body if isinstance(body, list) else body["items"]
    if not isinstance(body, list):
        assert body["total"] == len(expected)
    keys = [
        item.get("ref") or item.get("service_request_ref") or item.get("serial_number") or item["code"]
        for item in items
    ]
    wanted = [scene.fill(value) for value in expected]
    assert keys == wanted
    if who in OUTSIDERS:
        assert leaked(response, path) == []


@pytest.mark.parametrize(
    ("who", "path", "expected"),
    [
        (
            "acme.buyer",
            "/api/v1/service-requests/<sr>",
            {"subject": "Drum leaks water", "customer_code": "ACME"},
        ),
        ("acme.buyer", "/api/v1/repair-orders/<ro>", {"ref": "<ro>", "technician": "Tech North"}),
        ("acme.buyer", "/api/v1/warranty/<serial>", {"customer": "Acme Corp", "in_warranty": True}),
        ("acme.buyer", "/api/v1/customers/ACME", {"name": "Acme Corp"}),
        ("rep.north", "/api/v1/customers/ACME", {"owner": "rep.north"}),
        ("rep.north", "/api/v1/opportunities/<op>", {"name": "Roadrunner renewal", "amount": "50000.00"}),
        ("north.manager", "/api/v1/opportunities/<op>", {"name": "Roadrunner renewal"}),
        ("director", "/api/v1/opportunities/<op>", {"name": "Roadrunner renewal"}),
        ("rep.north", "/api/v1/service-requests/<sr>", {"subject": "Drum leaks water"}),
        ("tech.north", "/api/v1/repair-orders/<ro>", {"technician": "tech.north", "status": "dispatched"}),
        ("tech.north", "/api/v1/service-requests/<sr>", {"subject": "Drum leaks water"}),
        (
            "rep.south",
            "/api/v1/warranty/<serial>",
            {"customer": "Acme Corp"},
        ),  # staff may look up any serial (J2)
        (
            "tech.south",
            "/api/v1/customers/ACME",
            {"name": "Acme Corp"},
        ),  # the field sees every customer's profile
    ],
)
async def test_the_right_people_can_read_it(
    scene: Scene, who: str, path: str, expected: dict[str, Any]
) -> None:
    headers = scene.tokens.get(who)
    if headers is None:
        headers = {"Authorization": f"Bearer {await scene.core.org.issue_api_token(SYSTEM, who)}"}
    response = await scene.client.get(scene.fill(path), headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {key: body[key] for key in expected} == {
        key: scene.fill(value) if isinstance(value, str) else value for key, value in expected.items()
    }


async def test_a_customer_sees_staff_as_staff_in_history(scene: Scene) -> None:
    detail = (
        await scene.client.get(
            scene.fill("/api/v1/service-requests/<sr>"), headers=scene.tokens["acme.buyer"]
        )
    ).json()
    assert [(entry["action"], entry["actor"]) for entry in detail["history"][:2]] == [
        ("open", "acme.buyer"),
        ("assign", "staff"),
    ]
    assert "agent" not in json.dumps(detail["history"])


async def test_the_right_people_can_change_it(scene: Scene) -> None:
    """Positive controls for writes (run last in the module's order: they change the records)."""
    client, fill, tokens = scene.client, scene.fill, scene.tokens
    comment = await client.post(
        fill("/api/v1/service-requests/<sr>/comments"),
        headers=tokens["acme.buyer"],
        json={"comment": "The floor is wet again"},
    )
    assert comment.status_code == 204
    deal = await client.patch(
        fill("/api/v1/opportunities/<op>"), headers=tokens["rep.north"], json={"probability": 60}
    )
    assert deal.status_code == 200 and deal.json()["probability"] == 60
    contact = await client.post(
        "/api/v1/customers/ACME/contacts", headers=tokens["rep.north"], json={"name": "Road Runner"}
    )
    assert contact.status_code == 201
    accepted = await client.post(
        fill("/api/v1/repair-orders/<ro>/actions"), headers=tokens["tech.north"], json={"action": "accept"}
    )
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    rated = await client.post(
        fill("/api/v1/service-requests/<sr_done>/survey"), headers=tokens["acme.buyer"], json={"score": 4}
    )
    assert rated.status_code == 200 and rated.json()["score"] == 4
    # Re-read as admin: every change landed.
    history = (await client.get(fill("/api/v1/service-requests/<sr>"), headers=ADMIN)).json()["history"]
    assert (history[-1]["action"], history[-1]["actor"], history[-1]["comment"]) == (
        "comment",
        "acme.buyer",
        "The floor is wet again",
    )
    assert (await client.get(fill("/api/v1/opportunities/<op>"), headers=ADMIN)).json()["history"][-1][
        "new_value"
    ] == "60"
    names = [c["name"] for c in (await client.get("/api/v1/customers/ACME/contacts", headers=ADMIN)).json()]
    assert names == ["Wile Coyote", "Road Runner"]
    assert (await client.get(fill("/api/v1/repair-orders/<ro>"), headers=ADMIN)).json()[
        "status"
    ] == "accepted"
    surveys = (await client.get("/api/v1/surveys", headers=ADMIN)).json()["items"]
    assert [(s["service_request_ref"], s["status"], s["score"]) for s in surveys] == [
        (fill("<sr_done>"), "answered", 4)
    ]
