"""Issue #7, as a new user would, on the demo data with the real NLU: a rep logs a visit and moves a deal
from Slack; a dispatcher assigns a request from Slack; the technician accepts and completes with a part on
Telegram; the customer hears each step and gets the survey on Telegram; the manager asks for the pipeline
(a chart) and opens a customer's 360 view — once in English and once in Chinese. Signed requests go into
the real Bolt app with the local Slack API, real aiogram polls the local Bot API, and the notifier and
scheduler run as they do in `crmbot run`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, update

from bot.assistant import Assistant, RateLimit
from bot.channels.telegram import TelegramChannel, build_bot
from bot.nlu.embedded import EmbeddedNlu
from bot.nlu.service import ensure_model
from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import Core
from core.db.models import (
    Opportunity,
    OpportunityChange,
    OutboxEvent,
    Part,
    PartStock,
    RepairOrder,
    ServiceStation,
    Task,
    Visit,
)
from core.demo import ACME_DEAL, load_demo
from core.schemas import ServiceRequestIn
from core.settings import Settings
from notifier.build import build_notifier
from notifier.registry import all_sweeps
from notifier.scheduler import Scheduler
from tests.fake_slack import FakeSlack
from tests.fake_telegram import FakeTelegram, callback_update, text_update
from tests.test_slack import Rig, make_rig

# An end-to-end test of many seconds: left out of `make test-fast`, run by `make test`.
pytestmark = pytest.mark.slow

TOKEN = "123456:TEST-token-for-the-fake-api"
TECHNICIAN_CHAT = 7001
CUSTOMER_CHAT = 5150
REP, AGENT, MANAGER = "UREP", "UAGENT", "UMGR"


@dataclass(frozen=True)
class Script:
    """What each person writes, and what their language's answers contain."""

    lang: str
    customer: str
    serial: str
    manager: str
    visit: str
    deal: str
    assign: str
    done: str
    pipeline: str
    overview: str
    yes: str
    visit_logged: str
    on_telegram: str


SCRIPTS = {
    "en": Script(
        lang="en",
        customer="oliver.smith",
        serial="WM3000-00342",
        manager="chen.jing",
        visit="visited Acme today with Li Na, discussed renewal, next step send quote by Friday",
        deal="move the Acme renewal to negotiation, 50k",
        assign="assign {sr} to Zhang Wei tomorrow 9am",
        done="{ro} done, replaced the drain pump, part P-100, 45 minutes",
        pipeline="pipeline this quarter",
        overview="show me Acme",
        yes="Yes",
        visit_logged="Logged your visit to Acme Appliances Ltd",
        on_telegram="please send my updates on Telegram",
    ),
    "zh": Script(
        lang="zh",
        customer="wang.fang",
        serial="WM2023-00917",
        manager="zhou.min",
        visit="今天拜访了Acme，见了Li Na，谈了续约的事，下一步周五前发报价",
        deal="把Acme的续约推进到谈判阶段，金额5万",
        assign="把{sr}派给张伟，明天上午9点",
        done="{ro}完工了，更换了排水泵，用了一个P-100，45分钟",
        pipeline="本季度的销售漏斗",
        overview="看看Acme",
        yes="是",
        visit_logged="Acme Appliances Ltd",
        on_telegram="以后请在Telegram上通知我",
    ),
}


