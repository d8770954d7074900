"""The admin and integration API, driven in-process through the real FastAPI app and the real core."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import Core, build_core
from core.errors import (
    Conflict,
    DomainError,
    InsufficientStock,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from core.settings import Settings
from crmbot.app import create_app
from tests.world import World

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TODAY = date(2026, 6, 15)  # TEST_NOW's business day in Asia/Shanghai


@pytest.fixture
def app(core: Core) -> FastAPI:
    """The one HTTP app over the test core (empty schema, then usually the test world)."""
    return create_app(core, ADMIN_TOKEN)


@pytest.fixture
def bare_app(engine: AsyncEngine, settings: Settings, clock: FrozenClock) -> FastAPI:
    """The app over the test database as it is, not wiped: for requests refused before any record is read."""
    return create_app(build_core(settings, clock=clock, engine=engine), ADMIN_TOKEN)


@asynccontextmanager
async def http(app: FastAPI, headers: dict[str, str] | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of `app`."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
        yield client


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no token."""
    async with http(app) as client:
        yield client


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client with the admin token."""
    async with http(app, ADMIN) as client:
        yield client


@pytest.fixture
async def bare_anon(bare_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the bare app that sends no token."""
    async with http(bare_app) as client:
        yield client


@pytest.fixture
async def bare_client(bare_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the bare app with the admin token."""
    async with http(bare_app, ADMIN) as client:
        yield client


async def token_headers(core: Core, username: str) -> dict[str, str]:
    """Headers carrying a fresh personal token of `username`."""
    return {"Authorization": f"Bearer {await core.org.issue_api_token(SYSTEM, username)}"}


def error(response: httpx.Response) -> dict[str, object]:
    """The error object of a JSON error response (asserting it is one)."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    result: dict[str, object] = body["error"]
    return result


# --- health, docs, authentication ----------------------------------------------------------------


async def test_healthz_needs_no_token_and_checks_the_database(anon: httpx.AsyncClient, world: World) -> None:
    response = await anon.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


async def test_healthz_is_503_json_when_the_database_is_down(settings: Settings, tmp_path: Path) -> None:
    broken = settings.model_copy(
        update={"database_url": f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}"}
    )
    core = build_core(broken)
    try:
        async with http(create_app(core, ADMIN_TOKEN)) as anon:
            response = await anon.get("/healthz")
    finally:
        await core.close()
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "unavailable",
        "error": {"code": "database_unavailable", "message": "The database is not reachable."},
    }


def test_create_app_refuses_to_run_without_a_token(bare_app: FastAPI) -> None:
    with pytest.raises(ValueError, match="never open"):
        create_app(bare_app.state.core, "  ")


async def test_openapi_document_lists_every_area_with_bearer_security(bare_anon: httpx.AsyncClient) -> None:
    anon = bare_anon
    assert (await anon.get("/openapi.json")).status_code == 401  # nothing but health and webhooks is open
    response = await anon.get("/openapi.json", headers={"Authorization": "Bearer test-admin-token"})
    assert response.status_code == 200
    document = response.json()
    assert document["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    expected = {
        "/healthz",
        "/api/v1/customers",
        "/api/v1/customers/{code}",
        "/api/v1/customers/{code}/contacts",
        "/api/v1/customers/{code}/installed-products",
        "/api/v1/users",
        "/api/v1/users/{username}/tokens",
        "/api/v1/products",
        "/api/v1/installed-products",
        "/api/v1/installed-products/{serial}",
        "/api/v1/warranty/{serial}",
        "/api/v1/service-requests",
        "/api/v1/service-requests/{ref}",
        "/api/v1/service-requests/{ref}/transitions",
        "/api/v1/service-requests/{ref}/comments",
        "/api/v1/service-requests/{ref}/survey",
        "/api/v1/service-requests/{ref}/technician-suggestions",
        "/api/v1/repair-orders",
        "/api/v1/repair-orders/{ref}",
        "/api/v1/repair-orders/{ref}/actions",
        "/api/v1/opportunities",
        "/api/v1/opportunities/{ref}",
        "/api/v1/pipeline",
        "/api/v1/visits",
        "/api/v1/tasks",
        "/api/v1/surveys",
        "/api/v1/surveys/csat",
        "/api/v1/kb/articles",
        "/api/v1/kb/articles/{code}",
        "/api/v1/kb/search",
        "/api/v1/notifications",
        "/api/v1/notifications/stats",
        "/api/v1/notifications/{notification_id}",
        "/api/v1/notifications/{notification_id}/retry",
    }
    assert set(document["paths"]) == expected
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/api/v1/"):
                assert operation["security"] == [{"BearerToken": []}], (method, path)
    assert document["paths"]["/api/v1/warranty/{serial}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"] == {"$ref": "#/components/schemas/WarrantyOut"}
    assert (await anon.get("/docs")).status_code == 404


