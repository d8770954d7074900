"""A real SMTP server (aiosmtpd) on loopback for tests, around any handler."""

from __future__ import annotations

import email
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


class Mailbox:
    """An SMTP handler keeping every accepted message, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Accept and keep the message (line endings as a mail client sees them)."""
        raw = (envelope.original_content or b"").replace(b"\r\n", b"\n")
        message = email.message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_server(handler: object) -> Iterator[int]:
    """Run `handler` behind a real SMTP server in a thread; yields its port.

    aiosmtpd checks readiness by connecting to the configured port, so it needs a real one, not 0.
    """
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
