"""The manager's pipeline report in core (and its API): scope, conversion, age, per rep, forecast."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal

import httpx
import pytest

from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import Core
from core.domain.enums import OpportunityStage
from core.errors import NotFound, PermissionDenied, ValidationFailed
from core.schemas import OpportunityIn, OpportunityPatch, PipelineReportOut
from core.services.pipeline import OUT_OF_SCOPE, conversion, furthest_stage
from crmbot.app import create_app
from tests.conftest import TEST_NOW
from tests.world import World

Q2 = (date(2026, 4, 1), date(2026, 6, 30))
S = OpportunityStage


async def deal(
    core: Core,
    clock: FrozenClock,
    world: World,
    *,
    days_ago: int,
    stage: S,
    amount: str,
    closes: date,
    moves: tuple[tuple[int, S], ...] = (),
    south: bool = False,
) -> str:
    """Create a deal `days_ago` days before now and move it through `moves` ((days ago, stage), ...)."""
    clock.set(TEST_NOW - timedelta(days=days_ago))
    actor, customer = (world.rep_south, "GLOBEX") if south else (world.rep_north, "ACME")
    created = await core.sales.create_opportunity(
        actor,
        OpportunityIn(
            customer_code=customer,
            name=f"Deal {amount}",
            stage=stage,
            amount=Decimal(amount),
            expected_close=closes,
        ),
    )
    for ago, target in moves:
        clock.set(TEST_NOW - timedelta(days=ago))
        reason = "price" if target is S.CLOSED_LOST else None
        await core.sales.update_opportunity(
            actor, created.ref, OpportunityPatch(stage=target, lost_reason=reason)
        )
    clock.set(TEST_NOW)
    return created.ref


async def hand_built(core: Core, clock: FrozenClock, world: World) -> None:
    """Four north deals with a known history and one south deal, all closing in Q2 2026 (one in Q3).

    D1 qualification → needs analysis → proposal (open 30 days, 10 in proposal), 40k, June
    D2 qualification → lost
    D3 qualification → needs analysis → proposal → negotiation → won, 30k
    D4 created straight into needs analysis 20 days ago (open), 20k, May
    D5 south: negotiation, created 10 days ago, 90k, June
    D6 north: qualification, closes in August (outside Q2)
    """
    await deal(
        core,
        clock,
        world,
        days_ago=30,
        stage=S.QUALIFICATION,
        amount="40000",
        closes=date(2026, 6, 30),
        moves=((20, S.NEEDS_ANALYSIS), (10, S.PROPOSAL)),
    )
    await deal(
        core,
        clock,
        world,
        days_ago=30,
        stage=S.QUALIFICATION,
        amount="15000",
        closes=date(2026, 5, 5),
        moves=((5, S.CLOSED_LOST),),
    )
    await deal(
        core,
        clock,
        world,
        days_ago=30,
        stage=S.QUALIFICATION,
        amount="30000",
        closes=date(2026, 6, 1),
        moves=((25, S.NEEDS_ANALYSIS), (20, S.PROPOSAL), (15, S.NEGOTIATION), (5, S.CLOSED_WON)),
    )
    await deal(
        core, clock, world, days_ago=20, stage=S.NEEDS_ANALYSIS, amount="20000", closes=date(2026, 5, 20)
    )
    await deal(
        core,
        clock,
        world,
        days_ago=10,
        stage=S.NEGOTIATION,
        amount="90000",
        closes=date(2026, 6, 20),
        south=True,
    )
    await deal(
        core, clock, world, days_ago=3, stage=S.QUALIFICATION, amount="50000", closes=date(2026, 8, 15)
    )


def stage_of(report: PipelineReportOut, stage: str) -> tuple[int, Decimal, Decimal]:
    """(count, amount, weighted) of one stage."""
    entry = next(entry for entry in report.stages if entry.stage == stage)
    return entry.count, entry.amount, entry.weighted


async def test_funnel_forecast_conversion_and_age_on_a_hand_built_history(
    core: Core, world: World, clock: FrozenClock
) -> None:
    await hand_built(core, clock, world)
    report = await core.pipeline.report(world.north_manager, *Q2)
    assert stage_of(report, "proposal") == (1, Decimal("40000"), Decimal("20000.00"))
    assert stage_of(report, "needs_analysis") == (1, Decimal("20000"), Decimal("5000.00"))
    assert stage_of(report, "closed_won")[:2] == (1, Decimal("30000"))
    assert stage_of(report, "closed_lost")[:2] == (1, Decimal("15000"))
    assert report.open_count == 2 and report.weighted_forecast == Decimal("25000.00")
    assert report.forecast_by_month == {"2026-05": Decimal("5000.00"), "2026-06": Decimal("20000.00")}
    # Conversion from each deal's furthest stage: D1 proposal, D2 qualification, D3 won, D4 needs analysis.
    flow = {
        row.stage: (row.reached, row.advanced, row.rate, row.won, row.win_rate) for row in report.conversion
    }
    assert flow == {
        "qualification": (4, 3, 0.75, 1, 0.25),
        "needs_analysis": (3, 2, 0.6667, 1, 0.3333),
        "proposal": (2, 1, 0.5, 1, 0.5),
        "negotiation": (1, 1, 1.0, 1, 1.0),
    }
    # Age of open deals: days since entering the current stage, and since creation.
    age = {row.stage: (row.count, row.average_days_in_stage, row.average_days_open) for row in report.age}
    assert age == {
        "qualification": (0, None, None),
        "needs_analysis": (1, 20.0, 20.0),
        "proposal": (1, 10.0, 30.0),
        "negotiation": (0, None, None),
    }
    assert [(row.username, row.open_count, row.weighted, row.won_amount) for row in report.reps] == [
        ("rep.north", 2, Decimal("25000.00"), Decimal("30000"))
    ]


async def test_each_actor_sees_only_their_subtree(core: Core, world: World, clock: FrozenClock) -> None:
    await hand_built(core, clock, world)
    director = await core.pipeline.report(world.director, *Q2)
    assert [row.username for row in director.reps] == ["rep.south", "rep.north"]  # by weighted, largest first
    assert director.open_count == 3 and stage_of(director, "negotiation")[0] == 1
    rep = await core.pipeline.report(world.rep_north, *Q2)
    assert [row.username for row in rep.reps] == ["rep.north"] and rep.open_count == 2
    south = await core.pipeline.report(world.south_manager, *Q2)
    assert [row.username for row in south.reps] == ["rep.south"] and south.weighted_forecast == Decimal(
        "67500.00"
    )
    # No period: every deal in scope, the August one too.
    assert (await core.pipeline.report(world.rep_north)).open_count == 3
    # Drilling into one rep or one team of one's own subtree.
    one = await core.pipeline.report(world.director, *Q2, rep="Rep North")
    assert one.rep == "rep.north" and one.open_count == 2
    # A first name is enough when only one person of the subtree has it; "Rep" fits several, so it is refused.
    assert (await core.pipeline.report(world.north_manager, *Q2, rep="rep n")).rep == "rep.north"
    assert (await core.pipeline.report(world.director, *Q2, rep="rep South")).rep == "rep.south"
    assert (await core.pipeline.report(world.director, *Q2, rep="sales rep rep.south")).rep == "rep.south"
    with pytest.raises(PermissionDenied):
        await core.pipeline.report(world.director, *Q2, rep="rep")
    team = await core.pipeline.report(world.director, *Q2, team="south branch")
    assert (team.team, team.team_name) == ("SOUTH", "South branch") and [
        row.username for row in team.reps
    ] == ["rep.south"]
    assert (await core.pipeline.report(world.north_manager, *Q2, team="NORTH")).open_count == 2


@pytest.mark.parametrize(
    ("who", "rep", "team"),
    [
        ("north.manager", "rep.south", None),  # another branch's rep, by username
        ("north.manager", "Rep South", None),  # ... by name
        ("north.manager", "nobody.at.all", None),  # someone who does not exist reads the same
        ("north.manager", None, "SOUTH"),  # another branch
        ("north.manager", None, "Atlantis"),  # a team that does not exist reads the same
        ("north.manager", None, "GRP"),  # the whole group is above them
        ("rep.north", "north.manager", None),  # a rep sees only themselves, not their boss
        ("rep.north", None, "NORTH"),  # ... nor their branch
    ],
)
async def test_outside_the_subtree_is_refused_alike_and_leaks_nothing(
    core: Core, world: World, clock: FrozenClock, who: str, rep: str | None, team: str | None
) -> None:
    await hand_built(core, clock, world)
    actor = await core.org.actor_for_username(who)
    with pytest.raises(PermissionDenied) as refused:
        await core.pipeline.report(actor, *Q2, rep=rep, team=team)
    assert refused.value.message == OUT_OF_SCOPE
    assert "south" not in refused.value.message.casefold()


async def test_roles_and_bad_periods(core: Core, world: World) -> None:
    for actor in (world.agent, world.tech_north, world.acme_customer):
        with pytest.raises(PermissionDenied):
            await core.pipeline.report(actor, *Q2)
    with pytest.raises(ValidationFailed):
        await core.pipeline.report(world.north_manager, date(2026, 7, 1), date(2026, 6, 1))
    with pytest.raises(NotFound):  # an admin sees everyone, so "no such rep" is no secret to them
        await core.pipeline.report(SYSTEM, rep="nobody.at.all")
    empty = await core.pipeline.report(world.north_manager, *Q2)
    assert empty.open_count == 0 and empty.reps == [] and all(row.rate is None for row in empty.conversion)


def test_furthest_stage_and_conversion_rules() -> None:
    assert furthest_stage("closed_lost", {"qualification", "proposal", "closed_lost"}) == 2
    assert furthest_stage("closed_won", ()) == 4
    assert (
        furthest_stage("closed_lost", ()) is None
    )  # lost with no history: never counted as reaching a stage
    rows = conversion([0, 1, None, 4])
    assert [(row.reached, row.advanced) for row in rows] == [(3, 2), (2, 1), (1, 1), (1, 1)]


@pytest.fixture
async def api(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the HTTP app with the admin token."""
    transport = httpx.ASGITransport(app=create_app(core, "test-admin-token"))
    headers = {"Authorization": "Bearer test-admin-token"}
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
        yield client


async def test_pipeline_api_with_scope_by_personal_token(
    core: Core, world: World, clock: FrozenClock, api: httpx.AsyncClient
) -> None:
    await hand_built(core, clock, world)
    everything = await api.get(
        "/api/v1/pipeline", params={"close_from": "2026-04-01", "close_to": "2026-06-30"}
    )
    assert everything.status_code == 200
    body = everything.json()
    assert body["open_count"] == 3 and {row["username"] for row in body["reps"]} == {"rep.north", "rep.south"}
    assert body["conversion"][0]["stage"] == "qualification" and "average_days_in_stage" in body["age"][0]
    token = await core.org.issue_api_token(SYSTEM, "north.manager")
    mine = await api.get("/api/v1/pipeline", headers={"Authorization": f"Bearer {token}"})
    assert mine.status_code == 200 and [row["username"] for row in mine.json()["reps"]] == ["rep.north"]
    refused = await api.get(
        "/api/v1/pipeline", params={"rep": "rep.south"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert refused.status_code == 403 and refused.json()["error"]["message"] == OUT_OF_SCOPE
    bad = await api.get("/api/v1/pipeline", params={"close_from": "someday"})
    assert bad.status_code == 422
