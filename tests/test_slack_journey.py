"""Issue #4, as a new user would: a sales rep in Slack logs a visit by DM and by mention — signed requests
into the real Bolt app, replies and Block Kit buttons recorded by the local Slack API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import pytest
from sqlalchemy import select

from core.auth import SYSTEM
from core.container import Core
from core.db.models import Task, Visit
from core.settings import Settings
from tests.fake_slack import BOT_USER_ID, FakeSlack
from tests.test_slack import Rig, make_rig
from tests.world import World


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    server = FakeSlack()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def rig(core: Core, world: World, settings: Settings, slack: FakeSlack) -> AsyncIterator[Rig]:
    rig = await make_rig(core, settings, slack)
    await core.org.link_identity(SYSTEM, "rep.north", "slack:U100")
    yield rig
    await rig.http.aclose()
    await rig.channel.close()


async def confirm(rig: Rig) -> dict[str, object]:
    """Click the first button (Yes) of the bot's last card and return what the bot posted next."""
    card = rig.slack.posted()[-1]
    assert "Yes" in str(card["blocks"])
    before = len(rig.slack.posted())
    await rig.click("U100", card | {"ts": f"1781500100.{before:06d}"}, 0)
    await rig.channel.drain()
    after = rig.slack.posted()
    assert len(after) > before
    return after[-1]


async def visits(core: Core) -> list[tuple[str, date, str]]:
    async with core.uow() as uow:
        rows = await uow.session.execute(
            select(Visit.summary, Visit.visited_on, Visit.next_step).order_by(Visit.id)
        )
        return [(summary, day, step) for summary, day, step in rows.tuples()]


async def test_rep_logs_a_visit_by_dm(rig: Rig, core: Core) -> None:
    text = "visited Acme today with Li, discussed renewal, next step send quote by Friday"
    rig.nlu.expect("log_visit", customer="Acme", date="2026-06-19")
    await rig.dm("U100", text)
    await rig.channel.drain()
    card = rig.slack.posted()[-1]
    assert card["channel"] == "DU100" and "Acme Corp" in str(card["text"])
    done = await confirm(rig)
    assert "Logged your visit to Acme Corp" in str(done["text"])
    [(summary, visited_on, next_step)] = await visits(core)
    assert visited_on == date(2026, 6, 15) and "renewal" in summary and next_step == "send quote"
    async with core.uow() as uow:
        [task] = (await uow.session.execute(select(Task))).scalars().all()
    assert task.title == "send quote" and task.due_at is not None and task.due_at.date() == date(2026, 6, 19)


async def test_rep_logs_a_visit_by_mention_in_a_thread(rig: Rig, core: Core) -> None:
    rig.nlu.expect("log_visit", customer="Acme")
    await rig.event(
        {
            "type": "app_mention",
            "channel": "C0SALES",
            "user": "U100",
            "ts": "1781500009.000100",
            "text": f"<@{BOT_USER_ID}> visited Acme today, the demo went well",
        }
    )
    await rig.channel.drain()
    card = rig.slack.posted()[-1]
    assert card["channel"] == "C0SALES" and card["thread_ts"] == "1781500009.000100"
    done = await confirm(rig)
    assert "Logged your visit to Acme Corp" in str(done["text"])
    assert [summary for summary, _day, _step in await visits(core)] == [
        "visited Acme today, the demo went well"
    ]