async def test_missing_token_is_401_with_a_bearer_challenge(bare_anon: httpx.AsyncClient) -> None:
    response = await bare_anon.get("/api/v1/customers")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert error(response) == {
        "code": "unauthorized",
        "message": "This endpoint needs 'Authorization: Bearer <token>'.",
    }


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong-token",
        "Bearer crm_" + "x" * 43,
        "Basic dGVzdDp0ZXN0",
        "Bearer " + "y" * 5000,
        f"Bearer {ADMIN_TOKEN}x",
    ],
)
async def test_wrong_token_is_401(bare_anon: httpx.AsyncClient, header: str) -> None:
    response = await bare_anon.get("/api/v1/customers", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert error(response)["code"] == "unauthorized"
    assert "Acme" not in response.text


async def test_every_api_route_refuses_a_request_without_token(
    bare_app: FastAPI, bare_anon: httpx.AsyncClient
) -> None:
    app, anon = bare_app, bare_anon
    operations = [
        (method.upper(), path)
        for path, methods in app.openapi()["paths"].items()
        if path.startswith("/api/v1/")
        for method in methods
    ]
    assert len(operations) == 45
    for method, template in operations:
        path = re.sub(r"\{[^}]+\}", "X1", template)
        response = await anon.request(method, path, json={})
        assert response.status_code == 401, (method, path, response.text)


async def test_a_personal_token_acts_as_its_user(client: httpx.AsyncClient, world: World) -> None:
    issued = await client.post("/api/v1/users/rep.north/tokens", json={"label": "crm sync"})
    assert issued.status_code == 201
    body = issued.json()
    assert set(body) == {"token", "username", "label"}
    assert body["username"] == "rep.north" and body["label"] == "crm sync"
    assert body["token"].startswith("crm_") and len(body["token"]) > 40
    rep = {"Authorization": f"Bearer {body['token']}"}
    customers = await client.get("/api/v1/customers", headers=rep)
    assert customers.status_code == 200
    assert [item["code"] for item in customers.json()["items"]] == ["ACME"]
    refused = await client.get("/api/v1/users", headers=rep)
    assert refused.status_code == 403
    assert error(refused) == {"code": "forbidden", "message": "Your role (rep) cannot list users."}
    unknown = await client.post("/api/v1/users/nobody/tokens")
    assert unknown.status_code == 404
    assert error(unknown) == {"code": "not_found", "message": "No user named 'nobody'.", "field": "username"}


# --- users and customers --------------------------------------------------------------------------


async def test_users_are_listed_and_added_by_admins(client: httpx.AsyncClient, world: World) -> None:
    listed = await client.get("/api/v1/users")
    assert listed.status_code == 200
    assert [user["username"] for user in listed.json()] == [
        "acme.buyer",
        "admin",
        "agent",
        "director",
        "globex.buyer",
        "north.manager",
        "rep.north",
        "rep.south",
        "south.manager",
        "tech.north",
        "tech.south",
    ]
    acme_buyer = next(user for user in listed.json() if user["username"] == "acme.buyer")
    assert acme_buyer["customer_code"] == "ACME" and acme_buyer["identities"] == ["rest:acme-buyer"]
    created = await client.post(
        "/api/v1/users",
        json={
            "username": "rep.east",
            "role": "rep",
            "name": "Rep East",
            "email": "East@Example.com",
            "manager": "director",
            "lang": "zh",
            "identities": ["telegram:4242"],
        },
    )
    assert created.status_code == 201
    user = created.json()
    assert {key: value for key, value in user.items() if key != "id"} == {
        "username": "rep.east",
        "name": "Rep East",
        "role": "rep",
        "email": "east@example.com",
        "phone": None,
        "lang": "zh",
        "timezone": None,
        "customer_code": None,
        "manager": "director",
        "identities": ["telegram:4242"],
    }
    duplicate = await client.post("/api/v1/users", json={"username": "rep.east", "role": "rep"})
    assert duplicate.status_code == 409
    assert error(duplicate) == {
        "code": "conflict",
        "message": "User 'rep.east' already exists.",
        "field": "username",
    }
    bad_role = await client.post("/api/v1/users", json={"username": "x.y", "role": "wizard"})
    assert bad_role.status_code == 422
    assert error(bad_role)["field"] == "role"


async def test_customers_create_read_update_and_list(client: httpx.AsyncClient, world: World) -> None:
    created = await client.post(
        "/api/v1/customers",
        json={
            "code": "INITECH",
            "name": "Initech",
            "type": "public",
            "segment": "government",
            "phone": "+86 21 5555 0101",
            "email": "it@initech.example",
            "owner": "rep.south",
        },
    )
    assert created.status_code == 201
    customer = created.json()
    assert {key: value for key, value in customer.items() if key != "id"} == {
        "code": "INITECH",
        "name": "Initech",
        "type": "public",
        "segment": "government",
        "lifecycle_stage": "new",
        "owner": "rep.south",
        "phone": "+86 21 5555 0101",
        "email": "it@initech.example",
        "address": "",
        "value_score": 0.0,
        "tier": "regular",
    }
    duplicate = await client.post(
        "/api/v1/customers", json={"code": "INITECH", "name": "Again", "type": "end"}
    )
    assert duplicate.status_code == 409
    assert error(duplicate) == {
        "code": "conflict",
        "message": "Customer code 'INITECH' is already used.",
        "field": "code",
    }
    assert (await client.get("/api/v1/customers/INITECH")).json() == customer

    patched = await client.patch(
        "/api/v1/customers/INITECH", json={"lifecycle_stage": "active", "address": "1 Way"}
    )
    assert patched.status_code == 200
    assert patched.json() == {**customer, "lifecycle_stage": "active", "address": "1 Way"}
    bad_patch = await client.patch("/api/v1/customers/INITECH", json={"type": "alien"})
    assert bad_patch.status_code == 422 and error(bad_patch)["field"] == "type"

    everyone = (await client.get("/api/v1/customers")).json()
    assert [item["code"] for item in everyone["items"]] == ["ACME", "GLOBEX", "INITECH"]
    assert (everyone["total"], everyone["limit"], everyone["offset"]) == (3, 50, 0)
    page = (await client.get("/api/v1/customers", params={"limit": 1, "offset": 1})).json()
    assert [item["code"] for item in page["items"]] == ["GLOBEX"] and page["total"] == 3
    by_name = (await client.get("/api/v1/customers", params={"q": "glob"})).json()
    assert [item["code"] for item in by_name["items"]] == ["GLOBEX"]
    by_type = (await client.get("/api/v1/customers", params={"type": "intermediate"})).json()
    assert [item["code"] for item in by_type["items"]] == ["ACME"]
    by_owner = (await client.get("/api/v1/customers", params={"owner": "rep.south"})).json()
    assert [item["code"] for item in by_owner["items"]] == ["GLOBEX", "INITECH"]
    missing = await client.get("/api/v1/customers/NOPE")
    assert missing.status_code == 404
    assert error(missing) == {
        "code": "not_found",
        "message": "No customer with code 'NOPE'.",
        "field": "customer_code",
    }


async def test_contacts_and_a_customers_installed_products(client: httpx.AsyncClient, world: World) -> None:
    added = await client.post(
        "/api/v1/customers/ACME/contacts",
        json={
            "name": "Li Wei",
            "title": "Facilities",
            "phone": "+86 138 0000 0000",
            "email": "li@acme.example",
            "lang": "zh",
        },
    )
    assert added.status_code == 201
    contact = added.json()
    assert {key: value for key, value in contact.items() if key != "id"} == {
        "customer_code": "ACME",
        "name": "Li Wei",
        "title": "Facilities",
        "phone": "+86 138 0000 0000",
        "email": "li@acme.example",
        "lang": "zh",
    }
    assert (await client.get("/api/v1/customers/ACME/contacts")).json() == [contact]
    bad = await client.post("/api/v1/customers/ACME/contacts", json={"name": "X", "email": "not-an-email"})
    assert bad.status_code == 422 and error(bad)["field"] == "email"
    units = await client.get("/api/v1/customers/ACME/installed-products")
    assert units.status_code == 200
    assert [unit["serial_number"] for unit in units.json()["items"]] == ["DW500-00001", "WM2023-00917"]
    assert (await client.get("/api/v1/customers/NOPE/installed-products")).status_code == 404


# --- catalogue, installed base, warranty ----------------------------------------------------------


async def test_products_are_listed_and_upserted(client: httpx.AsyncClient, world: World) -> None:
    assert [p["code"] for p in (await client.get("/api/v1/products")).json()] == ["DW-500", "WM-2023"]
    created = await client.post(
        "/api/v1/products", json={"code": "FR-1", "name": "Fridge", "category": "fridge"}
    )
    assert created.status_code == 200
    assert {key: value for key, value in created.json().items() if key != "id"} == {
        "code": "FR-1",
        "name": "Fridge",
        "category": "fridge",
        "default_warranty_months": 12,
        "maintenance_interval_months": None,
    }
    updated = await client.post(
        "/api/v1/products", json={"code": "FR-1", "name": "Fridge XL", "default_warranty_months": 36}
    )
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"]
    assert (updated.json()["name"], updated.json()["default_warranty_months"]) == ("Fridge XL", 36)
    assert [p["code"] for p in (await client.get("/api/v1/products")).json()] == ["DW-500", "FR-1", "WM-2023"]


async def test_warranty_has_the_contract_shape_and_values(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get(f"/api/v1/warranty/{world.acme_serial}")
    assert response.status_code == 200
    assert response.json() == {
        "serial_number": "WM2023-00917",
        "product": "Washing machine WM-2023",
        "customer": "Acme Corp",
        "warranty_type": "standard",
        "starts_on": "2025-11-27",
        "ends_on": "2027-11-26",
        "in_warranty": True,
        "days_left": 530,
    }
    expired = (await client.get(f"/api/v1/warranty/{world.acme_old_serial.lower()}")).json()
    assert (expired["serial_number"], expired["ends_on"], expired["in_warranty"], expired["days_left"]) == (
        "DW500-00001",
        "2021-01-09",
        False,
        0,
    )
    unknown = await client.get("/api/v1/warranty/ZZ999")
    assert unknown.status_code == 404
    assert error(unknown) == {
        "code": "not_found",
        "message": "No product with serial number 'ZZ999' found.",
        "field": "serial_number",
    }


async def test_erp_delivery_then_warranty_and_duplicate_serial(
    client: httpx.AsyncClient, world: World
) -> None:
    delivery = {
        "serial_number": "wm2023-55555",
        "product_code": "WM-2023",
        "customer_code": "GLOBEX",
        "sold_on": "2026-06-01",
        "warranty_months": 36,
        "warranty_type": "extended",
    }
    posted = await client.post("/api/v1/installed-products", json=delivery)
    assert posted.status_code == 201
    unit = posted.json()
    assert {key: value for key, value in unit.items() if key != "id"} == {
        "serial_number": "WM2023-55555",
        "product_code": "WM-2023",
        "product_name": "Washing machine WM-2023",
        "customer_code": "GLOBEX",
        "customer_name": "Globex Ltd",
        "sold_on": "2026-06-01",
        "warranty_months": 36,
        "warranty_type": "extended",
        "warranty_ends_on": "2029-05-31",
        "in_warranty": True,
        "days_left": (date(2029, 5, 31) - TODAY).days + 1,
        "next_maintenance_on": "2027-06-01",
    }
    assert (await client.get("/api/v1/installed-products/WM2023-55555")).json() == unit
    warranty = await client.get("/api/v1/warranty/WM2023-55555")
    assert warranty.json() == {
        "serial_number": "WM2023-55555",
        "product": "Washing machine WM-2023",
        "customer": "Globex Ltd",
        "warranty_type": "extended",
        "starts_on": "2026-06-01",
        "ends_on": "2029-05-31",
        "in_warranty": True,
        "days_left": 1082,
    }
    again = await client.post(
        "/api/v1/installed-products", json={**delivery, "serial_number": "WM2023-55555"}
    )
    assert again.status_code == 409
    assert error(again) == {
        "code": "conflict",
        "message": "Serial number WM2023-55555 is already registered.",
        "field": "serial_number",
    }
    globex_units = (await client.get("/api/v1/installed-products", params={"customer": "GLOBEX"})).json()
    assert [u["serial_number"] for u in globex_units["items"]] == ["AB12345", "WM2023-55555"]
    assert globex_units["total"] == 2
    new_model = await client.post(
        "/api/v1/installed-products",
        json={**delivery, "serial_number": "OV-1", "product_code": "OV-9", "product_name": "Oven OV-9"},
    )
    assert new_model.status_code == 201 and new_model.json()["product_name"] == "Oven OV-9"
    unknown_model = await client.post(
        "/api/v1/installed-products", json={**delivery, "serial_number": "OV-2", "product_code": "OV-10"}
    )
    assert unknown_model.status_code == 404 and error(unknown_model)["field"] == "product_code"


# --- validation and error shape -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field", "message"),
    [
        (
            "POST",
            "/api/v1/installed-products",
            {
                "serial_number": "X-1",
                "product_code": "WM-2023",
                "customer_code": "ACME",
                "sold_on": "2026-02-30",
            },
            "sold_on",
            "sold_on: Input should be a valid date or datetime, day value is outside expected range",
        ),
        (
            "POST",
            "/api/v1/installed-products",
            {
                "serial_number": "X-1",
                "product_code": "WM-2023",
                "customer_code": "ACME",
                "sold_on": "1969-12-31",
            },
            "sold_on",
            "sold_on: sold_on is before 1970",
        ),
        ("POST", "/api/v1/service-requests", {"customer_code": "ACME"}, "subject", "subject is required."),
        (
            "POST",
            "/api/v1/service-requests",
            {"customer_code": "ACME", "subject": "x", "bogus": 1},
            "bogus",
            "Unknown field 'bogus'.",
        ),
        (
            "POST",
            "/api/v1/service-requests",
            {"customer_code": "ACME", "subject": "x", "preferred_time": "2026-07-01T09:00:00"},
            "preferred_time",
            "preferred_time: preferred_time needs a timezone offset",
        ),
        (
            "POST",
            "/api/v1/repair-orders/RO-1/actions",
            {"action": "complete", "parts": [{"part_code": "P-100", "quantity": 0}]},
            "parts.0.quantity",
            "parts.0.quantity: Input should be greater than or equal to 1",
        ),
        (
            "GET",
            "/api/v1/customers?limit=0",
            None,
            "limit",
            "limit: Input should be greater than or equal to 1",
        ),
        (
            "GET",
            "/api/v1/customers?limit=201",
            None,
            "limit",
            "limit: Input should be less than or equal to 200",
        ),
        ("GET", "/api/v1/service-requests?status=lost", None, "status", "status: Input should be 'new'"),
        ("GET", "/api/v1/visits?since=yesterday", None, "since", "since: Input should be a valid date"),
        ("GET", "/api/v1/kb/search", None, "q", "q is required."),
    ],
)
async def test_invalid_input_is_422_naming_the_field(
    bare_client: httpx.AsyncClient, method: str, path: str, body: object, field: str, message: str
) -> None:
    response = await bare_client.request(method, path, json=body)
    assert response.status_code == 422
    problem = error(response)
    assert problem["code"] == "validation_failed"
    assert problem["field"] == field
    assert str(problem["message"]).startswith(message)
    assert problem["details"][0]["field"] == field  # type: ignore[index]
    assert "Traceback" not in response.text


async def test_several_problems_are_all_named(bare_client: httpx.AsyncClient) -> None:
    response = await bare_client.post("/api/v1/opportunities", json={"name": "", "amount": -5, "extra": True})
    assert response.status_code == 422
    fields = [detail["field"] for detail in error(response)["details"]]  # type: ignore[attr-defined]
    assert sorted(fields) == ["amount", "customer_code", "extra", "name"]


async def test_malformed_json_is_a_json_422(bare_client: httpx.AsyncClient) -> None:
    client = bare_client
    response = await client.post(
        "/api/v1/service-requests",
        content=b'{"subject": "leak",',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert error(response) == {
        "code": "invalid_json",
        "message": "The request body is not valid JSON.",
        "details": [{"field": None, "message": "The request body is not valid JSON."}],
    }
    no_body = await client.post("/api/v1/service-requests")
    assert no_body.status_code == 422
    assert error(no_body)["message"] == "A JSON request body is required."


async def test_unknown_records_routes_and_methods_are_json(client: httpx.AsyncClient) -> None:
    sr = await client.get("/api/v1/service-requests/SR-999")
    assert sr.status_code == 404
    assert error(sr) == {
        "code": "not_found",
        "message": "No service request SR-999 found.",
        "field": "service_request",
    }
    bad_ref = await client.get("/api/v1/service-requests/RO-1")
    assert bad_ref.status_code == 422
    assert error(bad_ref)["message"] == "'RO-1' is not a SR- reference (like SR-12)."
    route = await client.get("/api/v1/no-such-thing")
    assert route.status_code == 404
    assert error(route) == {
        "code": "not_found",
        "message": "There is nothing at GET /api/v1/no-such-thing. The API is described at /openapi.json.",
    }
    outside = await client.get("/wp-admin.php")
    assert outside.status_code == 404 and error(outside)["code"] == "not_found"
    method = await client.delete("/api/v1/customers")
    assert method.status_code == 405
    assert error(method) == {
        "code": "method_not_allowed",
        "message": "DELETE is not allowed on /api/v1/customers.",
    }
    assert "GET" in method.headers["allow"]


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (NotFound("No such widget.", field="widget"), 404, "not_found"),
        (PermissionDenied("Not you."), 403, "forbidden"),
        (ValidationFailed("Bad widget.", field="widget"), 422, "validation_failed"),
        (InvalidTransition("Cannot."), 409, "invalid_transition"),
        (Conflict("Taken."), 409, "conflict"),
        (InsufficientStock("None left."), 409, "insufficient_stock"),
        (DomainError("Odd."), 400, "domain_error"),
    ],
)
async def test_domain_errors_map_to_statuses(
    bare_app: FastAPI, bare_client: httpx.AsyncClient, exc: DomainError, status: int, code: str
) -> None:
    app, client = bare_app, bare_client

    async def fail() -> None:
        raise exc

    app.add_api_route("/test-only/domain-error", fail)
    response = await client.get("/test-only/domain-error")
    assert response.status_code == status
    expected: dict[str, object] = {"code": code, "message": exc.message}
    if exc.field:
        expected["field"] = exc.field
    if status == 422:
        expected["details"] = [{"field": exc.field, "message": exc.message}]
    assert error(response) == expected


