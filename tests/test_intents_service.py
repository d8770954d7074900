"""Customer-service intents through the real Assistant, identity links and database, with a scripted NLU."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.assistant import Assistant, RateLimit
from bot.i18n import keys
from bot.messages import Reply
from core.auth import SYSTEM, Actor
from core.clock import FrozenClock
from core.container import Core
from core.schemas import (
    InstalledProductOut,
    KbArticleIn,
    RepairActionIn,
    RepairOrderIn,
    ServiceRequestIn,
    ServiceRequestOut,
    TransitionIn,
)
from tests.chat import Chat, ScriptedNlu
from tests.world import World

ASAP = '/open_service_request{"time": "asap"}'
E13_SOLVED = '/kb_solved{"code": "KB-DW-E13"}'
E13_REPAIR = '/open_service_request{"kb_article_code": "KB-DW-E13"}'


def chat_as(core: Core, sender: str) -> Chat:
    """A chat with the service handlers registered (and no rate limit getting in the way of long scripts)."""
    nlu = ScriptedNlu()
    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=1000, per_second=1000))
    return Chat(assistant=assistant, nlu=nlu, channel="rest", sender=sender)


def texts(replies: list[Reply]) -> str:
    return "\n".join(reply.text for reply in replies)


def payloads(replies: list[Reply]) -> list[str]:
    return [button.payload for reply in replies for button in reply.buttons]


async def requests(core: Core) -> list[ServiceRequestOut]:
    return list((await core.service_desk.list_requests(SYSTEM, limit=100)).items)


async def unit(core: Core, serial: str) -> InstalledProductOut:
    return await core.installed.get(SYSTEM, serial)


async def resolved_request(core: Core, world: World, customer: Actor, serial: str) -> str:
    """A request taken through dispatch, accept, start and completion by the field (now resolved)."""
    opened = await core.service_desk.open_request(
        customer, ServiceRequestIn(subject="Leaking", description="leaking", serial_number=serial)
    )
    order = await core.service_desk.dispatch(world.agent, RepairOrderIn(service_request=opened.ref,
                                                                        technician="tech.north"))
    for action in ("accept", "start"):
        await core.service_desk.act_on_repair(world.tech_north, order.ref, RepairActionIn(action=action))
    await core.service_desk.act_on_repair(
        world.tech_north, order.ref, RepairActionIn(action="complete", work_summary="Replaced the door seal")
    )
    return opened.ref


# --- J1 -------------------------------------------------------------------------------------------


async def test_j1_english_end_to_end_then_status_from_context(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    washer = await unit(core, world.acme_serial)
    replies = await chat.say("my washing machine WM2023-00917 is leaking", "open_service_request",
                             serial_number="WM2023-00917")
    said = texts(replies)
    assert (f"Your washing machine WM-2023 (WM2023-00917) is under warranty until "
            f"{washer.warranty_ends_on.isoformat()} (standard): the repair is free.") in said
    assert "When would you like the technician to come?" in said
    assert payloads(replies) == [ASAP]
    assert await requests(core) == []  # nothing opened before the confirmation

    card = await chat.say("tomorrow at 3pm", "nlu_fallback", time="2026-06-16T15:00:00+08:00")
    assert len(card) == 1
    assert "• Problem: my washing machine WM2023-00917 is leaking" in card[0].text
    assert "• Product: Washing machine WM-2023 · WM2023-00917" in card[0].text
    assert "• Visit: 2026-06-16 15:00" in card[0].text
    assert payloads(card) == ["/affirm", "/deny"]

    done = texts(await chat.say("yes", "affirm"))
    assert "Request SR-1 is opened for your washing machine WM-2023 (WM2023-00917)" in done
    assert "when a technician is assigned" in done
    assert "Your preferred visit time: 2026-06-16 15:00." in done

    [opened] = await requests(core)
    assert (opened.ref, opened.customer_code, opened.serial_number) == ("SR-1", "ACME", "WM2023-00917")
    assert opened.description == "my washing machine WM2023-00917 is leaking"
    assert opened.preferred_time == datetime(2026, 6, 16, 7, 0, tzinfo=UTC)
    assert (opened.channel, opened.kind, opened.severity) == ("rest", "request", "medium")
    assert opened.status == "new"
    assert opened.kb_article_code is None

    status = texts(await chat.say("what's its status?", "check_request_status"))
    assert "SR-1 — Washing machine WM-2023: my washing machine WM2023-00917 is leaking" in status
    assert "Status: received, waiting to be assigned." in status
    assert "Handled by: not assigned yet." in status
    assert "Last update: 2026-06-15 10:00 — request opened." in status
    assert "Your preferred visit time: 2026-06-16 15:00." in status

    visit = datetime(2026, 6, 16, 8, 0, tzinfo=UTC)
    await core.service_desk.dispatch(
        world.agent, RepairOrderIn(service_request="SR-1", technician="tech.north", scheduled_at=visit))
    status = texts(await chat.say("and now?", "check_request_status"))
    assert "Status: assigned." in status
    assert "Handled by: a technician." in status
    assert "Technician visit scheduled for 2026-06-16 16:00." in status
    assert "tech.north" not in status and "agent" not in status  # no internal account names


async def test_j1_chinese_with_as_soon_as_possible(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    washer = await unit(core, world.acme_serial)
    replies = await chat.say("我的洗衣机WM2023-00917漏水了", "open_service_request",
                             serial_number="WM2023-00917")
    said = texts(replies)
    assert f"在保修期内，保修至 {washer.warranty_ends_on.isoformat()}（标准保修）：本次维修免费。" in said
    assert "您希望师傅什么时候上门" in said
    assert [button.title for reply in replies for button in reply.buttons] == ["越快越好"]
    card = await chat.say(ASAP)
    assert "请确认您的报修信息" in card[0].text and "• 上门时间：越快越好" in card[0].text
    assert "• 问题：我的洗衣机WM2023-00917漏水了" in card[0].text
    done = texts(await chat.say("是的", "affirm"))
    assert "已为您的 Washing machine WM-2023（WM2023-00917）创建报修单 SR-1" in done
    [opened] = await requests(core)
    assert opened.description == "我的洗衣机WM2023-00917漏水了"
    assert opened.preferred_time is None and opened.serial_number == "WM2023-00917"
    status = texts(await chat.say("进度怎么样", "check_request_status"))
    assert "SR-1" in status and "已受理，等待派单" in status


async def test_product_buttons_then_description_is_asked(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    replies = await chat.say("I need a repair", "open_service_request")
    assert replies[0].text == "Which appliance is it about?"
    assert [(button.title, button.payload) for button in replies[0].buttons] == [
        ("Dishwasher DW-500 · DW500-00001", "DW500-00001"),
        ("Washing machine WM-2023 · WM2023-00917", "WM2023-00917"),
    ]
    # A kind they do not own is said so (never silently another appliance); they may go on without one.
    not_owned = await chat.say("the fridge")
    assert not_owned[0].text == "I couldn't find “fridge” among the appliances registered on your account."
    other = '/open_service_request{"appliance": "other"}'
    assert payloads(not_owned) == ["DW500-00001", "WM2023-00917", other]
    unclear = await chat.say("hmm")
    assert unclear[0].text == ("I couldn't tell which appliance you mean. "
                               "Tap one below or type its serial number.")
    assert payloads(unclear) == ["DW500-00001", "WM2023-00917"]
    # "I need a repair" says nothing about the problem, so it is asked for.
    assert "describe the problem" in texts(await chat.say("the washing machine"))
    await chat.say("cancel", "cancel")
    await core.conversations.save("rest", "acme-buyer", "rest:acme-buyer", {})  # forget the remembered serial
    asked = await chat.say("repair please", "open_service_request")
    assert payloads(asked) == ["DW500-00001", "WM2023-00917"]
    assert "describe the problem" in texts(await chat.say("WM2023-00917"))  # the button's payload
    said = texts(await chat.say("it bangs loudly when spinning"))
    assert "is under warranty until" in said and "When would you like" in said
    await chat.say("the day after tomorrow", "nlu_fallback", date="2026-06-17")
    card = await chat.say("yes", "affirm")
    assert "SR-1" in card[0].text
    [opened] = await requests(core)
    assert (opened.serial_number, opened.description) == ("WM2023-00917", "it bangs loudly when spinning")
    # A day without a time means the start of the working day, in the customer's timezone.
    assert opened.preferred_time == datetime(2026, 6, 17, 1, 0, tzinfo=UTC)


async def test_remembered_serial_and_unknown_or_foreign_serial_never_leaks(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    foreign = await chat.say("my dishwasher AB12345 is broken", "open_service_request",
                             serial_number="AB12345")
    await chat.say("stop", "cancel")
    unknown = await chat.say("my dishwasher ZZ99999 is broken", "open_service_request",
                             serial_number="ZZ99999")
    # The explanation is said with the question that follows it, on its first line.
    said = "I couldn't find a product with serial number AB12345 on your account."
    assert foreign[0].text.splitlines()[0] == said
    assert unknown[0].text == foreign[0].text.replace("AB12345", "ZZ99999")
    # Both then offer only the customer's own products; nothing about Globex or its dishwasher.
    assert payloads(foreign) == payloads(unknown) == ["DW500-00001", "WM2023-00917"]
    assert "Globex" not in texts(foreign) + texts(unknown)
    await chat.say("stop", "cancel")
    assert await requests(core) == []


async def test_time_in_the_past_is_asked_again(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    first = texts(await chat.say("my washer WM2023-00917 is leaking", "open_service_request",
                                 serial_number="WM2023-00917"))
    assert first.count("under warranty") == 1
    again = await chat.say("yesterday at 9", "nlu_fallback", time="2026-06-14T09:00:00+08:00")
    assert again[0].text == "2026-06-14 09:00 has already passed. Please choose a time in the future."
    assert "under warranty" not in texts(again)  # the warranty is stated once
    assert "When would you like the technician to come?" in again[1].text and payloads(again) == [ASAP]
    muddled = await chat.say("once in a blue moon")
    assert "for example" in muddled[0].text
    card = await chat.say("Monday 10:00", "nlu_fallback", time="2026-06-22T10:00:00+08:00")
    assert "• Visit: 2026-06-22 10:00" in card[0].text
    assert await requests(core) == []


async def test_first_message_with_visit_time_goes_straight_to_the_summary(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    card = await chat.say("my washer WM2023-00917 is leaking, come tomorrow at 3pm", "open_service_request",
                          serial_number="WM2023-00917", time="2026-06-16T15:00:00+08:00")
    assert len(card) == 1 and "• Visit: 2026-06-16 15:00" in card[0].text
    assert "is under warranty until" in card[0].text  # the warranty is still stated before acting
    await chat.say("cancel", "cancel")
    since = await chat.say("my washer WM2023-00917 has leaked since yesterday", "open_service_request",
                           serial_number="WM2023-00917", date="2026-06-14")
    assert "has already passed" not in texts(since) and "When would you like" in texts(since)


async def test_three_bad_times_give_up_without_opening(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    await chat.say("my washer WM2023-00917 is leaking", "open_service_request", serial_number="WM2023-00917")
    for _ in range(2):
        await chat.say("last week", "nlu_fallback", date="2026-06-08")
    stuck = await chat.say("last week", "nlu_fallback", date="2026-06-08")
    assert "I can't use that answer" in texts(stuck)
    assert payloads(stuck) == ["/resume_form", "/help", "/human_handoff", "/drop_form"]
    # What was said is kept: "Try again" (typed, like the button) goes back to the visit-time question.
    assert "When would you like" in texts(await chat.say("try again"))
    assert "Good. What can I do for you?" not in texts(await chat.say("no", "deny"))
    assert await requests(core) == []


@pytest.mark.parametrize("step", ["product", "description", "kb", "time", "confirm", "deny"])
async def test_cancel_at_each_step_creates_nothing(core: Core, world: World, step: str) -> None:
    chat = chat_as(core, "acme-buyer")
    if step == "product":
        assert "Which appliance" in texts(await chat.say("I need a repair", "open_service_request"))
    elif step == "description":
        assert "describe the problem" in texts(await chat.say(
            "repair please", "open_service_request", serial_number="WM2023-00917"))
    elif step == "kb":
        assert payloads(await chat.say("my dishwasher DW500-00001 shows error E13", "open_service_request",
                                       serial_number="DW500-00001")) == [E13_SOLVED, E13_REPAIR]
    else:
        await chat.say("my washer WM2023-00917 is leaking", "open_service_request",
                       serial_number="WM2023-00917")
        if step in ("confirm", "deny"):
            assert payloads(await chat.say(ASAP)) == ["/affirm", "/deny"]
    if step == "deny":
        assert "I haven't done it" in texts(await chat.say("no", "deny"))
    else:
        assert texts(await chat.say("cancel", "cancel")) == "Cancelled. Nothing was changed."
    assert await requests(core) == []
    # The task is gone: a stray "yes" afterwards opens nothing.
    await chat.say("yes", "affirm")
    assert await requests(core) == []


async def test_kb_first_this_solved_it_opens_nothing(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    offer = await chat.say("my dishwasher DW500-00001 shows error E13", "open_service_request",
                           serial_number="DW500-00001")
    assert len(offer) == 1
    assert "Dishwasher shows error E13 (KB-DW-E13)" in offer[0].text
    assert "Reset the heater fuse" in offer[0].text
    assert [button.title for button in offer[0].buttons] == ["This solved it", "Still need a repair"]
    assert payloads(offer) == [E13_SOLVED, E13_REPAIR]
    thanks = texts(await chat.say(E13_SOLVED))
    assert "glad that solved it" in thanks and "Nothing was opened" in thanks
    assert await requests(core) == []
    assert "Good. What can I do for you?" in texts(await chat.say("yes", "affirm"))
    assert await requests(core) == []


async def test_kb_first_still_need_a_repair_links_the_article(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    old = await unit(core, world.acme_old_serial)
    await chat.say("my dishwasher DW500-00001 shows error E13", "open_service_request",
                   serial_number="DW500-00001")
    typed = await chat.say("hmm what")
    assert typed[0].text == "Please tap “This solved it” or “Still need a repair”."
    replies = await chat.say(E13_REPAIR)
    said = texts(replies)
    ended = old.warranty_ends_on.isoformat()
    assert (f"Your dishwasher DW-500 (DW500-00001) is out of warranty since {ended}: "
            "parts and labour are charged.") in said
    assert payloads(replies) == [ASAP]
    card = await chat.say(ASAP)
    assert "• Solution already tried: Dishwasher shows error E13 (KB-DW-E13)" in card[0].text
    assert "• Visit: as soon as possible" in card[0].text
    assert "SR-1" in texts(await chat.say("yes", "affirm"))
    [opened] = await requests(core)
    assert (opened.kb_article_code, opened.serial_number) == ("KB-DW-E13", "DW500-00001")
    assert opened.description == "my dishwasher DW500-00001 shows error E13"


async def test_kb_offer_needs_a_strong_match_on_the_same_product(core: Core, world: World) -> None:
    await core.knowledge.upsert(SYSTEM, KbArticleIn(
        code="KB-WM-LEAK", title="Washing machine leaking water", category="washing_machine/leaks",
        product_code="WM-2023", symptoms="Water on the floor under the washer, leak during the wash",
        solution="Check that the door seal is clean and the drain hose is pushed in firmly."))
    chat = chat_as(core, "acme-buyer")
    strong = await chat.say("my washing machine WM2023-00917 is leaking", "open_service_request",
                            serial_number="WM2023-00917")
    assert "Washing machine leaking water (KB-WM-LEAK)" in strong[0].text
    assert payloads(strong) == ['/kb_solved{"code": "KB-WM-LEAK"}',
                               '/open_service_request{"kb_article_code": "KB-WM-LEAK"}']
    await chat.say("cancel", "cancel")
    # A vague description only loosely related to an article goes straight on to the visit.
    weak = texts(await chat.say("the display on my washing machine WM2023-00917 is dark",
                                "open_service_request",
                                serial_number="WM2023-00917"))
    assert "This may fix it" not in weak and "When would you like" in weak
    await chat.say("cancel", "cancel")
    # E13 is a dishwasher code: its article is no fix for a washing machine showing E13.
    other_product = texts(await chat.say("my washing machine WM2023-00917 shows error E13",
                                         "open_service_request", serial_number="WM2023-00917"))
    assert "KB-DW-E13" not in other_product and "When would you like" in other_product


async def test_staff_names_a_customer_and_technicians_cannot_open(core: Core, world: World) -> None:
    agent = chat_as(core, "agent")
    asked = texts(await agent.say("open a request for ACME", "open_service_request", customer="ACME"))
    assert "describe the problem" in asked
    said = texts(await agent.say("the dishwasher in their staff kitchen floods the floor"))
    assert "under warranty" not in said and "When would you like" in said
    card = await agent.say(ASAP)
    assert "• Customer: ACME" in card[0].text and "• Product: not specified" in card[0].text
    await agent.say("yes", "affirm")
    [opened] = await requests(core)
    assert (opened.customer_code, opened.serial_number) == ("ACME", None)
    # The customer is remembered for the next request; a fresh conversation asks for one.
    assert "describe the problem" in texts(await agent.say("another one", "open_service_request"))
    await agent.say("cancel", "cancel")
    await core.conversations.save("rest", "agent", "rest:agent", {})
    unknown = await agent.say("open a request", "open_service_request")
    assert unknown[0].text == ("Which product (serial number) or which customer (code or name) "
                               "is this request for?")
    assert "couldn't find a product or a customer" in texts(await agent.say("Initech"))

    tech = chat_as(core, "tech.north")
    refused = texts(await tech.say("my washer WM2023-00917 leaks", "open_service_request",
                                   serial_number="WM2023-00917"))
    assert "isn't something I can do for a technician" in refused
    assert len(await requests(core)) == 1


# --- J2 -------------------------------------------------------------------------------------------


async def test_j2_own_other_unknown_serial_and_staff(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    washer, old = await unit(core, world.acme_serial), await unit(core, world.acme_old_serial)
    covered = await chat.say("is WM2023-00917 still under warranty?", "check_warranty",
                             serial_number="WM2023-00917")
    assert covered[0].text == (f"✅ Washing machine WM-2023 (WM2023-00917) is covered until "
                               f"{washer.warranty_ends_on.isoformat()} (standard warranty), "
                               f"{washer.days_left} days left.")
    assert payloads(covered) == ['/open_service_request{"serial_number": "WM2023-00917"}']
    expired = texts(await chat.say("and DW500-00001?", "check_warranty", serial_number="DW500-00001"))
    assert f"expired on {old.warranty_ends_on.isoformat()}" in expired
    assert "parts and labour are charged" in expired and "extended warranty" in expired

    other = await chat.say("is AB12345 still under warranty?", "check_warranty", serial_number="AB12345")
    unknown = await chat.say("is QQ77777 still under warranty?", "check_warranty", serial_number="QQ77777")
    assert other[0].text.splitlines()[0] == ("I couldn't find a product with serial number AB12345 on your "
                                             "account. Please check the number on the label.")
    # The first names the serial with the question (a note); the second, an answer to that question, is told
    # on its own before the question is asked again: the same words either way.
    assert unknown[0].text == other[0].text.splitlines()[0].replace("AB12345", "QQ77777")
    assert payloads(other) == payloads(unknown)
    assert "Globex" not in texts(other) and "Dishwasher DW-500 (AB12345)" not in texts(other)

    agent = chat_as(core, "agent")
    staff = texts(await agent.say("warranty AB12345", "check_warranty", serial_number="AB12345"))
    assert "✅ Dishwasher DW-500 (AB12345) is covered until" in staff and "Customer: Globex Ltd." in staff


async def test_j2_context_carry_over_and_product_buttons(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    await chat.say("my washer WM2023-00917 is leaking", "open_service_request", serial_number="WM2023-00917")
    await chat.say("never mind", "cancel")
    follow_up = texts(await chat.say("and its warranty?", "check_warranty"))
    assert "Washing machine WM-2023 (WM2023-00917) is covered until" in follow_up
    # Naming another of one's appliances beats the remembered serial.
    other = texts(await chat.say("my dishwasher won't drain", "open_service_request"))
    assert "Your dishwasher DW-500 (DW500-00001) is out of warranty" in other
    await chat.say("never mind", "cancel")

    fresh = chat_as(core, "acme-buyer")
    fresh.sender = "acme-buyer"
    await core.conversations.save("rest", "acme-buyer", "rest:acme-buyer", {})  # forget the context
    asked = await fresh.say("is my appliance under warranty?", "check_warranty")
    assert asked[0].text == "Which appliance do you want to check?"
    buttons = [(button.title, button.payload) for button in asked[0].buttons]
    assert buttons == [
        ("Dishwasher DW-500 · DW500-00001", '/check_warranty{"serial_number": "DW500-00001"}'),
        ("Washing machine WM-2023 · WM2023-00917", '/check_warranty{"serial_number": "WM2023-00917"}'),
    ]
    answer = texts(await fresh.say(buttons[0][1]))
    assert "❌ The warranty of Dishwasher DW-500 (DW500-00001) expired on" in answer


async def test_j2_chinese(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    said = texts(await chat.say("DW500-00001还在保修期吗", "check_warranty", serial_number="DW500-00001"))
    assert "的保修已于" in said and "过保后维修需收取配件费和人工费" in said


# --- J3 -------------------------------------------------------------------------------------------


async def test_j3_error_code_solutions_then_repair_carries_the_article(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    found = await chat.say("error E13 on my dishwasher", "search_knowledge")
    assert found[0].text == "Here's what I found:"
    assert found[1].text.startswith("Dishwasher shows error E13 (KB-DW-E13)\nReset the heater fuse")
    # "my dishwasher" names the customer's dishwasher: the repair button carries it.
    repair = '/open_service_request{"kb_article_code": "KB-DW-E13", "serial_number": "DW500-00001"}'
    assert payloads(found[1:2]) == [E13_SOLVED, repair]
    assert [button.title for button in found[1].buttons] == ["This solved it", "Open a repair request"]

    # The dishwasher named is the one, and the search is the description: only the visit time is asked.
    replies = await chat.say(repair)
    said = texts(replies)
    assert "Your dishwasher DW-500 (DW500-00001) is out of warranty" in said
    assert "When would you like" in said and "This may fix it" not in said
    card = await chat.say(ASAP)
    assert "• Problem: error E13 on my dishwasher" in card[0].text
    await chat.say("yes", "affirm")
    [opened] = await requests(core)
    assert (opened.kb_article_code, opened.serial_number, opened.description) == (
        "KB-DW-E13", "DW500-00001", "error E13 on my dishwasher")


async def test_j3_solved_chinese_and_nothing_found(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    found = await chat.say("洗碗机显示E13", "search_knowledge")
    assert found[0].text == "为您找到以下解决方法：" and "KB-DW-E13" in found[1].text
    assert [button.title for button in found[1].buttons] == ["已解决", "申请维修"]
    assert "太好了" in texts(await chat.say(E13_SOLVED))
    nothing = await chat.say("my toaster sings opera at midnight", "search_knowledge")
    assert nothing[0].text.startswith("Sorry, I couldn't find a solution for that.")
    assert payloads(nothing) == ["/open_service_request", "/human_handoff"]
    assert await requests(core) == []


# --- J4 -------------------------------------------------------------------------------------------


async def test_j4_angry_complaint_is_high_with_two_hour_sla(
    core: Core, world: World, clock: FrozenClock
) -> None:
    chat = chat_as(core, "acme-buyer")
    card = await chat.say("your technician was rude and two hours late", "file_complaint")
    assert "“your technician was rude and two hours late”" in card[0].text
    assert payloads(card) == ["/affirm", "/deny"]
    done = texts(await chat.say("yes", "affirm"))
    assert "Your complaint SR-1 is registered: a service manager will respond within 2 hours." in done
    assert "urgent" in done
    [complaint] = await requests(core)
    assert (complaint.kind, complaint.severity, complaint.channel) == ("complaint", "high", "rest")
    assert complaint.description == "your technician was rude and two hours late"
    assert complaint.response_due_at == clock.now() + timedelta(hours=2)


async def test_j4_calm_complaint_is_medium_and_related_request_named(core: Core, world: World) -> None:
    earlier = await core.service_desk.open_request(
        world.acme_customer, ServiceRequestIn(subject="Noise", serial_number=world.acme_serial))
    chat = chat_as(core, "acme-buyer")
    asked = texts(await chat.say("I want to make a complaint", "file_complaint", ticket_id=earlier.ref))
    assert "Please tell me what happened" in asked
    card = await chat.say("the technician did not bring the spare part he promised")
    assert f"About request {earlier.ref}." in card[0].text
    done = texts(await chat.say("yes", "affirm"))
    assert "respond within 4 hours" in done and "urgent" not in done
    complaint = next(item for item in await requests(core) if item.kind == "complaint")
    assert complaint.severity == "medium"
    assert complaint.serial_number == world.acme_serial
    assert complaint.description.endswith(f"Related request: {earlier.ref}")


async def test_j4_chinese_safety_complaint(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    await chat.say("维修后洗衣机冒烟了，太危险了", "file_complaint")
    done = texts(await chat.say("是", "affirm"))
    assert "服务经理会在2小时内回复您" in done and "拔掉电源" in done
    [complaint] = await requests(core)
    assert complaint.severity == "high"
    refused = texts(await chat_as(core, "agent").say("complain", "file_complaint"))
    assert "isn't something I can do" in refused


# --- status ---------------------------------------------------------------------------------------


async def test_status_lists_only_own_open_requests(core: Core, world: World) -> None:
    desk = core.service_desk
    theirs = await desk.open_request(
        world.globex_customer, ServiceRequestIn(subject="Globex washer", serial_number=world.globex_serial))
    first = await desk.open_request(world.acme_customer, ServiceRequestIn(subject="Washer noise"))
    second = await desk.open_request(world.acme_customer, ServiceRequestIn(subject="Dishwasher E13"))
    chat = chat_as(core, "acme-buyer")
    listed = await chat.say("what about my requests?", "check_request_status")
    assert listed[0].text == "Your open requests — tap one to see its status:"
    assert payloads(listed) == [f'/check_request_status{{"ticket_id": "{second.ref}"}}',
                                f'/check_request_status{{"ticket_id": "{first.ref}"}}']
    assert listed[0].buttons[0].title == f"{second.ref} · Dishwasher E13 (received, waiting to be assigned)"
    shown = texts(await chat.say(payloads(listed)[1]))
    assert f"{first.ref} — Washer noise" in shown

    foreign = texts(await chat.say(f"status of {theirs.ref}", "check_request_status", ticket_id=theirs.ref))
    missing = texts(await chat.say("status of SR-999", "check_request_status", ticket_id="SR-999"))
    template = "I couldn't find request {}. Please check the number (it looks like SR-12)."
    assert (foreign, missing) == (template.format(theirs.ref), template.format("SR-999"))
    assert "Globex" not in foreign

    globex = chat_as(core, "globex.buyer")
    await desk.transition(world.agent, theirs.ref, TransitionIn(action="assign", assignee="agent"))
    shown = texts(await globex.say(f"status {theirs.ref}", "check_request_status", ticket_id=theirs.ref))
    assert "Handled by: our service team." in shown and "agent" not in shown.replace("assigned", "")
    staff = texts(await chat_as(core, "agent").say(f"status {theirs.ref}", "check_request_status",
                                                   ticket_id=theirs.ref))
    assert "Handled by: agent." in staff


async def test_status_with_no_requests(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    said = await chat.say("any open tickets?", "check_request_status")
    assert said[0].text.startswith("You have no open requests.") and said[0].buttons == ()


async def test_status_of_my_requests_lists_them_all_not_the_one_remembered(core: Core, world: World) -> None:
    desk = core.service_desk
    opened = [await desk.open_request(world.acme_customer, ServiceRequestIn(subject=f"Case {n}"))
              for n in range(3)]
    chat = chat_as(core, "acme-buyer")
    assert "Case 0" in texts(await chat.say(f"status of {opened[0].ref}", "check_request_status",
                                            ticket_id=opened[0].ref))
    listed = await chat.say("status of my requests", "check_request_status")
    newest_first = [f'/check_request_status{{"ticket_id": "{item.ref}"}}' for item in reversed(opened)]
    assert payloads(listed) == newest_first
    # A remembered request the customer cannot see is no answer either: their own are listed.
    theirs = await desk.open_request(world.globex_customer, ServiceRequestIn(subject="Globex case"))
    remembered = {"context": {"ticket_id": theirs.ref}}
    await core.conversations.save("rest", "acme-buyer", "rest:acme-buyer", remembered)
    again = await chat.say("status?", "check_request_status")
    assert len(payloads(again)) == 3 and "Globex" not in texts(again) and theirs.ref not in texts(again)


async def test_where_is_my_technician_reads_own_jobs_not_the_last_request(core: Core, world: World) -> None:
    desk = core.service_desk
    chat = chat_as(core, "acme-buyer")
    assert texts(await chat.say("where is my technician?", "check_request_status")).startswith(
        "No technician is on the way to you")
    mine = await desk.open_request(world.acme_customer, ServiceRequestIn(subject="Washer leaks",
                                                                          serial_number=world.acme_serial))
    visit = datetime(2026, 6, 16, 2, 0, tzinfo=UTC)
    order = await desk.dispatch(world.agent, RepairOrderIn(service_request=mine.ref, technician="tech.north",
                                                           scheduled_at=visit))
    await desk.act_on_repair(world.tech_north, order.ref, RepairActionIn(action="accept"))
    theirs = await desk.open_request(world.globex_customer, ServiceRequestIn(subject="Globex case"))
    await chat.say(f"status of {theirs.ref}", "check_request_status", ticket_id=theirs.ref)
    said = texts(await chat.say("where is my technician?", "check_request_status"))
    assert said == f"{mine.ref} · Washer leaks: Tech North will come on 2026-06-16 10:00."
    await desk.act_on_repair(world.tech_north, order.ref, RepairActionIn(
        action="depart", eta=datetime(2026, 6, 15, 2, 30, tzinfo=UTC)))
    assert "Tech North is on the way, arriving about 2026-06-15 10:30" in texts(
        await chat.say("when is the technician coming?", "check_request_status"))


async def test_a_second_request_for_the_same_appliance_offers_the_open_one(core: Core, world: World) -> None:
    first = await core.service_desk.open_request(
        world.acme_customer, ServiceRequestIn(subject="Washer leaks", serial_number=world.acme_serial))
    chat = chat_as(core, "acme-buyer")
    asked = await chat.say("my washing machine is leaking again", "open_service_request")
    assert asked[0].text == (f"You already have {first.ref} open for your washing machine WM-2023 "
                             f"(WM2023-00917): Washer leaks — received, waiting to be assigned. "
                             f"Shall I add this to {first.ref}, or open a new request?")
    assert [button.title for button in asked[0].buttons] == [
        f"Add to {first.ref}", "Open a new one anyway", f"Check {first.ref}"]
    card = await chat.say("add it to that one")
    assert card[0].text.startswith(f"I'll add this to {first.ref} (Washer leaks):")
    assert texts(await chat.say("yes", "affirm")).startswith(f"Added to {first.ref}")
    [only] = await requests(core)
    detail = await core.service_desk.get_request(SYSTEM, only.ref)
    note = detail.history[-1]
    assert (note.action, note.comment) == ("comment", "my washing machine is leaking again")

    again = await chat.say("my washing machine is leaking again", "open_service_request")
    assert payloads(again)[1] == '/open_service_request{"duplicate": "new"}'
    assert "When would you like" in texts(await chat.say(payloads(again)[1]))


async def test_warranty_by_kind_in_chinese_beats_the_remembered_serial(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    await chat.say("DW500-00001还在保修期吗", "check_warranty", serial_number="DW500-00001")
    said = texts(await chat.say("我的洗衣机还在保修期吗？", "check_warranty"))
    assert "WM2023-00917" in said and "DW500-00001" not in said
    typo = await chat.say("is WM2023-0917 under warranty?", "check_warranty", serial_number="WM2023-0917")
    assert typo[0].text == "I couldn't find WM2023-0917 on your account. Did you mean WM2023-00917?"
    assert payloads(typo) == ['/check_warranty{"serial_number": "WM2023-00917"}']


# --- rating ---------------------------------------------------------------------------------------


async def test_rating_bad_values_then_good(core: Core, world: World) -> None:
    ticket = await resolved_request(core, world, world.acme_customer, world.acme_serial)
    chat = chat_as(core, "acme-buyer")
    nothing = texts(await chat.say("I want to rate the service", "rate_service"))
    assert nothing == ("There's nothing to rate right now: "
                       "you'll get a short survey once a request is finished.")
    named = texts(await chat.say(f"rate {ticket}", "rate_service", ticket_id=ticket))
    assert named.startswith(f"There's nothing to rate yet for {ticket}")
    await core.surveys.create_for_request(world.agent, ticket)

    asked = await chat.say("I want to rate the service", "rate_service")
    assert asked[0].text == f"How would you rate our service for {ticket}? 1 is poor, 5 is excellent."
    assert [(button.title, button.payload) for button in asked[0].buttons] == [
        ("⭐1", "1"), ("⭐2", "2"), ("⭐3", "3"), ("⭐4", "4"), ("⭐5", "5")]
    for bad in ("7", "ten"):
        again = await chat.say(bad)
        assert again[0].text == "Please pick a rating from 1 to 5 stars." and len(again[1].buttons) == 5
    rated = await chat.say("5")
    assert rated[0].text == f"Thank you! You rated {ticket} ⭐⭐⭐⭐⭐."
    assert rated[1].text.startswith(f"Anything you'd like to add about {ticket}?")
    [survey] = (await core.surveys.list(world.admin)).items
    assert (survey.status, survey.score, survey.service_request_ref) == ("answered", 5, ticket)
    already = texts(await chat.say(f"rate {ticket} 4", "rate_service", ticket_id=ticket, rating="4"))
    assert already == f"{ticket} is already rated — thank you!"


async def test_rating_choice_among_several_and_low_score(core: Core, world: World) -> None:
    first = await resolved_request(core, world, world.acme_customer, world.acme_serial)
    second = await resolved_request(core, world, world.acme_customer, world.acme_old_serial)
    for ticket in (first, second):
        await core.surveys.create_for_request(world.agent, ticket)
    still_open = await core.service_desk.open_request(world.acme_customer,
                                                      ServiceRequestIn(subject="Open one"))
    chat = chat_as(core, "acme-buyer")
    assert "isn't finished yet" in texts(await chat.say("rate it", "rate_service", ticket_id=still_open.ref))
    asked = await chat.say("rate my service", "rate_service")
    assert asked[0].text == "Which request would you like to rate?"
    assert payloads(asked) == [f'/rate_service{{"ticket_id": "{second}"}}',
                               f'/rate_service{{"ticket_id": "{first}"}}']
    stars = await chat.say(payloads(asked)[1])
    assert first in stars[0].text
    said = texts(await chat.say("2 stars", "nlu_fallback", rating="2"))
    assert said.startswith(f"Thank you! You rated {first} ⭐⭐.") and "service manager" in said
    scores = {item.service_request_ref: item.score for item in (await core.surveys.list(world.admin)).items}
    assert scores == {first: 2, second: None}


# --- hand-off -------------------------------------------------------------------------------------


async def test_handoff_creates_a_task_for_an_agent(core: Core, world: World) -> None:
    chat = chat_as(core, "acme-buyer")
    await chat.say("my toaster sings opera at midnight", "search_knowledge")
    said = texts(await chat.say("/human_handoff"))
    assert said == "I've asked a colleague to contact you; they'll reply here or call you within the hour."
    [task] = await core.sales.tasks(world.agent)
    assert task.kind == "handoff" and task.assignee == "agent"
    assert "rest" in task.title and "my toaster sings opera at midnight" in task.title
    zh = texts(await chat_as(core, "acme-buyer").say("转人工", "human_handoff"))
    assert "我已请同事联系您" in zh
    assert len(await core.sales.tasks(world.agent)) == 2


def test_catalogs_cover_every_service_key_in_both_languages() -> None:
    english, chinese = keys("en"), keys("zh")
    prefixes = ("service_request.", "complaint.", "status.", "warranty.", "kb.", "rating.", "handoff.")
    ours = {key for key in english if key.startswith(prefixes)}
    assert len(ours) > 100
    assert ours == {key for key in chinese if key.startswith(prefixes)}
