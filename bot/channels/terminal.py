"""Terminal chat: the assistant in a shell, buttons rendered as numbered choices."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

from bot.assistant import Assistant
from bot.messages import Button, IncomingMessage, Reply
from core.auth import Actor

CHANNEL = "terminal"
QUIT_WORDS = frozenset({"/quit", "/exit", "quit", "exit", "退出"})


def render(console: Console, replies: list[Reply]) -> list[Button]:
    """Print replies; return the buttons of the last reply that had any, numbered from 1."""
    choices: list[Button] = []
    for reply in replies:
        # The reply is text, not markup: "[/drop_form]" or "[Continue]" in it is printed as typed.
        text = escape(reply.text)
        console.print(f"[bold cyan]crmbot:[/bold cyan] {text}", markup=True, highlight=False, soft_wrap=True)
        if reply.image is not None:
            alt = escape(reply.image_alt or "image")
            console.print(f"  [dim](chart: {alt}, {len(reply.image)} bytes)[/dim]", highlight=False)
        if reply.buttons:
            choices = list(reply.buttons)
            for number, button in enumerate(choices, start=1):
                console.print(f"  [bold]{number}[/bold]. {escape(button.title)}", highlight=False)
    return choices


def resolve_choice(text: str, choices: list[Button]) -> str:
    """'2' picks the second button's payload; anything else is sent as typed."""
    stripped = text.strip()
    if stripped.isdigit() and 1 <= int(stripped) <= len(choices):
        return choices[int(stripped) - 1].payload
    return text


async def chat_loop(
    assistant: Assistant, actor: Actor, console: Console, read_line: Callable[[str], str] = input
) -> None:
    """Read a line, answer it, until the person quits (Ctrl-D, Ctrl-C or 'quit')."""
    console.print(
        f"Talking to crmbot as [bold]{actor.username}[/bold] ({actor.role.value}). "
        "Type 'quit' to leave; numbers pick buttons."
    )
    choices: list[Button] = []
    while True:
        try:
            line = await asyncio.to_thread(read_line, "you: ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if line.strip().lower() in QUIT_WORDS:
            return
        text = resolve_choice(line, choices)
        replies = await assistant.handle_as(
            actor, IncomingMessage(channel=CHANNEL, sender_id=actor.username, text=text)
        )
        choices = render(console, replies) or choices
