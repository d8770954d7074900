"""Dialogue machinery through the real Assistant pipeline and REST identity, with a scripted NLU."""

from __future__ import annotations

from core.container import Core
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
