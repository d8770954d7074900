"""`POST /model/parse`: Rasa's shape, bearer token required, errors as JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bot.nlu.embedded import EmbeddedNlu
from bot.nlu.yaml_data import load_nlu_data
from core.clock import FrozenClock
from core.container import Core
from crmbot.api.errors import install_error_handlers
from crmbot.app import create_app
from crmbot.nlu_http import parse_router

FIXTURES = Path(__file__).parent / "nlu_fixtures"
TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class NoTokens:
    """The one core service the token check touches: no personal tokens exist."""

    async def actor_for_token(self, token: str) -> None:
        return None


@pytest.fixture(scope="module")
def nlu_engine() -> EmbeddedNlu:
    trained, _report = EmbeddedNlu.train(load_nlu_data(FIXTURES / "train_small.yml"))
    return trained


@pytest.fixture
def app(nlu_engine: EmbeddedNlu) -> FastAPI:
    app = FastAPI()
    app.state.api_token = TOKEN
    # 2026-06-15 02:00 UTC is Monday 10:00 in Shanghai.
    app.state.core = SimpleNamespace(
        org=NoTokens(),
        clock=FrozenClock(datetime(2026, 6, 15, 2, 0, tzinfo=UTC)),
        settings=SimpleNamespace(timezone="Asia/Shanghai"),
    )
    app.state.nlu = nlu_engine
    install_error_handlers(app)
    app.include_router(parse_router())
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield http


async def test_parse_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/model/parse", json={"text": "is AB12345 still under warranty?"}, headers=AUTH
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    assert set(body) == {"text", "intent", "entities", "intent_ranking", "lang"}
    assert body["text"] == "is AB12345 still under warranty?"
    assert body["intent"]["name"] == "check_warranty"
    assert set(body["intent"]) == {"name", "confidence"}
    assert body["entities"] == [
        {
            "entity": "serial_number",
            "value": "AB12345",
            "start": 3,
            "end": 10,
            "text": "AB12345",
            "confidence_entity": 1.0,
            "extractor": "crmbot",
        }
    ]
    assert [set(item) for item in body["intent_ranking"]] == [{"name", "confidence"}] * 6
    assert body["intent_ranking"][0]["name"] == "check_warranty"


async def test_dates_use_the_core_clock_and_timezone(client: httpx.AsyncClient) -> None:
    response = await client.post("/model/parse", json={"text": "明天下午3点来修"}, headers=AUTH)
    assert response.status_code == 200
    assert [(e["entity"], e["value"]) for e in response.json()["entities"]] == [
        ("time", "2026-06-16T15:00:00+08:00")
    ]


async def test_token_is_required(client: httpx.AsyncClient) -> None:
    missing = await client.post("/model/parse", json={"text": "hello"})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    wrong = await client.post(
        "/model/parse", json={"text": "hello"}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401


async def test_bad_bodies_are_422(client: httpx.AsyncClient) -> None:
    missing = await client.post("/model/parse", json={}, headers=AUTH)
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "text"
    too_long = await client.post("/model/parse", json={"text": "a" * 10_001}, headers=AUTH)
    assert too_long.status_code == 422
    broken = await client.post(
        "/model/parse", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert broken.status_code == 422


async def test_odd_text_is_fallback_not_an_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/model/parse", json={"text": "   😀😀  "}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["intent"] == {"name": "nlu_fallback", "confidence": 1.0}


async def test_no_engine_is_503(app: FastAPI, client: httpx.AsyncClient) -> None:
    app.state.nlu = None
    response = await client.post("/model/parse", json={"text": "hello"}, headers=AUTH)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "nlu_unavailable"


async def test_works_inside_the_real_app(core: Core, nlu_engine: EmbeddedNlu) -> None:
    app = create_app(core, TOKEN)
    app.state.nlu = nlu_engine
    app.include_router(parse_router())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        ok = await http.post("/model/parse", json={"text": "再见啦"}, headers=AUTH)
        denied = await http.post("/model/parse", json={"text": "再见啦"})
    assert ok.status_code == 200 and ok.json()["intent"]["name"] == "goodbye"
    assert denied.status_code == 401
