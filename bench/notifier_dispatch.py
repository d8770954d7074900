"""Benchmark the notifier: dispatcher overhead per notification, and time from commit to delivery.

Usage: .venv/bin/python bench/notifier_dispatch.py [--messages 1000] [--latency 200] [--repeats 3]
                                                   [--database-url URL]

On a throw-away SQLite database (or the PostgreSQL URL given) with the demo data loaded, the customer
persona opens service requests; each raises an event the notifier routes to one acknowledgement email.
  overhead  N requests are committed first, then timed: routing the events and delivering the
            notifications to a sender that returns at once — what the notifier itself costs per message.
  latency   the notifier runs as in `crmbot run` (woken by the commit) and delivers through the real
            EmailSender to a local aiosmtpd server; each request's commit → SMTP 250, p50/p99. Then the
            same with a separate worker's polling (CRMBOT_NOTIFY_POLL, 1 s by default) instead of the wake.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from core.auth import Actor
from core.container import Core, build_core
from core.db.migrate import upgrade
from core.demo import load_demo
from core.schemas import ServiceRequestIn
from core.settings import Settings
from notifier.dispatcher import Notifier
from notifier.senders.email import EmailSender
from notifier.types import Outgoing

CUSTOMER = "wang.fang"


class NullSender:
    """A provider that accepts everything at once."""

    channel = "email"

    def __init__(self) -> None:
        self.count = 0

    async def send(self, message: Outgoing) -> str:
        self.count += 1
        return f"null-{self.count}"

    async def close(self) -> None:
        return None


class Stamping:
    """An aiosmtpd handler noting when each message was accepted."""

    def __init__(self) -> None:
        self.accepted: list[float] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.accepted.append(time.perf_counter())
        return "250 OK"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def customer_and_serial(core: Core) -> tuple[Actor, str]:
    actor = await core.org.actor_for_username(CUSTOMER)
    units = await core.installed.list(actor, limit=1)
    return actor, units.items[0].serial_number


async def open_requests(core: Core, actor: Actor, serial: str, count: int) -> None:
    for number in range(count):
        await core.service_desk.open_request(
            actor, ServiceRequestIn(subject=f"Bench case {number}", serial_number=serial, channel="web")
        )


async def overhead(core: Core, actor: Actor, serial: str, messages: int) -> tuple[float, float]:
    """(ms per notification, notifications per second) for route + deliver with a null provider."""
    sender = NullSender()
    notifier = Notifier(core, {"email": sender})
    await notifier.run_once()  # whatever the demo left in the outbox
    sender.count = 0
    await open_requests(core, actor, serial, messages)
    started = time.perf_counter()
    await notifier.run_once()
    elapsed = time.perf_counter() - started
    if sender.count != messages:
        raise SystemExit(f"expected {messages} deliveries, got {sender.count}")
    return elapsed / messages * 1000, messages / elapsed


async def latency(
    core: Core, actor: Actor, serial: str, messages: int, port: int, handler: Stamping, *, wake: bool
) -> list[float]:
    """Commit → SMTP acceptance, in ms, for `messages` requests opened 20 ms apart."""
    settings = core.settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False}
    )
    notifier = Notifier(core, {"email": EmailSender(settings)})
    await notifier.run_once()
    committed: list[float] = []

    def stamp() -> None:
        committed.append(time.perf_counter())

    core.commit_listeners.append(stamp)
    if wake:
        core.commit_listeners.append(notifier.wake)
    handler.accepted.clear()
    stop = asyncio.Event()
    running = asyncio.create_task(notifier.run(stop))
    try:
        for number in range(messages):
            await core.service_desk.open_request(
                actor, ServiceRequestIn(subject=f"Latency {number}", serial_number=serial, channel="web")
            )
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 30
        # The SMTP server fills `accepted` from its own thread: poll it.
        while len(handler.accepted) < messages and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await running
        await notifier.close()
        core.commit_listeners.clear()
    return [(done - start) * 1000 for start, done in zip(committed, handler.accepted, strict=True)]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database-url")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"
        settings = Settings(database_url=url, data_dir=Path(directory) / "var", quiet_hours="")
        core = build_core(settings)
        await upgrade(core.engine)
        await load_demo(core)
        actor, serial = await customer_and_serial(core)
        print(f"database: {core.engine.dialect.name}; customer {CUSTOMER}, serial {serial}")

        runs = [await overhead(core, actor, serial, args.messages) for _ in range(args.repeats)]
        per_message = statistics.median(run[0] for run in runs)
        rate = statistics.median(run[1] for run in runs)
        print(
            f"overhead: route + deliver {args.messages} notifications, median of {args.repeats}: "
            f"{per_message:.2f} ms per notification, {rate:.0f} notifications/s"
        )

        handler = Stamping()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            for wake, label in (
                (True, "in-process (woken by the commit)"),
                (False, "separate worker (polling)"),
            ):
                count = args.latency if wake else max(20, args.latency // 4)
                samples: list[Any] = await latency(core, actor, serial, count, port, handler, wake=wake)
                print(
                    f"commit → SMTP 250, {label}, {count} messages: p50 {percentile(samples, 0.5):.1f} ms, "
                    f"p99 {percentile(samples, 0.99):.1f} ms"
                )
        finally:
            controller.stop()
            await core.close()


if __name__ == "__main__":
    asyncio.run(main())