async def test_an_unexpected_exception_is_a_logged_500_without_traceback(
    bare_app: FastAPI, bare_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    app, client = bare_app, bare_client

    async def explode() -> None:
        raise RuntimeError("secret-internal-detail in /srv/crmbot/db.py")

    app.add_api_route("/api/v1/test-only/boom", explode)
    with caplog.at_level(logging.ERROR, logger="crmbot.api"):
        response = await client.get("/api/v1/test-only/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "Something went wrong on our side; it has been logged.",
        }
    }
    for leak in ("Traceback", "RuntimeError", "secret-internal-detail", ".py"):
        assert leak not in response.text
    logged = [record for record in caplog.records if record.exc_info]
    assert logged and "secret-internal-detail" in str(logged[0].exc_info[1])  # type: ignore[index]


# --- service requests, repair orders, surveys -----------------------------------------------------


async def test_service_request_lifecycle_with_ordered_history(
    client: httpx.AsyncClient, world: World
) -> None:
    opened = await client.post(
        "/api/v1/service-requests",
        json={
            "serial_number": world.acme_serial,
            "subject": "Drum leaks",
            "description": "Water under the machine",
            "severity": "high",
        },
    )
    assert opened.status_code == 201
    request = opened.json()
    assert (request["ref"], request["customer_code"], request["customer_name"], request["status"]) == (
        "SR-1",
        "ACME",
        "Acme Corp",
        "new",
    )
    assert (request["serial_number"], request["severity"], request["kind"], request["channel"]) == (
        "WM2023-00917",
        "high",
        "request",
        "api",
    )
    assert request["created_at"] == "2026-06-15T02:00:00Z"

    steps = [
        ({"action": "assign", "assignee": "tech.north"}, "assigned"),
        ({"action": "start", "comment": "on site"}, "in_progress"),
        ({"action": "resolve", "resolution": "Replaced the door seal"}, "resolved"),
        ({"action": "close", "comment": "customer confirmed"}, "closed"),
    ]
    for body, status in steps:
        moved = await client.post("/api/v1/service-requests/SR-1/transitions", json=body)
        assert moved.status_code == 200, moved.text
        assert moved.json()["status"] == status
    detail = (await client.get("/api/v1/service-requests/1")).json()
    assert detail == (await client.get("/api/v1/service-requests/SR-1")).json()
    assert (detail["assignee"], detail["resolution"]) == ("tech.north", "Replaced the door seal")
    assert [
        (h["action"], h["from_status"], h["to_status"], h["comment"], h["actor"]) for h in detail["history"]
    ] == [
        ("open", None, "new", "Drum leaks", "system"),
        ("assign", "new", "assigned", "assigned to tech.north", "system"),
        ("start", "assigned", "in_progress", "on site", "system"),
        ("resolve", "in_progress", "resolved", "", "system"),
        ("close", "resolved", "closed", "customer confirmed", "system"),
    ]
    assert detail["repair_orders"] == []

    commented = await client.post("/api/v1/service-requests/SR-1/comments", json={"comment": "Called back"})
    assert commented.status_code == 204 and commented.content == b""
    last = (await client.get("/api/v1/service-requests/SR-1")).json()["history"][-1]
    assert (last["action"], last["from_status"], last["to_status"], last["comment"]) == (
        "comment",
        "closed",
        "closed",
        "Called back",
    )
    empty = await client.post("/api/v1/service-requests/SR-1/comments", json={"comment": "   "})
    assert empty.status_code == 422 and error(empty)["field"] == "comment"

    listed = (await client.get("/api/v1/service-requests", params={"status": "closed"})).json()
    assert [item["ref"] for item in listed["items"]] == ["SR-1"]
    assert (await client.get("/api/v1/service-requests", params={"open": "true"})).json()["total"] == 0


