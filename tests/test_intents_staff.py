"""Staff intents (visits, deals, pipeline, overview, field jobs) through the real Assistant and database."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from bot.assistant import Assistant, RateLimit
from bot.i18n import keys, t
from bot.intents import sales, smalltalk
from bot.messages import Reply
from bot.nlu.types import Entity, ParseResult
from core.container import Core
from core.db.models import (
    Customer,
    Opportunity,
    OpportunityChange,
    Part,
    PartStock,
    RepairOrder,
    RepairPart,
    ServiceRequest,
    ServiceStation,
    Task,
    Visit,
)
from core.domain.enums import CustomerType, OpportunityStage
from core.schemas import (
    ContactIn,
    CustomerIn,
    CustomerPatch,
    OpportunityIn,
    RepairActionIn,
    RepairOrderIn,
    ServiceRequestIn,
)
from tests.chat import Chat, ScriptedNlu
from tests.world import World

STAFF_TOP_KEYS = ("staff", "visit", "deal", "pipeline", "overview", "jobs")


def staff_chat(core: Core, nlu: ScriptedNlu, sender: str) -> Chat:
    """A chat with the registered handlers (and no rate limit getting in the way of long scripts)."""
    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=1000, per_second=1000))
    return Chat(assistant=assistant, nlu=nlu, channel="rest", sender=sender)


def expect(nlu: ScriptedNlu, intent: str, *entities: tuple[str, str]) -> None:
    """Queue a parse with several entities of one kind (Chat.say takes one per kind)."""
    nlu.queued.append(ParseResult(
        text="", intent=intent, confidence=0.97,
        entities=tuple(Entity(entity=name, value=value, start=index, end=index)
                       for index, (name, value) in enumerate(entities)),
        ranking=((intent, 0.97),),
    ))


def payloads(reply: Reply) -> list[str]:
    """The button payloads of a reply."""
    return [button.payload for button in reply.buttons]


async def rows(core: Core, model: Any, *where: Any) -> list[Any]:
    """Rows of a table, in id order."""
    async with core.session_factory() as session:
        return list((await session.execute(select(model).where(*where).order_by(model.id))).scalars().all())


async def customer_id(core: Core, code: str) -> int:
    """A customer's database id."""
    async with core.session_factory() as session:
        return int((await session.execute(select(Customer.id).where(Customer.code == code))).scalar_one())


async def stock(core: Core, station: str, part: str) -> int:
    """The recorded stock of a part at a station."""
    async with core.session_factory() as session:
        return int((await session.execute(
            select(PartStock.quantity)
            .join(ServiceStation, ServiceStation.id == PartStock.station_id)
            .join(Part, Part.id == PartStock.part_id)
            .where(ServiceStation.code == station, Part.code == part)
        )).scalar_one())


async def count(core: Core, model: Any) -> int:
    """How many rows a table has."""
    async with core.session_factory() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def test_catalogs_have_every_staff_key_in_both_languages() -> None:
    en = {key for key in keys("en") if key.split(".")[0] in STAFF_TOP_KEYS}
    zh = {key for key in keys("zh") if key.split(".")[0] in STAFF_TOP_KEYS}
    assert en == zh and len(en) > 100
    assert t("zh", "staff.day", weekday="五", day=19, month=6) == "6月19日（周五）"


NAMES = [
    ("ACME", "Acme Corp"), ("ACME-K", "Acme Kitchen Supplies"), ("CUS-0007", "Pacific Kitchen Supply"),
    ("CUS-0008", "BrightHome Online Store"), ("CUS-0012", "北京华联商厦有限公司"), ("CUS-0013", "上海家电城"),
    ("CUS-0014", "浦东家电连锁有限公司"), ("CUS-0015", "Globex Ltd"),
]


def matched(text: str, *, whole: bool = False) -> list[str]:
    """Codes the customer matcher settles on for a message (several when it would ask)."""
    return [found.code for found in sales.pick(sales.find_customers(NAMES, text, whole=whole))]


def test_customer_matching_in_messages_and_answers() -> None:
    assert matched("visited Acme today with Li") == ["ACME", "ACME-K"]  # ask
    assert matched("visited acme kitchen this morning") == ["ACME-K"]  # more of the name said
    assert matched("visited Acme Corp") == ["ACME"]
    assert matched("talked to Pacific about the new kitchen line") == ["CUS-0007"]
    assert matched("visited Pacific, saw their bright shelves") == ["CUS-0007"]  # not in "BrightHome"
    assert matched("we discussed home appliances and online promotions") == []  # trade words alone
    assert matched("visited globx yesterday") == ["CUS-0015"]  # a typo
    assert matched("follow up with CUS-0012 next week") == ["CUS-0012"]  # a code anywhere
    assert matched("今天拜访了华联，和李总聊了续约") == ["CUS-0012"]  # per character
    assert matched("见了浦东家电连锁的采购，聊了家电促销") == ["CUS-0014"]  # "家电" alone says nothing
    assert matched("ACME-K", whole=True) == ["ACME-K"] and matched("acme", whole=True) == ["ACME", "ACME-K"]
    assert matched("Zenith", whole=True) == [] and matched("", whole=True) == []


# --- log_visit -----------------------------------------------------------------------------------------


