"""The `crmbot` command line: run the assistant, manage the schema, data and users."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from core.auth import SYSTEM
from core.container import Core, build_core
from core.domain.enums import Role
from core.errors import DomainError
from core.settings import Settings

app = typer.Typer(help="crmbot — a chat-first CRM assistant.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
users_app = typer.Typer(help="Users, roles and channel identities.", no_args_is_help=True)
kb_app = typer.Typer(help="Knowledge base.", no_args_is_help=True)
scheduler_app = typer.Typer(
    help="The scheduler: reminders, SLA steps, surveys, alerts, digests.", no_args_is_help=True
)
notify_app = typer.Typer(
    help="The notifier: test a channel, see delivery status, retry dead letters.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(kb_app, name="kb")
app.add_typer(notify_app, name="notify")
app.add_typer(scheduler_app, name="scheduler")


def _register_nlu() -> None:
    """The `crmbot nlu …` commands live with the NLU code."""
    from crmbot.nlu_cli import nlu_app

    app.add_typer(nlu_app, name="nlu")


_register_nlu()

# soft_wrap: long `FILE:LINE: reason` lines and tokens must never be broken at the terminal width.
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def load_settings() -> Settings:
    """Settings from the environment, or a clear message and exit code 2."""
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = (
                "CRMBOT_" + "_".join(str(part) for part in error["loc"]).upper()
                if error["loc"]
                else "settings"
            )
            err.print(f"Configuration error: {name}: {error['msg']}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def with_core(work: Callable[[Core], Awaitable[T]], *, migrate: bool = True) -> T:
    """Run `work` against a freshly built core (schema brought up to date first), turning domain
    errors into a message and exit code 1."""

    async def main() -> T:
        settings = load_settings()
        core = build_core(settings)
        try:
            if migrate:
                from core.db.migrate import upgrade

                await upgrade(core.engine)
            return await work(core)
        finally:
            await core.close()

    try:
        return asyncio.run(main())
    except DomainError as exc:
        err.print(f"[red]Error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    except OSError as exc:
        err.print(f"[red]Error:[/red] cannot reach the database: {exc}")
        raise typer.Exit(1) from None


# --- run ----------------------------------------------------------------------------------------


class RunRole(StrEnum):
    """Which parts of crmbot this process runs."""

    ALL = "all"
    WEB = "web"
    WORKER = "worker"
    SCHEDULER = "scheduler"


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (CRMBOT_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (CRMBOT_PORT).")] = None,
    role: Annotated[
        RunRole,
        typer.Option(
            help="all: everything in one process; web: the HTTP server and chat channels; "
            "worker: only the notifier's delivery (several may run against PostgreSQL); "
            "scheduler: only the scheduler (one is active at a time, however many run)."
        ),
    ] = RunRole.ALL,
) -> None:
    """Run the assistant: HTTP API, chat channels and the notifier (or one of them, by --role)."""
    import uvicorn

    from crmbot.app import create_app

    settings = load_settings()
    if role is RunRole.WORKER:
        run_worker(settings)
        return
    if role is RunRole.SCHEDULER:
        run_scheduler(settings)
        return
    token, generated = settings.resolve_api_token()
    bind_host = host or settings.host
    bind_port = port or settings.port

    async def main() -> None:
        from bot.assistant import Assistant
        from bot.nlu.service import build_nlu
        from bot.outbound import Outbound

        core = build_core(settings)
        try:
            if role is RunRole.ALL:
                from core.db.migrate import upgrade

                await upgrade(core.engine)
                await check_notifier_configuration(core)
            nlu = await asyncio.to_thread(build_nlu, settings)
            assistant = Assistant(core, nlu)
            app = create_app(core, token, assistant=assistant, nlu=nlu)
            channels = await start_channels(app, core, assistant, settings)
            # The send-to-user API over every connected channel (the notifier delivers through it).
            app.state.outbound = Outbound(core, getattr(app.state, "senders", {}))
            if role is RunRole.ALL:
                channels.append(start_notifier(core, getattr(app.state, "senders", {})))
                channels.append(start_scheduler(core))
            server = uvicorn.Server(
                uvicorn.Config(app, host=bind_host, port=bind_port, log_level="info", access_log=False)
            )
            console.print(
                f"crmbot on [bold]http://{bind_host}:{bind_port}[/bold]  (database: {_safe_url(settings)})"
            )
            if generated:
                console.print(
                    f"API token (generated, kept in {settings.data_dir / 'api_token'}): [bold]{token}[/bold]"
                )
            else:
                console.print("API token: from CRMBOT_API_TOKEN or " + str(settings.data_dir / "api_token"))
            try:
                await server.serve()
            finally:
                for stop in reversed(channels):
                    await stop()
        finally:
            await core.close()

    asyncio.run(main())


async def check_notifier_configuration(core: Core) -> None:
    """Refuse to start with an alert rules file that cannot be used (exit 2, with FILE:LINE: reason)."""
    from notifier.alerts import RulesError
    from notifier.build import check_configuration

    try:
        await check_configuration(core)
    except RulesError as exc:
        err.print(f"Alert rules: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def start_notifier(core: Core, channel_senders: dict[str, Any]) -> Callable[[], Awaitable[None]]:
    """Run the notifier in this process over these chat senders (and email, SMS); returns how to stop."""
    from notifier.build import build_notifier

    notifier = build_notifier(core, channel_senders)
    stop_event = asyncio.Event()
    task = asyncio.create_task(notifier.run(stop_event))

    async def stop() -> None:
        stop_event.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10.0)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await notifier.close()

    return stop


def start_scheduler(core: Core) -> Callable[[], Awaitable[None]]:
    """Run the scheduler in this process (it sweeps only while it holds the lease); returns how to stop."""
    from notifier.registry import all_sweeps
    from notifier.scheduler import Scheduler

    scheduler = Scheduler(core, all_sweeps(), every=core.settings.scheduler_interval)
    scheduler.start()
    return scheduler.stop


def stop_on_signal() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: a service role stops cleanly (claims and lease handed back)."""
    import signal

    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_event.set)
    return stop_event