async def test_closing_a_new_request_is_409_with_a_clear_message(
    client: httpx.AsyncClient, world: World
) -> None:
    await client.post("/api/v1/service-requests", json={"customer_code": "GLOBEX", "subject": "Noisy"})
    response = await client.post("/api/v1/service-requests/SR-1/transitions", json={"action": "close"})
    assert response.status_code == 409
    assert error(response) == {
        "code": "invalid_transition",
        "message": "A request that is new cannot be closed: resolve it first, with a resolution.",
    }
    unknown_action = await client.post(
        "/api/v1/service-requests/SR-1/transitions", json={"action": "teleport"}
    )
    assert unknown_action.status_code == 409
    assert error(unknown_action)["field"] == "action"
    assert "Possible: assign, close, escalate" in str(error(unknown_action)["message"])
    detail = (await client.get("/api/v1/service-requests/SR-1")).json()
    assert detail["status"] == "new" and [h["action"] for h in detail["history"]] == ["open"]


async def test_dispatch_accept_complete_in_warranty_is_free_and_takes_stock(
    client: httpx.AsyncClient, core: Core, world: World
) -> None:
    await client.post(
        "/api/v1/service-requests", json={"serial_number": world.acme_serial, "subject": "Pump"}
    )
    dispatched = await client.post(
        "/api/v1/repair-orders",
        json={
            "service_request": "SR-1",
            "technician": "tech.north",
            "scheduled_at": "2026-06-16T09:00:00+08:00",
        },
    )
    assert dispatched.status_code == 201
    order = dispatched.json()
    assert (
        order["ref"],
        order["service_request_ref"],
        order["technician"],
        order["station_code"],
        order["status"],
        order["scheduled_at"],
    ) == ("RO-1", "SR-1", "tech.north", "ST-N", "dispatched", "2026-06-16T01:00:00Z")
    tech = await token_headers(core, "tech.north")
    accepted = await client.post(
        "/api/v1/repair-orders/RO-1/actions", json={"action": "accept"}, headers=tech
    )
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    my_jobs = (await client.get("/api/v1/repair-orders", params={"active": "true"}, headers=tech)).json()
    assert [job["ref"] for job in my_jobs["items"]] == ["RO-1"]
    completed = await client.post(
        "/api/v1/repair-orders/1/actions",
        headers=tech,
        json={
            "action": "complete",
            "work_summary": "Replaced pump",
            "labour_minutes": 45,
            "parts": [{"part_code": "P-100", "quantity": 1}],
        },
    )
    assert completed.status_code == 200, completed.text
    job = completed.json()
    assert (
        job["status"],
        job["in_warranty"],
        job["parts_charge"],
        job["labour_charge"],
        job["total_charge"],
        job["currency"],
        job["work_summary"],
        job["labour_minutes"],
    ) == ("completed", True, "0.00", "0.00", "0.00", "CNY", "Replaced pump", 45)
    assert job["parts"] == [
        {"part_code": "P-100", "part_name": "Drain pump", "quantity": 1, "unit_price": "180.00"}
    ]
    assert [(h["action"], h["to_status"], h["actor"]) for h in job["history"]] == [
        ("dispatch", "dispatched", "system"),
        ("accept", "accepted", "tech.north"),
        ("complete", "completed", "tech.north"),
    ]
    assert await core.service_desk.stock_level(SYSTEM, "ST-N", "P-100") == 2
    request = (await client.get("/api/v1/service-requests/SR-1")).json()
    assert (request["status"], request["resolution"], request["repair_orders"]) == (
        "resolved",
        "Replaced pump",
        ["RO-1"],
    )
    twice = await client.post("/api/v1/repair-orders/RO-1/actions", headers=tech, json={"action": "accept"})
    assert twice.status_code == 409
    assert error(twice) == {"code": "invalid_transition", "message": "Cannot accept a job that is completed."}
    assert (await client.get("/api/v1/repair-orders/RO-1")).json() == job


