"""J8 for managers in chat: pipeline with chart and tables, the 360 view with CSAT and value, the value
ranking and tier moves, and the lifecycle stage rules (issue #7)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from bot.assistant import Assistant, RateLimit
from bot.intents.manager import ranking_request, subject_of
from bot.messages import IncomingMessage, Reply
from bot.nlu.embedded import EmbeddedNlu
from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import Core
from core.db.models import Customer, OutboxEvent
from core.domain.enums import CustomerType, LifecycleStage, OpportunityStage
from core.domain.lifecycle import LifecycleFacts, LifecycleRules, lifecycle_rules_from_config
from core.errors import PermissionDenied, ValidationFailed
from core.schemas import (
    CustomerIn,
    OpportunityIn,
    OpportunityPatch,
    RepairActionIn,
    RepairOrderIn,
    ServiceRequestIn,
)
from tests.chat import Chat, ScriptedNlu, nlu_for
from tests.conftest import TEST_NOW
from tests.test_pipeline_report import hand_built
from tests.world import World

PNG = b"\x89PNG\r\n\x1a\n"
S = OpportunityStage


def chat(core: Core, sender: str, channel: str = "rest") -> Chat:
    """A chat with the real handlers and a scripted NLU (no rate limit in the way)."""
    nlu = ScriptedNlu()
    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=1000, per_second=1000))
    return Chat(assistant=assistant, nlu=nlu, channel=channel, sender=sender)


def payloads(reply: Reply) -> list[str]:
    """The button payloads of a reply."""
    return [button.payload for button in reply.buttons]


# --- pipeline_summary -----------------------------------------------------------------------------------


async def test_a_manager_gets_the_chart_and_the_tables_and_the_terminal_the_tables(
    core: Core, world: World, clock: FrozenClock
) -> None:
    await hand_built(core, clock, world)
    manager = chat(core, "north.manager")
    [reply] = await manager.say("pipeline this quarter", "pipeline_summary")
    assert reply.image is not None and reply.image.startswith(PNG) and len(reply.image) > 5000
    assert "Proposal 1 · ¥40,000.00" in reply.image_alt and "Jun 2026: ¥20,000.00" in reply.image_alt
    lines = reply.text.splitlines()
    assert lines[0] == "Pipeline Q2 2026 (Wed 1 Apr – Tue 30 Jun), by expected close date:"
    assert "Proposal            1  40,000.00   20,000.00" in lines
    assert "By rep:" in lines and "Rep North     2   25,000.00  30,000.00" in lines
    assert "Stage conversion and age of open deals:" in lines
    assert (
        "  • Qualification: 4 reached, 75% went further, 25% won · 0 open, — in stage (— since created)"
        in lines
    )
    assert (
        "  • Proposal: 2 reached, 50% went further, 50% won · 1 open, 10 d in stage (30 d since created)"
        in lines
    )
    assert lines[-3:] == ["Weighted forecast: ¥25,000.00", "  May 2026: ¥5,000.00", "  Jun 2026: ¥20,000.00"]

    # The terminal shows no images: the same tables, no chart.
    actor = await core.org.actor_for_username("north.manager")
    assistant = manager.assistant
    manager.nlu.expect("pipeline_summary")
    [plain] = await assistant.handle_as(
        actor, IncomingMessage(channel="terminal", sender_id="north.manager", text="pipeline this quarter")
    )
    assert plain.image is None and plain.text == reply.text


async def test_pipeline_in_chinese_draws_a_chart_even_without_a_chinese_font(
    core: Core, world: World, clock: FrozenClock
) -> None:
    await hand_built(core, clock, world)
    [reply] = await chat(core, "director").say("本季度的销售漏斗", "pipeline_summary")
    assert reply.image is not None and reply.image.startswith(PNG)
    text = reply.text
    assert text.startswith("2026年第2季度销售漏斗（4月1日（周三） – 6月30日（周二），按预计成交日期）：")
    assert "按销售代表：" in text and "阶段转化率与进行中商机的停留时间：" in text
    assert (
        "  • 需求分析：到达 4 个，75% 推进到下一阶段，25% 赢单 · "
        "进行中 1 个，本阶段停留 20 天（创建至今 20 天）" in text
    )
    assert "加权预测：¥92,500.00" in text and "图表" in reply.image_alt


async def test_drilling_into_a_rep_and_back_to_the_team_with_buttons(
    core: Core, world: World, clock: FrozenClock
) -> None:
    await hand_built(core, clock, world)
    director = chat(core, "director")
    [team] = await director.say("pipeline by rep this quarter", "pipeline_summary")
    assert payloads(team) == [
        '/pipeline_summary{"rep":"rep.south","period":"q2026-2"}',
        '/pipeline_summary{"rep":"rep.north","period":"q2026-2"}',
    ]
    [south] = await director.say('/pipeline_summary{"rep":"rep.south","period":"q2026-2"}')
    assert south.text.splitlines()[:2] == [
        "Rep South's pipeline:",
        "Pipeline Q2 2026 (Wed 1 Apr – Tue 30 Jun), by expected close date:",
    ]
    assert "Weighted forecast: ¥67,500.00" in south.text and "Rep North" not in south.text
    assert payloads(south) == ['/pipeline_summary{"period":"q2026-2"}']
    named = await director.text("pipeline for Rep North this quarter", "pipeline_summary")
    assert named.startswith("Rep North's pipeline:") and "Weighted forecast: ¥25,000.00" in named
    team_text = await director.text("south branch pipeline", "pipeline_summary")
    assert team_text.startswith("South branch:") and "¥67,500.00" in team_text
    # A rep sees only their own figures: no per-rep table, no drill-down buttons.
    [mine] = await chat(core, "rep.north").say("my pipeline this quarter", "pipeline_summary")
    assert "By rep:" not in mine.text and mine.buttons == () and "Weighted forecast: ¥25,000.00" in mine.text


@pytest.mark.parametrize(
    ("sender", "text"),
    [
        ("north.manager", "pipeline for Rep South"),  # another branch's rep
        ("north.manager", "pipeline for Zhang Nobody"),  # nobody by that name: the same answer
        ("north.manager", "south branch pipeline this quarter"),  # another branch
        ("north.manager", "华南团队的管道"),  # a team that does not exist: the same answer
        ("rep.north", "north.manager's pipeline"),  # a rep asking about their boss
    ],
)
async def test_another_branchs_pipeline_is_refused_clearly_and_leaks_nothing(
    core: Core, world: World, clock: FrozenClock, sender: str, text: str
) -> None:
    await hand_built(core, clock, world)
    person = chat(core, sender)
    [reply] = await person.say(text, "pipeline_summary")
    lang_refusal = (
        "您只能查看自己团队的销售管道。可以问您自己、您下属的销售代表或您的团队。"
        if "团队" in text
        else "You can only see your own team's pipeline. Ask about yourself, one of your reps or your team."
    )
    assert reply.text == lang_refusal and reply.image is None and reply.buttons == ()
    assert "90,000" not in reply.text and "South" not in reply.text


async def test_pipeline_is_for_sales_roles_only(core: Core, world: World, clock: FrozenClock) -> None:
    await hand_built(core, clock, world)
    reply = await chat(core, "tech.north").text("pipeline this quarter", "pipeline_summary")
    assert reply.startswith("That isn't something I can do for a technician.")
    assert "Weighted forecast" not in reply and "40,000" not in reply


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pipeline this quarter", (None, None)),
        ("pipeline for Li Na", ("Li Na", None)),
        ("pipeline for Li Na this quarter", ("Li Na", None)),
        ("Li Na's pipeline next month", ("Li Na", None)),
        ("show me the north team pipeline", (None, "north")),
        ("pipeline of the south branch", (None, "south")),
        ("pipeline by rep", (None, None)),
        ("pipeline for May", (None, None)),
        ("pipeline for Mark Chen", ("Mark Chen", None)),
        # A name holding a month's abbreviation is still a name.
        ("pipeline for Ma Jun", ("Ma Jun", None)),
        ("pipeline for June 2026", (None, None)),
        ("forecast for next quarter", (None, None)),
        ("pipeline for Q3", (None, None)),
        ("pipeline for 2026", (None, None)),
        ("pipeline for my team", (None, None)),
        ("my pipeline", (None, None)),
        ("本季度的销售漏斗", (None, None)),
        ("华北团队的管道", (None, "华北")),
        ("李娜的销售漏斗", ("李娜", None)),
        ("张伟本季度的销售漏斗", ("张伟", None)),
        ("看看王芳下个月的漏斗", ("王芳", None)),
        ("我的销售漏斗", (None, None)),
        ("我们团队的管道", (None, None)),
    ],
)
def test_who_the_pipeline_is_about(text: str, expected: tuple[str | None, str | None]) -> None:
    assert subject_of(text) == expected


# --- customer_overview with CSAT and value ----------------------------------------------------------------


async def rated_case(core: Core, world: World, score: int, comment: str | None = None) -> str:
    """An ACME case repaired in the field and rated by the customer through core."""
    opened = await core.service_desk.open_request(
        world.acme_customer,
        ServiceRequestIn(subject="Leaking", description="leaking", serial_number=world.acme_serial),
    )
    order = await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=opened.ref, technician="tech.north")
    )
    for action in ("accept", "start"):
        await core.service_desk.act_on_repair(world.tech_north, order.ref, RepairActionIn(action=action))
    await core.service_desk.act_on_repair(
        world.tech_north, order.ref, RepairActionIn(action="complete", work_summary="Replaced the seal")
    )
    await core.surveys.create_for_request(world.agent, opened.ref)
    await core.surveys.answer(world.acme_customer, opened.ref, score, comment)
    return opened.ref


async def test_the_360_view_shows_value_tier_move_and_csat_with_a_surveys_section(
    core: Core, world: World, clock: FrozenClock
) -> None:
    await rated_case(core, world, 5)
    clock.advance(timedelta(days=2))
    second = await rated_case(core, world, 2, "Technician was late")
    async with core.uow() as uow:
        await uow.session.execute(
            update(Customer)
            .where(Customer.code == "ACME")
            .values(tier="key", previous_tier="major", value_score=81.25)
        )
        await uow.commit()
    manager = chat(core, "north.manager")
    [overview] = await manager.say("show me Acme", "customer_overview", customer="Acme")
    lines = overview.text.splitlines()
    assert lines[0] == "Acme Corp (ACME)"
    assert "Value score 81.2 · Key (was Major)" in lines
    assert "CSAT (12 months): 3.5 / 5 from 2 surveys" in lines
    assert "  Last comment (Wed 17 Jun): “Technician was late”" in lines
    assert '/customer_overview{"customer":"ACME","section":"surveys"}' in payloads(overview)

    [surveys] = await manager.say('/customer_overview{"customer":"ACME","section":"surveys"}')
    assert surveys.text.splitlines()[:3] == [
        "Acme Corp (ACME)",
        "Answered surveys (12 months): 2, average 3.5 / 5",
        f"  • Wed 17 Jun 2/5 {second}: “Technician was late”",
    ]
    assert '/customer_overview{"customer":"ACME","section":"summary"}' in payloads(surveys)

    asked = await manager.text("how satisfied is Acme?", "customer_overview", customer="Acme")
    assert asked.splitlines()[1] == "Answered surveys (12 months): 2, average 3.5 / 5"
    zh_surveys = await manager.text("Acme的满意度怎么样", "customer_overview", customer="Acme")
    assert zh_surveys.splitlines()[1] == "近12个月已回复的满意度评价：2 份，平均 3.5 / 5"

    zh = await manager.text("看看Acme", "customer_overview", customer="Acme")
    assert (
        "价值评分 81.2 · 关键客户（原为重要客户）" in zh and "满意度（近12个月）：3.5 / 5，共 2 份评价" in zh
    )


async def test_the_360_view_without_surveys_and_out_of_scope_reads_as_not_found(
    core: Core, world: World
) -> None:
    rep = chat(core, "rep.north")
    text = await rep.text("show me Acme", "customer_overview", customer="Acme")
    assert "CSAT (12 months): no answered surveys" in text and "Value score 0.0 · Regular" in text
    south = chat(core, "rep.south")
    hidden = await south.text("show me Acme", "customer_overview", customer="ACME")
    absent = await south.text("show me Zenith", "customer_overview", customer="ZENITH")
    assert "Acme Corp" not in hidden and "CSAT" not in hidden
    assert hidden.replace("ACME", "X") == absent.replace("ZENITH", "X")
    section = await chat(core, "rep.south").text('/customer_overview{"customer":"ACME","section":"surveys"}')
    assert "Acme Corp" not in section and "CSAT" not in section and section.startswith("I couldn't find")


# --- customer_ranking -------------------------------------------------------------------------------------


async def ranked_world(core: Core, world: World) -> None:
    """Eight more north customers and two south ones with known scores, tiers and tier moves."""
    plan = [
        ("N1", "Northwind", "rep.north", 92.0, "key", None),
        ("N2", "Nova Foods", "rep.north", 75.5, "major", "key"),
        ("N3", "Nimbus Hotels", "rep.north", 60.0, "regular", "regular"),
        ("N4", "Nordic Labs", "rep.north", 44.0, "minor", "regular"),
        ("N5", "Neon Retail", "rep.north", 40.0, "regular", "minor"),
        ("S1", "Sunrise Spa", "rep.south", 99.0, "key", None),
        ("S2", "Sigma Clinic", "rep.south", 30.0, "minor", "major"),
    ]
    for code, name, owner, *_rest in plan:
        await core.customers.create(
            SYSTEM, CustomerIn(code=code, name=name, type=CustomerType.END, owner=owner)
        )
    async with core.uow() as uow:
        for code, _name, _owner, score, tier, previous in plan:
            await uow.session.execute(
                update(Customer)
                .where(Customer.code == code)
                .values(value_score=score, tier=tier, previous_tier=previous)
            )
        await uow.commit()


async def test_top_customers_and_moving_down_for_a_manager_with_buttons_to_the_360(
    core: Core, world: World
) -> None:
    await ranked_world(core, world)
    manager = chat(core, "north.manager")
    [top] = await manager.say("top 3 customers", "customer_ranking")
    assert top.text.splitlines() == [
        "Top 3 customers by value score:",
        "1. Northwind (N1) — 92.0 · Key · new customer · rep.north",
        "2. Nova Foods (N2) — 75.5 · Major · new customer · rep.north",
        "3. Nimbus Hotels (N3) — 60.0 · Regular · new customer · rep.north",
        "Tap a customer for the full overview.",
    ]
    assert payloads(top) == [
        '/customer_overview{"customer":"N1"}',
        '/customer_overview{"customer":"N2"}',
        '/customer_overview{"customer":"N3"}',
    ]
    [opened] = await manager.say('/customer_overview{"customer":"N2"}')
    assert opened.text.startswith("Nova Foods (N2)") and "Value score 75.5 · Major (was Key)" in opened.text

    down = await manager.text("customers moving down a tier", "customer_ranking")
    assert down.splitlines()[:3] == [
        "2 customer(s) moved down a tier:",
        "1. Nova Foods (N2) — Key → Major · score 75.5 · rep.north",
        "2. Nordic Labs (N4) — Regular → Minor · score 44.0 · rep.north",
    ]
    assert "Sigma" not in down and "Neon" not in down  # another branch's; a move up
    key = await manager.text("top 10 key customers", "customer_ranking")
    assert key.splitlines()[0] == "Top 1 Key customers by value score:" and "Northwind" in key

    zh = await manager.text("降级的客户", "customer_ranking")
    assert zh.splitlines()[:3] == [
        "2 位客户降了一级：",
        "1. Nova Foods（N2）— 关键客户 → 重要客户 · 评分 75.5 · rep.north",
        "2. Nordic Labs（N4）— 普通客户 → 一般客户 · 评分 44.0 · rep.north",
    ]
    best = await manager.text("价值最高的客户", "customer_ranking")
    assert best.splitlines()[0] == "价值评分最高的 6 位客户：" and "Sunrise" not in best


async def test_ranking_scope_for_reps_and_other_roles(core: Core, world: World) -> None:
    await ranked_world(core, world)
    south = await chat(core, "rep.south").text("who dropped a tier", "customer_ranking")
    assert "Sigma Clinic (S2) — Major → Minor" in south and "Nova" not in south
    director = await core.customers.ranking(world.director, limit=3)
    assert [entry.code for entry in director] == ["S1", "N1", "N2"]
    assert [entry.code for entry in await core.customers.ranking(world.director, moved="up")] == ["N5"]
    with pytest.raises(PermissionDenied):
        await core.customers.ranking(world.tech_north)
    with pytest.raises(ValidationFailed):
        await core.customers.ranking(world.director, moved="sideways")
    refused = await chat(core, "tech.north").text("top customers", "customer_ranking")
    assert "Northwind" not in refused
    nothing = await chat(core, "south.manager").text("customers that moved up", "customer_ranking")
    assert nothing == "No customer of yours has moved up a tier."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("top customers", (None, None, 10)),
        ("top 10 key customers", (None, "key", 10)),
        ("show me the top 5", (None, None, 5)),
        ("customers moving down a tier", ("down", None, 10)),
        ("who dropped a tier", ("down", None, 10)),
        ("which customers were upgraded", ("up", None, 10)),
        ("价值最高的客户", (None, None, 10)),
        ("前五名关键客户", (None, "key", 5)),
        ("降级的客户", ("down", None, 10)),
    ],
)
def test_what_ranking_is_asked_for(text: str, expected: tuple[str | None, str | None, int]) -> None:
    assert ranking_request(text) == expected


# --- lifecycle rules --------------------------------------------------------------------------------------

TODAY = date(2026, 6, 15)
RULES = LifecycleRules()


def days_ago(days: int) -> date:
    return TODAY - timedelta(days=days)


@pytest.mark.parametrize(
    ("facts", "stage"),
    [
        (LifecycleFacts(), LifecycleStage.PROSPECT),
        (LifecycleFacts(last_activity=days_ago(1)), LifecycleStage.PROSPECT),  # visits alone buy nothing
        (LifecycleFacts(first_purchase=days_ago(10), last_activity=days_ago(10)), LifecycleStage.NEW),
        (LifecycleFacts(first_purchase=days_ago(89)), LifecycleStage.NEW),
        (LifecycleFacts(first_purchase=days_ago(90), last_activity=days_ago(5)), LifecycleStage.ACTIVE),
        (
            LifecycleFacts(first_purchase=days_ago(800), last_activity=days_ago(20), orders_last_year=2),
            LifecycleStage.LOYAL,
        ),
        (
            LifecycleFacts(first_purchase=days_ago(800), last_activity=days_ago(20), orders_last_year=1),
            LifecycleStage.ACTIVE,
        ),
        (LifecycleFacts(first_purchase=days_ago(400), last_activity=days_ago(269)), LifecycleStage.ACTIVE),
        (LifecycleFacts(first_purchase=days_ago(400), last_activity=days_ago(270)), LifecycleStage.AT_RISK),
        (LifecycleFacts(first_purchase=days_ago(900), last_activity=days_ago(540)), LifecycleStage.CHURNED),
        (LifecycleFacts(first_purchase=days_ago(600)), LifecycleStage.CHURNED),  # nothing since the purchase
        (
            LifecycleFacts(first_purchase=days_ago(10), csat_average=2.0, csat_answers=2),
            LifecycleStage.AT_RISK,  # risk before "new"
        ),
        (LifecycleFacts(first_purchase=days_ago(10), csat_average=1.0, csat_answers=1), LifecycleStage.NEW),
        (
            LifecycleFacts(
                first_purchase=days_ago(800), orders_last_year=3, last_activity=days_ago(3), open_complaints=1
            ),
            LifecycleStage.AT_RISK,
        ),
    ],
)
def test_lifecycle_rules(facts: LifecycleFacts, stage: LifecycleStage) -> None:
    assert RULES.stage(facts, TODAY) == stage


def test_lifecycle_thresholds_are_configurable_and_checked() -> None:
    strict = lifecycle_rules_from_config({"at_risk_days": 60, "low_csat": 4})
    facts = LifecycleFacts(first_purchase=days_ago(200), last_activity=days_ago(61))
    assert (
        strict.stage(facts, TODAY) is LifecycleStage.AT_RISK
        and RULES.stage(facts, TODAY) is LifecycleStage.ACTIVE
    )
    with pytest.raises(ValueError, match="unknown lifecycle thresholds"):
        lifecycle_rules_from_config({"soon_days": 3})
    with pytest.raises(ValueError, match="at_risk_days"):
        lifecycle_rules_from_config({"at_risk_days": 600})


async def test_the_value_sweep_applies_the_lifecycle_rules_and_emits_stage_and_tier_moves(
    core: Core, world: World, clock: FrozenClock
) -> None:
    await core.customers.create(
        SYSTEM, CustomerIn(code="PROS", name="Prospect Co", type=CustomerType.END, owner="rep.north")
    )
    won = await core.sales.create_opportunity(
        world.rep_south, OpportunityIn(customer_code="GLOBEX", name="Big", amount=Decimal("500000"))
    )
    await core.sales.update_opportunity(world.rep_south, won.ref, OpportunityPatch(stage=S.CLOSED_WON))
    await core.customers.recompute_values(SYSTEM)
    stages = {entry.code: entry.lifecycle_stage for entry in (await core.customers.list(SYSTEM)).items}
    # ACME bought a unit 200 days ago (and one in 2020): active; GLOBEX 30 days ago: new; PROS nothing.
    assert stages == {"ACME": "active", "GLOBEX": "new", "PROS": "prospect"}
    async with core.uow() as uow:
        events = (
            (
                await uow.session.execute(
                    select(OutboxEvent).where(OutboxEvent.event_type == "CustomerLifecycleChanged")
                )
            )
            .scalars()
            .all()
        )
    assert sorted((event.payload["old_stage"], event.payload["new_stage"]) for event in events) == [
        ("new", "active"),
        ("new", "prospect"),
    ]
    assert [entry.code for entry in await core.customers.ranking(SYSTEM, limit=1)] == ["GLOBEX"]
    # Months later with nothing new: ACME drifts to at risk; the stage move is one event, not one a day.
    clock.set(TEST_NOW + timedelta(days=80))
    await core.customers.recompute_values(SYSTEM)
    await core.customers.recompute_values(SYSTEM)
    assert (await core.customers.get(SYSTEM, "ACME")).lifecycle_stage == "at_risk"
    assert (await core.customers.get(SYSTEM, "GLOBEX")).lifecycle_stage == "active"
    async with core.uow() as uow:
        count = len(
            (
                await uow.session.execute(
                    select(OutboxEvent).where(OutboxEvent.event_type == "CustomerLifecycleChanged")
                )
            )
            .scalars()
            .all()
        )
    assert count == 4
    # The first scoring was no "move"; a real drop is: ACME wins bigger and GLOBEX slips below it.
    assert await core.customers.ranking(SYSTEM, moved="down") == []
    bigger = await core.sales.create_opportunity(
        world.rep_north, OpportunityIn(customer_code="ACME", name="Bigger", amount=Decimal("900000"))
    )
    await core.sales.update_opportunity(world.rep_north, bigger.ref, OpportunityPatch(stage=S.CLOSED_WON))
    await core.customers.recompute_values(SYSTEM)
    [dropped] = await core.customers.ranking(world.director, moved="down")
    assert (dropped.code, dropped.previous_tier) == ("GLOBEX", "major") and dropped.tier in (
        "regular",
        "minor",
    )
    assert await core.customers.ranking(world.north_manager, moved="down") == []  # not their customer


# --- with the real NLU ------------------------------------------------------------------------------------

# The shipped training data of the intents these messages could be taken for (a small model trains fast).
NLU_INTENTS = frozenset(
    {
        "customer_ranking",
        "pipeline_summary",
        "customer_overview",
        "csat_summary",
        "list_deals",
        "greet",
        "affirm",
        "deny",
        "out_of_scope",
    }
)


@pytest.fixture(scope="module")
def nlu() -> EmbeddedNlu:
    return nlu_for(NLU_INTENTS)


UNDERSTOOD = [
    ("pipeline this quarter", "Pipeline Q2 2026 (Wed 1 Apr – Tue 30 Jun), by expected close date:"),
    ("pipeline for Rep North", "Rep North's pipeline:"),
    ("south branch pipeline", "South branch:"),
    ("本季度的销售漏斗", "2026年第2季度销售漏斗（4月1日（周三） – 6月30日（周二），按预计成交日期）："),
    ("top customers", "Top 2 customers by value score:"),
    ("who dropped a tier", "No customer of yours has moved down a tier."),
    ("价值最高的客户", "价值评分最高的 2 位客户："),
    ("降级的客户", "您的客户中没有降级的。"),
]


async def test_what_managers_type_is_understood(
    core: Core, world: World, clock: FrozenClock, nlu: EmbeddedNlu
) -> None:
    await hand_built(core, clock, world)
    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=1000, per_second=1000))
    for text, first_line in UNDERSTOOD:
        [reply] = await assistant.handle_as(
            world.director, IncomingMessage(channel="terminal", sender_id="director", text=text)
        )
        assert reply.text.splitlines()[0] == first_line, text
        assert reply.image is None
