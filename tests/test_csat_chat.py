"""Issue #6 in chat: managers ask for CSAT by technician, team or month (EN/ZH) and get the period, the
overall line, one line per group, buttons to regroup and a bar chart where the channel shows images;
scoping comes from core (a manager sees their own people), everyone else hears it is for managers."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from bot.assistant import Assistant, RateLimit, parse_payload
from bot.dialogue import State, Turn
from bot.i18n import keys, t
from bot.intents import reports
from bot.intents.reports import CsatSummary, chart_texts, csat_period, draw_csat_chart, grouping
from bot.intents.staff import payload
from bot.messages import IncomingMessage, Reply
from bot.nlu.embedded import EmbeddedNlu
from bot.nlu.entities import extract_entities
from bot.nlu.types import INTENTS, ParseContext, ParseResult
from core.auth import SYSTEM, Actor
from core.clock import FrozenClock
from core.container import Core
from core.domain.enums import Role
from core.schemas import RepairActionIn, RepairOrderIn, ServiceRequestIn, UserIn
from core.services.surveys import CsatReport, CsatRow
from tests.chat import Chat, ScriptedNlu, nlu_for
from tests.world import World

PNG = b"\x89PNG\r\n\x1a\n"
NOW = datetime(2026, 7, 4, 2, 0, tzinfo=UTC)  # Saturday 4 July, 10:00 in Shanghai


def chat(core: Core, sender: str, channel: str = "rest") -> Chat:
    """A chat as `sender` (a linked rest: identity), without the rate limit in the way."""
    nlu = ScriptedNlu()
    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=1000, per_second=1000))
    return Chat(assistant=assistant, nlu=nlu, channel=channel, sender=sender)


async def repaired(core: Core, world: World, technician: str) -> tuple[Actor, str]:
    """A case fixed in the field by `technician` (north: an Acme case, south: a Globex case)."""
    customer, serial, tech = (
        (world.acme_customer, world.acme_serial, world.tech_north)
        if technician == "tech.north"
        else (world.globex_customer, world.globex_serial, world.tech_south)
    )
    opened = await core.service_desk.open_request(
        customer, ServiceRequestIn(subject="Leaking", description="leaking", serial_number=serial)
    )
    order = await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request=opened.ref, technician=technician)
    )
    for action in ("accept", "start"):
        await core.service_desk.act_on_repair(tech, order.ref, RepairActionIn(action=action))
    await core.service_desk.act_on_repair(
        tech, order.ref, RepairActionIn(action="complete", work_summary="Replaced the seal")
    )
    return customer, opened.ref


async def answered(core: Core, world: World, clock: FrozenClock, scores: list[tuple[str, int]]) -> None:
    """Each case's survey answered by its customer through core, a day apart."""
    for technician, score in scores:
        customer, ticket = await repaired(core, world, technician)
        await core.surveys.create_for_request(world.agent, ticket)
        await core.surveys.answer(customer, ticket, score)
        clock.advance(timedelta(days=1))


@pytest.fixture
async def rated(core: Core, world: World, clock: FrozenClock) -> World:
    """June: north 5, 4, 2 and south 3; July: north 5, south 1 and 4; now is 4 July."""
    await answered(
        core, world, clock, [("tech.north", 5), ("tech.north", 4), ("tech.north", 2), ("tech.south", 3)]
    )
    clock.set(datetime(2026, 7, 1, 2, 0, tzinfo=UTC))
    await answered(core, world, clock, [("tech.north", 5), ("tech.south", 1), ("tech.south", 4)])
    clock.set(NOW)
    return world


def lines(reply: Reply) -> list[str]:
    return reply.text.splitlines()


def payloads(reply: Reply) -> list[str]:
    return [button.payload for button in reply.buttons]


# --- the answer -------------------------------------------------------------------------------------------


async def test_a_manager_gets_csat_by_technician_for_the_last_30_days_with_buttons_and_a_chart(
    core: Core, rated: World
) -> None:
    [reply] = await chat(core, "director").say("how is customer satisfaction?", "csat_summary")
    assert lines(reply) == [
        "Customer satisfaction by technician, the last 30 days (5 Jun – 4 Jul 2026):",
        "Overall: 7 surveys answered · average 3.4/5 · CSAT 57% (rated 4 or 5)",
        "• Tech North: CSAT 75% · 4.0/5 · 4 surveys",
        "• Tech South: CSAT 33% · 2.7/5 · 3 surveys",
    ]
    # Regrouping keeps the period; every payload fits Telegram's 64 bytes of callback data.
    assert [button.title for button in reply.buttons] == ["By team", "By month"]
    assert payloads(reply) == [
        '/csat_summary{"by":"team","period":"20260605-20260704"}',
        '/csat_summary{"by":"month","period":"20260605-20260704"}',
    ]
    assert all(len(item.encode()) <= 64 for item in payloads(reply))
    assert reply.image is not None and reply.image.startswith(PNG)
    assert reply.image_alt == "Bar chart of CSAT by technician: Tech North 75%; Tech South 33%."