async def test_completing_with_more_parts_than_stock_is_409_and_changes_nothing(
    client: httpx.AsyncClient, core: Core, world: World
) -> None:
    await client.post(
        "/api/v1/service-requests", json={"serial_number": world.acme_old_serial, "subject": "Pump"}
    )
    await client.post("/api/v1/repair-orders", json={"service_request": "SR-1", "technician": "tech.north"})
    tech = await token_headers(core, "tech.north")
    await client.post("/api/v1/repair-orders/RO-1/actions", json={"action": "accept"}, headers=tech)
    response = await client.post(
        "/api/v1/repair-orders/RO-1/actions",
        headers=tech,
        json={"action": "complete", "work_summary": "Pump", "parts": [{"part_code": "P-100", "quantity": 5}]},
    )
    assert response.status_code == 409
    assert error(response) == {
        "code": "insufficient_stock",
        "message": "Only 3 of part P-100 in stock at your station; 5 needed.",
    }
    assert await core.service_desk.stock_level(SYSTEM, "ST-N", "P-100") == 3
    assert (await client.get("/api/v1/repair-orders/RO-1")).json()["status"] == "accepted"
    paid = await client.post(
        "/api/v1/repair-orders/RO-1/actions",
        headers=tech,
        json={
            "action": "complete",
            "work_summary": "Pump",
            "labour_minutes": 60,
            "parts": [{"part_code": "P-100", "quantity": 1}],
        },
    )
    assert paid.status_code == 200
    assert (
        paid.json()["in_warranty"],
        paid.json()["parts_charge"],
        paid.json()["labour_charge"],
        paid.json()["total_charge"],
    ) == (False, "180.00", "170.00", "350.00")


