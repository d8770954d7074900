"""Sales in chat (J5, J6): visits with outcome and contacts, the follow-up reminder, my/team visits, new
deals, probability and close date, my/team deals, bad input, and the events the alert rules read."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.assistant import Assistant, RateLimit
from bot.i18n import keys, t
from bot.intents import all_handlers
from bot.intents.sales import contacts_met, match_contact, next_step
from bot.messages import IncomingMessage, Reply
from bot.nlu.embedded import EmbeddedNlu
from bot.nlu.types import INTENTS, Entity, ParseResult
from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import Core
from core.db.models import (
    Customer,
    Notification,
    Opportunity,
    OpportunityChange,
    OutboxEvent,
    Task,
    User,
    Visit,
)
from core.domain.enums import CustomerType
from core.schemas import ContactIn, CustomerIn, OpportunityIn, VisitIn
from notifier.alerts import AlertRules, load_rules
from tests.chat import ScriptedNlu, nlu_for
from tests.notify import deliver_to_files
from tests.test_intents_staff import count, deal, expect, make_deals, payloads, rows, staff_chat
from tests.world import World


@pytest.fixture(scope="module")
def rules() -> AlertRules:
    return load_rules(None)


async def alerts(core: Core, rules: AlertRules) -> list[tuple[str, str, dict[str, Any]]]:
    """Run the alert rules over every event not looked at yet: (recipient, rule kind, context)."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    async with core.uow() as uow:
        session = uow.session
        events = (
            await session.execute(
                select(OutboxEvent).where(OutboxEvent.processed_at.is_(None)).order_by(OutboxEvent.id)
            )
        ).scalars()
        for event in events:
            for message in await rules(session, event):
                user = await session.get(User, message.target.user_id)
                assert user is not None
                found.append((user.username, message.kind, message.context))
        await session.execute(update(OutboxEvent).values(processed_at=core.clock.now()))
        await uow.commit()
    return found


async def events(core: Core, kind: str) -> list[OutboxEvent]:
    """Outbox events of one type, in order."""
    return await rows(core, OutboxEvent, OutboxEvent.event_type == kind)


async def set_customer(core: Core, code: str, **values: Any) -> None:
    """Change a customer row directly (tier, created_at): what the value model and time would do."""
    async with core.uow() as uow:
        await uow.session.execute(update(Customer).where(Customer.code == code).values(**values))
        await uow.commit()


# --- visits: outcome, contacts, the follow-up reminder ------------------------------------------------


async def test_visit_outcome_contacts_and_the_reminder_on_the_day(
    core: Core, world: World, clock: FrozenClock
) -> None:
    for name in ("Li Wei", "Zhang Min", "Chen Jie", "Chen Hao"):
        await core.customers.add_contact(SYSTEM, "ACME", ContactIn(name=name))
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    text = (
        "visited Acme today with Li, Chen and Ms Zhang, outcome: they'll order 20 units, "
        "next step send quote by Friday"
    )
    expect(nlu, "log_visit", ("customer", "Acme"), ("date", "2026-06-15"), ("date", "2026-06-19"))
    card = (await rep.say(text))[-1]
    lines = card.text.splitlines()
    # Li and Ms Zhang are known contacts; two contacts are called Chen, so "Chen" stays as written.
    assert "Met: Li Wei, Chen, Zhang Min" in lines
    assert "Outcome: they'll order 20 units" in lines
    assert lines[-1] == "Follow-up: send quote — due Fri 19 Jun"
    assert await count(core, Visit) == 0
    await rep.say("yes", "affirm")
    [visit] = await rows(core, Visit)
    assert (visit.outcome, visit.contacts_met, visit.next_step) == (
        "they'll order 20 units",
        ["Li Wei", "Chen", "Zhang Min"],
        "send quote",
    )
    [task] = await rows(core, Task)
    assert task.due_at == datetime(2026, 6, 19, 1, 0, tzinfo=UTC)

    # The reminder: nothing the day before, one on the day (09:00 Shanghai is due), and only once.
    assert await core.care.task_reminders(datetime(2026, 6, 18, 3, 0, tzinfo=UTC)) == 0
    clock.set(datetime(2026, 6, 19, 0, 30, tzinfo=UTC))
    assert await core.care.task_reminders(clock.now()) == 1
    assert await core.care.task_reminders(clock.now()) == 0
    await deliver_to_files(core)
    [note] = await rows(core, Notification, Notification.kind == "task_due")
    assert (note.user_id, note.status) == (world.rep_north.user_id, "sent")
    assert "send quote" in str(note.context)