def run_scheduler(settings: Settings) -> None:
    """`crmbot run --role scheduler`: sweep on time while holding the lease, until SIGTERM/SIGINT."""

    async def main() -> None:
        core = build_core(settings)
        stop_event = stop_on_signal()
        await check_notifier_configuration(core)
        stop = start_scheduler(core)
        console.print(
            f"crmbot scheduler (database: {_safe_url(settings)}); sweeping while it holds the lease"
        )
        try:
            await stop_event.wait()
        finally:
            await stop()
            await core.close()

    asyncio.run(main())


def run_worker(settings: Settings) -> None:
    """`crmbot run --role worker`: deliver notifications until SIGTERM/SIGINT; no HTTP, no chat intake."""
    from notifier.build import build_notifier, standalone_chat_senders

    async def main() -> None:
        core = build_core(settings)
        await check_notifier_configuration(core)
        senders, closers = standalone_chat_senders(core)
        notifier = build_notifier(core, senders)
        stop_event = stop_on_signal()
        console.print(
            f"crmbot notifier worker {notifier.worker_id} (channels: {', '.join(sorted(notifier.senders))}; "
            f"database: {_safe_url(settings)})"
        )
        try:
            await notifier.run(stop_event)
        finally:
            await notifier.close()
            for close in closers:
                await close()
            await core.close()

    asyncio.run(main())


