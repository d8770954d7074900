"""A real SMTP server (aiosmtpd) on loopback for tests, around any handler."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from aiosmtpd.controller import Controller


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