async def test_surveys_are_listed_and_answered_once(
    client: httpx.AsyncClient, core: Core, world: World
) -> None:
    await client.post(
        "/api/v1/service-requests", json={"serial_number": world.acme_serial, "subject": "Leak"}
    )
    for body in ({"action": "assign", "assignee": "agent"}, {"action": "resolve", "resolution": "Fixed"}):
        assert (await client.post("/api/v1/service-requests/SR-1/transitions", json=body)).status_code == 200
    await core.surveys.create_for_request(SYSTEM, "SR-1")
    pending = (await client.get("/api/v1/surveys", params={"status": "pending"})).json()["items"]
    assert [(s["service_request_ref"], s["customer_code"], s["status"], s["score"]) for s in pending] == [
        ("SR-1", "ACME", "pending", None)
    ]
    buyer = await token_headers(core, "acme.buyer")
    answered = await client.post(
        "/api/v1/service-requests/SR-1/survey",
        headers=buyer,
        json={"score": 5, "comment": "  Quick and friendly "},
    )
    assert answered.status_code == 200
    assert (
        answered.json()["status"],
        answered.json()["score"],
        answered.json()["comment"],
        answered.json()["answered_at"],
    ) == ("answered", 5, "Quick and friendly", "2026-06-15T02:00:00Z")
    again = await client.post("/api/v1/service-requests/SR-1/survey", headers=buyer, json={"score": 1})
    assert again.status_code == 409
    assert error(again) == {"code": "conflict", "message": "SR-1 was already rated 5/5. Thank you!"}
    out_of_range = await client.post("/api/v1/service-requests/SR-1/survey", headers=buyer, json={"score": 6})
    assert out_of_range.status_code == 422 and error(out_of_range)["field"] == "score"
    assert (await client.get("/api/v1/surveys", params={"status": "pending"})).json()["items"] == []
    mine = (await client.get("/api/v1/surveys", headers=buyer)).json()["items"]
    assert [(s["service_request_ref"], s["score"]) for s in mine] == [("SR-1", 5)]


