"""Deliver linking codes from the outbox to the local mail and SMS folders (until the dispatcher exists)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.container import Core
from core.db.models import OutboxEvent
from core.services.linking import CODE_TTL, LinkCodeRequested

BATCH = 100
MAX_ATTEMPTS = 5
EVENT_TYPE = LinkCodeRequested.__name__

_CHANNEL_NAMES = {
    "en": {"telegram": "Telegram", "slack": "Slack", "web": "web chat", "terminal": "terminal"},
    "zh": {"telegram": "Telegram", "slack": "Slack", "web": "网页聊天", "terminal": "终端"},
}
_MINUTES = int(CODE_TTL.total_seconds() // 60)
_TEXTS = {
    "en": {
        "subject": "Your crmbot code",
        "body": (
            "Hello,\n\n"
            "Your code to link your {channel} account with crmbot is:\n\n"
            "    {code}\n\n"
            "Enter it in the chat. It expires in {minutes} minutes and works once.\n\n"
            "If you didn't ask for it, ignore this message: nothing changes without the code.\n"
        ),
        "sms": "crmbot code {code} links your {channel} account; valid {minutes} min. Not you? Ignore this.",
    },
    "zh": {
        "subject": "您的 crmbot 验证码",
        "body": (
            "您好：\n\n"
            "您用于将{channel}账号关联到 crmbot 的验证码是：\n\n"
            "    {code}\n\n"
            "请在聊天中输入。验证码 {minutes} 分钟内有效，只能使用一次。\n\n"
            "如果不是您本人操作，请忽略本邮件：没有验证码，什么都不会改变。\n"
        ),
        "sms": "【crmbot】验证码 {code}，用于关联您的{channel}账号，{minutes}分钟内有效。非本人操作请忽略。",
    },
}


@dataclass(frozen=True, slots=True)
class _Code:
    """The fields of a LinkCodeRequested payload the files need, checked."""

    destination: str
    channel: str
    code: str
    lang: str


def _parse(payload: dict[str, Any]) -> _Code | None:
    values = [payload.get(key) for key in ("destination", "channel", "code", "lang")]
    if not all(isinstance(value, str) and value for value in values):
        return None
    destination, channel, code, lang = (str(value) for value in values)
    return _Code(destination=destination, channel=channel, code=code, lang=lang if lang in _TEXTS else "en")


def _fill(template: str, code: _Code) -> str:
    channel = _CHANNEL_NAMES[code.lang].get(code.channel, code.channel)
    return template.format(code=code.code, channel=channel, minutes=_MINUTES)


def _email(code: _Code, outbox_id: int, occurred_at: datetime, mail_from: str, now: datetime) -> bytes:
    texts = _TEXTS[code.lang]
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = code.destination
    message["Subject"] = texts["subject"]
    message["Date"] = format_datetime(now)
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "crmbot.local"
    # A fixed id per outbox row: a re-run after a crash rewrites the same message, not a second one.
    message["Message-ID"] = f"<link-code-{outbox_id}.{int(occurred_at.timestamp())}@{domain}>"
    message["Content-Language"] = "zh-CN" if code.lang == "zh" else "en"
    message.set_content(_fill(texts["body"], code))
    return bytes(message)


def _sms(code: _Code, sender: str, now: datetime) -> bytes:
    text = _fill(_TEXTS[code.lang]["sms"], code)
    return f"To: {code.destination}\nFrom: {sender}\nDate: {now.isoformat()}\n\n{text}\n".encode()


def _redacted(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without the code: once handled, the outbox keeps no usable secret."""
    return {**payload, "code": "******"}


def _write(path: Path, data: bytes) -> None:
    """Write atomically (temporary file, then rename), readable only by us: the file holds a code."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


async def deliver_link_codes(core: Core) -> int:
    """Write every pending LinkCodeRequested event as an .eml or SMS file; return how many were written.

    Rows are claimed and marked processed in the transaction that reads them, and each file is written
    before that commit under a name fixed by the outbox id: a crash in between rewrites the same file
    on the next run, so nothing is lost and nothing is delivered twice.
    """
    settings = core.settings
    written = 0
    after = 0
    while True:
        async with core.uow() as uow:
            rows = (
                (
                    await uow.session.execute(
                        select(OutboxEvent)
                        .where(
                            OutboxEvent.event_type == EVENT_TYPE,
                            OutboxEvent.processed_at.is_(None),
                            OutboxEvent.id > after,
                        )
                        .order_by(OutboxEvent.id)
                        .limit(BATCH)
                        # Several notifier workers on PostgreSQL take disjoint rows; SQLite ignores it.
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            if not rows:
                return written
            now = core.clock.now()
            for row in rows:
                after = row.id
                code = _parse(row.payload)
                if code is None:
                    row.processed_at, row.last_error = now, "malformed payload"
                    continue
                if row.occurred_at + CODE_TTL <= now:
                    # Sending a dead code only confuses: the person asks for a new one.
                    row.processed_at, row.last_error = now, "expired before delivery"
                    row.payload = _redacted(row.payload)
                    continue
                if "@" in code.destination:
                    path = settings.mail_directory / f"link-code-{row.id}.eml"
                    data = _email(code, row.id, row.occurred_at, settings.mail_from, now)
                else:
                    path = settings.sms_directory / f"link-code-{row.id}.txt"
                    data = _sms(code, settings.sms_from or "crmbot", now)
                try:
                    await asyncio.to_thread(_write, path, data)
                except OSError as exc:
                    row.attempts += 1
                    row.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    if row.attempts >= MAX_ATTEMPTS:
                        row.processed_at = now  # give up; the code expires in minutes anyway
                        row.payload = _redacted(row.payload)
                    continue
                row.attempts += 1
                row.processed_at, row.last_error = now, None
                row.payload = _redacted(row.payload)
                written += 1
            await uow.commit()
