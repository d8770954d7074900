"""Dialogue machinery through the real Assistant pipeline and REST identity, with a scripted NLU."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.assistant import Assistant, RateLimit
from bot.dialogue import STATE_VERSION, State, pressed_button
from bot.messages import Reply
from core.auth import SYSTEM
from core.container import Core
from core.errors import NotFound
from tests.chat import Chat, ScriptedNlu, make_chat
from tests.world import World


async def test_unlinked_sender_gets_only_the_linking_hint(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    stranger = make_chat(core, nlu, "nobody-knows-me")
    replies = await stranger.say("is AB12345 still under warranty?")
    assert len(replies) == 1 and "not linked" in replies[0].text
    assert "AB12345" not in replies[0].text
    assert nlu.seen == []  # nothing was even parsed
    zh = await stranger.say("AB12345还在保修吗")
    assert "没有关联" in zh[0].text


async def test_greet_help_and_fallback_buttons(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    chat = make_chat(core, nlu, "acme-buyer")
    assert "Hello Acme Buyer" in await chat.text("hi", "greet")
    help_text = await chat.text("what can you do", "help")
    assert "Request a repair" in help_text and "Log a visit" not in help_text
    nlu.expect(
        "nlu_fallback",
        0.3,
        ranking=(("nlu_fallback", 0.3), ("check_warranty", 0.25), ("greet", 0.2), ("search_knowledge", 0.1)),
    )
    replies = await chat.say("blorp")
    assert [button.payload for button in replies[0].buttons] == ["/check_warranty", "/search_knowledge"]
    await chat.say("zzz")
    offer = await chat.say("qqq")
    assert [button.payload for button in offer[0].buttons] == ["/human_handoff"]


async def test_chinese_message_gets_chinese_reply(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    chat = make_chat(core, nlu, "acme-buyer")
    assert "您好" in await chat.text("你好", "greet")
    assert "没有进行中的操作" in await chat.text("取消", "cancel")
    # Emoji only: no words, so the conversation's language (Chinese, from before) is kept.
    assert "抱歉" in await chat.text("😀😀")


async def test_bad_input_never_raises(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    chat = make_chat(core, nlu, "acme-buyer")
    for junk in [
        "",
        "   ",
        "\x00\x01\x02",
        "😀" * 50,
        "x" * 10_000,
        "'; DROP TABLE customers; --",
        "<script>alert(1)</script>",
        "**bold** _x_ [a](http://e)",
        "/open_service_request{bad json",
    ]:
        replies = await chat.say(junk)
        assert replies and all(reply.text for reply in replies)
        assert all("Traceback" not in reply.text for reply in replies)


async def test_rate_limit_per_sender(core: Core, world: World) -> None:
    from bot.assistant import Assistant, RateLimit
    from tests.chat import Chat

    nlu = ScriptedNlu()
    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=2, per_second=0.001))
    flooder = Chat(assistant=assistant, nlu=nlu, channel="rest", sender="acme-buyer")
    other = Chat(assistant=assistant, nlu=nlu, channel="rest", sender="rep.north")
    assert "Hello" in await flooder.text("hi", "greet")
    assert "Hello" in await flooder.text("hi", "greet")
    nlu.queued.clear()
    assert "faster than I can keep up" in await flooder.text("hi")
    assert "Hello" in await other.text("hi", "greet")  # another sender is not affected


async def test_half_filled_request_survives_a_restart(core: Core, world: World) -> None:
    from bot.assistant import Assistant
    from tests.chat import Chat

    nlu = ScriptedNlu()
    before = Chat(assistant=Assistant(core, nlu), nlu=nlu, channel="rest", sender="acme-buyer")
    asked = await before.text(
        "my washer WM2023-00917 leaks", "open_service_request", serial_number="WM2023-00917"
    )
    assert "When would you like the technician to come?" in asked
    after = Chat(
        assistant=Assistant(core, nlu), nlu=nlu, channel="rest", sender="acme-buyer"
    )  # a new process
    summary = await after.say("tomorrow 10am", "inform", time="2026-06-16T10:00:00+08:00")
    assert [button.payload for button in summary[-1].buttons][:2] == ["/affirm", "/deny"]
    assert "SR-1" in await after.text("/affirm")


async def test_a_redelivered_message_is_answered_once(core: Core, world: World) -> None:
    from bot.assistant import Assistant
    from bot.messages import IncomingMessage

    nlu = ScriptedNlu()
    assistant = Assistant(core, nlu)
    message = IncomingMessage(channel="rest", sender_id="acme-buyer", text="hi", message_id="m-1")
    nlu.expect("greet")
    assert len(await assistant.handle(message)) == 1
    assert await assistant.handle(message) == []


async def test_a_photo_goes_with_the_request_it_was_sent_for(core: Core, world: World) -> None:
    from bot.assistant import Assistant
    from bot.messages import Attachment, IncomingMessage

    png = b"\x89PNG\r\n\x1a\n" + b"0" * 100
    nlu = ScriptedNlu()
    assistant = Assistant(core, nlu)

    async def send(text: str, *files: Attachment) -> str:
        replies = await assistant.handle(
            IncomingMessage(channel="rest", sender_id="acme-buyer", text=text, attachments=files)
        )
        return "\n".join(reply.text for reply in replies)

    photo = Attachment(kind="photo", filename="leak.png", content_type="image/png", data=png)
    nlu.expect("open_service_request", serial_number="WM2023-00917")
    assert "When would you like" in await send("my washer WM2023-00917 leaks, see photo", photo)
    nlu.expect("inform", time="2026-06-16T10:00:00+08:00")
    await send("tomorrow 10am")
    opened = await send("/affirm")
    assert "SR-1" in opened and "📎 1 file added to SR-1." in opened
    detail = await core.service_desk.get_request(world.agent, "SR-1")
    assert [(file.filename, file.content_type, file.size) for file in detail.attachments] == [
        ("leak.png", "image/png", len(png))
    ]
    assert detail.history[-1].action == "attach"
    # A second photo without a caption goes to the request in context; a text file is refused.
    assert "📎 1 file added to SR-1." in await send("", Attachment("photo", "more.png", "image/png", png))
    refused = await send("", Attachment("document", "notes.exe", "application/octet-stream", b"MZ"))
    assert "Only photos and PDF documents" in refused
    # Nobody else sees the files: another customer cannot even see the request.
    with pytest.raises(NotFound):
        await core.service_desk.get_request(world.globex_customer, "SR-1")


async def test_a_no_that_is_no_answer_stops_the_task(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    chat = make_chat(core, nlu, "acme-buyer")
    asked = await chat.text(
        "my washer WM2023-00917 leaks", "open_service_request", serial_number="WM2023-00917"
    )
    assert "When would you like the technician to come?" in asked
    assert "Cancelled. Nothing was changed." in await chat.text("no forget it", "deny")
    assert (await core.service_desk.list_requests(world.agent)).total == 0


# --- Every message is read first (docs/dialogue.md): corrections, interruptions, typed labels, stuck forms


def _texts(replies: list[Reply]) -> str:
    titles = [button.title for reply in replies for button in reply.buttons]
    return "\n".join([reply.text for reply in replies] + titles)


def _chat(core: Core, sender: str = "acme-buyer") -> Chat:
    nlu = ScriptedNlu()
    return Chat(
        assistant=Assistant(core, nlu, rate_limit=RateLimit(burst=1000, per_second=1000)),
        nlu=nlu,
        channel="rest",
        sender=sender,
    )


async def _at_confirmation(chat: Chat) -> str:
    await chat.say("我的洗衣机WM2023-00917漏水", "open_service_request", serial_number="WM2023-00917")
    return await chat.text("明天上午10点", "nlu_fallback", time="2026-06-16T10:00:00+08:00")


async def test_a_new_time_at_the_confirmation_updates_the_card_and_keeps_the_draft(
    core: Core, world: World
) -> None:
    chat = _chat(core)
    card = await _at_confirmation(chat)
    assert "2026-06-16 10:00" in card
    # Reads like a technician's "reschedule" (not for customers), yet it corrects this form's time.
    again = _texts(await chat.say(
        "时间改成后天下午3点", "reschedule_job", 0.95, date="2026-06-17", time="2026-06-17T15:00:00+08:00"
    ))
    assert "不对客户开放" not in again
    assert "已更新" in again and "2026-06-17 15:00" in again and "2026-06-16 10:00" not in again
    done = await chat.text("是", "affirm")
    assert "SR-1" in done
    [opened] = (await core.service_desk.list_requests(SYSTEM, limit=5)).items
    assert opened.preferred_time == datetime(2026, 6, 17, 7, 0, tzinfo=UTC)


async def test_a_correction_that_does_not_fit_is_explained_and_the_old_value_kept(
    core: Core, world: World
) -> None:
    chat = _chat(core)
    await _at_confirmation(chat)
    refused = await chat.text("change it to yesterday 3pm", "nlu_fallback", time="2026-06-14T15:00:00+08:00")
    assert "has already passed" in refused
    assert "2026-06-16 10:00" in refused  # the card again, with the time that still holds
    assert "SR-1" in await chat.text("yes", "affirm")


async def test_another_request_is_served_and_the_unfinished_form_offered_back(
    core: Core, world: World
) -> None:
    chat = _chat(core)
    await chat.say("my washer WM2023-00917 is leaking", "open_service_request", serial_number="WM2023-00917")
    served = await chat.say(
        "is it still under warranty?", "check_warranty", 0.95, serial_number="WM2023-00917"
    )
    text = _texts(served)
    assert "WM2023-00917" in text and "warranty" in text.lower()
    assert "We were in the middle of: Request a repair" in text
    assert [b.payload for b in served[-1].buttons] == ["/resume_form", "/drop_form"]
    # The offer is made once; typing the button's label acts like the button.
    back = await chat.text("continue")
    assert "When would you like" in back
    card = await chat.text("tomorrow 10am", "nlu_fallback", time="2026-06-16T10:00:00+08:00")
    assert "2026-06-16 10:00" in card
    assert "SR-1" in await chat.text("yes", "affirm")


async def test_a_kept_form_can_be_dropped(core: Core, world: World) -> None:
    chat = _chat(core)
    await chat.say("my washer WM2023-00917 is leaking", "open_service_request", serial_number="WM2023-00917")
    await chat.say("hello", "greet", 0.99)
    assert "OK, I've dropped it" in await chat.text("Drop it")
    assert "There's nothing to go back to" in await chat.text("/resume_form")
    assert (await core.service_desk.list_requests(SYSTEM, limit=5)).items == []


async def test_a_command_is_never_taken_as_the_answer(core: Core, world: World) -> None:
    chat = _chat(core)
    asked = await chat.text("I need a repair", "open_service_request")
    assert "Which appliance" in asked
    # A confident other request with words beyond a value is served, not read as the appliance.
    served = _texts(
        await chat.say("show me the status of SR-7", "check_request_status", 0.93, ticket_id="SR-7")
    )
    assert "Which appliance" not in served.split("We were in the middle of")[0]
    assert "We were in the middle of" in served


async def test_a_typed_button_label_acts_as_the_button(core: Core, world: World) -> None:
    chat = _chat(core)
    offer = await chat.say(
        "my dishwasher DW500-00001 shows error E13", "open_service_request", serial_number="DW500-00001"
    )
    solved = next(b for reply in offer for b in reply.buttons if b.payload.startswith("/kb_solved"))
    # Typed, with another case and no punctuation, the label presses the button: no NLU involved.
    reply = await chat.text(solved.title.upper().rstrip("!.✅ "))
    assert "nothing in progress" not in reply.lower()
    assert chat.nlu.seen[-1][0] != solved.title.upper()


def test_pressed_button_matching() -> None:
    buttons = [("✅ This solved it", "/kb_solved"), ("Open a repair request", "/open"), ("Yes", "/affirm")]
    assert pressed_button(buttons, "this solved it") == "/kb_solved"
    assert pressed_button(buttons, "This solvd it!") == "/kb_solved"  # a typo on a long label
    assert pressed_button(buttons, "YES") == "/affirm"
    assert pressed_button(buttons, "ye") is None  # short labels must match exactly
    assert pressed_button(buttons, "open a repair request for my fridge") is None
    assert pressed_button([("Accept RO-1", "/a1"), ("Accept RO-7", "/a7")], "Accept RO-4") is None
    assert pressed_button([], "yes") is None


def test_state_versions_upgrade_and_newer_ones_are_not_trusted() -> None:
    old = {"active": "check_warranty", "slots": {"serial": "X"}, "awaiting": "serial", "context": {"a": "b"}}
    upgraded = State.from_json(old)
    assert (upgraded.active, upgraded.awaiting, upgraded.kept, upgraded.buttons) == (
        "check_warranty", "serial", [], [])
    assert upgraded.to_json()["version"] == STATE_VERSION
    assert State.from_json(upgraded.to_json()) == upgraded
    assert State.from_json({"version": STATE_VERSION + 1, "active": "x"}) == State()
    kept = [1, {"intent": 3}, {"intent": "log_visit", "slots": []}]
    junk = State.from_json({"kept": kept, "buttons": [[1]]})
    assert [form.intent for form in junk.kept] == ["log_visit"] and junk.kept[0].slots == {}
    assert junk.buttons == []