async def test_buttons_switch_the_grouping_for_the_same_period(core: Core, rated: World) -> None:
    director = chat(core, "director")
    [first] = await director.say("CSAT this month", "csat_summary")
    assert lines(first)[:2] == [
        "Customer satisfaction by technician, Jul 2026 (1–4 Jul 2026):",
        "Overall: 3 surveys answered · average 3.3/5 · CSAT 67% (rated 4 or 5)",
    ]
    [teams] = await director.say(payloads(first)[0])
    assert lines(teams) == [
        "Customer satisfaction by team, 1–4 Jul 2026:",
        "Overall: 3 surveys answered · average 3.3/5 · CSAT 67% (rated 4 or 5)",
        "• North service: CSAT 100% · 5.0/5 · 1 survey",
        "• South branch: CSAT 50% · 2.5/5 · 2 surveys",
    ]
    assert [button.title for button in teams.buttons] == ["By technician", "By month"]
    by_month = next(item for item in payloads(first) if '"month"' in item)
    [months] = await director.say(by_month.replace("20260701", "20260601"))
    assert lines(months) == [
        "Customer satisfaction by month, 1 Jun – 4 Jul 2026:",
        "Overall: 7 surveys answered · average 3.4/5 · CSAT 57% (rated 4 or 5)",
        "• Jun 2026: CSAT 50% · 3.5/5 · 4 surveys",
        "• Jul 2026: CSAT 67% · 3.3/5 · 3 surveys",
    ]


async def test_a_manager_sees_only_their_own_people(core: Core, rated: World) -> None:
    [north] = await chat(core, "north.manager").say("customer satisfaction by technician", "csat_summary")
    assert lines(north)[1:] == [
        "Overall: 4 surveys answered · average 4.0/5 · CSAT 75% (rated 4 or 5)",
        "• Tech North: CSAT 75% · 4.0/5 · 4 surveys",
    ]
    [south] = await chat(core, "south.manager").say("ratings by team last month", "csat_summary")
    assert lines(south) == [
        "Customer satisfaction by team, Jun 2026 (1–30 Jun 2026):",
        "Overall: 1 survey answered · average 3.0/5 · CSAT 0% (rated 4 or 5)",
        "• South branch: CSAT 0% · 3.0/5 · 1 survey",
    ]
    # The director heads the group: everyone under him.
    [everyone] = await chat(core, "director").say("ratings by team last month", "csat_summary")
    assert [line.split(":")[0] for line in lines(everyone)[2:]] == ["• North service", "• South branch"]


async def test_chinese_answers_and_periods(core: Core, rated: World) -> None:
    director = chat(core, "director")
    [quarter] = await director.say("本季度各团队的满意度", "csat_summary")
    assert lines(quarter) == [
        "客户满意度 · 按团队统计 · 2026年第3季度（2026年7月1日至4日）：",
        "总体：共收回 3 份评价 · 平均 3.3 分（满分 5 分）· 满意率 67%（4–5 分）",
        "• North service：满意率 100% · 平均 5.0 分 · 1 份",
        "• South branch：满意率 50% · 平均 2.5 分 · 2 份",
    ]
    assert [button.title for button in quarter.buttons] == ["按技师", "按月份"]
    assert quarter.image is not None and quarter.image.startswith(PNG)
    assert quarter.image_alt == "按团队的满意率柱状图：North service 100%；South branch 50%。"
    [technicians] = await director.say(payloads(quarter)[0])
    assert lines(technicians)[0] == "客户满意度 · 按技师统计 · 2026年7月1日至4日："
    [june] = await director.say("上个月按技师看客户满意度", "csat_summary")
    assert lines(june)[0] == "客户满意度 · 按技师统计 · 2026年6月（2026年6月1日至30日）："
    assert lines(june)[2] == "• Tech North：满意率 67% · 平均 3.7 分 · 3 份"


