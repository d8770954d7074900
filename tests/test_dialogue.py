"""Dialogue machinery through the real Assistant pipeline and REST identity, with a scripted NLU."""

from __future__ import annotations

import pytest

from core.container import Core
from core.errors import NotFound
from tests.chat import ScriptedNlu, make_chat
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