async def start_channels(
    app: Any, core: Core, assistant: Any, settings: Settings
) -> list[Callable[[], Awaitable[None]]]:
    """Connect the messaging platforms that are configured; returns how to stop each."""
    stops: list[Callable[[], Awaitable[None]]] = []
    if settings.telegram_token is not None:
        from bot.channels.telegram import TelegramChannel, build_bot

        telegram = TelegramChannel(assistant, core, build_bot(settings))
        if settings.telegram_webhook_url:
            secret = settings.telegram_webhook_secret
            plain_secret = secret.get_secret_value() if secret else None
            app.include_router(telegram.webhook_router(plain_secret))
            await telegram.register_webhook(settings.telegram_webhook_url, plain_secret)
            console.print(f"Telegram: webhook {settings.telegram_webhook_url}")
        else:
            telegram.start_polling()
            console.print("Telegram: long polling")
        app.state.senders = {**getattr(app.state, "senders", {}), "telegram": telegram.sender}
        stops.append(telegram.close)
    if settings.slack_bot_token is not None:
        from bot.channels.slack import SlackChannel

        slack = SlackChannel(assistant, core, settings)
        if settings.slack_app_token is not None:
            socket_task = asyncio.create_task(slack.run_socket_mode())
            console.print("Slack: Socket Mode")

            async def stop_slack() -> None:
                await slack.close(grace=10.0)
                await asyncio.gather(socket_task, return_exceptions=True)

            stops.append(stop_slack)
        else:
            app.include_router(slack.events_router())
            console.print("Slack: events at POST /slack/events")
            stops.append(slack.close)
        app.state.senders = {**getattr(app.state, "senders", {}), "slack": slack.sender()}
    return stops


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


# --- chat ---------------------------------------------------------------------------------------


@app.command()
def chat(
    as_user: Annotated[
        str | None, typer.Option("--as", help="Username to talk as (default: your login name).")
    ] = None,
) -> None:
    """Talk to the assistant in this terminal, as a given user."""
    import getpass

    from bot.assistant import Assistant
    from bot.channels.terminal import chat_loop
    from bot.nlu.service import build_nlu

    username = as_user or getpass.getuser()
    settings = load_settings()

    async def work(core: Core) -> None:
        try:
            actor = await core.org.actor_for_username(username)
        except DomainError:
            err.print(
                f"No crmbot user '{username}'. Use --as USERNAME (after `crmbot demo`, try --as wang.fang).",
                markup=False,
            )
            raise typer.Exit(1) from None
        nlu = await asyncio.to_thread(build_nlu, settings)
        await chat_loop(Assistant(core, nlu), actor, console)

    with_core(work)


# --- db -----------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version."""
    from core.db.migrate import current_revision, head_revision

    async def work(core: Core) -> str | None:
        return await current_revision(core.engine)

    revision = with_core(work)
    console.print(f"Database is at revision {revision} (newest: {head_revision()}).")


# --- demo ---------------------------------------------------------------------------------------


@app.command()
def demo() -> None:
    """Load the demo dataset (idempotent) so every journey can be tried."""
    from core.demo import load_demo

    report = with_core(load_demo)
    if report.already_loaded:
        console.print("The demo dataset is already loaded; nothing changed.")
    else:
        table = Table("what", "count", title="Demo dataset loaded")
        for name, count in report.counts.items():
            table.add_row(name, str(count))
        console.print(table)
    personas = Table("username", "role", "try", title="Demo personas")
    for username, persona_role, hint in report.personas:
        personas.add_row(username, persona_role, hint)
    console.print(personas)


# --- import -------------------------------------------------------------------------------------


class ImportKind(StrEnum):
    """What a CSV file holds."""

    CUSTOMERS = "customers"
    CONTACTS = "contacts"
    PRODUCTS = "products"
    KB = "kb"