async def test_nothing_answered_in_the_period_is_one_clear_sentence(core: Core, rated: World) -> None:
    [reply] = await chat(core, "north.manager").say("CSAT last year", "csat_summary")
    assert reply.text == (
        "Customer satisfaction, 2025 (1 Jan – 31 Dec 2025): no customer has rated your team's work in this "
        "period.\nTry a longer period, e.g. “CSAT this year”."
    )
    assert (reply.buttons, reply.image) == ((), None)
    [zh] = await chat(core, "admin").say("去年的满意度", "csat_summary")
    assert zh.text.startswith(
        "客户满意度 · 2025年（2025年1月1日至12月31日）：这段时间还没有客户提交满意度评价。"
    )


async def test_other_roles_are_told_it_is_for_managers(core: Core, rated: World) -> None:
    for sender in ("rep.north", "tech.north", "agent"):
        said = await chat(core, sender).text("CSAT this month", "csat_summary")
        assert said == (
            "Satisfaction figures (CSAT) are for managers, so I can't show them here.\n"
            "Your manager can share your team's figures with you."
        ), sender
    customer = await chat(core, "acme-buyer").text("满意度怎么样", "csat_summary")
    assert customer == (
        "客户满意度统计仅供经理查看，这里没法给您看哦。\n"
        "如果想给自己的维修服务打分，直接告诉我就行，比如“SR-12 五星”。"
    )
    # A replayed button does not get round it either.
    replayed = await chat(core, "rep.north").text('/csat_summary{"by":"team","period":"20260101-20260704"}')
    assert replayed.startswith("Satisfaction figures (CSAT) are for managers")


async def test_no_image_where_the_channel_cannot_show_one(core: Core, rated: World) -> None:
    nlu = ScriptedNlu()
    nlu.expect("csat_summary")
    assistant = Assistant(core, nlu)
    [reply] = await assistant.handle_as(
        rated.director, IncomingMessage(channel="terminal", sender_id="director", text="CSAT by team")
    )
    assert reply.image is None and reply.image_alt == ""
    assert lines(reply)[0] == "Customer satisfaction by team, the last 30 days (5 Jun – 4 Jul 2026):"


async def test_many_groups_are_cut_to_ten_lines_best_first(
    core: Core, world: World, clock: FrozenClock
) -> None:
    # Twelve more technicians under the north manager, each with one case rated 1..5 in turn.
    for number in range(12):
        await core.org.add_user(
            SYSTEM,
            UserIn(
                username=f"tech.{number:02d}",
                role=Role.TECHNICIAN,
                name=f"Tech {number:02d}",
                manager="north.manager",
                department="NORTH-SVC",
            ),
        )
        customer, ticket = await repaired(core, world, "tech.north")
        await core.surveys.create_for_request(world.agent, ticket)
        await _set_technician(core, ticket, f"tech.{number:02d}")
        await core.surveys.answer(customer, ticket, number % 5 + 1)
    [reply] = await chat(core, "north.manager").say("CSAT by technician", "csat_summary")
    body = lines(reply)
    assert body[1].startswith("Overall: 12 surveys answered") and len(body) == 2 + 10 + 1
    assert body[-1] == "…and 2 more"
    percents = [int(line.split("CSAT ")[1].split("%")[0]) for line in body[2:-1]]
    assert percents == sorted(percents, reverse=True) and percents[0] == 100


async def _set_technician(core: Core, ticket: str, username: str) -> None:
    """Whose work a survey judges is the repair order's technician: point it at another person."""
    from sqlalchemy import select, update

    from core.db.models import Survey, User

    async with core.uow() as uow:
        user_id = (await uow.session.execute(select(User.id).where(User.username == username))).scalar_one()
        await uow.session.execute(
            update(Survey).where(Survey.service_request_id == int(ticket[3:])).values(technician_id=user_id)
        )
        await uow.commit()


# --- periods and groupings from what people say ----------------------------------------------------------


def turn_for(core: Core, actor: Actor, text: str, lang: str = "en") -> Turn:
    """A turn as the NLU would hand it over: the real entity extractor on the text, now = 4 July."""
    payload = parse_payload(text, lang)
    parse = payload or ParseResult(
        text=text,
        intent="csat_summary",
        confidence=0.9,
        entities=extract_entities(text, ParseContext(now=NOW, timezone="Asia/Shanghai", lang=lang)),
    )
    return Turn(
        core=core, actor=actor, lang=lang, parse=parse, text=text, state=State(), now=NOW, channel="rest"
    )


