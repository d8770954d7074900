"""The conversation-test runner: strict file checks, failures people can read, buttons, API steps, a live
server over HTTP, and every file in tests/conversations/ (this is how CI runs them)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvicorn
from rich.console import Console
from typer.testing import CliRunner

from bot.assistant import Assistant, RateLimit
from bot.messages import Button, Reply
from bot.nlu.embedded import EmbeddedNlu
from bot.nlu.service import default_model_path, ensure_model
from core.container import build_core
from core.settings import Settings
from crmbot.app import create_app
from crmbot.cli import app
from crmbot.conversations import (
    ConversationFileError,
    InProcessTarget,
    Report,
    format_failure,
    load_file,
    load_files,
    lookup,
    matches,
    prepare_demo_database,
    read_terminal,
    run_conversations,
)

# The runner loads the demo data into its own SQLite copies: the PostgreSQL run need not repeat it.
pytestmark = pytest.mark.own_database

CONVERSATION_FILES = sorted((Path(__file__).parent / "conversations").glob("*.yml"))
SERVER_TOKEN = "conversation-test-server-token"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose data directory holds the NLU model for every run of this module."""
    return Settings(data_dir=tmp_path_factory.mktemp("conversations") / "var", _env_file=None)


@pytest.fixture(scope="module")
def nlu(settings: Settings) -> EmbeddedNlu:
    """The shipped model, trained once where `crmbot test conversations` will look for it."""
    return ensure_model(default_model_path(settings))