async def test_visit_outcome_and_contacts_in_chinese(core: Core, world: World) -> None:
    await core.customers.add_contact(SYSTEM, "ACME", ContactIn(name="李明", lang="zh"))
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    text = "今天拜访了Acme，和李总、王经理聊了续约，结果：他们同意下个月下单，下一步周五前发报价"
    card = (await rep.say(text, "log_visit", customer="Acme"))[-1]
    assert "见到：李明, 王经理" in card.text  # 李总 is 李明; 王经理 is not on record and stays as said
    assert "结果：他们同意下个月下单" in card.text and "跟进：发报价，截止 6月19日（周五）" in card.text
    await rep.say("是", "affirm")
    [visit] = await rows(core, Visit)
    assert (visit.outcome, visit.contacts_met) == ("他们同意下个月下单", ["李明", "王经理"])


# --- list_visits -----------------------------------------------------------------------------------------


async def log(core: Core, actor: Any, code: str, day: date, summary: str, **extra: Any) -> None:
    """A visit logged through the core service."""
    await core.sales.log_visit(actor, VisitIn(customer_code=code, visited_on=day, summary=summary, **extra))


async def test_my_visits_this_week_last_week_and_in_march(core: Core, world: World) -> None:
    await log(
        core,
        world.rep_north,
        "ACME",
        date(2026, 6, 15),
        "discussed renewal",
        contacts_met=["Li Wei"],
        next_step="send quote",
        outcome="order likely",
    )
    await log(core, world.rep_north, "ACME", date(2026, 6, 9), "showroom layout review")
    await log(core, world.rep_north, "ACME", date(2026, 3, 10), "first meeting")
    await log(core, world.rep_south, "GLOBEX", date(2026, 6, 15), "laundry project")
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    week = await rep.text("my visits this week", "list_visits")
    assert week.splitlines() == [
        "Your visits this week (Mon 15 Jun – Sun 21 Jun): 1",
        "• Mon 15 Jun · Acme Corp — met Li Wei — discussed renewal — outcome: order likely"
        " → next: send quote",
    ]
    last = await rep.text("what visits did I log last week", "list_visits")
    assert last.splitlines() == [
        "Your visits last week (Mon 8 Jun – Sun 14 Jun): 1",
        "• Tue 9 Jun · Acme Corp — showroom layout review",
    ]
    march = await rep.text("visits in March", "list_visits")
    assert march.splitlines()[0] == "Your visits Mar 2026 (Sun 1 Mar – Tue 31 Mar): 1"
    assert "first meeting" in march and "Globex" not in week + last + march
    assert await rep.text("my visits yesterday", "list_visits") == (
        "You have no visits logged yesterday (Sun 14 Jun)."
    )
    # A rep asking for the team gets their own, and why.
    team = await rep.text("visits of my team this week", "list_visits")
    assert team.splitlines()[:2] == [
        "Team views are for managers, so here are your own.",
        "Your visits this week (Mon 15 Jun – Sun 21 Jun): 1",
    ]
    assert "Key customers" not in team
    zh = await rep.text("我本周的拜访", "list_visits")
    assert zh.splitlines()[0] == "您本周（6月15日（周一） – 6月21日（周日））的拜访：1 次"