@pytest.mark.parametrize(
    ("text", "since", "until"),
    [
        ("CSAT", date(2026, 6, 5), date(2026, 7, 4)),
        ("CSAT this month", date(2026, 7, 1), date(2026, 7, 4)),
        ("customer satisfaction last month", date(2026, 6, 1), date(2026, 6, 30)),
        ("how are our ratings by team this quarter?", date(2026, 7, 1), date(2026, 7, 4)),
        ("csat last quarter", date(2026, 4, 1), date(2026, 6, 30)),
        ("CSAT for Q1", date(2026, 1, 1), date(2026, 3, 31)),
        ("CSAT Q4", date(2025, 10, 1), date(2025, 12, 31)),
        ("csat since May", date(2026, 5, 1), date(2026, 7, 4)),
        ("csat for April", date(2026, 4, 1), date(2026, 4, 30)),
        ("May I see the csat figures", date(2026, 6, 5), date(2026, 7, 4)),
        ("csat in the last 90 days", date(2026, 4, 6), date(2026, 7, 4)),
        ("satisfaction over the past 3 months", date(2026, 4, 5), date(2026, 7, 4)),
        ("csat this year", date(2026, 1, 1), date(2026, 7, 4)),
        ("CSAT from 2026-03-01 to 2026-03-15", date(2026, 3, 1), date(2026, 3, 15)),
        ("csat last week", date(2026, 6, 22), date(2026, 6, 28)),
        ("CSAT by month", date(2026, 2, 1), date(2026, 7, 4)),
        ("这个月的评分", date(2026, 7, 1), date(2026, 7, 4)),
        ("上季度满意度", date(2026, 4, 1), date(2026, 6, 30)),
        ("5月以来的满意度", date(2026, 5, 1), date(2026, 7, 4)),
        ("4月份的满意度", date(2026, 4, 1), date(2026, 4, 30)),
        ("最近三个月的满意度", date(2026, 4, 5), date(2026, 7, 4)),
        ("近两周的客户评分", date(2026, 6, 21), date(2026, 7, 4)),
        ("满意度怎么样", date(2026, 6, 5), date(2026, 7, 4)),
        ('/csat_summary{"by":"team","period":"20260301-20260331"}', date(2026, 3, 1), date(2026, 3, 31)),
        ('/csat_summary{"by":"team","since":"2026-04-01"}', date(2026, 4, 1), date(2026, 7, 4)),
        ('/csat_summary{"by":"team","period":"20260331-20260301"}', date(2026, 6, 5), date(2026, 7, 4)),
    ],
)
async def test_the_period_a_message_names(
    core: Core, world: World, text: str, since: date, until: date
) -> None:
    lang = "zh" if any("\u4e00" <= char <= "\u9fff" for char in text) else "en"
    turn = turn_for(core, world.director, text, lang)
    by = turn.entity("by") or grouping(text)
    period = csat_period(turn, by)
    assert (period.since, period.until) == (since, until), text


@pytest.mark.parametrize(
    ("text", "by"),
    [
        ("CSAT this month", "technician"),
        ("customer satisfaction by technician", "technician"),
        ("how are our ratings by team this quarter?", "team"),
        ("CSAT by month", "month"),
        ("monthly csat trend for each branch", "month"),
        ("满意度怎么样", "technician"),
        ("按技师看客户满意度", "technician"),
        ("本季度各团队的满意度", "team"),
        ("各部门这个月的评分", "team"),
        ("按月看满意度趋势", "month"),
        ("这个月的评分", "technician"),
    ],
)
def test_the_grouping_a_message_asks_for(text: str, by: str) -> None:
    assert grouping(text) == by


# --- the chart and the catalogs --------------------------------------------------------------------------


def report(by: str, names: list[tuple[str, str, float]]) -> CsatReport:
    rows = [
        CsatRow(group=group, name=name, count=2, average=4.0, csat_percent=value)
        for group, name, value in names
    ]
    overall = CsatRow(group="all", name="all", count=2 * len(rows), average=4.0, csat_percent=50.0)
    return CsatReport(by=by, since=date(2026, 6, 1), until=date(2026, 6, 30), rows=rows, overall=overall)


