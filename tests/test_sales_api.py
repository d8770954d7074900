"""The opportunities endpoint's close-date window and minimum amount (what the chat's deal list uses)."""

from __future__ import annotations

import httpx

from core.container import Core
from crmbot.app import create_app
from tests.test_intents_staff import make_deals
from tests.world import World

TOKEN = "test-admin-token"


async def test_opportunities_by_close_window_and_minimum_amount(core: Core, world: World) -> None:
    await make_deals(core, world)
    transport = httpx.ASGITransport(app=create_app(core, TOKEN))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
        june = await client.get(
            "/api/v1/opportunities", params={"closing_from": "2026-06-01", "closing_before": "2026-07-01"}
        )
        assert june.status_code == 200
        assert [item["ref"] for item in june.json()["items"]] == ["OP-5", "OP-1"]
        big = await client.get("/api/v1/opportunities", params={"min_amount": "90000", "open": "true"})
        assert [item["ref"] for item in big.json()["items"]] == ["OP-3", "OP-5"]
        bad = await client.get("/api/v1/opportunities", params={"min_amount": "-1"})
        assert bad.status_code == 422 and "error" in bad.json()
