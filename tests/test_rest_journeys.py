"""Customer journeys J1–J4 over the REST channel with the real embedded NLU, checked through the admin API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.nlu.embedded import EmbeddedNlu
from bot.nlu.service import ensure_model
from core.auth import SYSTEM
from core.container import Core
from core.schemas import TransitionIn
from tests.chat import rest_client, say_over_rest
from tests.world import World

TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="session")
def nlu(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedNlu:
    """The real engine trained on the shipped data (once per run: a few seconds)."""
    return ensure_model(Path(tmp_path_factory.mktemp("nlu")) / "model.joblib")


@pytest.fixture
async def client(core: Core, world: World, nlu: EmbeddedNlu) -> AsyncIterator[httpx.AsyncClient]:
    async with rest_client(core, nlu, TOKEN) as http:
        yield http


async def say(client: httpx.AsyncClient, sender: str, message: str) -> list[dict[str, Any]]:
    return await say_over_rest(client, sender, message, ADMIN)


def text(replies: list[dict[str, Any]]) -> str:
    return "\n".join(reply["text"] for reply in replies)


def payloads(replies: list[dict[str, Any]]) -> list[str]:
    return [button["payload"] for reply in replies for button in reply.get("buttons", [])]


async def requests_of(client: httpx.AsyncClient, customer: str) -> list[dict[str, Any]]:
    body = (await client.get("/api/v1/service-requests", params={"customer": customer}, headers=ADMIN)).json()
    items: list[dict[str, Any]] = body["items"]
    return items


async def test_english_customer_journeys(client: httpx.AsyncClient, core: Core, world: World) -> None:
    me = "acme-buyer"
    assert "Hello" in text(await say(client, me, "hi there"))
    # J1: a repair request in several messages; only the missing time is asked.
    first = await say(client, me, "my washing machine WM2023-00917 is leaking water")
    assert "under warranty until" in text(first)
    summary = await say(client, me, "tomorrow at 10am")
    assert "/affirm" in payloads(summary)
    opened = text(await say(client, me, "yes"))
    assert "SR-1" in opened
    [request] = await requests_of(client, "ACME")
    assert (request["ref"], request["serial_number"], request["kind"], request["channel"]) == (
        "SR-1",
        "WM2023-00917",
        "request",
        "rest",
    )
    assert request["preferred_time"].startswith("2026-06-16T02:00:00")  # 10:00 in Shanghai
    # J2 and context: the serial is remembered.
    warranty = text(await say(client, me, "is WM2023-00917 still under warranty?"))
    assert "WM2023-00917) is covered until" in warranty and "days left" in warranty
    assert "covered until" in text(await say(client, me, "and its warranty?"))
    # J3: an error code finds the article, with the two buttons.
    found = await say(client, me, "error E13 on my dishwasher")
    assert '/kb_solved{"code": "KB-DW-E13"}' in payloads(
        found
    ) or '/kb_solved{"code":"KB-DW-E13"}' in payloads(found)
    assert any(payload.startswith("/kb_solved") for payload in payloads(found))
    # Status of the request just opened.
    assert "SR-1" in text(await say(client, me, "what's the status of my repair request?"))
    # J4: a complaint.
    complaint = await say(client, me, "your technician was rude and two hours late, this is unacceptable")
    assert "/affirm" in payloads(complaint)
    await say(client, me, "yes")
    kinds = sorted(item["kind"] for item in await requests_of(client, "ACME"))
    assert kinds == ["complaint", "request"]
    # Rate the closed request.
    await core.service_desk.transition(world.agent, "SR-1", TransitionIn(action="assign", assignee="agent"))
    await core.service_desk.transition(world.agent, "SR-1", TransitionIn(action="resolve", resolution="Seal"))
    await core.surveys.create_for_request(SYSTEM, "SR-1")
    rated = text(await say(client, me, "I'd rate SR-1 five stars"))
    assert "SR-1" in rated and "⭐⭐⭐⭐⭐" in rated
    surveys = (await client.get("/api/v1/surveys", headers=ADMIN)).json()["items"]
    assert [(survey["service_request_ref"], survey["score"]) for survey in surveys] == [("SR-1", 5)]


async def test_chinese_customer_journeys(client: httpx.AsyncClient, core: Core, world: World) -> None:
    me = "globex.buyer"
    assert "您好" in text(await say(client, me, "你好"))
    first = await say(client, me, "我的洗碗机AB12345不排水了，请派师傅上门")
    assert "保修" in text(first)
    await say(client, me, "明天下午3点")
    assert "SR-1" in text(await say(client, me, "确认"))
    [request] = await requests_of(client, "GLOBEX")
    assert (request["serial_number"], request["kind"]) == ("AB12345", "request")
    assert request["preferred_time"].startswith("2026-06-16T07:00:00")  # 15:00 in Shanghai
    assert "保修" in text(await say(client, me, "AB12345还在保修期内吗"))
    assert "E13" in text(await say(client, me, "洗碗机显示E13是什么意思"))
    assert "SR-1" in text(await say(client, me, "我的维修进度怎么样了"))
    complaint = await say(client, me, "你们的师傅态度很差，还迟到了两个小时，我要投诉")
    assert "/affirm" in payloads(complaint)
    await say(client, me, "是的")
    kinds = sorted(item["kind"] for item in await requests_of(client, "GLOBEX"))
    assert kinds == ["complaint", "request"]


async def test_another_customers_serial_and_ticket_leak_nothing(
    client: httpx.AsyncClient, world: World
) -> None:
    await say(client, "globex.buyer", "我的洗碗机AB12345不排水了，请派师傅上门")
    await say(client, "globex.buyer", "明天下午3点")
    await say(client, "globex.buyer", "确认")
    for message in ("is AB12345 still under warranty?", "status of SR-1", "show me Globex"):
        replies = text(await say(client, "acme-buyer", message))
        assert "Globex" not in replies and "AB12345 is" not in replies and "不排水" not in replies


async def test_unknown_sender_and_bad_requests(client: httpx.AsyncClient) -> None:
    unknown = await say(client, "who-is-this", "is AB12345 under warranty?")
    assert len(unknown) == 1 and "not linked" in unknown[0]["text"]
    no_token = await client.post("/webhooks/rest/webhook", json={"sender": "acme-buyer", "message": "hi"})
    assert no_token.status_code == 401
    missing = await client.post("/webhooks/rest/webhook", json={"message": "hi"}, headers=ADMIN)
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "sender"
    huge = await say(client, "acme-buyer", "x" * 10_000)
    assert huge[0]["text"]


async def test_model_parse_has_rasas_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/model/parse", json={"text": "is AB12345 still under warranty?"}, headers=ADMIN
    )
    body = response.json()
    assert body["intent"]["name"] == "check_warranty" and 0 < body["intent"]["confidence"] <= 1
    assert {"entity": "serial_number", "value": "AB12345", "start": 3, "end": 10}.items() <= body["entities"][
        0
    ].items()
    assert body["intent_ranking"][0]["name"] == "check_warranty"
    assert (await client.post("/model/parse", json={"text": "hi"})).status_code == 401