# --- sales ----------------------------------------------------------------------------------------


async def test_opportunity_stage_change_is_recorded(
    client: httpx.AsyncClient, core: Core, world: World
) -> None:
    rep = await token_headers(core, "rep.north")
    created = await client.post(
        "/api/v1/opportunities",
        headers=rep,
        json={
            "customer_code": "ACME",
            "name": "Acme renewal",
            "amount": "30000.00",
            "expected_close": "2026-09-30",
        },
    )
    assert created.status_code == 201
    deal = created.json()
    assert (
        deal["ref"],
        deal["customer_code"],
        deal["owner"],
        deal["stage"],
        deal["amount"],
        deal["probability"],
        deal["currency"],
    ) == ("OP-1", "ACME", "rep.north", "qualification", "30000.00", 10, "CNY")
    moved = await client.patch(
        "/api/v1/opportunities/OP-1", headers=rep, json={"stage": "negotiation", "amount": 50000}
    )
    assert moved.status_code == 200
    detail = moved.json()
    assert (detail["stage"], detail["amount"], detail["probability"]) == ("negotiation", "50000.00", 75)
    assert [(h["field"], h["old_value"], h["new_value"], h["actor"]) for h in detail["history"]] == [
        ("created", None, "qualification 30000.00", "rep.north"),
        ("stage", "qualification", "negotiation", "rep.north"),
        ("amount", "30000.00", "50000.00", "rep.north"),
        ("probability", "10", "75", "rep.north"),
    ]
    assert (await client.get("/api/v1/opportunities/1", headers=rep)).json() == detail
    lost = await client.patch("/api/v1/opportunities/OP-1", headers=rep, json={"stage": "closed_lost"})
    assert lost.status_code == 422
    assert error(lost)["field"] == "lost_reason"
    listed = (
        await client.get("/api/v1/opportunities", params={"open": "true", "stage": "negotiation"})
    ).json()
    assert [item["ref"] for item in listed["items"]] == ["OP-1"]
    assert (await client.get("/api/v1/opportunities", params={"stage": "proposal"})).json()["total"] == 0
    unknown_owner = await client.post(
        "/api/v1/opportunities",
        json={"customer_code": "ACME", "name": "X", "amount": 1, "owner": "tech.north"},
    )
    assert unknown_owner.status_code == 422
    assert error(unknown_owner) == {
        "code": "validation_failed",
        "message": "tech.north is not a sales rep or manager.",
        "field": "owner",
        "details": [{"field": "owner", "message": "tech.north is not a sales rep or manager."}],
    }