def test_the_chart_speaks_the_readers_language_or_english_without_a_cjk_font() -> None:
    data = report("technician", [("wang.li", "王力", 50.0), ("tech.north", "Tech North", 100.0)])
    period = reports.Period(date(2026, 6, 1), date(2026, 6, 30), "month", (("month", 6), ("year", 2026)))
    chinese = chart_texts(data, period, "zh", cjk=True)
    assert chinese.lang == "zh" and chinese.names == ("Tech North", "王力")  # best first, drawn on top
    assert chinese.title == "客户满意度 · 按技师统计 · 2026年6月（2026年6月1日至30日）"
    assert chinese.bars == ("100%（2 份）", "50%（2 份）")
    # Without a font that draws Chinese: English words, and a Chinese name gives way to the username.
    english = chart_texts(data, period, "zh", cjk=False)
    assert english.lang == "en" and english.names == ("Tech North", "wang.li")
    assert english.title == "CSAT by technician, Jun 2026 (1–30 Jun 2026)"
    assert english.axis == "CSAT: share of ratings 4–5 (%)"
    drawn = draw_csat_chart(data, period, "zh", font=None)
    assert drawn.startswith(PNG)
    font = reports.cjk_font()
    if font is None:
        pytest.skip("no CJK font installed here: the Chinese drawing is not tried")
    assert draw_csat_chart(data, period, "zh", font=font).startswith(PNG)


def test_months_stay_in_calendar_order_and_unknown_groups_have_a_name() -> None:
    data = report(
        "month", [(f"2025-{month:02d}", f"2025-{month:02d}", float(month)) for month in range(1, 13)]
    )
    rows, left_out = reports.shown(data)
    assert [row.group for row in rows] == [f"2025-{month:02d}" for month in range(3, 13)] and left_out == 2
    nobody = CsatRow(group="-", name="nobody assigned", count=1, average=5.0, csat_percent=100.0)
    assert reports.group_name("zh", "technician", nobody) == "未指派技师"
    assert reports.group_name("en", "team", nobody) == "No team"


def test_the_intent_is_known_and_both_catalogs_say_the_same_things() -> None:
    assert "csat_summary" in INTENTS and CsatSummary.intent == "csat_summary"
    csat_en = {key for key in keys("en") if key.startswith("csat.")}
    assert csat_en and csat_en == {key for key in keys("zh") if key.startswith("csat.")}
    assert t("zh", "intent_names.csat_summary") == "客户满意度"
    assert "CSAT" in t("en", "help.manager") and "满意度" in t("zh", "help.manager")
    longest = payload("csat_summary", by="technician", period="20261231-20261231")
    assert len(longest.encode()) <= 64 and json.loads(longest[len("/csat_summary") :])["by"] == "technician"


# --- with the real NLU ------------------------------------------------------------------------------------

# The shipped training data of the intents these messages could be taken for (a small model trains fast).
NLU_INTENTS = frozenset(
    {
        "csat_summary",
        "rate_service",
        "pipeline_summary",
        "customer_overview",
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
    ("CSAT this month", "Customer satisfaction by technician, Jul 2026 (1–4 Jul 2026):"),
    (
        "customer satisfaction by technician",
        "Customer satisfaction by technician, the last 30 days (5 Jun – 4 Jul 2026):",
    ),
    ("how are our ratings by team this quarter?", "Customer satisfaction by team, Q3 2026 (1–4 Jul 2026):"),
    ("CSAT by month", "Customer satisfaction by month, the last 6 months (1 Feb – 4 Jul 2026):"),
    ("csat since May", "Customer satisfaction by technician, 1 May – 4 Jul 2026:"),
    ("满意度怎么样", "客户满意度 · 按技师统计 · 最近 30 天（2026年6月5日至7月4日）："),
    ("按技师看客户满意度", "客户满意度 · 按技师统计 · 最近 30 天（2026年6月5日至7月4日）："),
    ("本季度各团队的满意度", "客户满意度 · 按团队统计 · 2026年第3季度（2026年7月1日至4日）："),
    ("这个月的评分", "客户满意度 · 按技师统计 · 2026年7月（2026年7月1日至4日）："),
]


async def test_what_managers_type_is_understood(core: Core, rated: World, nlu: EmbeddedNlu) -> None:
    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=1000, per_second=1000))
    for text, first_line in UNDERSTOOD:
        # The terminal shows no pictures: the words are what is checked here, quickly.
        [reply] = await assistant.handle_as(
            rated.director, IncomingMessage(channel="terminal", sender_id="director", text=text)
        )
        assert lines(reply)[0] == first_line, text


async def test_a_customers_rating_is_not_a_report(nlu: EmbeddedNlu) -> None:
    context = ParseContext(now=NOW)
    for text in ("rate SR-12 5 stars", "5 stars for SR-12", "very satisfied", "SR-12给五星", "很满意"):
        assert (await nlu.parse(text, context)).intent == "rate_service", text
    assert (await nlu.parse("pipeline this quarter", context)).intent == "pipeline_summary"