@app.command("import")
def import_file(
    kind: Annotated[ImportKind, typer.Argument(help="What the file holds.")],
    file: Annotated[Path, typer.Argument(help="The CSV file (UTF-8; GBK-encoded Chinese is detected).")],
) -> None:
    """Import a CSV file, all or nothing: one bad row and nothing is written."""
    from core.importers import ImportFailed, import_csv

    try:
        data = file.read_bytes()
    except OSError as exc:
        err.print(f"{file}: cannot read: {exc.strerror or exc}")
        raise typer.Exit(1) from None

    async def work(core: Core) -> Any:
        with Progress(
            TextColumn(f"Importing {file.name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=len(data) < 200_000,
        ) as progress:
            task = progress.add_task("import", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            return await import_csv(core, kind.value, data, progress=advance)

    try:
        report = with_core(work)
    except ImportFailed as failure:
        for line in failure.format(str(file)):
            err.print(line, markup=False, highlight=False)
        err.print(f"Nothing was imported from {file}.", markup=False)
        raise typer.Exit(1) from None
    for notice in report.notices:
        console.print(f"Note: {notice}", markup=False)
    console.print(f"{file}: {report.created} {kind.value} created, {report.updated} updated.", markup=False)


# --- users --------------------------------------------------------------------------------------


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="Login name (letters, digits, . _ -).")],
    role: Annotated[Role, typer.Option(help="What the user is.")],
    name: Annotated[str | None, typer.Option(help="Full name.")] = None,
    email: Annotated[str | None, typer.Option()] = None,
    phone: Annotated[str | None, typer.Option()] = None,
    customer: Annotated[str | None, typer.Option(help="Customer code (customer users only).")] = None,
    manager: Annotated[str | None, typer.Option(help="Username of their manager.")] = None,
    department: Annotated[str | None, typer.Option(help="Department code.")] = None,
    lang: Annotated[str, typer.Option(help="en or zh.")] = "en",
    timezone: Annotated[str | None, typer.Option(help="IANA timezone, e.g. Asia/Shanghai.")] = None,
    identity: Annotated[
        list[str] | None, typer.Option(help="CHANNEL:ID, e.g. telegram:12345; repeatable.")
    ] = None,
) -> None:
    """Add a user (staff or a customer's person) and link their channel accounts."""
    from core.schemas import UserIn

    try:
        data = UserIn(
            username=username,
            role=role,
            name=name,
            email=email,
            phone=phone,
            customer_code=customer,
            manager=manager,
            department=department,
            lang=lang,
            timezone=timezone,
            identities=identity or [],
        )
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            err.print(f"Invalid {field}: {error['msg']}", markup=False)
        raise typer.Exit(1) from None
    user = with_core(lambda core: core.org.add_user(SYSTEM, data))
    console.print(
        f"Added {user.role} {user.username} ({user.name})"
        + (f", linked {', '.join(user.identities)}" if user.identities else "")
        + ".",
        markup=False,
    )


@users_app.command("token")
def users_token(
    username: Annotated[str, typer.Argument()],
    label: Annotated[str, typer.Option(help="What the token is for.")] = "",
) -> None:
    """Issue a personal API token (acts with that user's permissions); shown once."""
    token = with_core(lambda core: core.org.issue_api_token(SYSTEM, username, label))
    console.print(token, markup=False)


@users_app.command("list")
def users_list() -> None:
    """List users with role and identities."""
    users = with_core(lambda core: core.org.list_users(SYSTEM))
    table = Table("username", "role", "name", "customer", "manager", "identities")
    for user in users:
        table.add_row(
            user.username,
            user.role,
            user.name,
            user.customer_code or "",
            user.manager or "",
            ", ".join(user.identities),
        )
    console.print(table)


# --- kb -----------------------------------------------------------------------------------------


