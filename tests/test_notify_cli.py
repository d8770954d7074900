"""`crmbot notify test|status|retry`, in process, against the test database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from typer.testing import CliRunner

from crmbot.cli import app
from tests.smtp_server import free_port, smtp_server
from tests.world import World


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CRMBOT_DATABASE_URL", database_url)
    monkeypatch.setenv("CRMBOT_DATA_DIR", str(tmp_path / "var"))
    for name in (
        "CRMBOT_SMTP_HOST",
        "CRMBOT_TELEGRAM_TOKEN",
        "CRMBOT_SLACK_BOT_TOKEN",
        "CRMBOT_SMS_PROVIDER",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    import crmbot.cli

    monkeypatch.setattr(crmbot.cli.console, "width", 200)
    monkeypatch.setattr(crmbot.cli.err, "width", 200)
    return CliRunner()


class Inbox:
    def __init__(self) -> None:
        self.recipients: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.recipients += envelope.rcpt_tos
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Inbox, int]]:
    received = Inbox()
    with smtp_server(received) as port:
        yield received, port


def test_a_test_email_without_smtp_is_written_to_the_mail_folder(
    cli: CliRunner, world: World, tmp_path: Path
) -> None:
    result = cli.invoke(app, ["notify", "test", "--to", "acme.buyer", "--channel", "email"])
    assert result.exit_code == 0, result.output
    assert "Sent to acme.buyer by email" in result.output
    [mail] = list((tmp_path / "var" / "mail").glob("*.eml"))
    text = mail.read_text(encoding="utf-8")
    assert "To: acme.buyer@example.com" in text and "test message" in text.lower()


def test_a_test_email_through_a_real_smtp_server(
    cli: CliRunner, world: World, mailbox: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, port = mailbox
    monkeypatch.setenv("CRMBOT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CRMBOT_SMTP_PORT", str(port))
    monkeypatch.setenv("CRMBOT_SMTP_STARTTLS", "false")
    result = cli.invoke(app, ["notify", "test", "--to", "agent", "--channel", "email"])
    assert result.exit_code == 0, result.output
    assert inbox.recipients == ["agent@example.com"]


def test_smtp_refusing_is_reported_not_hidden(
    cli: CliRunner, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nobody listens there
    monkeypatch.setenv("CRMBOT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CRMBOT_SMTP_PORT", str(port))
    monkeypatch.setenv("CRMBOT_SMTP_STARTTLS", "false")
    result = cli.invoke(app, ["notify", "test", "--to", "agent", "--channel", "email"])
    assert result.exit_code == 1
    assert "Not delivered: pending" in result.output and "Traceback" not in result.output
    status = cli.invoke(app, ["notify", "status", "--json"])
    assert status.exit_code == 0, status.output
    stats = json.loads(status.output)
    assert stats["counts"]["pending"] == 1 and stats["oldest_pending_at"] is not None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--to", "acme.buyer", "--channel", "sms"], "acme.buyer has no phone number"),
        (["--to", "nobody", "--channel", "email"], "No user named 'nobody'"),
        (["--to", "agent", "--channel", "telegram"], "telegram is not configured here"),
        (["--to", "agent", "--channel", "fax"], "fax"),
    ],
)
def test_notify_test_refuses_what_cannot_be_sent(
    cli: CliRunner, world: World, arguments: list[str], message: str
) -> None:
    result = cli.invoke(app, ["notify", "test", *arguments])
    assert result.exit_code != 0 and message in result.output, result.output


def test_status_lists_dead_letters_and_retry_requeues_them(cli: CliRunner, world: World) -> None:
    sent = cli.invoke(app, ["notify", "test", "--to", "acme.buyer", "--channel", "email"])
    assert sent.exit_code == 0, sent.output
    status = cli.invoke(app, ["notify", "status"])
    assert status.exit_code == 0 and "sent" in status.output and "Dead letters" not in status.output
    missing = cli.invoke(app, ["notify", "retry", "999"])
    assert missing.exit_code == 1 and "No notification 999" in missing.output
    not_dead = cli.invoke(app, ["notify", "retry", "1"])
    assert not_dead.exit_code == 1 and "only dead letters are retried" in not_dead.output