async def test_log_visit_in_english_creates_visit_and_follow_up_task(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    text = "visited Acme today with Li, discussed renewal, next step send quote by Friday"
    expect(nlu, "log_visit", ("customer", "Acme"), ("date", "2026-06-15"), ("date", "2026-06-19"))
    card = (await rep.say(text))[-1]
    assert card.text.splitlines() == [
        "Log this visit?",
        "Customer: Acme Corp (ACME)",
        "Date: Mon 15 Jun",
        "Met: Li",
        f"Summary: {text}",
        "Follow-up: send quote — due Fri 19 Jun",
    ]
    assert payloads(card) == ["/affirm", "/deny"]
    assert await count(core, Visit) == 0  # nothing before the yes

    done = await rep.text("yes", "affirm")
    assert done == "Logged your visit to Acme Corp on Mon 15 Jun.\nFollow-up 'send quote' due Fri 19 Jun."
    [visit] = await rows(core, Visit)
    assert (visit.customer_id, visit.rep_id, visit.visited_on) == (
        await customer_id(core, "ACME"), world.rep_north.user_id, date(2026, 6, 15))
    assert (visit.contacts_met, visit.summary, visit.next_step) == (["Li"], text, "send quote")
    [task] = await rows(core, Task)
    assert (task.title, task.kind, task.status, task.assignee_id, task.customer_id, task.visit_id) == (
        "send quote", "follow_up", "open", world.rep_north.user_id, visit.customer_id, visit.id)
    assert task.due_at == datetime(2026, 6, 19, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai


async def test_log_visit_in_chinese_reads_people_and_next_step(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    text = "今天拜访了Acme，和李总聊了续约，下一步周五前发报价"
    card = (await rep.say(text, "log_visit", customer="Acme"))[-1]
    assert "记录这次拜访吗？" in card.text and "客户：Acme Corp（ACME）" in card.text
    assert "见到：李总" in card.text and "跟进：发报价，截止 6月19日（周五）" in card.text
    assert [button.title for button in card.buttons] == ["是", "否"]
    done = await rep.text("是", "affirm")
    assert done == "已记录 6月15日（周一） 对 Acme Corp 的拜访。\n跟进任务“发报价”截止 6月19日（周五）。"
    [visit] = await rows(core, Visit)
    assert (visit.contacts_met, visit.next_step, visit.visited_on) == (["李总"], "发报价", date(2026, 6, 15))
    [task] = await rows(core, Task)
    assert (task.title, task.due_at) == ("发报价", datetime(2026, 6, 19, 1, 0, tzinfo=UTC))


async def test_log_visit_offers_buttons_when_two_customers_match(core: Core, world: World) -> None:
    await core.customers.create(world.rep_north, CustomerIn(
        code="ACME-K", name="Acme Kitchen Supplies", type=CustomerType.END))
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    [question] = await rep.say("visited acme yesterday, talked about the new showroom layout",
                               "log_visit", customer="acme", date="2026-06-14")
    assert [(button.title, button.payload) for button in question.buttons] == [
        ("Acme Corp", '/log_visit{"customer":"ACME"}'),
        ("Acme Kitchen Supplies", '/log_visit{"customer":"ACME-K"}'),
    ]
    assert "Several of your customers match “acme”." in question.text
    card = (await rep.say('/log_visit{"customer":"ACME-K"}'))[-1]  # the button pressed
    assert "Customer: Acme Kitchen Supplies (ACME-K)" in card.text and "Date: Sun 14 Jun" in card.text
    await rep.say("yes", "affirm")
    [visit] = await rows(core, Visit)
    assert (visit.customer_id, visit.visited_on) == (await customer_id(core, "ACME-K"), date(2026, 6, 14))
    assert await count(core, Task) == 0  # no next step, no task
    # Typing a code instead of pressing a button works too.
    await rep.say("met acme again today about the showroom layout", "log_visit", customer="acme")
    card = (await rep.say("ACME"))[-1]
    assert "Customer: Acme Corp (ACME)" in card.text


async def test_rep_of_another_team_gets_the_unknown_answer_for_acme(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    south = staff_chat(core, nlu, "rep.south")
    north = staff_chat(core, nlu, "rep.north")
    [acme] = await south.say("visited Acme today, discussed the renewal terms", "log_visit", customer="Acme")
    [zenith] = await north.say("visited Zenith today, discussed the renewal terms", "log_visit",
                               customer="Zenith")
    assert acme.text == zenith.text.replace("Zenith", "Acme")
    assert acme.text.startswith("I couldn't find a customer matching “Acme” among your customers.")
    assert acme.buttons == () and "Acme Corp" not in acme.text
    # Typing the exact code changes nothing either.
    answer = await south.text("ACME")
    assert "I couldn't find a customer matching “ACME”" in answer and "Acme Corp" not in answer
    await south.say("cancel", "cancel")
    assert await count(core, Visit) == 0
    # The overview answers the same way.
    await north.say("cancel", "cancel")
    seen = await south.text("show me Acme", "customer_overview", customer="Acme")
    unknown = await north.text("show me Zenith", "customer_overview", customer="Zenith")
    assert seen == unknown.replace("Zenith", "Acme")
    assert "WM2023" not in seen and "rep.north" not in seen
    await south.say("cancel", "cancel")
    await north.say("cancel", "cancel")
    # Without a customer entity (names read from the words) the answers are the same too.
    manager = staff_chat(core, nlu, "south.manager")
    in_words = await manager.text("show me acme", "customer_overview")
    await manager.say("cancel", "cancel")
    assert in_words == await manager.text("show me zenith", "customer_overview")
    assert in_words == "I couldn't tell which of your customers you mean.\nWhich customer? (name or code)"


async def test_log_visit_finds_the_customer_in_the_words_and_a_due_time(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    south = staff_chat(core, nlu, "rep.south")
    text = ("Visited Globex this morning with Mr Tan and Ms Wu, reviewed the laundry project. "
            "Next step: call them back tomorrow at 3pm")
    expect(nlu, "log_visit", ("time", "2026-06-15T09:00:00+08:00"), ("time", "2026-06-16T15:00:00+08:00"))
    card = (await south.say(text))[-1]
    assert card.text.splitlines()[1:4] == [
        "Customer: Globex Ltd (GLOBEX)", "Date: Mon 15 Jun", "Met: Mr Tan, Ms Wu"]
    assert card.text.splitlines()[-1] == "Follow-up: call them back — due Tue 16 Jun 15:00"
    assert "due Tue 16 Jun 15:00" in await south.text("yes", "affirm")
    [visit] = await rows(core, Visit)
    assert (visit.customer_id, visit.contacts_met) == (await customer_id(core, "GLOBEX"), ["Mr Tan", "Ms Wu"])
    [task] = await rows(core, Task)
    assert (task.title, task.due_at) == ("call them back", datetime(2026, 6, 16, 7, 0, tzinfo=UTC))


async def test_log_visit_no_and_cancel_change_nothing(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    await rep.say("visited Acme today with Li, discussed renewal, next step send quote by Friday",
                  "log_visit", customer="Acme", date="2026-06-19")
    assert "haven't done it" in await rep.text("no", "deny")
    assert "What did you discuss?" in await rep.text("log a visit to acme", "log_visit", customer="acme")
    assert "Cancelled" in await rep.text("cancel", "cancel")
    question = await rep.text("log a visit", "log_visit")
    assert question == "Which customer did you visit? (name or code)"
    assert "Cancelled" in await rep.text("cancel", "cancel")
    assert (await count(core, Visit), await count(core, Task)) == (0, 0)


async def test_technician_cannot_log_visits(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    tech = staff_chat(core, nlu, "tech.north")
    answer = await tech.text("visited Acme today", "log_visit", customer="Acme")
    assert "isn't something I can do for a technician" in answer
    assert await count(core, Visit) == 0


# --- update_deal ---------------------------------------------------------------------------------------


async def make_deals(core: Core, world: World) -> None:
    """OP-1 Acme renewal (proposal 40k, June), OP-2 Acme showroom (qualification 20k, August),
    OP-3 Acme service contract (negotiation 100k, May), OP-4 won (April), OP-5 Globex (south, June)."""
    north = world.rep_north
    for name, stage, amount, closes in (
        ("Acme renewal 2026", OpportunityStage.PROPOSAL, "40000", date(2026, 6, 30)),
        ("Acme new showroom", OpportunityStage.QUALIFICATION, "20000", date(2026, 8, 15)),
        ("Acme service contract", OpportunityStage.NEGOTIATION, "100000", date(2026, 5, 20)),
        ("Acme spare parts", OpportunityStage.CLOSED_WON, "30000", date(2026, 4, 10)),
    ):
        await core.sales.create_opportunity(north, OpportunityIn(
            customer_code="ACME", name=name, stage=stage, amount=Decimal(amount), expected_close=closes))
    await core.sales.create_opportunity(world.rep_south, OpportunityIn(
        customer_code="GLOBEX", name="Globex hotel laundry", stage=OpportunityStage.NEGOTIATION,
        amount=Decimal("90000"), expected_close=date(2026, 6, 20)))


async def deal(core: Core, number: int) -> Opportunity:
    """An opportunity row."""
    found: Opportunity = (await rows(core, Opportunity, Opportunity.id == number))[0]
    return found


async def test_update_deal_in_english_changes_stage_and_amount_with_history(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    card = (await rep.say("move the Acme renewal to negotiation, 50k", "update_deal",
                          customer="Acme", stage="negotiation", amount="50000.00"))[-1]
    assert card.text.splitlines() == [
        "Update OP-1 “Acme renewal 2026” (Acme Corp)?",
        "Stage: Proposal → Negotiation",
        "Amount: ¥40,000.00 → ¥50,000.00",
    ]
    assert payloads(card) == ["/affirm", "/deny"]
    assert (await deal(core, 1)).stage == "proposal"
    done = await rep.text("yes", "affirm")
    assert done == "Updated OP-1 “Acme renewal 2026”: Negotiation, ¥50,000.00. Expected to close Tue 30 Jun."
    changed = await deal(core, 1)
    assert (changed.stage, changed.amount, changed.probability) == ("negotiation", Decimal("50000.00"), 75)
    history = [(row.field, row.old_value, row.new_value, row.actor_id)
               for row in await rows(core, OpportunityChange, OpportunityChange.opportunity_id == 1)]
    assert history[1:] == [
        ("stage", "proposal", "negotiation", world.rep_north.user_id),
        ("amount", "40000.00", "50000.00", world.rep_north.user_id),
        ("probability", "50", "75", world.rep_north.user_id),
    ]
    assert (await deal(core, 2)).stage == "qualification"  # the other Acme deal is untouched


async def test_update_deal_in_chinese_asks_which_deal_with_buttons(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    [question] = await rep.say("把Acme的商机推进到谈判阶段，5万", "update_deal",
                               customer="Acme", stage="negotiation", amount="50000.00")
    assert question.text == "您有好几个进行中的商机可能符合。\n是哪个商机？"
    # This rep's open Acme deals, by closing date.
    assert payloads(question) == [f'/update_deal{{"deal":"OP-{number}"}}' for number in (3, 1, 2)]
    card = (await rep.say('/update_deal{"deal":"OP-2"}'))[-1]
    assert "阶段：资格确认 → 商务谈判" in card.text and "金额：¥20,000.00 → ¥50,000.00" in card.text
    assert "已更新 OP-2“Acme new showroom”：商务谈判，¥50,000.00。" in await rep.text("是", "affirm")
    assert ((await deal(core, 2)).stage, (await deal(core, 2)).amount) == ("negotiation", Decimal("50000.00"))
    assert (await deal(core, 1)).stage == "proposal"
    card = (await rep.say("把OP-1推进到谈判阶段", "update_deal", stage="negotiation"))[-1]
    assert card.text.splitlines() == [
        "更新 OP-1“Acme renewal 2026”（Acme Corp）吗？", "阶段：方案报价 → 商务谈判"]
    assert [button.title for button in card.buttons] == ["是", "否"]
    assert await rep.text("否", "deny") == "好的，没有执行，也没有做任何修改。"
    assert (await deal(core, 1)).stage == "proposal"


async def test_vague_amount_and_unknown_stage_ask_and_change_nothing(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    vague = await rep.text("bump the Acme renewal to fifty-ish", "update_deal", customer="Acme",
                           amount="fifty-ish")
    assert vague == ("I need an exact amount, and “fifty-ish” isn't one.\n"
                     "What is the amount exactly? For example 50000, 50k or 5万.")
    assert (await deal(core, 1)).amount == Decimal("40000.00")
    card = (await rep.say("55k"))[-1]
    assert card.text.splitlines()[1:] == ["Amount: ¥40,000.00 → ¥55,000.00"]
    assert "haven't done it" in await rep.text("no", "deny")
    assert (await deal(core, 1)).amount == Decimal("40000.00")

    [stage_question] = await rep.say("move OP-1 to hibernation", "update_deal", stage="hibernation")
    assert stage_question.text.startswith("“hibernation” isn't a stage I know.")
    assert len(stage_question.buttons) == 6
    assert payloads(stage_question)[3] == '/update_deal{"stage":"negotiation"}'
    assert "Cancelled" in await rep.text("cancel", "cancel")
    assert (await deal(core, 1)).stage == "proposal"
    assert await count(core, OpportunityChange) == 5  # only the five "created" entries


async def test_marking_a_deal_lost_asks_reason_and_competitor(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    assert await rep.text("we lost the Acme renewal", "update_deal", customer="Acme",
                          stage="closed_lost") == "Why was the deal lost?"
    [competitor] = await rep.say("their budget was cut in half")
    assert competitor.text == "Which competitor won it, if any?" and payloads(competitor) == ["none"]
    card = (await rep.say("Haier"))[-1]
    assert card.text.splitlines()[1:] == [
        "Stage: Proposal → Lost", "Lost because: their budget was cut in half", "Competitor: Haier"]
    await rep.say("yes", "affirm")
    lost = await deal(core, 1)
    assert (lost.stage, lost.lost_reason, lost.competitor, lost.probability) == (
        "closed_lost", "their budget was cut in half", "Haier", 0)
    assert lost.closed_at is not None
    # Said all at once: the reason and the competitor are read from the message.
    card = (await rep.say("we lost the Acme showroom deal to Haier because of price", "update_deal",
                          customer="Acme", stage="closed_lost"))[-1]
    assert card.text.splitlines() == [
        "Update OP-2 “Acme new showroom” (Acme Corp)?", "Stage: Qualification → Lost", "Lost because: price",
        "Competitor: Haier"]
    await rep.say("yes", "affirm")
    assert ((await deal(core, 2)).lost_reason, (await deal(core, 2)).competitor) == ("price", "Haier")


async def test_rep_of_another_team_cannot_touch_acme_deals(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    south = staff_chat(core, nlu, "rep.south")
    [reply] = await south.say("mark OP-1 as won", "update_deal", stage="closed_won")
    assert reply.text.startswith("I couldn't find deal OP-1 among yours.")
    assert "Acme" not in reply.text and payloads(reply) == ['/update_deal{"deal":"OP-5"}']
    assert "Cancelled" in await south.text("cancel", "cancel")
    assert (await deal(core, 1)).stage == "proposal"


# --- pipeline_summary ----------------------------------------------------------------------------------


def table(text: str) -> dict[str, list[str]]:
    """Rows of the pipeline table by their first cell."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = line.split("  ")
        cells = [cell.strip() for cell in cells if cell.strip()]
        if len(cells) >= 2:
            found[cells[0]] = cells[1:]
    return found


async def test_pipeline_this_quarter_next_quarter_and_scopes(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    text = await rep.text("pipeline this quarter", "pipeline_summary")
    lines = text.splitlines()
    assert lines[0] == "Pipeline Q2 2026 (Wed 1 Apr – Tue 30 Jun), by expected close date:"
    rows_ = table(text)
    assert rows_["Qualification"] == ["0", "0.00", "0.00"]
    assert rows_["Proposal"] == ["1", "40,000.00", "20,000.00"]
    assert rows_["Negotiation"] == ["1", "100,000.00", "75,000.00"]
    assert rows_["Open total"] == ["2", "140,000.00", "95,000.00"]
    assert rows_["Won"] == ["1", "30,000.00"]
    assert lines[-3:] == ["Weighted forecast: ¥95,000.00", "  May 2026: ¥75,000.00", "  Jun 2026: ¥20,000.00"]

    later = await rep.text("pipeline next quarter", "pipeline_summary")
    assert "Q3 2026" in later and table(later)["Qualification"] == ["1", "20,000.00", "2,000.00"]
    assert table(later)["Open total"] == ["1", "20,000.00", "2,000.00"]

    june = await rep.text("pipeline this month", "pipeline_summary")
    assert "Jun 2026" in june and table(june)["Open total"] == ["1", "40,000.00", "20,000.00"]

    manager = await staff_chat(core, nlu, "north.manager").text("pipeline", "pipeline_summary")
    assert table(manager)["Open total"] == ["2", "140,000.00", "95,000.00"]
    director = await staff_chat(core, nlu, "director").text("pipeline", "pipeline_summary")
    assert table(director)["Open total"] == ["3", "230,000.00", "162,500.00"]
    south = await staff_chat(core, nlu, "rep.south").text("pipeline this quarter", "pipeline_summary")
    assert table(south)["Open total"] == ["1", "90,000.00", "67,500.00"] and "Proposal" in south


async def test_pipeline_in_chinese_and_empty_period(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    text = await rep.text("本季度的销售漏斗", "pipeline_summary")
    assert text.startswith("2026年第2季度销售漏斗（4月1日（周三） – 6月30日（周二），按预计成交日期）：")
    assert table(text)["商务谈判"] == ["1", "100,000.00", "75,000.00"]
    assert "加权预测：¥95,000.00" in text and "2026年5月：¥75,000.00" in text
    empty = await rep.text("pipeline Q4", "pipeline_summary")
    assert empty == "No deals are expected to close in Q4 2026."


# --- customer_overview ---------------------------------------------------------------------------------


async def acme_with_history(core: Core, world: World) -> None:
    """Contacts, an address, an open request, deals and a visit for ACME."""
    await core.customers.update(world.rep_north, "ACME", CustomerPatch(address="88 Harbour Road"))
    people = (("Li Wei", "purchasing"), ("Wang Fang", "CFO"), ("Zhao Min", ""), ("Chen Jie", "ops"))
    for name, title in people:
        await core.customers.add_contact(world.rep_north, "ACME", ContactIn(name=name, title=title))
    await core.service_desk.open_request(world.agent, ServiceRequestIn(
        customer_code="ACME", subject="Washer leaking", serial_number="WM2023-00917"))
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    await rep.say("visited Acme today, discussed the renewal and the showroom", "log_visit", customer="Acme")
    await rep.say("yes", "affirm")


async def test_customer_overview_for_a_rep_with_section_buttons(core: Core, world: World) -> None:
    await acme_with_history(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    [overview] = await rep.say("show me Acme", "customer_overview", customer="Acme")
    lines = overview.text.splitlines()
    assert lines[:3] == [
        "Acme Corp (ACME)",
        "Reseller · segment retail · new customer · owner rep.north",
        "Address: 88 Harbour Road",
    ]
    assert "Contacts (4):" in lines and "  • Li Wei (purchasing)" in lines
    assert "  • Chen Jie (ops)" not in lines  # the first three only
    assert "  • WM2023-00917 Washing machine WM-2023 — under warranty until Fri 26 Nov 2027" in lines
    assert "  • DW500-00001 Dishwasher DW-500 — warranty ended Sat 9 Jan 2021" in lines
    assert "Open service requests: 1" in lines and "  • SR-1 Washer leaking (new)" in lines
    assert "Open deals: 3, ¥160,000.00" in lines and "Visits (1), latest first:" in lines
    assert '/customer_overview{"customer":"ACME","section":"products"}' in payloads(overview)
    assert '/customer_overview{"customer":"ACME","section":"deals"}' in payloads(overview)

    [deals] = await rep.say('/customer_overview{"customer":"ACME","section":"deals"}')
    assert deals.text.splitlines()[1] == "Open deals: 3, ¥160,000.00"
    assert "  • OP-1 Acme renewal 2026 — Proposal — ¥40,000.00 — closes Tue 30 Jun" in deals.text.splitlines()
    [contacts] = await rep.say('/customer_overview{"customer":"ACME","section":"contacts"}')
    assert "  • Chen Jie (ops)" in contacts.text.splitlines()


async def test_customer_overview_for_technician_and_in_chinese(core: Core, world: World) -> None:
    await acme_with_history(core, world)
    nlu = ScriptedNlu()
    tech = staff_chat(core, nlu, "tech.north")
    [overview] = await tech.say("show me acme", "customer_overview", customer="acme")
    assert overview.text.startswith("Acme Corp (ACME)") and "WM2023-00917" in overview.text
    assert "Open deals" not in overview.text and "Visits" not in overview.text
    assert not any("deals" in payload or "visits" in payload for payload in payloads(overview))

    rep = staff_chat(core, nlu, "rep.north")
    zh = await rep.text("看看Acme", "customer_overview", customer="Acme")
    assert zh.startswith("Acme Corp（ACME）\n经销商 · 细分 retail · 新客户 · 负责人 rep.north")
    assert "保修至 2027年11月26日（周五）" in zh and "进行中商机：3 个，¥160,000.00" in zh


# --- field jobs ----------------------------------------------------------------------------------------


async def job(core: Core, world: World, serial: str, at: datetime | None,
              technician: str = "tech.north") -> str:
    """Open a request for an ACME unit and dispatch a technician; the RO- reference."""
    request = await core.service_desk.open_request(world.agent, ServiceRequestIn(
        customer_code="ACME", subject="Not draining", serial_number=serial))
    order = await core.service_desk.dispatch(world.agent, RepairOrderIn(
        service_request=request.ref, technician=technician, scheduled_at=at))
    return order.ref


TODAY_2PM = datetime(2026, 6, 15, 6, 0, tzinfo=UTC)  # 14:00 in Shanghai
TOMORROW_930 = datetime(2026, 6, 16, 1, 30, tzinfo=UTC)  # 09:30 in Shanghai


async def order(core: Core, number: int) -> RepairOrder:
    """A repair order row."""
    found: RepairOrder = (await rows(core, RepairOrder, RepairOrder.id == number))[0]
    return found


async def test_my_jobs_today_tomorrow_and_this_week(core: Core, world: World) -> None:
    await core.customers.update(world.rep_north, "ACME", CustomerPatch(address="88 Harbour Road"))
    await job(core, world, "WM2023-00917", TODAY_2PM)
    await job(core, world, "DW500-00001", TOMORROW_930)
    nlu = ScriptedNlu()
    tech = staff_chat(core, nlu, "tech.north")
    [today] = await tech.say("my jobs today", "my_jobs")
    assert today.text.splitlines() == [
        "Your jobs today (Mon 15 Jun): 1",
        "• 14:00 RO-1 Acme Corp — 88 Harbour Road — Washing machine WM-2023 (WM2023-00917) — Not draining"
        " — new, not accepted yet",
    ]
    assert [(button.title, button.payload) for button in today.buttons] == [
        ("Accept RO-1", '/accept_job{"job_id":"RO-1"}')]
    tomorrow = await tech.text("what about tomorrow", "my_jobs")
    assert tomorrow.startswith("Your jobs tomorrow (Tue 16 Jun): 1\n• 09:30 RO-2 Acme Corp")
    week = await tech.text("my jobs this week", "my_jobs")
    assert "• Mon 15 Jun 14:00 RO-1" in week and "• Tue 16 Jun 09:30 RO-2" in week
    zh = await tech.text("我今天的工单", "my_jobs")
    assert zh.startswith("您今天（6月15日（周一））的工单：1 个\n• 14:00 RO-1 Acme Corp")
    assert "新工单，待接单" in zh
    assert await staff_chat(core, nlu, "tech.south").text("my jobs", "my_jobs") == (
        "You have no open jobs today (Mon 15 Jun).")
    manager = await staff_chat(core, nlu, "north.manager").text("jobs today", "my_jobs")
    assert "RO-1 Acme Corp" in manager and manager.splitlines()[1].endswith("— tech.north")


async def test_accept_job_by_button_by_guess_and_not_someone_elses(core: Core, world: World,) -> None:
    await core.customers.update(world.rep_north, "ACME", CustomerPatch(address="88 Harbour Road"))
    await job(core, world, "WM2023-00917", TODAY_2PM)
    await job(core, world, "DW500-00001", TOMORROW_930)
    nlu = ScriptedNlu()
    tech = staff_chat(core, nlu, "tech.north")
    south = staff_chat(core, nlu, "tech.south")
    # Another technician's job reads exactly like a job that does not exist.
    theirs = await south.text("accept RO-1", "accept_job", job_id="RO-1")
    missing = await south.text("accept RO-99", "accept_job", job_id="RO-99")
    assert theirs == missing.replace("RO-99", "RO-1") == "I couldn't find job RO-1 among yours."
    assert (await order(core, 1)).status == "dispatched"

    [choice] = await tech.say("accept the job", "accept_job")
    assert choice.text == "Which job do you accept?"
    assert payloads(choice) == ['/accept_job{"job_id":"RO-1"}', '/accept_job{"job_id":"RO-2"}']
    accepted = await tech.text('/accept_job{"job_id":"RO-1"}')
    assert accepted == ("Accepted RO-1: Acme Corp, 88 Harbour Road, Mon 15 Jun 14:00. "
                        "The customer will be told you're coming.")
    first = await order(core, 1)
    assert (first.status, first.accepted_at) == ("accepted", datetime(2026, 6, 15, 2, 0, tzinfo=UTC))
    # Only RO-2 is left to accept, so "accept" alone takes it (in Chinese this time).
    assert (await tech.text("接单", "accept_job")).startswith(
        "已接单 RO-2：Acme Corp，88 Harbour Road，6月16日（周二） 09:30。")
    assert (await order(core, 2)).status == "accepted"
    assert await tech.text("accept", "accept_job") == "You have no new jobs waiting to be accepted."
    assert await tech.text("accept RO-1", "accept_job", job_id="RO-1") == (
        "RO-1 can't be accepted: it is accepted.")


async def accepted_job(core: Core, world: World, serial: str) -> str:
    """A job tech.north has accepted."""
    reference = await job(core, world, serial, TODAY_2PM)
    await core.service_desk.act_on_repair(world.tech_north, reference, RepairActionIn(action="accept"))
    return reference


async def test_complete_job_in_warranty_is_free_and_takes_stock(core: Core, world: World) -> None:
    await accepted_job(core, world, "WM2023-00917")
    nlu = ScriptedNlu()
    tech = staff_chat(core, nlu, "tech.north")
    card = (await tech.say("RO-1 done, replaced pump, part P-100, 45 min", "complete_job",
                           job_id="RO-1", part="P-100"))[-1]
    assert card.text.splitlines() == [
        "Complete RO-1 (Acme Corp)?", "Work: replaced pump, part P-100, 45 min",
        "Parts: 1 × P-100 Drain pump (3 at ST-N)",
        "Labour: 45 min"]
    assert await stock(core, "ST-N", "P-100") == 3
    assert await tech.text("yes", "affirm") == "Completed RO-1. Charge: free under warranty."
    done = await order(core, 1)
    assert (done.status, done.in_warranty, done.total_charge, done.labour_minutes, done.work_summary) == (
        "completed", True, Decimal("0.00"), 45, "replaced pump, part P-100, 45 min")
    used = [(line.quantity, line.unit_price) for line in await rows(core, RepairPart)]
    assert used == [(1, Decimal("180.00"))]
    assert await stock(core, "ST-N", "P-100") == 2
    [request] = await rows(core, ServiceRequest)
    assert request.status == "resolved"


async def test_complete_job_out_of_warranty_is_charged(core: Core, world: World) -> None:
    await accepted_job(core, world, "DW500-00001")
    nlu = ScriptedNlu()
    tech = staff_chat(core, nlu, "tech.north")
    card = (await tech.say("RO-1 done, replaced pump, 2x P-100, 1h", "complete_job", job_id="RO-1",
                           part="P-100"))[-1]
    assert "Parts: 2 × P-100" in card.text and "Labour: 60 min" in card.text
    assert await tech.text("yes", "affirm") == (
        "Completed RO-1. Charge: ¥530.00: parts ¥360.00 + labour ¥170.00.")
    done = await order(core, 1)
    assert (done.in_warranty, done.parts_charge, done.labour_charge, done.total_charge) == (
        False, Decimal("360.00"), Decimal("170.00"), Decimal("530.00"))
    assert await stock(core, "ST-N", "P-100") == 1


async def test_complete_job_in_chinese_asks_labour_with_buttons(core: Core, world: World) -> None:
    await accepted_job(core, world, "WM2023-00917")
    nlu = ScriptedNlu()
    tech = staff_chat(core, nlu, "tech.north")
    card = (await tech.say("RO-1完工，换了排水泵，用了配件P-100，45分钟", "complete_job", job_id="RO-1",
                           part="P-100"))[-1]
    assert card.text.splitlines() == [
        "确认 RO-1（Acme Corp）完工吗？", "维修内容：换了排水泵，用了配件P-100，45分钟",
        "配件：1 × P-100 Drain pump（ST-N 库存 3）",
        "工时：45 分钟"]
    assert await tech.text("取消", "cancel") == "已取消，没有做任何修改。"
    # Without the time it asks, with buttons; the job comes from the conversation.
    [question] = await tech.say("换了排水泵", "complete_job")
    assert question.text == "这次维修用了多长时间？"
    assert payloads(question)[0] == '/complete_job{"labour":"30"}'
    card = (await tech.say('/complete_job{"labour":"90"}'))[-1]
    assert "工时：90 分钟" in card.text and "配件：无" in card.text
    assert await tech.text("是", "affirm") == "RO-1 已完工。费用：保修期内免费。"
    done = await order(core, 1)
    assert (done.status, done.labour_minutes, done.work_summary) == ("completed", 90, "换了排水泵")
    assert await stock(core, "ST-N", "P-100") == 3


async def test_completing_someone_elses_or_unaccepted_job_is_refused(core: Core, world: World) -> None:
    await accepted_job(core, world, "WM2023-00917")
    await job(core, world, "DW500-00001", TOMORROW_930)
    nlu = ScriptedNlu()
    south = staff_chat(core, nlu, "tech.south")
    theirs = await south.text("RO-1 done, replaced pump, part P-100, 30 min", "complete_job",
                              job_id="RO-1", part="P-100")
    missing = await south.text("RO-99 done, replaced pump, part P-100, 30 min", "complete_job",
                               job_id="RO-99", part="P-100")
    assert theirs == missing.replace("RO-99", "RO-1") == "I couldn't find job RO-1 among yours."
    assert await south.text("yes", "affirm") != ""  # nothing pending: a stray yes confirms nothing
    tech = staff_chat(core, nlu, "tech.north")
    [refused] = await tech.say("RO-2 done, replaced the pump, 30 min", "complete_job", job_id="RO-2")
    assert refused.text == "RO-2 hasn't been accepted yet: accept it first, then report it done."
    assert payloads(refused) == ['/accept_job{"job_id":"RO-2"}']
    assert [(row.status, row.total_charge) for row in await rows(core, RepairOrder)] == [
        ("accepted", Decimal("0.00")), ("dispatched", Decimal("0.00"))]
    assert await stock(core, "ST-N", "P-100") == 3 and await count(core, RepairPart) == 0


async def test_unknown_part_short_stock_and_no_change_nothing(core: Core, world: World) -> None:
    await accepted_job(core, world, "DW500-00001")
    nlu = ScriptedNlu()
    tech = staff_chat(core, nlu, "tech.north")
    # A part that does not exist: asked again before any card, with a [No parts used] button.
    asked = await tech.say("RO-1 done, replaced pump, part P-999, 30 min", "complete_job", job_id="RO-1",
                           part="P-999")
    assert asked[-1].text == (
        "There is no part P-999 in the catalogue.\n"
        "Which parts did you use? Write them like “P-100” or “2 x P-110”, or tap No parts.")
    assert [button.title for button in asked[-1].buttons] == ["No parts used"]
    # [No parts used]: the card then says so.
    no_parts = await tech.text(asked[-1].buttons[0].payload)
    assert "Parts: none" in no_parts or "no parts" in no_parts.casefold(), no_parts
    assert "Cancelled" in await tech.text("cancel", "cancel")
    await tech.say("RO-1 done, replaced pump, part P-999, 30 min", "complete_job", job_id="RO-1",
                   part="P-999")
    # More than the station holds: said at once, asked again; nothing taken.
    short = await tech.text("5x P-100", "inform")
    assert short.startswith("ST-N holds only 3 × P-100 (Drain pump); you named 5.")
    assert "Cancelled" in await tech.text("cancel", "cancel")
    await tech.say("RO-1 done, replaced pump, 5x P-100, 30 min", "complete_job", job_id="RO-1", part="P-100")
    card = await tech.text("2 x P-100", "inform")
    assert "Parts: 2 × P-100 Drain pump (3 at ST-N)" in card
    assert "haven't done it" in await tech.text("no", "deny")
    await tech.say("RO-1 done, replaced pump, part P-100, 30 min", "complete_job", job_id="RO-1",
                   part="P-100")
    assert "haven't done it" in await tech.text("no", "deny")
    # Mid-way cancel: the time is asked for, then the technician cancels.
    assert "How long" in await tech.text("RO-1 done, replaced the pump", "complete_job", job_id="RO-1")
    assert "Cancelled" in await tech.text("cancel", "cancel")
    job_row = await order(core, 1)
    assert (job_row.status, job_row.total_charge, job_row.work_summary) == ("accepted", Decimal("0.00"), "")
    assert await stock(core, "ST-N", "P-100") == 3 and await count(core, RepairPart) == 0


# --- out of scope and not understood (issue #12) ----------------------------------------------------


def all_payloads(replies: list[Reply]) -> list[str]:
    """Every button payload of the replies, in order."""
    return [button.payload for reply in replies for button in reply.buttons]


async def test_out_of_scope_gets_cannot_help_with_the_roles_own_suggestions(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    customer = staff_chat(core, nlu, "acme-buyer")
    nlu.expect("out_of_scope", 0.99, ranking=(("out_of_scope", 0.99), ("my_jobs", 0.004)))
    replies = await customer.say("what's the weather tomorrow")
    assert replies[0].text.startswith("Sorry, I can't help with that.")
    assert all_payloads(replies) == ["/check_warranty", "/open_service_request", "/check_request_status",
                                 "/search_knowledge"]
    technician = staff_chat(core, nlu, "tech.north")
    nlu.expect("out_of_scope", 0.99, ranking=(("out_of_scope", 0.99), ("accept_job", 0.01)))
    replies = await technician.say("讲个笑话")
    assert replies[0].text.startswith("抱歉，这个我帮不了您")
    assert all_payloads(replies) == ["/my_jobs", "/accept_job", "/complete_job", "/on_my_way"]
    # Out of scope is no misunderstanding: asked again and again, nobody is handed to a person.
    for _ in range(3):
        nlu.expect("out_of_scope", 0.99)
        assert "/human_handoff" not in all_payloads(await technician.say("tell me a joke"))


async def test_a_guess_is_offered_only_when_the_role_can_use_it(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    nlu.expect("nlu_fallback", 0.3, ranking=(("nlu_fallback", 0.3), ("my_jobs", 0.25), ("list_deals", 0.2),
                                               ("accept_job", 0.15)))
    guess, suggestions = await rep.say("jobz and dealz")
    assert [button.payload for button in guess.buttons] == ["/list_deals"]
    assert [button.payload for button in suggestions.buttons] == ["/log_visit", "/pipeline_summary",
                                                                   "/list_visits"]
    # Noise-level scores are no guess at all: only the role's suggestions.
    nlu.expect("nlu_fallback", 0.2, ranking=(("nlu_fallback", 0.2), ("list_deals", 0.05)))
    [plain] = await rep.say("qwerty")
    assert all_payloads([plain]) == ["/list_deals", "/log_visit", "/pipeline_summary", "/list_visits"]
    # A customer's "my jobs" reads as their requests: that is what is offered to them.
    customer = staff_chat(core, nlu, "acme-buyer")
    nlu.expect("nlu_fallback", 0.3, ranking=(("nlu_fallback", 0.3), ("my_jobs", 0.2), ("dispatch_job", 0.2)))
    replies = await customer.say("wher my thing")
    assert [button.payload for button in replies[0].buttons] == ["/check_request_status"]


def test_asking_for_someones_phone_is_not_asking_for_a_person() -> None:
    assert not smalltalk.asks_for_a_person("Oliver Smith的电话是多少")
    assert not smalltalk.asks_for_a_person("what's Li Na's phone number?")
    asking = ("I want to talk to a person", "转人工", "human please", "please call me back", "给我回个电话",
              "can I speak to your manager")
    for text in asking:
        assert smalltalk.asks_for_a_person(text), text