@kb_app.command("search")
def kb_search(
    query: Annotated[str, typer.Argument(help="What to look for: symptoms, an error code, a question.")],
    limit: Annotated[int, typer.Option(min=1, max=50)] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Search the knowledge base."""
    hits = with_core(lambda core: core.knowledge.search(SYSTEM, query, limit=limit))
    if as_json:
        sys.stdout.write(json.dumps([hit.model_dump() for hit in hits], ensure_ascii=False, indent=2) + "\n")
        return
    if not hits:
        console.print("No matching articles.")
        return
    table = Table("code", "title", "score", "lang")
    for hit in hits:
        table.add_row(hit.code, hit.title, f"{hit.score:.0f}", hit.lang)
    console.print(table)


# --- notify -------------------------------------------------------------------------------------


class NotifyChannel(StrEnum):
    """Channels a test message can be sent on from the command line."""

    EMAIL = "email"
    SMS = "sms"
    TELEGRAM = "telegram"
    SLACK = "slack"


@notify_app.command("test")
def notify_test(
    to: Annotated[str, typer.Option("--to", help="The username to send the test message to.")],
    channel: Annotated[NotifyChannel, typer.Option(help="The channel to try.")],
) -> None:
    """Send a test message to a user on one channel, now, and say how it went."""
    import uuid

    from core.db.models import Notification
    from notifier.build import build_notifier, standalone_chat_senders
    from notifier.recipients import load_profile
    from notifier.routing import Message, Target

    async def work(core: Core) -> Notification | None:
        actor = await core.org.actor_for_username(to)
        senders, closers = standalone_chat_senders(core)
        notifier = build_notifier(core, senders)
        try:
            if channel.value not in notifier.senders:
                err.print(
                    f"{channel.value} is not configured here (see README: Configuration).", markup=False
                )
                raise typer.Exit(1)
            async with core.uow() as uow:
                profile = await load_profile(
                    uow.session,
                    actor.user_id or 0,
                    available=notifier.senders.keys(),
                    default_tz=core.settings.timezone,
                    default_quiet="",
                )
            if profile is None or channel.value not in profile.reachable:
                what = (
                    "email address"
                    if channel is NotifyChannel.EMAIL
                    else (
                        "phone number" if channel is NotifyChannel.SMS else f"{channel.value} account linked"
                    )
                )
                err.print(f"{to} has no {what}: nothing to send to.", markup=False)
                raise typer.Exit(1)
            message = Message(
                kind="test",
                target=Target(user_id=actor.user_id),
                context={"channel": channel.value},
                urgent=True,
                channels=(channel.value,),
            )
            ids = await notifier.enqueue([message], source=f"test-{uuid.uuid4().hex[:12]}")
            await notifier.deliver(only=ids)
            async with core.uow() as uow:
                return await uow.session.get(Notification, ids[0]) if ids else None
        finally:
            await notifier.close()
            for close in closers:
                await close()

    notification = with_core(work)
    if notification is None:
        err.print("Nothing was queued.")
        raise typer.Exit(1)
    if notification.status == "sent":
        console.print(
            f"Sent to {to} by {channel.value} (notification {notification.id}, provider id "
            f"{notification.provider_id or '-'}).",
            markup=False,
        )
        return
    err.print(
        f"Not delivered: {notification.status} — {notification.last_error or 'no reason recorded'} "
        f"(notification {notification.id}).",
        markup=False,
    )
    raise typer.Exit(1)


@notify_app.command("status")
def notify_status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Counts by state, the oldest message still waiting, and the newest dead letters."""
    stats = with_core(lambda core: core.notifications.stats(SYSTEM))
    if as_json:
        sys.stdout.write(stats.model_dump_json(indent=2) + "\n")
        return
    counts = Table("status", "messages", title="Notifications")
    for status, count in stats.counts.items():
        counts.add_row(status, str(count))
    console.print(counts)
    console.print(
        "Oldest waiting: " + (stats.oldest_pending_at.isoformat() if stats.oldest_pending_at else "none"),
        markup=False,
    )
    if stats.dead:
        dead = Table("id", "kind", "channel", "to", "attempts", "reason", title="Dead letters (newest first)")
        for item in stats.dead:
            dead.add_row(
                str(item.id),
                item.kind,
                item.channel or "-",
                item.username or "(address)",
                str(item.attempts),
                item.last_error or "",
            )
        console.print(dead)
        console.print("Retry one with: crmbot notify retry ID")


@notify_app.command("retry")
def notify_retry(
    notification_id: Annotated[int, typer.Argument(min=1, help="The dead letter's id.")],
) -> None:
    """Put a dead letter back in the queue (after fixing its cause)."""
    item = with_core(lambda core: core.notifications.retry(SYSTEM, notification_id))
    console.print(f"Notification {item.id} is {item.status} again; a worker will deliver it.", markup=False)


# --- scheduler ----------------------------------------------------------------------------------


@scheduler_app.command("run-once")
def scheduler_run_once(
    at: Annotated[
        str | None,
        typer.Option(help="The moment to sweep for, ISO 8601 with a timezone offset (default: now)."),
    ] = None,
    deliver: Annotated[
        bool, typer.Option(help="Also deliver what the sweeps raised, as a worker would at that moment.")
    ] = True,
) -> None:
    """Run every sweep due at that moment once, then exit (cron deployments; checking a chosen time).

    Running it twice for the same moment, or beside a live scheduler, does nothing twice: every sweep
    marks what it did in the same transaction.
    """
    from datetime import datetime

    from core.clock import FrozenClock
    from notifier.build import build_notifier, standalone_chat_senders
    from notifier.registry import all_sweeps
    from notifier.scheduler import Scheduler

    moment: datetime | None = None
    if at is not None:
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            err.print(f"--at: '{at}' is not an ISO 8601 date and time (like 2026-06-15T08:00:00+08:00).")
            raise typer.Exit(2) from None
        if moment.tzinfo is None:
            err.print("--at needs a timezone offset (like +08:00 or Z): a reminder's day depends on it.")
            raise typer.Exit(2)
    settings = load_settings()

    async def main() -> tuple[dict[str, int], int]:
        core = build_core(settings, clock=FrozenClock(moment) if moment is not None else None)
        try:
            from core.db.migrate import upgrade

            await upgrade(core.engine)
            await check_notifier_configuration(core)
            done = await Scheduler(core, all_sweeps()).run_due()
            delivered = 0
            if deliver:
                senders, closers = standalone_chat_senders(core)
                notifier = build_notifier(core, senders)
                try:
                    _, delivered = await notifier.run_once()
                finally:
                    await notifier.close()
                    for close in closers:
                        await close()
            return done, delivered
        finally:
            await core.close()

    done, delivered = asyncio.run(main())
    table = Table("sweep", "done", title=f"Sweeps at {(moment.isoformat() if moment else 'now')}")
    for name, count in done.items():
        table.add_row(name, "failed (see the log)" if count < 0 else str(count))
    console.print(table)
    if deliver:
        console.print(f"Notifications handled: {delivered}")
    if any(count < 0 for count in done.values()):
        raise typer.Exit(1)


# --- test ---------------------------------------------------------------------------------------

test_app = typer.Typer(help="Conversation tests (docs/conversation-tests.md).", no_args_is_help=True)
app.add_typer(test_app, name="test")


@test_app.command("conversations")
def test_conversations(
    files: Annotated[list[Path], typer.Argument(help="Conversation test files (YAML).")],
    url: Annotated[
        str | None, typer.Option(help="A running crmbot to test (default: in process, on demo data).")
    ] = None,
    token: Annotated[str | None, typer.Option(help="Its API token (with --url).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    channel: Annotated[
        str, typer.Option(help="In process: rest (default), or terminal to type into `crmbot chat`.")
    ] = "rest",
) -> None:
    """Run conversation tests: exit 1 when a conversation fails, 2 when a file is malformed."""
    from crmbot.conversations import run_files

    if (url is None) != (token is None):
        err.print("--url and --token go together (the server's API token).", markup=False)
        raise typer.Exit(2)
    if channel not in ("rest", "terminal") or (url and channel != "rest"):
        err.print("--channel is rest or terminal; a server (--url) is spoken to over rest.", markup=False)
        raise typer.Exit(2)
    code = run_files(
        files,
        url=url,
        token=token,
        settings=None if url else load_settings(),
        as_json=as_json,
        channel="terminal" if channel == "terminal" else "rest",
    )
    raise typer.Exit(code)


def main() -> None:
    """Entry point for `python -m crmbot`."""
    app()