async def test_visit_with_next_step_creates_a_task(
    client: httpx.AsyncClient, core: Core, world: World
) -> None:
    rep = await token_headers(core, "rep.north")
    logged = await client.post(
        "/api/v1/visits",
        headers=rep,
        json={
            "customer_code": "ACME",
            "visited_on": "2026-06-15",
            "contacts_met": ["Li"],
            "summary": "Renewal talk",
            "next_step": "Send quote",
            "next_step_due": "2026-06-19T18:00:00+08:00",
        },
    )
    assert logged.status_code == 201
    visit = logged.json()
    assert (
        visit["customer_code"],
        visit["customer_name"],
        visit["rep"],
        visit["visited_on"],
        visit["contacts_met"],
        visit["next_step"],
    ) == ("ACME", "Acme Corp", "rep.north", "2026-06-15", ["Li"], "Send quote")
    assert visit["follow_up_task_id"] is not None
    tasks = (await client.get("/api/v1/tasks", headers=rep)).json()
    assert [
        (t["id"], t["title"], t["kind"], t["status"], t["due_at"], t["assignee"], t["customer_code"])
        for t in tasks
    ] == [
        (
            visit["follow_up_task_id"],
            "Send quote",
            "follow_up",
            "open",
            "2026-06-19T10:00:00Z",
            "rep.north",
            "ACME",
        )
    ]
    visits = (await client.get("/api/v1/visits", headers=rep, params={"since": "2026-06-01"})).json()
    assert [v["id"] for v in visits["items"]] == [visit["id"]]
    assert (await client.get("/api/v1/visits", params={"until": "2026-06-14"})).json()["total"] == 0
    future = await client.post(
        "/api/v1/visits", headers=rep, json={"customer_code": "ACME", "visited_on": "2026-06-16"}
    )
    assert future.status_code == 422 and error(future)["field"] == "visited_on"
    by_system = await client.post(
        "/api/v1/visits", json={"customer_code": "ACME", "visited_on": "2026-06-15"}
    )
    assert by_system.status_code == 403
    assert error(by_system) == {"code": "forbidden", "message": "Visits are logged by a person."}


# --- knowledge ------------------------------------------------------------------------------------


async def test_kb_articles_are_listed_read_and_upserted(client: httpx.AsyncClient, world: World) -> None:
    listed = (await client.get("/api/v1/kb/articles")).json()
    assert [a["code"] for a in listed["items"]] == ["KB-DW-E13"] and listed["total"] == 1
    article = (await client.get("/api/v1/kb/articles/KB-DW-E13")).json()
    assert {key: value for key, value in article.items() if key != "id"} == {
        "code": "KB-DW-E13",
        "title": "Dishwasher shows error E13",
        "category": "dishwasher/errors",
        "product_code": "DW-500",
        "symptoms": "Error E13 on the display, water not heating",
        "solution": "Reset the heater fuse; if it repeats, book a repair.",
        "lang": "en",
    }
    body = {
        "code": "KB-WM-LEAK",
        "title": "Washing machine leaks",
        "category": "washing_machine/leaks",
        "product_code": "WM-2023",
        "symptoms": "Water on the floor",
        "solution": "Check the door seal.",
        "lang": "en",
    }
    put = await client.put("/api/v1/kb/articles/KB-WM-LEAK", json=body)
    assert put.status_code == 200
    assert {key: value for key, value in put.json().items() if key != "id"} == body
    replaced = await client.put("/api/v1/kb/articles/KB-WM-LEAK", json={**body, "title": "Leaking washer"})
    assert replaced.json()["id"] == put.json()["id"] and replaced.json()["title"] == "Leaking washer"
    mismatch = await client.put("/api/v1/kb/articles/KB-OTHER", json=body)
    assert mismatch.status_code == 422
    assert error(mismatch)["field"] == "code"
    assert error(mismatch)["message"] == "The body's code 'KB-WM-LEAK' does not match the URL's 'KB-OTHER'."
    assert (await client.get("/api/v1/kb/articles/KB-OTHER")).status_code == 404
    under = (await client.get("/api/v1/kb/articles", params={"category": "washing_machine"})).json()
    assert [a["code"] for a in under["items"]] == ["KB-WM-LEAK"]
    by_product = (await client.get("/api/v1/kb/articles", params={"product": "DW-500", "lang": "en"})).json()
    assert [a["code"] for a in by_product["items"]] == ["KB-DW-E13"]
    assert (await client.get("/api/v1/kb/articles", params={"lang": "zh"})).json()["total"] == 0
    bad_lang = await client.get("/api/v1/kb/articles", params={"lang": "fr"})
    assert bad_lang.status_code == 422 and error(bad_lang)["field"] == "lang"


async def test_kb_search_finds_the_error_code_article(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get("/api/v1/kb/search", params={"q": "dishwasher error E13", "limit": 3})
    assert response.status_code == 200
    hits = response.json()
    assert hits[0]["code"] == "KB-DW-E13"
    assert set(hits[0]) == {"code", "title", "score", "product_code", "lang", "solution"}
    assert (hits[0]["product_code"], hits[0]["lang"]) == ("DW-500", "en")


async def test_kb_search_validates_its_parameters(client: httpx.AsyncClient) -> None:
    too_many = await client.get("/api/v1/kb/search", params={"q": "E13", "limit": 51})
    assert too_many.status_code == 422 and error(too_many)["field"] == "limit"
    nothing = await client.get("/api/v1/kb/search", params={"q": "zzzzqqqq xylophone"})
    assert nothing.status_code == 200 and nothing.json() == []