@pytest.fixture(scope="session")
def nlu(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedNlu:
    """The real engine trained on the shipped data (once per run: a few seconds)."""
    return ensure_model(Path(tmp_path_factory.mktemp("nlu")) / "model.joblib")


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(TOKEN)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    server = FakeSlack()
    await server.start()
    yield server
    await server.close()


def buttons_of(message: dict[str, Any]) -> list[str]:
    """Titles of a Slack message's buttons."""
    return [
        element["text"]["text"]
        for block in message.get("blocks", [])
        if block["type"] == "actions"
        for element in block["elements"]
    ]


class People:
    """Everyone in the journey, each in their own chat."""

    def __init__(self, rig: Rig, telegram: FakeTelegram) -> None:
        self.rig, self.telegram = rig, telegram
        self.updates = 0

    async def slack(self, user: str, text: str) -> dict[str, Any]:
        """A DM to the bot; the bot's last answer in that DM."""
        before = len(self.rig.slack.posted())
        await self.rig.dm(user, text)
        await self.rig.channel.drain()
        return self._answer(user, before)

    async def click(self, user: str, message: dict[str, Any], title: str) -> dict[str, Any]:
        """Press the button with this title on a Slack message."""
        titles = buttons_of(message)
        assert title in titles, (title, titles, message)
        before = len(self.rig.slack.posted())
        await self.rig.click(user, message | {"ts": f"1781500200.{before:06d}"}, titles.index(title))
        await self.rig.channel.drain()
        return self._answer(user, before)

    def _answer(self, user: str, before: int) -> dict[str, Any]:
        posted = self.rig.slack.posted()[before:]
        answers = [message for message in posted if message["channel"] == "D" + user]
        assert answers, f"no answer to {user}"
        return answers[-1]

    def telegram_chat(self, chat: int) -> list[dict[str, Any]]:
        return [m for m in self.telegram.called("sendMessage") if str(m["chat_id"]) == str(chat)]

    async def wait_telegram(self, chat: int, count: int, within: float = 15) -> list[dict[str, Any]]:
        """Wait until the chat holds `count` messages; return the new ones."""
        await self.telegram.wait_for(lambda: len(self.telegram_chat(chat)) >= count, within=within)
        return self.telegram_chat(chat)

    async def wait_text(self, chat: int, *needles: str, within: float = 15) -> dict[str, Any]:
        """Wait for a message in the chat holding every needle; return it."""

        def found() -> list[dict[str, Any]]:
            return [m for m in self.telegram_chat(chat) if all(needle in m["text"] for needle in needles)]

        await self.telegram.wait_for(lambda: bool(found()), within=within)
        return found()[-1]

    async def tap(self, chat: int, message: dict[str, Any], index: int, lang: str) -> None:
        """Press an inline button of a Telegram message."""
        self.updates += 1
        data = [row[0] for row in message["reply_markup"]["inline_keyboard"]][index]["callback_data"]
        self.telegram.push(callback_update(self.updates, chat, data, lang=lang))

    async def write(self, chat: int, text: str, lang: str) -> None:
        self.updates += 1
        self.telegram.push(text_update(self.updates, chat, text, lang=lang))


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_staff_journeys_on_the_demo_data(
    lang: str,
    core: Core,
    settings: Settings,
    clock: FrozenClock,
    nlu: EmbeddedNlu,
    telegram: FakeTelegram,
    slack: FakeSlack,
) -> None:
    script = SCRIPTS[lang]
    core.settings = settings.model_copy(
        update={"telegram_token": SecretStr(TOKEN), "telegram_api_url": telegram.url}
    )
    await load_demo(core)
    async with core.uow() as uow:
        # What the demo load raised is not this journey's: only what the people below do is delivered.
        await uow.session.execute(update(OutboxEvent).values(processed_at=clock.now()))
        await uow.commit()
    for username, identity in (
        ("li.lei", f"slack:{REP}"),
        ("liu.yang", f"slack:{AGENT}"),
        (script.manager, f"slack:{MANAGER}"),
        ("zhang.wei", f"telegram:{TECHNICIAN_CHAT}"),
        (script.customer, f"telegram:{CUSTOMER_CHAT}"),
    ):
        await core.org.link_identity(SYSTEM, username, identity)

    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=100, per_second=100))
    rig = await make_rig(core, core.settings, slack, assistant=assistant)
    channel = TelegramChannel(assistant, core, build_bot(core.settings))
    notifier = build_notifier(core, {"telegram": channel.sender, "slack": rig.channel.sender()})
    stop = asyncio.Event()
    running = asyncio.create_task(notifier.run(stop))
    polling = channel.start_polling()
    people = People(rig, telegram)
    try:
        # The customer (whose demo preference is email first) asks for updates in this chat, and confirms.
        await people.write(CUSTOMER_CHAT, script.on_telegram, lang)
        [question] = await people.wait_telegram(CUSTOMER_CHAT, 1)
        await people.tap(CUSTOMER_CHAT, question, 0, lang)
        await people.wait_telegram(CUSTOMER_CHAT, 2)
        preferences = await core.preferences.get(
            customer := await core.org.actor_for_username(script.customer)
        )
        assert preferences.channel_order[0] == "telegram", preferences

        # J5: the rep logs a visit from Slack; the customer is found by a fuzzy name.
        card = await people.slack(REP, script.visit)
        assert "Acme Appliances Ltd" in str(card["text"]), card
        done = await people.click(REP, card, script.yes)
        assert script.visit_logged in str(done["text"]), done["text"]
        async with core.uow() as uow:
            last_visit = select(Visit).order_by(Visit.id.desc()).limit(1)
            visit = (await uow.session.execute(last_visit)).scalar_one()
            task = (await uow.session.execute(select(Task).order_by(Task.id.desc()).limit(1))).scalar_one()
        assert "Li Na" in visit.contacts_met and visit.visited_on == clock.now().date()
        assert task.due_at is not None and task.due_at.weekday() == 4  # Friday

        # J6: the rep moves the Acme renewal to negotiation at 50k, with a confirmation card and history.
        card = await people.slack(REP, script.deal)
        done = await people.click(REP, card, script.yes)
        async with core.uow() as uow:
            deal = (
                await uow.session.execute(select(Opportunity).where(Opportunity.name == ACME_DEAL))
            ).scalar_one()
            changes = (
                (
                    await uow.session.execute(
                        select(OpportunityChange.field).where(OpportunityChange.opportunity_id == deal.id)
                    )
                )
                .scalars()
                .all()
            )
        assert (deal.stage, deal.amount) == ("negotiation", Decimal("50000.00")), done["text"]
        assert {"stage", "amount"} <= set(changes)

        # The customer's repair request (J1 is tested elsewhere); the dispatcher assigns it from Slack.
        request = await core.service_desk.open_request(
            customer, ServiceRequestIn(subject="Leaking under the door", serial_number=script.serial)
        )
        card = await people.slack(AGENT, script.assign.format(sr=request.ref))
        assert request.ref in str(card["text"]), card["text"]
        done = await people.click(AGENT, card, script.yes)
        async with core.uow() as uow:
            order = (
                await uow.session.execute(select(RepairOrder).order_by(RepairOrder.id.desc()).limit(1))
            ).scalar_one()
        ro = f"RO-{order.id}"
        assert ro in str(done["text"]) and order.scheduled_at is not None
        tomorrow = clock.now().date() + timedelta(days=1)
        assert order.scheduled_at.astimezone(clock.now().tzinfo).date() == tomorrow

        # J7: the dispatch card reaches the technician on Telegram (in Chinese, his language).
        [dispatch_card] = await people.wait_telegram(TECHNICIAN_CHAT, 1)
        assert ro in dispatch_card["text"] and script.serial in dispatch_card["text"]
        await people.tap(TECHNICIAN_CHAT, dispatch_card, 0, "zh")
        # The customer is told who comes when.
        await people.wait_text(CUSTOMER_CHAT, ro, "Zhang Wei" if lang == "en" else "张伟")

        # The technician completes with a part; stock goes down by one, the customer gets the summary.
        stock_before = await stock_of(core, "ST-SH", "P-100")
        seen = len(people.telegram_chat(TECHNICIAN_CHAT))
        await people.write(TECHNICIAN_CHAT, script.done.format(ro=ro), "zh")
        confirm = (await people.wait_telegram(TECHNICIAN_CHAT, seen + 1))[-1]
        assert "P-100" in confirm["text"] and "reply_markup" in confirm
        seen = len(people.telegram_chat(TECHNICIAN_CHAT))
        await people.tap(TECHNICIAN_CHAT, confirm, 0, "zh")
        completed = (await people.wait_telegram(TECHNICIAN_CHAT, seen + 1))[-1]
        assert ro in completed["text"]
        assert await stock_of(core, "ST-SH", "P-100") == stock_before - 1
        await people.wait_text(CUSTOMER_CHAT, request.ref, "P-100" if lang == "en" else "排水泵")
        before_survey = len(people.telegram_chat(CUSTOMER_CHAT))

        # The survey comes from the scheduler after the delay, with five score buttons.
        clock.set(clock.now() + timedelta(hours=core.settings.survey_delay_hours, minutes=5))
        await Scheduler(core, all_sweeps()).run_due()

        def invites() -> list[dict[str, Any]]:
            return [
                m
                for m in people.telegram_chat(CUSTOMER_CHAT)[before_survey:]
                if request.ref in m["text"] and len(m.get("reply_markup", {}).get("inline_keyboard", [])) == 5
            ]

        await telegram.wait_for(lambda: bool(invites()), within=15)
        assert len(invites()) == 1

        # J8: the manager asks for the pipeline (a chart uploaded to Slack plus the table) and opens the 360.
        uploads = len(slack.uploads)
        answer = await people.slack(MANAGER, script.pipeline)
        assert len(slack.uploads) > uploads and all(slack.uploads.values())
        assert next(iter(slack.uploads.values())).startswith(b"\x89PNG")
        pipeline = str(answer["text"])
        negotiation, by_rep, csat = (
            ("Negotiation", "By rep", "CSAT") if lang == "en" else ("商务谈判", "按销售代表", "满意度")
        )
        assert negotiation in pipeline and by_rep in pipeline and "Li Lei" in pipeline, pipeline
        overview = await people.slack(MANAGER, script.overview)
        assert "Acme Appliances Ltd" in str(overview["text"])
        more = buttons_of(overview)
        assert "Li Na" in str(overview["text"]) and csat in str(overview["text"])
        assert len(more) >= 5, more
        # "More" on the first section (contacts): the full contact details.
        section = await people.click(MANAGER, overview, more[0])
        assert "li.na@acme.example.com" in str(section["text"]), section["text"]
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await notifier.close()
        await channel.close()
        polling.cancel()
        await rig.http.aclose()
        await rig.channel.close()


async def stock_of(core: Core, station: str, part: str) -> int:
    """How many of a part a station holds."""
    async with core.uow() as uow:
        return (
            await uow.session.execute(
                select(func.sum(PartStock.quantity))
                .join(ServiceStation, ServiceStation.id == PartStock.station_id)
                .join(Part, Part.id == PartStock.part_id)
                .where(ServiceStation.code == station, Part.code == part)
            )
        ).scalar_one()
