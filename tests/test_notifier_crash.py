"""kill -9 the notifier worker at the worst moments; every message still arrives, and none twice.

The worker is the real `crmbot run --role worker` in a subprocess, delivering to a real SMTP server
(aiosmtpd) that this test can hold at RCPT: a message held there is "being sent" and not yet
accepted, which is the moment a crash is most likely to lose or double it.
"""

from __future__ import annotations

import asyncio
import email
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import func, select

from core.container import Core
from core.db.models import Notification
from core.schemas import ServiceRequestIn
from tests.smtp_server import smtp_server
from tests.world import World

# An end-to-end test of many seconds: left out of `make test-fast`, run by `make test`.
pytestmark = pytest.mark.slow

MESSAGES = 24


class HoldingHandler:
    """Accepts mail; while `hold_after` messages have been accepted, holds every further RCPT."""

    def __init__(self) -> None:
        self.message_ids: list[str] = []
        self.hold_after: int | None = None
        self.holding = threading.Event()  # some RCPT is being held right now
        self._lock = threading.Lock()

    def count(self) -> int:
        with self._lock:
            return len(self.message_ids)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        while self.hold_after is not None and self.count() >= self.hold_after:
            self.holding.set()
            await asyncio.sleep(0.02)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=policy.default)
        # Held here too, so that connections already past RCPT cannot overshoot; no await between this
        # check and the append below, so the count never passes `hold_after`.
        while self.hold_after is not None and self.count() >= self.hold_after:
            self.holding.set()
            await asyncio.sleep(0.02)
        with self._lock:
            self.message_ids.append(str(message["Message-ID"]))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[HoldingHandler, int]]:
    handler = HoldingHandler()
    with smtp_server(handler) as port:
        try:
            yield handler, port
        finally:
            handler.hold_after = None


def start_worker(database_url: str, smtp_port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CRMBOT_DATABASE_URL": database_url,
        "CRMBOT_DATA_DIR": str(data_dir),
        "CRMBOT_SMTP_HOST": "127.0.0.1",
        "CRMBOT_SMTP_PORT": str(smtp_port),
        "CRMBOT_SMTP_STARTTLS": "false",
        "CRMBOT_SMTP_TIMEOUT": "5",
        "CRMBOT_NOTIFY_LEASE": "2",
        "CRMBOT_NOTIFY_POLL": "0.2",
        "CRMBOT_QUIET_HOURS": "",  # the worker runs on the real clock: no night may hold the test up
        "CRMBOT_API_TOKEN": "unused",
    }
    for name in ("CRMBOT_TELEGRAM_TOKEN", "CRMBOT_SLACK_BOT_TOKEN", "CRMBOT_SMS_PROVIDER"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "crmbot", "run", "--role", "worker"],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def count_sent(core: Core) -> int:
    async with core.uow() as uow:
        query = select(func.count()).select_from(Notification).where(Notification.status == "sent")
        return int((await uow.session.execute(query)).scalar_one())


def sync_count_sent(core: Core, loop: asyncio.AbstractEventLoop) -> int:
    return asyncio.run_coroutine_threadsafe(count_sent(core), loop).result()


def kill(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL


async def test_killing_the_worker_loses_nothing_and_doubles_nothing(
    core: Core, world: World, smtp: tuple[HoldingHandler, int], database_url: str, tmp_path: Path
) -> None:
    handler, port = smtp
    for number in range(MESSAGES):
        await core.service_desk.open_request(
            world.acme_customer,
            ServiceRequestIn(subject=f"Case {number}", serial_number=world.acme_serial, channel="telegram"),
        )
    loop = asyncio.get_running_loop()

    def sent_in_db() -> int:
        return sync_count_sent(core, loop)

    async def in_thread(function: Any, *args: Any) -> Any:
        return await asyncio.to_thread(function, *args)

    # 1. The events are committed; the worker routes them, claims a batch and starts sending: the first
    #    message is held before the server accepted it. kill -9.
    handler.hold_after = 0
    first = start_worker(database_url, port, tmp_path / "var")
    await in_thread(wait_for, handler.holding.is_set, "the first send to reach the server")
    await in_thread(kill, first)
    assert handler.count() == 0

    # 2. Mid-batch: a new worker takes the claims over once the dead one's lease ends, delivers ten,
    #    and is killed while the next ones are in flight.
    handler.holding.clear()
    handler.hold_after = 10
    second = start_worker(database_url, port, tmp_path / "var")
    await in_thread(wait_for, handler.holding.is_set, "ten messages, then a held one")
    await in_thread(wait_for, lambda: sent_in_db() == handler.count(), "the accepted messages to be recorded")
    await in_thread(kill, second)
    assert handler.count() == 10

    # 3. A third worker finishes the job.
    handler.hold_after = None
    third = start_worker(database_url, port, tmp_path / "var")
    try:
        await in_thread(wait_for, lambda: sent_in_db() == MESSAGES, "every message to be delivered", 60.0)
    finally:
        third.send_signal(signal.SIGTERM)
        _, errors = await in_thread(third.communicate, None, 20)
    assert third.returncode == 0, errors.decode(errors="replace")[-2000:]

    arrived = Counter(handler.message_ids)
    assert len(arrived) == MESSAGES, "a message was lost"
    assert max(arrived.values()) == 1, f"delivered twice: {[key for key, n in arrived.items() if n > 1]}"
    async with core.uow() as uow:
        rows = (await uow.session.execute(select(Notification))).scalars().all()
    assert len(rows) == MESSAGES and {row.status for row in rows} == {"sent"}
    # The held messages were tried again: the record shows more attempts than messages.
    assert sum(row.attempts for row in rows) > MESSAGES