@pytest.fixture(scope="module")
async def template(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo data loaded once (seconds); every run below copies it."""
    return await prepare_demo_database(settings, tmp_path_factory.mktemp("demo") / "demo.db")


@pytest.fixture(scope="module")
async def target(settings: Settings, nlu: EmbeddedNlu, template: Path) -> AsyncIterator[InProcessTarget]:
    """The in-process runner over the shared demo template."""
    async with InProcessTarget.start(settings, nlu=nlu, template=template) as started:
        yield started


@pytest.fixture(scope="module")
async def terminal(settings: Settings, nlu: EmbeddedNlu, template: Path) -> AsyncIterator[InProcessTarget]:
    """The same, typing into the terminal chat (`crmbot chat`) instead of posting to the REST channel."""
    async with InProcessTarget.start(settings, nlu=nlu, template=template, channel="terminal") as started:
        yield started


@pytest.fixture
def cli(settings: Settings, nlu: EmbeddedNlu, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """The command line, finding the already trained model in its data directory."""
    monkeypatch.setenv("CRMBOT_DATA_DIR", str(settings.data_dir))
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


async def run_text(target: InProcessTarget, directory: Path, text: str) -> Report:
    return await run_conversations(load_files([write(directory, "conversations.yml", text)]), target)


def failures(report: Report) -> str:
    return "\n".join(line for outcome in report.outcomes for line in format_failure(outcome))


# --- every conversation file --------------------------------------------------------------------


@pytest.mark.parametrize("path", CONVERSATION_FILES, ids=lambda path: path.name)
async def test_conversation_file_passes(path: Path, target: InProcessTarget) -> None:
    report = await run_conversations(load_files([path]), target)
    failed = report.failed  # a plain number, so pytest prints the failures and not the whole report
    assert failed == 0, failures(report)


@pytest.mark.parametrize("path", CONVERSATION_FILES, ids=lambda path: path.name)
async def test_conversation_file_passes_in_the_terminal(path: Path, terminal: InProcessTarget) -> None:
    report = await run_conversations(load_files([path]), terminal)
    failed = report.failed
    assert failed == 0, failures(report)


# --- running ------------------------------------------------------------------------------------


async def test_a_passing_file(target: InProcessTarget, tmp_path: Path) -> None:
    report = await run_text(
        target,
        tmp_path,
        """
conversations:
  - name: greet
    sender: demo-customer-en
    steps:
      - user: "hi there"
        expect: {intent: greet, reply: "Hello", not_reply: "went wrong"}
      - user: "洗碗机显示E13怎么办"
        expect: {intent: "search_knowledge|nlu_fallback", reply: ["E13", "已解决"]}
""",
    )
    assert report.summary() == "1 passed, 0 failed", failures(report)


# A button pressed by its title, one that is not there, and one answered otherwise (both channels).
BUTTON_PRESSES = """
conversations:
  - name: warranty then repair
    sender: demo-customer
    steps:
      - user: "is WM2023-00917 still under warranty?"
      - button: "(?i)request a REPAIR"
        expect: {intent: open_service_request, reply: "What's wrong"}
  - name: no such button
    sender: demo-customer
    steps:
      - user: "is WM2023-00917 still under warranty?"
      - button: "Launch the rocket"
  - name: pressed, answered otherwise
    sender: demo-customer
    steps:
      - user: "is WM2023-00917 still under warranty?"
      - button: "Request a repair"
        expect: {reply: "Launched"}
"""


async def test_a_button_is_pressed_by_its_title(target: InProcessTarget, tmp_path: Path) -> None:
    report = await run_text(
        target,
        tmp_path,
        BUTTON_PRESSES,
    )
    assert [outcome.passed for outcome in report.outcomes] == [True, False, False], failures(report)
    assert '  pressed: /open_service_request{"serial_number": "WM2023-00917"}' in failures(report)
    failure = report.outcomes[1].failure
    assert failure is not None and failure.step.number == 2
    assert "no button titled /Launch the rocket/" in failure.problems[0]
    # The replies it looked in are shown, titles included.
    assert "buttons: [Request a repair]" in failures(report)


async def test_in_the_terminal_a_button_is_its_number_on_screen_or_its_title(
    terminal: InProcessTarget, tmp_path: Path
) -> None:
    report = await run_text(
        terminal,
        tmp_path,
        BUTTON_PRESSES,
    )
    assert [outcome.passed for outcome in report.outcomes] == [True, False, False], failures(report)
    # The terminal user types the number of the choice printed under the reply.
    assert "  pressed: 1\n" in failures(report)


def test_the_terminal_output_is_read_back_into_replies() -> None:
    printed = (
        "crmbot: Your requests:\n"
        "SR-1 · new\n"
        "  (chart: open requests, 512 bytes)\n"
        "  1. Check SR-1\n"
        "  2. [Drop it]\n"
        "crmbot: Anything else?\n"
    )
    assert read_terminal(printed) == [
        {"text": "Your requests:\nSR-1 · new", "buttons": [{"title": "Check SR-1"}, {"title": "[Drop it]"}],
         "image": True},
        {"text": "Anything else?", "buttons": []},
    ]


async def test_a_reply_the_terminal_mangles_fails_the_step(
    terminal: InProcessTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terminal prints replies with rich: what it shows must be what the assistant said."""

    def careless(console: Console, replies: list[Reply]) -> list[Button]:
        for reply in replies:
            console.print(f"crmbot: {reply.text}", markup=True, highlight=False, soft_wrap=True)
        return []

    monkeypatch.setattr("bot.channels.terminal.render", careless)
    report = await run_text(
        terminal,
        tmp_path,
        """
conversations:
  - name: any question with buttons
    sender: demo-customer-en
    steps:
      - user: "is WM2023-00917 still under warranty?"
""",
    )
    assert report.failed == 1
    assert "buttons printed as []" in failures(report)


async def test_each_conversation_starts_from_a_fresh_copy(target: InProcessTarget, tmp_path: Path) -> None:
    """A half-asked repair and a changed request in one conversation are gone in the next."""
    report = await run_text(
        target,
        tmp_path,
        """
conversations:
  - name: leaves a repair half-asked and assigns SR-1
    sender: demo-customer
    steps:
      - user: "is WM2023-00917 still under warranty?"
      - button: "Request a repair"
        expect: {reply: "What's wrong"}
      - api: POST /api/v1/service-requests/SR-1/transitions
        body: {action: assign, assignee: liu.yang}
        expect: {status: 200, json: {status: assigned}}
  - name: finds nothing of it
    sender: demo-customer
    steps:
      - user: "/cancel"
        expect: {intent: cancel, reply: "没有进行中的操作", not_reply: "已取消"}
      - api: GET /api/v1/service-requests/SR-1
        expect: {status: 200, json: {status: new}}
""",
    )
    assert report.failed == 0, failures(report)


async def test_api_steps_check_status_and_dotted_paths(target: InProcessTarget, tmp_path: Path) -> None:
    report = await run_text(
        target,
        tmp_path,
        """
conversations:
  - name: api passes
    sender: demo-agent
    steps:
      - api: GET /api/v1/warranty/WM2023-00917
        expect: {status: 200, json: {serial_number: WM2023-00917, in_warranty: true, customer: 王芳}}
      - api: GET /api/v1/service-requests/SR-2
        expect: {status: 200, json: {ref: SR-2, "history.0.action": open, "history.0.from_status": null}}
  - name: api fails
    sender: demo-agent
    steps:
      - api: GET /api/v1/service-requests?limit=1
        expect: {status: 200, json: {"items.0.status": "no-such-status", "items.3.ref": "SR-4"}}
  - name: api status
    sender: demo-agent
    steps:
      - api: GET /api/v1/warranty/NO-SUCH-SERIAL
        expect: {status: 200}
""",
    )
    passed, wrong_value, wrong_status = report.outcomes
    assert passed.passed, failures(report)
    assert wrong_value.failure is not None and wrong_status.failure is not None
    assert wrong_value.failure.problems[0].startswith('expected items.0.status = "no-such-status", got "')
    assert wrong_value.failure.problems[1] == 'expected items.3.ref = "SR-4", but the body has no items.3.ref'
    assert wrong_status.failure.problems == ("expected status 200, got 404",)
    assert "HTTP 404" in failures(report)


async def test_a_post_with_a_body(target: InProcessTarget, tmp_path: Path) -> None:
    report = await run_text(
        target,
        tmp_path,
        """
conversations:
  - name: parse through the API
    sender: demo-agent
    steps:
      - api: POST /model/parse
        body: {text: "is AB12345 still under warranty?"}
        expect: {status: 200, json: {intent: {name: check_warranty}, "entities.0.value": AB12345}}
""",
    )
    assert report.failed == 0, failures(report)


def test_dotted_paths_and_subset_match() -> None:
    document = {"items": [{"ref": "SR-1", "tags": ["a", "b"], "ok": True}, {"ref": "SR-2", "n": 1}]}
    assert lookup(document, "items.-1.ref") == (True, "SR-2")
    assert lookup(document, "items.2.ref") == (False, None)
    assert lookup(document, "items.x") == (False, None)
    assert matches({"ref": "SR-1", "tags": ["a", "b"]}, document["items"][0])
    assert not matches({"tags": ["a"]}, document["items"][0])  # a list is compared whole
    assert not matches(1, True) and not matches(True, 1)  # JSON true is not 1
    assert matches(1, 1.0)


# --- the command line ---------------------------------------------------------------------------


def test_a_failing_expectation_exits_1_and_shows_the_step_and_replies(cli: CliRunner, tmp_path: Path) -> None:
    """The whole command, as CI runs it: demo data loaded into a throw-away database first."""
    path = write(
        tmp_path,
        "failing.yml",
        """
conversations:
  - name: greets
    sender: demo-customer-en
    steps:
      - user: "hello"
        expect: {reply: "Hello"}
  - name: wrong expectation
    sender: demo-customer
    steps:
      - user: "你好"
        expect: {intent: greet}
      - user: "AB12345还在保修期吗？"
        expect: {intent: help, reply: "在保修期内"}
""",
    )
    result = cli.invoke(app, ["test", "conversations", str(path)])
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert f'FAILED {path}: conversation "wrong expectation" (sender demo-customer) step 2: ' in out
    assert 'user: "AB12345还在保修期吗？"' in out
    assert "expected intent help, the NLU understood check_warranty" in out
    assert "expected a reply matching /在保修期内/" in out
    assert "    | ❌" in out and "buttons: [报修]" in out
    assert out.splitlines()[-1] == "1 passed, 1 failed"


MALFORMED = """
conversations:
  - name: fine
    sender: demo-customer
    steps:
      - user: "hi"
  - name: broken
    sender: demo-customer
    steps:
      - user: "hi"
        expect: {reply: "(unclosed"}
      - say: "hello"
      - expect: {reply: "x"}
      - user: yes
      - user: "hi"
        expect: {status: 200}
      - api: FETCH /x
      - button: "OK"
        body: {}
"""


def test_a_malformed_file_exits_2_naming_file_conversation_and_step(cli: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "malformed.yml", MALFORMED)
    result = cli.invoke(app, ["test", "conversations", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    prefix = f'{path}: conversation "broken" step'
    assert lines == [
        f'{prefix} 1: `reply` is not a valid regex "(unclosed": missing ), unterminated subpattern '
        "at position 0",
        f"{prefix} 2: unknown key(s) say (allowed: user, button, api, body, expect)",
        f"{prefix} 3: a step has exactly one of user, button or api",
        f'{prefix} 4: `user` must be text (quote it: user: "...")',
        f"{prefix} 5: `expect` has unknown key(s) status for a user step (allowed: intent, not_reply, reply)",
        f'{prefix} 6: `api` must be "METHOD /path" with METHOD one of GET, POST, PUT, PATCH, DELETE',
        f"{prefix} 7: `body` goes only with an `api` step",
    ]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[]", "the file must hold one top-level key, `conversations:`"),
        ("conversations: []", "`conversations` must be a non-empty list"),
        ("conversations:\n  - name: a\n    sender: s\n    steps: []", 'conversation "a": `steps` must be'),
        ("conversations:\n  - {name: a, steps: [{user: hi}]}", 'conversation "a": `sender` must be'),
        ("conversations:\n  - {name: a, sender: s, lang: en, steps: [{user: hi}]}", "unknown key(s) lang"),
        ("conversations:\n  - {name: a, sender: s, steps: [{button: OK}]}", "step 1: a button can only be"),
        (
            "conversations:\n  - {name: a, sender: s, steps: [{user: hi}]}\n"
            "  - {name: a, sender: s, steps: [{user: hi}]}",
            'conversation "a": another conversation has the same',
        ),
        ("conversations: [\n", "not valid YAML (line 2)"),
    ],
)
def test_file_checks(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, "bad.yml", text)
    with pytest.raises(ConversationFileError) as caught:
        load_file(path)
    assert any(line.startswith(f"{path}: ") and problem in line for line in caught.value.problems), (
        caught.value.problems
    )


def test_url_goes_with_token(cli: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "ok.yml", "conversations:\n  - {name: a, sender: s, steps: [{user: hi}]}\n")
    result = cli.invoke(app, ["test", "conversations", str(path), "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "--url and --token go together" in result.stderr


# --- against a running server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server(
    settings: Settings, nlu: EmbeddedNlu, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real uvicorn on a free loopback port, over a copy of the demo data, with a tight rate limit."""
    database = tmp_path_factory.mktemp("server") / "server.db"
    shutil.copyfile(template, database)
    server_settings = settings.model_copy(update={"database_url": f"sqlite+aiosqlite:///{database}"})
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    servers: list[uvicorn.Server] = []

    async def serve() -> None:
        core = build_core(server_settings)
        # Four messages at once, then four a second: a long conversation meets "slow down" here.
        assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=4, per_second=4))
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(core, SERVER_TOKEN, assistant=assistant, nlu=nlu),
                log_level="warning",
                lifespan="off",
            )
        )
        servers.append(server)
        try:
            await server.serve(sockets=[listener])
        finally:
            await core.close()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not (servers and servers[0].started):
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    servers[0].should_exit = True
    thread.join(timeout=10)
    listener.close()


def test_against_a_running_server(cli: CliRunner, live_server: str, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "server.yml",
        """
conversations:
  - name: a long conversation waits out the rate limit
    sender: demo-customer
    steps:
      - user: "hello"
        expect: {intent: greet, reply: "Hello 王芳"}
      - user: "WM2023-00917还在保修期吗？"
        expect: {intent: check_warranty, reply: "保修至"}
      - button: "报修"
        expect: {intent: open_service_request, reply: "什么问题"}
      - user: "cancel"
        expect: {intent: cancel}
      - user: "error E13 on my dishwasher"
        expect: {intent: search_knowledge, reply: "KB-DW-E13"}
      - user: "thanks, bye"
        expect: {intent: goodbye}
      - api: GET /api/v1/warranty/WM2023-00917
        expect: {status: 200, json: {in_warranty: true}}
  - name: a wrong expectation fails over HTTP too
    sender: demo-rep
    steps:
      - user: "my deals"
        expect: {intent: pipeline_summary}
""",
    )
    result = cli.invoke(
        app, ["test", "conversations", str(path), "--url", live_server, "--token", SERVER_TOKEN, "--json"]
    )
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert (report["passed"], report["failed"], report["mode"]) == (1, 1, "server")
    first, second = report["conversations"]
    assert first["passed"] and first["failure"] is None, first
    assert second["failure"]["step"] == 1
    [problem] = second["failure"]["problems"]
    assert problem.startswith("expected intent pipeline_summary, the NLU understood list_deals (")
    assert any("OP-" in reply["text"] for reply in second["failure"]["replies"])


def test_a_wrong_token_fails_the_step_and_an_unreachable_server_is_said(
    cli: CliRunner, live_server: str, tmp_path: Path
) -> None:
    path = write(
        tmp_path, "one.yml", "conversations:\n  - {name: a, sender: demo-rep, steps: [{user: hi}]}\n"
    )
    refused = cli.invoke(app, ["test", "conversations", str(path), "--url", live_server, "--token", "wrong"])
    assert refused.exit_code == 1
    assert "the REST channel answered HTTP 401" in refused.stdout
    assert refused.stdout.splitlines()[-1] == "0 passed, 1 failed"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    down = cli.invoke(
        app, ["test", "conversations", str(path), "--url", f"http://127.0.0.1:{closed}", "--token", "x"]
    )
    assert down.exit_code == 1 and "cannot reach" in down.stderr
