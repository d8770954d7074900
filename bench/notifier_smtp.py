"""Benchmark email delivery: EmailSender's pooled SMTP connections against a new connection per message.

Usage: .venv/bin/python bench/notifier_smtp.py [--messages 500] [--repeats 5] [--pool 3] [--server-process]

Runs a real aiosmtpd server on loopback (a Controller thread in this process, so both ends share one
interpreter; with --server-process, `python -m aiosmtpd` in a process of its own) and reports the median
deliveries per second of (a) EmailSender with a pool of --pool connections, sends gathered concurrently,
and (b) connect, send, QUIT for every message at the same concurrency; then the ratio. Both build the
same messages with EmailSender.compose, so the difference is the connections.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from core.settings import Settings
from notifier.senders.email import EmailSender
from notifier.types import Outgoing, Rendered


class Counter:
    """An aiosmtpd handler that only counts connections and accepted messages."""

    def __init__(self) -> None:
        self.connections = 0
        self.messages = 0

    async def handle_EHLO(
        self, server: SMTPServer, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # a 5-argument EHLO hook must record the name itself
        self.connections += 1
        return responses

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.messages += 1
        return "250 2.0.0 queued"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _messages(count: int) -> list[Outgoing]:
    """Bilingual notifications, each with its own recipient and dedupe key."""
    result = []
    for n in range(count):
        zh = n % 2 == 0
        result.append(
            Outgoing(
                notification_id=n,
                dedupe_key=f"bench:{n}:email",
                channel="email",
                address=f"customer{n}@example.com",
                user_id=n,
                lang="zh" if zh else "en",
                content=Rendered(
                    subject=f"维修单 R-{n} 已派工" if zh else f"Repair order R-{n} dispatched",
                    text=(
                        f"您好：维修单 R-{n} 已派工，工程师明天上午到达。\n"
                        if zh
                        else f"Hello, order R-{n}.\n"
                    )
                    * 8,
                ),
            )
        )
    return result


async def pooled(settings: Settings, messages: list[Outgoing]) -> tuple[float, int]:
    """(a) Seconds to send everything through one EmailSender; and how many connections it opened."""
    sender = EmailSender(settings)
    try:
        started = time.perf_counter()
        await asyncio.gather(*(sender.send(message) for message in messages))
        elapsed = time.perf_counter() - started
    finally:
        await sender.close()
    assert sender.pool is not None
    return elapsed, sender.pool.connects


async def one_connection_each(settings: Settings, messages: list[Outgoing], concurrency: int) -> float:
    """(b) Seconds to send everything with connect, send, QUIT per message, `concurrency` at a time."""
    composer = EmailSender(settings.model_copy(update={"smtp_host": None}))
    envelope_from = "notify@crm.example.com"
    slots = asyncio.Semaphore(concurrency)
    # Resolved once, as the pool's clients do: the comparison is about connections, not getfqdn().
    local_hostname = await asyncio.to_thread(socket.getfqdn)

    async def send(message: Outgoing) -> None:
        async with slots:
            email = composer.compose(message)
            client = aiosmtplib.SMTP(
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                start_tls=False,
                local_hostname=local_hostname,
                timeout=settings.smtp_timeout,
            )
            async with client:
                await client.send_message(email, sender=envelope_from, recipients=[message.address])

    started = time.perf_counter()
    await asyncio.gather(*(send(message) for message in messages))
    return time.perf_counter() - started


@contextmanager
def _server(counter: Counter, port: int, own_process: bool) -> Iterator[None]:
    """Run aiosmtpd on 127.0.0.1:`port` for the duration: a Controller thread, or a child process."""
    if not own_process:
        controller = Controller(counter, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            yield
        finally:
            controller.stop()
        return
    command = [
        sys.executable,
        "-m",
        "aiosmtpd",
        "-n",
        "-u",
        "-l",
        f"127.0.0.1:{port}",
        "-c",
        "aiosmtpd.handlers.Sink",
    ]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10.0
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError("aiosmtpd did not start") from None
                time.sleep(0.05)
        yield
    finally:
        child.terminate()
        child.wait(timeout=10)


def main() -> None:
    """Start the server, run both ways `--repeats` times (interleaved), print medians and the ratio."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pool", type=int, default=3)
    parser.add_argument("--server-process", action="store_true", help="run aiosmtpd in its own process")
    arguments = parser.parse_args()

    counter = Counter()
    port = _free_port()
    messages = _messages(arguments.messages)
    pooled_rates: list[float] = []
    fresh_rates: list[float] = []
    connections: list[int] = []
    with _server(counter, port, arguments.server_process), tempfile.TemporaryDirectory() as folder:
        values: dict[str, Any] = {
            "database_url": "sqlite+aiosqlite:///:memory:",
            "data_dir": Path(folder),
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_starttls": False,
            "smtp_pool_size": arguments.pool,
            "smtp_timeout": 10.0,
            "mail_from": "crmbot <notify@crm.example.com>",
        }
        settings = Settings(_env_file=None, **values)
        for _ in range(arguments.repeats):
            seconds, opened = asyncio.run(pooled(settings, messages))
            pooled_rates.append(len(messages) / seconds)
            connections.append(opened)
            seconds = asyncio.run(one_connection_each(settings, messages, arguments.pool))
            fresh_rates.append(len(messages) / seconds)

    expected = 2 * arguments.repeats * len(messages)
    if not arguments.server_process:
        assert counter.messages == expected, f"server accepted {counter.messages} of {expected} messages"
    pool_median, fresh_median = statistics.median(pooled_rates), statistics.median(fresh_rates)
    where = "in its own process" if arguments.server_process else "in a thread of this process"
    print(
        f"messages {len(messages)} x {arguments.repeats} runs, concurrency {arguments.pool}, aiosmtpd {where}"
    )
    print(
        f"(a) pooled EmailSender (pool {arguments.pool}): median {pool_median:,.0f} msgs/s  "
        f"[{', '.join(f'{rate:,.0f}' for rate in pooled_rates)}]  connections per run {max(connections)}"
    )
    print(
        f"(b) new connection per message:       median {fresh_median:,.0f} msgs/s  "
        f"[{', '.join(f'{rate:,.0f}' for rate in fresh_rates)}]"
    )
    print(f"ratio pooled / per-message: {pool_median / fresh_median:.2f}x")


if __name__ == "__main__":
    main()