async def test_team_visits_by_rep_and_unvisited_key_customers_agree_with_the_alert(
    core: Core, world: World, clock: FrozenClock
) -> None:
    await core.customers.create(
        SYSTEM,
        CustomerIn(code="ACME-K", name="Acme Kitchen Supplies", type=CustomerType.END, owner="rep.north"),
    )
    long_ago = clock.now() - timedelta(days=60)
    for code in ("ACME", "ACME-K", "GLOBEX"):
        await set_customer(core, code, tier="key", created_at=long_ago)
    await log(core, world.rep_north, "ACME", date(2026, 6, 15), "discussed renewal")
    await log(core, world.north_manager, "ACME", date(2026, 6, 16) - timedelta(days=1), "joint visit")
    await log(core, world.rep_south, "GLOBEX", date(2026, 4, 1), "old visit")
    nlu = ScriptedNlu()
    manager = staff_chat(core, nlu, "north.manager")
    text = await manager.text("visits of my team this week", "list_visits")
    assert text.splitlines() == [
        "Your team's visits this week (Mon 15 Jun – Sun 21 Jun): 2",
        "north.manager (1):",
        "• Mon 15 Jun · Acme Corp — joint visit",
        "rep.north (1):",
        "• Mon 15 Jun · Acme Corp — discussed renewal",
        "Key customers not visited for 30+ days:",
        "• Acme Kitchen Supplies (rep.north) — never visited",
    ]
    # The director sees both branches: Globex's last visit was 75 days ago.
    director = staff_chat(core, nlu, "director")
    seen = await director.text("团队本周的拜访", "list_visits")
    assert seen.splitlines()[0] == "团队本周（6月15日（周一） – 6月21日（周日））的拜访：2 次"
    assert seen.splitlines()[-3:] == [
        "超过 30 天未拜访的重点客户：",
        "• Globex Ltd（rep.south）— 上次拜访 4月1日（周三）",
        "• Acme Kitchen Supplies（rep.north）— 从未拜访",
    ]
    # The alert sweep raises exactly those two.
    assert await core.watch.unvisited_key_customers(clock.now(), 30) == 2
    raised = {event.aggregate_id for event in await events(core, "KeyCustomerNotVisited")}
    async with core.session_factory() as session:
        codes = set((await session.execute(select(Customer.code).where(Customer.id.in_(raised)))).scalars())
    assert codes == {"ACME-K", "GLOBEX"}


# --- new deals --------------------------------------------------------------------------------------------


