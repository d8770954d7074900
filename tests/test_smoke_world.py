"""The test world builds on this backend and the core answers basic questions."""

from __future__ import annotations

from core.container import Core
from tests.world import World


async def test_world_builds(core: Core, world: World) -> None:
    warranty = await core.installed.warranty(world.acme_customer, world.acme_serial)
    assert warranty.in_warranty is True
    assert warranty.customer == "Acme Corp"
    assert world.rep_north.user_id in world.director.team_ids
    assert world.rep_north.user_id in world.north_manager.team_ids
    assert world.rep_south.user_id not in world.north_manager.team_ids
