"""The terminal chat: typed lines in, replies printed, numbers pick buttons."""

from __future__ import annotations

import io

from rich.console import Console

from bot.assistant import Assistant
from bot.channels.terminal import chat_loop, render, resolve_choice
from bot.messages import Button, Reply
from core.container import Core
from tests.chat import ScriptedNlu
from tests.world import World


def test_numbers_pick_buttons_and_other_text_passes_through() -> None:
    buttons = [Button("Yes", "/affirm"), Button("No", "/deny")]
    assert resolve_choice("2", buttons) == "/deny"
    assert resolve_choice(" 1 ", buttons) == "/affirm"
    assert resolve_choice("3", buttons) == "3"
    assert resolve_choice("hello", buttons) == "hello"


async def test_a_conversation_in_the_terminal(core: Core, world: World) -> None:
    nlu = ScriptedNlu()
    nlu.expect("check_warranty", serial_number="WM2023-00917")
    nlu.expect("nlu_fallback", 0.2, ranking=(("nlu_fallback", 0.2), ("check_warranty", 0.2), ("help", 0.1)))
    nlu.expect("help")
    lines = iter(["is WM2023-00917 under warranty?", "blah", "2", "quit"])
    output = io.StringIO()
    console = Console(file=output, width=200, color_system=None)
    await chat_loop(Assistant(core, nlu), world.acme_customer, console, lambda _prompt: next(lines))
    printed = output.getvalue()
    assert "WM2023-00917) is covered until" in printed
    assert "1. Check warranty" in printed and "2. What can you do?" in printed
    # "2" was sent as the second button's payload: the help intent, without asking the NLU.
    assert [text for text, _context in nlu.seen] == ["is WM2023-00917 under warranty?", "blah"]
    assert "Request a repair" in printed


def test_replies_are_printed_as_typed_never_as_markup() -> None:
    output = io.StringIO()
    console = Console(file=output, width=200, color_system=None)
    reply = Reply(text="Type [/drop_form] or [bold]x[/bold]", buttons=(Button("[Continue]", "/c"),))
    choices = render(console, [reply])
    assert output.getvalue() == "crmbot: Type [/drop_form] or [bold]x[/bold]\n  1. [Continue]\n"
    assert [button.payload for button in choices] == ["/c"]