async def test_new_deal_in_english_with_card_history_and_event(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    card = (
        await rep.say(
            "new deal with Acme: 80 dishwashers, 120k, closing end of March",
            "update_deal",
            amount="120000.00",
            date="2027-03-31",
        )
    )[-1]
    assert card.text.splitlines() == [
        "Create this new deal?",
        "Customer: Acme Corp (ACME)",
        "Deal: 80 dishwashers",
        "Amount: ¥120,000.00",
        "Stage: Qualification (10% probability)",
        "Expected close: Wed 31 Mar 2027",
    ]
    assert payloads(card) == ["/affirm", "/deny"] and await count(core, Opportunity) == 0
    [done] = await rep.say("yes", "affirm")
    assert done.text == (
        "Created OP-1 “80 dishwashers” for Acme Corp: Qualification, ¥120,000.00, 10%. "
        "Expected to close Wed 31 Mar 2027."
    )
    assert payloads(done) == ['/update_deal{"deal":"OP-1"}']
    created = await deal(core, 1)
    assert (
        created.name,
        created.stage,
        created.amount,
        created.probability,
        created.expected_close,
        created.owner_id,
    ) == (
        "80 dishwashers",
        "qualification",
        Decimal("120000.00"),
        10,
        date(2027, 3, 31),
        world.rep_north.user_id,
    )
    [history] = await rows(core, OpportunityChange)
    assert (history.field, history.new_value) == ("created", "qualification 120000.00")
    assert len(await events(core, "OpportunityCreated")) == 1


async def test_new_deal_in_chinese_asks_which_customer_with_buttons(core: Core, world: World) -> None:
    for code, name in (("CUS-0012", "北京华联商厦有限公司"), ("CUS-0016", "华联超市")):
        await core.customers.create(
            SYSTEM, CustomerIn(code=code, name=name, type=CustomerType.END, owner="rep.north")
        )
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    # The NLU reads "成交" as a stage; for a new deal it says when it closes, not that it is won.
    [question] = await rep.say(
        "给华联新建一个商机，洗碗机80台，12万，3月底成交",
        "update_deal",
        amount="120000.00",
        date="2027-03-31",
        stage="closed_won",
    )
    assert question.text == "可能是您的好几个客户。\n您指的是哪个客户？"
    assert payloads(question) == [
        '/update_deal{"customer":"CUS-0012"}',
        '/update_deal{"customer":"CUS-0016"}',
    ]
    card = (await rep.say('/update_deal{"customer":"CUS-0012"}'))[-1]
    assert card.text.splitlines() == [
        "新建这个商机吗？",
        "客户：北京华联商厦有限公司（CUS-0012）",
        "商机：洗碗机80台",
        "金额：¥120,000.00",
        "阶段：资格确认（赢率 10%）",
        "预计成交：2027年3月31日（周三）",
    ]
    assert (await rep.text("是", "affirm")).startswith("已为 北京华联商厦有限公司 新建 OP-1“洗碗机80台”")
    assert ((await deal(core, 1)).stage, (await deal(core, 1)).expected_close) == (
        "qualification",
        date(2027, 3, 31),
    )


async def test_new_deal_asks_for_what_is_missing_and_no_creates_nothing(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.south")
    assert await rep.text("create a deal for Globex", "update_deal") == (
        "What is the amount exactly? For example 50000, 50k or 5万."
    )
    assert await rep.text("fifty-ish") == (
        "I need an exact amount, and “fifty-ish” isn't one.\n"
        "What is the amount exactly? For example 50000, 50k or 5万."
    )
    [close] = await rep.say("60k")
    assert close.text.startswith("When is it expected to close?") and payloads(close) == ["/deny"]
    assert await rep.text("2026-06-01", date="2026-06-01") == (
        "Mon 1 Jun is in the past; an open deal needs a close date from today on. Nothing was changed.\n"
        'When is it expected to close? For example "end of March" or "30 June".'
    )
    assert await rep.text("none") == 'What should the deal be called? For example "80 dishwashers".'
    card = (await rep.say("laundry upgrade"))[-1]
    assert card.text.splitlines()[1:] == [
        "Customer: Globex Ltd (GLOBEX)",
        "Deal: laundry upgrade",
        "Amount: ¥60,000.00",
        "Stage: Qualification (10% probability)",
        "Expected close: not set yet",
    ]
    assert "haven't done it" in await rep.text("no", "deny")
    assert await count(core, Opportunity) == 0
    # Another team's customer is not found for a new deal either.
    answer = await rep.text("new deal with Acme, 50k", "update_deal", customer="Acme", amount="50000.00")
    assert answer.startswith("I couldn't find a customer matching “Acme” among your customers.")
    assert "cancel" in (await rep.text("cancel", "cancel")).casefold()
    assert await count(core, Opportunity) == 0


# --- updates: probability, close date, bad input ---------------------------------------------------------


async def test_probability_change_and_one_out_of_range(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    card = (await rep.say("set probability of OP-1 to 80%", "update_deal"))[-1]
    assert card.text.splitlines() == [
        "Update OP-1 “Acme renewal 2026” (Acme Corp)?",
        "Probability: 50% → 80%",
    ]
    await rep.say("yes", "affirm")
    changed = await deal(core, 1)
    assert (changed.probability, changed.amount) == (80, Decimal("40000.00"))  # 80% is not an amount
    history = await rows(core, OpportunityChange, OpportunityChange.opportunity_id == 1)
    assert [(row.field, row.old_value, row.new_value) for row in history[1:]] == [("probability", "50", "80")]
    # 100% is neither an amount of 100 nor out of range.
    card = (await rep.say("OP-2 probability 100%", "update_deal", amount="100.00"))[-1]
    assert card.text.splitlines()[1:] == ["Probability: 10% → 100%"]
    await rep.say("cancel", "cancel")
    question = await rep.text("OP-1 chance of winning 150%", "update_deal")
    assert question == (
        "A probability is a whole number from 0 to 100, and “150%” isn't one. Nothing was changed.\n"
        "What is the win probability? A number from 0 to 100, for example 60%."
    )
    assert (await rep.text("-5")).startswith("A probability is a whole number from 0 to 100")
    card = (await rep.say("赢率百分之六十"))[-1]
    assert card.text.splitlines()[1:] == ["赢率：80% → 60%"]
    await rep.say("no", "deny")
    assert (await deal(core, 1)).probability == 80


async def test_close_date_in_the_past_is_refused_for_an_open_deal(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    question = await rep.text("push OP-1 close date to 1 June", "update_deal", date="2026-06-01")
    assert question == (
        "The close date is not changed: Mon 1 Jun is in the past, and an open deal needs a close date from "
        'today on.\nWhat is the new expected close date? For example "end of March".'
    )
    card = (await rep.say("30 July", "nlu_fallback", 0.3, date="2026-07-30"))[-1]
    assert card.text.splitlines()[1:] == ["Expected close: Tue 30 Jun → Thu 30 Jul"]
    await rep.say("yes", "affirm")
    assert (await deal(core, 1)).expected_close == date(2026, 7, 30)
    # Won last week: a past date is fine for a deal that closes.
    card = (
        await rep.say("OP-2 won, signed on 10 June", "update_deal", stage="closed_won", date="2026-06-10")
    )[-1]
    assert card.text.splitlines()[1:] == [
        "Stage: Qualification → Won",
        "Expected close: Sat 15 Aug → Wed 10 Jun",
    ]


async def test_bad_stage_vague_amount_and_a_deal_out_of_scope_change_nothing(
    core: Core, world: World
) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    [question] = await rep.say("move Acme renewal to stage banana", "update_deal", stage="banana")
    assert question.text.startswith("“banana” isn't a stage I know.")
    assert payloads(question) == [
        f'/update_deal{{"stage":"{stage}"}}'
        for stage in (
            "qualification",
            "needs_analysis",
            "proposal",
            "negotiation",
            "closed_won",
            "closed_lost",
        )
    ]
    await rep.say("cancel", "cancel")
    vague = await rep.text("OP-1 is fifty-ish now", "update_deal")
    assert vague.startswith("I need an exact amount, and “fifty-ish” isn't one.")
    await rep.say("cancel", "cancel")
    south = staff_chat(core, nlu, "rep.south")
    answer = await south.text("set probability of OP-1 to 90%", "update_deal")
    assert answer.startswith("I couldn't find deal OP-1 among yours.") and "Acme" not in answer
    await south.say("cancel", "cancel")
    assert await count(core, OpportunityChange) == 5  # only the "created" entries
    assert ((await deal(core, 1)).stage, (await deal(core, 1)).probability) == ("proposal", 50)


# --- issue #12: grounding, what is said now, partly refused changes, visits to come -----------------------


async def test_a_deal_named_by_words_that_match_none_is_said_never_replaced(core: Core, world: World) -> None:
    await make_deals(core, world)
    await core.customers.create(SYSTEM, CustomerIn(
        code="RENJI", name="仁济医院", type=CustomerType.PUBLIC, owner="rep.south"))
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    # The deal talked about before (OP-1) is not taken for a hospital deal the rep does not have.
    await rep.say("move OP-1 to negotiation", "update_deal", stage="negotiation")
    await rep.say("no", "deny")
    [reply] = await rep.say("mark the hospital deal as won", "update_deal", stage="closed_won")
    assert reply.text.startswith("I couldn't find an open deal of yours matching “hospital”.\nWhich deal?")
    await rep.say("cancel", "cancel")
    await core.sales.create_opportunity(world.rep_south, OpportunityIn(
        customer_code="RENJI", name="年度维保合同", amount=Decimal("15600"), expected_close=date(2026, 9, 1)))
    south = staff_chat(core, nlu, "rep.south")
    card = (await south.say("mark the hospital deal as won", "update_deal", stage="closed_won"))[-1]
    assert card.text.splitlines()[:2] == [
        "Update OP-6 “年度维保合同” (仁济医院)?", "Stage: Qualification → Won"]


async def test_another_deal_named_mid_form_takes_the_place_of_the_first(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    assert (await rep.text("update OP-1", "update_deal")).startswith("What should change on OP-1")
    assert (await rep.text("mark OP-2 as lost", "update_deal", stage="closed_lost")).endswith(
        "Why was the deal lost?")
    await rep.say("budget cut")
    card = (await rep.say("none", "deny"))[-1]
    assert card.text.splitlines()[:2] == ["Update OP-2 “Acme new showroom” (Acme Corp)?",
                                          "Stage: Qualification → Lost"]
    # At the card too; and a deal the rep may not see is reported, the first one is not changed instead.
    answer = await rep.text("no, OP-5", "deny")
    assert "I couldn't find deal OP-5 among yours.\nWhich deal?" in answer and "Update OP-2" not in answer
    await rep.say("cancel", "cancel")
    assert ((await deal(core, 1)).stage, (await deal(core, 2)).stage) == ("proposal", "qualification")


async def test_a_partly_refused_change_is_said_on_the_card(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    card = (await rep.say("update OP-1: probability 40%, close date last month", "update_deal"))[-1]
    assert card.text.splitlines() == [
        "Update OP-1 “Acme renewal 2026” (Acme Corp)?",
        "Probability: 50% → 40%",
        "The close date is not changed: last month is in the past, and an open deal needs a close date from "
        "today on.",
        "Tell me another close date, or say yes to go on without it.",
    ]
    assert [button.title for button in card.buttons] == ["Yes, without the date", "No"]
    await rep.say("/affirm")
    changed = await deal(core, 1)
    assert (changed.probability, changed.expected_close) == (40, date(2026, 6, 30))
    # Only a refused date: asked again; stage and probability said instead are taken, the date kept.
    assert (await rep.text("OP-2 close date 1 June", "update_deal", date="2026-06-01")).startswith(
        "The close date is not changed: Mon 1 Jun is in the past")
    card = (await rep.say("set OP-2 to proposal, probability 60%", "update_deal", stage="proposal"))[-1]
    assert card.text.splitlines() == [
        "The close date stays as it is.", "Update OP-2 “Acme new showroom” (Acme Corp)?",
        "Stage: Qualification → Proposal", "Probability: 10% → 60%"]


async def test_the_next_steps_own_date_is_its_due_date(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    text = "今天拜访了Acme，聊了明年空调备货，下一步下周三前发报价"
    expect(nlu, "log_visit", ("customer", "Acme"), ("date", "2026-06-15"), ("date", "2027-01-01"),
           ("date", "2026-06-24"))
    card = (await rep.say(text))[-1]
    assert "跟进：发报价，截止 6月24日（周三）" in card.text and "2027" not in card.text
    await rep.say("是", "affirm")
    [task] = await rows(core, Task)
    assert task.due_at == datetime(2026, 6, 24, 1, 0, tzinfo=UTC)


async def test_a_visit_to_come_offers_a_follow_up_task_instead(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    card = (await rep.say("I will visit Acme on 20 June", "log_visit", customer="Acme",
                          date="2026-06-20"))[-1]
    assert card.text.splitlines() == [
        "Visit plans can't be logged yet — only visits that have happened.",
        "I can add a follow-up task instead: Visit Acme Corp",
        "Due: Sat 20 Jun",
        "Shall I add it to your tasks?",
    ]
    assert payloads(card) == ["/affirm", "/deny"]
    assert await rep.text("yes", "affirm") == (
        "Added the follow-up task “Visit Acme Corp”, due Sat 20 Jun; you'll be reminded on the day.")
    assert await count(core, Visit) == 0
    [task] = await rows(core, Task)
    assert (task.title, task.kind, task.assignee_id, task.due_at) == (
        "Visit Acme Corp", "follow_up", world.rep_north.user_id, datetime(2026, 6, 20, 1, 0, tzinfo=UTC))
    # In Chinese, and "no" adds nothing.
    card = (await rep.say("下周二去拜访Acme", "log_visit", customer="Acme", date="2026-06-23"))[-1]
    assert card.text.splitlines()[0] == "目前还不能记录拜访计划，只能记录已经完成的拜访。"
    await rep.say("不用了", "deny")
    assert await count(core, Task) == 1


# --- list_deals ------------------------------------------------------------------------------------------


async def test_my_deals_filters_overdue_and_update_buttons(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    [mine] = await rep.say("my deals", "list_deals")
    assert mine.text.splitlines() == [
        "Your deals (open), by close date: 3",
        "• OP-3 Acme service contract · Acme Corp — Negotiation, ¥100,000.00, 75%, closes Wed 20 May"
        " ⚠ overdue",
        "• OP-1 Acme renewal 2026 · Acme Corp — Proposal, ¥40,000.00, 50%, closes Tue 30 Jun",
        "• OP-2 Acme new showroom · Acme Corp — Qualification, ¥20,000.00, 10%, closes Sat 15 Aug",
    ]
    assert [(button.title, button.payload) for button in mine.buttons] == [
        ("Update OP-3", '/update_deal{"deal":"OP-3"}'),
        ("Update OP-1", '/update_deal{"deal":"OP-1"}'),
        ("Update OP-2", '/update_deal{"deal":"OP-2"}'),
    ]
    month = await rep.text("deals closing this month", "list_deals")
    assert (
        month.splitlines()[0]
        == "Your deals (open, closing this month (Mon 1 Jun – Tue 30 Jun)), by close date: 1"
    )
    assert "OP-1" in month and "OP-3" not in month
    assert "OP-3" in await rep.text("my deals in negotiation", "list_deals", stage="negotiation")
    over = await rep.text("deals over 100k", "list_deals", amount="100000.00")
    assert over.splitlines()[0] == "Your deals (open, from ¥100,000.00), by close date: 1"
    won = await rep.text("my won deals", "list_deals", stage="closed_won")
    assert "OP-4" in won and "OP-1" not in won
    assert (await rep.text("deals closing next month", "list_deals")) == (
        "Your deals: none open, closing next month (Wed 1 Jul – Fri 31 Jul)."
    )
    zh = await rep.text("本月成交的商机", "list_deals")
    assert (
        zh.splitlines()[0]
        == "您的商机（进行中，本月（6月1日（周一） – 6月30日（周二））成交），按预计成交日期：1 个"
    )
    # A button opens the update of that deal.
    question = await rep.text('/update_deal{"deal":"OP-3"}')
    assert question.startswith("OP-3 Acme service contract（目前商务谈判")  # the language of the last words
    await rep.say("cancel", "cancel")
    # A rep asking for the team gets their own and a clear word.
    team = await rep.text("my team's deals", "list_deals")
    assert team.splitlines()[:2] == [
        "Team views are for managers, so here are your own.",
        "Your deals (open), by close date: 3",
    ]


async def test_team_deals_for_managers_are_their_subtree_only(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    north = staff_chat(core, nlu, "north.manager")
    team = await north.text("my team's deals", "list_deals")
    assert team.splitlines()[0] == "Your team's deals (open), by close date: 3"
    assert "· rep.north" in team and "OP-5" not in team and "Globex" not in team
    assert await north.text("my deals", "list_deals") == "Your deals: none open."
    director = staff_chat(core, nlu, "director")
    everyone = await director.text("团队的商机", "list_deals")
    assert "OP-5" in everyone and "· rep.south" in everyone and "⚠ 已逾期" in everyone


# --- the events the alert rules read ----------------------------------------------------------------------


async def test_a_big_deal_won_in_chat_alerts_the_managers(
    core: Core, world: World, rules: AlertRules
) -> None:
    await make_deals(core, world)
    await alerts(core, rules)  # the creations are old news
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    await rep.say("OP-3 won, 120k", "update_deal", stage="closed_won", amount="120000.00")
    await rep.say("yes", "affirm")
    [stage_event] = await events(core, "OpportunityStageChanged")
    assert (stage_event.payload["to_stage"], stage_event.payload["amount"]) == ("closed_won", "120000.00")
    assert len(await events(core, "OpportunityAmountChanged")) == 1
    found = await alerts(core, rules)
    assert [(username, context["deal"], context["to_stage"]) for username, _kind, context in found] == [
        ("north.manager", "OP-3", "closed_won")
    ]
    # A small change alerts nobody.
    await rep.say("OP-2 to proposal", "update_deal", stage="proposal")
    await rep.say("yes", "affirm")
    assert await alerts(core, rules) == []


# --- with the real NLU ------------------------------------------------------------------------------------

# The shipped training data of the intents these messages could be taken for (a small model trains fast).
NLU_INTENTS = frozenset({
    "list_visits", "list_deals", "update_deal", "log_visit", "pipeline_summary", "customer_overview",
    "my_jobs", "affirm", "deny", "cancel", "greet", "out_of_scope",
})


@pytest.fixture(scope="module")
def real_nlu() -> EmbeddedNlu:
    return nlu_for(NLU_INTENTS)


async def test_what_sales_people_type_is_understood(
    core: Core, world: World, real_nlu: EmbeddedNlu
) -> None:
    await make_deals(core, world)
    await log(core, world.rep_north, "ACME", date(2026, 6, 15), "discussed renewal")
    assistant = Assistant(core, real_nlu, rate_limit=RateLimit(burst=1000, per_second=1000))

    async def say(sender: str, text: str) -> Reply:
        replies = await assistant.handle(IncomingMessage(channel="rest", sender_id=sender, text=text))
        return replies[-1]

    first_lines = [
        ("rep.north", "my deals", "Your deals (open), by close date: 3"),
        ("rep.north", "deals closing this month",
         "Your deals (open, closing this month (Mon 1 Jun – Tue 30 Jun)), by close date: 1"),
        ("rep.north", "my deals in negotiation", "Your deals (in Negotiation), by close date: 1"),
        ("rep.north", "deals over 100k", "Your deals (open, from ¥100,000.00), by close date: 1"),
        ("north.manager", "my team's deals", "Your team's deals (open), by close date: 3"),
        ("rep.north", "my visits this week", "Your visits this week (Mon 15 Jun – Sun 21 Jun): 1"),
        ("north.manager", "团队本周的拜访", "团队本周（6月15日（周一） – 6月21日（周日））的拜访：1 次"),
        ("rep.north", "本月成交的商机",
         "您的商机（进行中，本月（6月1日（周一） – 6月30日（周二））成交），按预计成交日期：1 个"),
    ]
    for sender, text, expected in first_lines:
        assert (await say(sender, text)).text.splitlines()[0] == expected, text

    card = await say("rep.north", "new deal with Acme: 80 dishwashers, 120k, closing end of March")
    assert card.text.splitlines()[2:] == [
        "Deal: 80 dishwashers", "Amount: ¥120,000.00", "Stage: Qualification (10% probability)",
        "Expected close: Wed 31 Mar 2027"]
    assert (await say("rep.north", "yes")).text.startswith("Created OP-6 “80 dishwashers” for Acme Corp")
    card = await say("rep.north", "给Acme新建一个商机，洗碗机80台，12万，3月底成交")
    assert card.text.splitlines()[2:] == [
        "商机：洗碗机80台", "金额：¥120,000.00", "阶段：资格确认（赢率 10%）",
        "预计成交：2027年3月31日（周三）"]
    await say("rep.north", "算了")
    stages = await say("rep.north", "move OP-1 to stage banana")
    assert stages.text.startswith("“banana” isn't a stage I know.") and len(stages.buttons) == 6
    await say("rep.north", "cancel")
    assert (await deal(core, 1)).stage == "proposal" and await count(core, Opportunity) == 6


def test_help_and_fallback_names_cover_the_new_intents() -> None:
    assert t("en", "intent_names.list_visits") == "My visits"
    assert t("zh", "intent_names.list_deals") == "我的商机"
    assert "my visits this week" in t("en", "help.rep") and "团队本周的拜访" in t("zh", "help.manager")
    assert "new deal with Acme" in t("en", "help.rep") and "新建" in t("zh", "help.rep")
    assert {"list_visits", "list_deals"} <= set(INTENTS)
    assert {"list_visits", "list_deals"} <= {handler.intent for handler in all_handlers()}
    en = {key for key in keys("en") if key.split(".")[0] in ("sales", "visit", "deal")}
    assert en == {key for key in keys("zh") if key.split(".")[0] in ("sales", "visit", "deal")}


def test_people_met_are_read_in_the_order_said() -> None:
    assert contacts_met("visited Acme, met Li Na and Tom Baker about the renewal") == ["Li Na", "Tom Baker"]
    said = "visited Acme today with Li, Chen and Ms Zhang, outcome: ok"
    assert contacts_met(said) == ["Li", "Chen", "Ms Zhang"]
    assert contacts_met("今天拜访了Acme，见了Li Na，谈了续约的事") == ["Li Na"]
    assert contacts_met("今天见到王总和李经理，聊了续约") == ["王总", "李经理"]
    assert contacts_met("我们同意下个月下单") == []  # 同意 is agreeing, not "with"
    assert match_contact("Mr Chen", ["Chen Jie", "Li Wei"]) == "Chen Jie"
    assert match_contact("李总", ["李明", "王强"]) == "李明" and match_contact("Bob", ["Li Wei"]) == "Bob"


@pytest.mark.parametrize(
    ("text", "step"),
    [
        ("visited Acme, next step send quote by Friday", "send quote"),
        ("next step: call Li tomorrow at 3pm", "call Li"),
        ("next steps are to send the contract by the 20th", "send the contract"),
        ("next step follow up end of month", "follow up"),
        ("next step prepare the demo for next Tuesday", "prepare the demo"),
        ("下一步下周三前发报价", "发报价"),
        ("下一步：明天下午3点前给李总打电话", "给李总打电话"),
        ("下一步3月底前签合同", "签合同"),
    ],
)
def test_the_next_step_without_the_words_of_its_date(text: str, step: str) -> None:
    # The date words are found by the NLU's date rules, the same that give the step its due date.
    assert next_step(text)[0] == step


async def test_a_close_date_said_as_a_month_is_its_last_day(core: Core, world: World) -> None:
    await make_deals(core, world)
    nlu = ScriptedNlu()
    rep = staff_chat(core, nlu, "rep.north")
    nlu.queued.append(ParseResult(text="", intent="update_deal", confidence=0.97, entities=(
        Entity(entity="date", value="2026-07-01", start=4, end=7, text="下个月"),
        Entity(entity="stage", value="closed_won", start=7, end=9, text="成交")),
        ranking=(("update_deal", 0.97),)))
    card = (await rep.say("OP-1下个月成交"))[-1]
    # "下个月成交" says when it closes (the end of next month), not that it is won.
    assert card.text.splitlines()[1:] == ["预计成交：6月30日（周二） → 7月31日（周五）"]
