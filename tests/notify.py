"""Run the real notifier in tests with the default senders: email as .eml files, SMS as text files."""

from __future__ import annotations

from sqlalchemy import func, select

from core.container import Core
from core.db.models import Notification
from notifier.dispatcher import Notifier
from notifier.senders.email import build_email_sender
from notifier.senders.sms import build_sms_sender
from notifier.types import Outgoing


class Recorder:
    """A provider stand-in: records what it is given; fails with the queued errors first."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.sent: list[Outgoing] = []
        self.failures: list[BaseException] = []

    async def send(self, message: Outgoing) -> str:
        """Raise the next queued failure, else keep the message."""
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)
        return f"{self.channel}-{len(self.sent)}"

    async def close(self) -> None:
        """Nothing to release."""


async def sent_count(core: Core) -> int:
    """How many notifications have been sent so far."""
    async with core.uow() as uow:
        query = select(func.count()).select_from(Notification).where(Notification.status == "sent")
        return int((await uow.session.execute(query)).scalar_one())


async def deliver_to_files(core: Core) -> int:
    """Route and deliver everything due now through the file senders; returns how many were sent."""
    notifier = Notifier(
        core, {"email": build_email_sender(core.settings), "sms": build_sms_sender(core.settings)}
    )
    before = await sent_count(core)
    try:
        await notifier.run_once()
    finally:
        await notifier.close()
    return await sent_count(core) - before
