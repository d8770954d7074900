"""Conversation tests: YAML scripts of messages, button presses and API calls with expectations, run in
process on a throw-away demo database or against a running server (format: docs/conversation-tests.md)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import queue
import re
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import httpx
import yaml
from rich.console import Console

from bot.assistant import Assistant, RateLimit, parse_payload
from bot.channels.terminal import chat_loop
from bot.i18n import t
from bot.messages import IncomingMessage, Reply
from bot.nlu.types import NluEngine
from core.settings import Settings

if TYPE_CHECKING:
    from core.auth import Actor
    from core.container import Core

__all__ = [
    "Conversation",
    "ConversationFileError",
    "InProcessTarget",
    "Outcome",
    "Report",
    "ServerTarget",
    "Step",
    "format_failure",
    "load_files",
    "lookup",
    "matches",
    "prepare_demo_database",
    "run_conversations",
    "run_files",
]

WEBHOOK = "/webhooks/rest/webhook"
PARSE = "/model/parse"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CONVERSATION_KEYS = frozenset({"name", "sender", "steps"})
STEP_KEYS = frozenset({"user", "button", "api", "body", "expect"})
CHAT_EXPECT_KEYS = frozenset({"reply", "not_reply", "intent"})
API_EXPECT_KEYS = frozenset({"status", "json"})
# In process the assistant is a test double of itself in one respect: nobody is flooding it, so a long
# conversation must not be told to slow down (the rate limit has its own tests).
GENEROUS = RateLimit(burst=10_000, per_second=10_000)
# Against a server the real limit applies: a slowed-down message is sent again after this wait.
SLOW_DOWN_TEXTS = frozenset({t("en", "dialogue.slow_down"), t("zh", "dialogue.slow_down")})
SLOW_DOWN_RETRIES = 30
T = TypeVar("T")
# How the terminal chat begins each reply it prints.
TERMINAL_PREFIX = "crmbot: "


# --- the format ---------------------------------------------------------------------------------


class ConversationFileError(Exception):
    """A conversation file that cannot be run: one `FILE: conversation NAME step K: reason` per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Expect:
    """What a step must produce; empty means the step only has to go through."""

    reply: tuple[re.Pattern[str], ...] = ()
    not_reply: tuple[re.Pattern[str], ...] = ()
    intent: re.Pattern[str] | None = None
    status: int | None = None
    json: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One thing the conversation does: say something, press a button, or call the API."""

    number: int
    kind: Literal["user", "button", "api"]
    text: str
    expect: Expect
    button: re.Pattern[str] | None = None
    method: str = ""
    path: str = ""
    body: Any = None

    def describe(self) -> str:
        """The step as its writer wrote it, for failure messages."""
        if self.kind == "api":
            return f"api: {self.text}" + (
                f" body {json.dumps(self.body, ensure_ascii=False)}" if self.body else ""
            )
        return f"{self.kind}: {json.dumps(self.text, ensure_ascii=False)}"


@dataclass(frozen=True)
class Conversation:
    """A named script for one REST sender."""

    file: str
    name: str
    sender: str
    steps: tuple[Step, ...]


class _Problem(Exception):
    """One validation problem, located by the caller."""


def load_files(paths: Iterable[Path]) -> list[Conversation]:
    """Every conversation of every file, or ConversationFileError listing every problem found."""
    conversations: list[Conversation] = []
    problems: list[str] = []
    # A folder stands for its own *.yml files (not its subfolders: pending/ is not run).
    files = [item for path in paths for item in (sorted(path.glob("*.yml")) if path.is_dir() else [path])]
    for path in files:
        try:
            conversations.extend(load_file(path))
        except ConversationFileError as error:
            problems.extend(error.problems)
    if problems:
        raise ConversationFileError(problems)
    return conversations


def load_file(path: Path) -> list[Conversation]:
    """The conversations of one file, validated strictly (a typo must not turn into a passing test)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConversationFileError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConversationFileError([f"{path}: not UTF-8 text"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConversationFileError([f"{path}: not valid YAML{where}: {reason}"]) from None
    if not isinstance(document, dict) or set(document) != {"conversations"}:
        raise ConversationFileError([f"{path}: the file must hold one top-level key, `conversations:`"])
    items = document["conversations"]
    if not isinstance(items, list) or not items:
        raise ConversationFileError([f"{path}: `conversations` must be a non-empty list"])
    conversations: list[Conversation] = []
    problems: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(items, start=1):
        label = _label(item, index)
        try:
            conversation = _conversation(str(path), item, label, problems)
        except _Problem as problem:
            problems.append(f"{path}: conversation {label}: {problem}")
            continue
        if conversation is None:
            continue
        if conversation.name in seen:
            problems.append(f"{path}: conversation {label}: another conversation has the same name")
        seen.add(conversation.name)
        conversations.append(conversation)
    if problems:
        raise ConversationFileError(problems)
    return conversations


def _label(item: Any, index: int) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return json.dumps(name, ensure_ascii=False) if isinstance(name, str) and name.strip() else f"#{index}"


def _only(mapping: dict[Any, Any], allowed: frozenset[str], listed: str) -> None:
    """Refuse keys the format does not know (a typo would otherwise silently check nothing)."""
    unknown = set(mapping) - allowed
    if unknown:
        raise _Problem(f"unknown key(s) {', '.join(sorted(map(str, unknown)))} (allowed: {listed})")


def _conversation(file: str, item: Any, label: str, problems: list[str]) -> Conversation | None:
    if not isinstance(item, dict):
        raise _Problem("must be a mapping with name, sender and steps")
    _only(item, CONVERSATION_KEYS, "name, sender, steps")
    name, sender, steps = item.get("name"), item.get("sender"), item.get("steps")
    if not isinstance(name, str) or not name.strip():
        raise _Problem("`name` must be non-empty text")
    if not isinstance(sender, str) or not sender.strip() or len(sender) > 128:
        raise _Problem("`sender` must be a REST sender id (text, up to 128 characters), e.g. demo-customer")
    if not isinstance(steps, list) or not steps:
        raise _Problem("`steps` must be a non-empty list")
    parsed: list[Step] = []
    for number, raw in enumerate(steps, start=1):
        try:
            parsed.append(_step(number, raw))
        except _Problem as problem:
            problems.append(f"{file}: conversation {label} step {number}: {problem}")
    if len(parsed) != len(steps):
        return None
    if parsed[0].kind == "button":
        problems.append(f"{file}: conversation {label} step 1: a button can only be pressed after a reply")
        return None
    return Conversation(file=file, name=name.strip(), sender=sender.strip(), steps=tuple(parsed))


def _step(number: int, raw: Any) -> Step:
    if not isinstance(raw, dict):
        raise _Problem("must be a mapping with one of user, button or api")
    _only(raw, STEP_KEYS, "user, button, api, body, expect")
    kinds = [kind for kind in ("user", "button", "api") if kind in raw]
    if len(kinds) != 1:
        raise _Problem(
            "a step has exactly one of user, button or api"
            + (f" (found {', '.join(kinds)})" if kinds else "")
        )
    kind: Literal["user", "button", "api"] = kinds[0]  # type: ignore[assignment]
    value = raw[kind]
    if not isinstance(value, str) or not value.strip():
        # YAML turns unquoted yes/no/on into booleans and 15:00 into a number: say so rather than guess.
        raise _Problem(f'`{kind}` must be text (quote it: {kind}: "...")')
    if "body" in raw and kind != "api":
        raise _Problem("`body` goes only with an `api` step")
    expect = _expect(raw.get("expect"), kind)
    if kind == "user":
        return Step(number=number, kind=kind, text=value, expect=expect)
    if kind == "button":
        return Step(number=number, kind=kind, text=value, expect=expect, button=_regex(value, "button"))
    method, _, path = value.strip().partition(" ")
    path = path.strip()
    if method.upper() not in METHODS or not path.startswith("/") or " " in path:
        raise _Problem(f'`api` must be "METHOD /path" with METHOD one of {", ".join(METHODS)}')
    return Step(
        number=number,
        kind=kind,
        text=f"{method.upper()} {path}",
        expect=expect,
        method=method.upper(),
        path=path,
        body=_plain(raw["body"]) if "body" in raw else None,
    )


def _expect(raw: Any, kind: str) -> Expect:
    if raw is None:
        return Expect()
    if not isinstance(raw, dict):
        raise _Problem("`expect` must be a mapping")
    allowed = API_EXPECT_KEYS if kind == "api" else CHAT_EXPECT_KEYS
    unknown = set(raw) - allowed
    if unknown:
        raise _Problem(
            f"`expect` has unknown key(s) {', '.join(sorted(map(str, unknown)))} for a {kind} step "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    status = raw.get("status")
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599
    ):
        raise _Problem("`expect.status` must be an HTTP status code such as 200")
    expected_json = raw.get("json", {})
    if not isinstance(expected_json, dict) or not all(isinstance(key, str) and key for key in expected_json):
        raise _Problem("`expect.json` must map dotted paths (like items.0.status) to expected values")
    intent = raw.get("intent")
    if intent is not None and (not isinstance(intent, str) or not intent.strip()):
        raise _Problem("`expect.intent` must be an intent name (text)")
    return Expect(
        reply=_regexes(raw.get("reply"), "reply"),
        not_reply=_regexes(raw.get("not_reply"), "not_reply"),
        intent=_regex(intent.strip(), "intent") if intent is not None else None,
        status=status,
        json={key: _plain(value) for key, value in expected_json.items()},
    )


def _regexes(raw: Any, key: str) -> tuple[re.Pattern[str], ...]:
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(item, str) and item for item in items):
        raise _Problem(f"`expect.{key}` must be a regex (quoted text) or a list of them")
    return tuple(_regex(item, key) for item in items)


def _regex(source: str, key: str) -> re.Pattern[str]:
    try:
        return re.compile(source)
    except re.error as exc:
        raise _Problem(
            f"`{key}` is not a valid regex {json.dumps(source, ensure_ascii=False)}: {exc}"
        ) from None


def _plain(value: Any) -> Any:
    """YAML values as JSON would carry them (a YAML date is compared as its ISO text)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


# --- running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """Why a conversation stopped: the step, what was wrong, and what came back."""

    step: Step
    problems: tuple[str, ...]
    replies: tuple[dict[str, Any], ...] = ()
    status: int | None = None
    body: str | None = None
    sent: str | None = None


@dataclass(frozen=True)
class Outcome:
    """One conversation's result."""

    conversation: Conversation
    seconds: float
    failure: Failure | None = None

    @property
    def passed(self) -> bool:
        """No step failed."""
        return self.failure is None


@dataclass(frozen=True)
class Report:
    """Every conversation's outcome, in file order."""

    outcomes: tuple[Outcome, ...]
    mode: str
    seconds: float

    @property
    def failed(self) -> int:
        """How many conversations failed."""
        return sum(1 for outcome in self.outcomes if not outcome.passed)

    @property
    def passed(self) -> int:
        """How many conversations passed."""
        return len(self.outcomes) - self.failed

    def summary(self) -> str:
        """The last line of the report: `N passed, M failed`."""
        return f"{self.passed} passed, {self.failed} failed"

    def to_json(self) -> dict[str, Any]:
        """The machine-readable report (`--json`)."""
        return {
            "passed": self.passed,
            "failed": self.failed,
            "mode": self.mode,
            "seconds": round(self.seconds, 3),
            "conversations": [
                {
                    "file": outcome.conversation.file,
                    "name": outcome.conversation.name,
                    "sender": outcome.conversation.sender,
                    "passed": outcome.passed,
                    "seconds": round(outcome.seconds, 3),
                    "failure": None
                    if outcome.failure is None
                    else {
                        "step": outcome.failure.step.number,
                        "step_text": outcome.failure.step.describe(),
                        "sent": outcome.failure.sent,
                        "problems": list(outcome.failure.problems),
                        "replies": list(outcome.failure.replies),
                        "status": outcome.failure.status,
                        "body": outcome.failure.body,
                    },
                }
                for outcome in self.outcomes
            ],
        }


class Chat(Protocol):
    """The channel a conversation's messages go through, as its person would use it."""

    async def say(self, step: Step, text: str) -> list[dict[str, Any]]:
        """Send what the person types; the replies as the REST channel shapes them (text, buttons)."""
        ...

    def press(self, replies: list[dict[str, Any]], reply: int, button: int) -> tuple[str, str]:
        """What pressing this button sends on this channel, and the payload it stands for."""
        ...


@dataclass(frozen=True)
class Session:
    """One conversation's way in: its chat, and an HTTP client for API steps and `/model/parse`."""

    http: httpx.AsyncClient
    chat: Chat


class Target(Protocol):
    """Where conversations run: the assistant, spoken to as a given sender."""

    mode: str
    token: str

    def session(self, conversation: Conversation) -> AbstractAsyncContextManager[Session]:
        """The chat and client for this conversation, from a clean state."""
        ...


class _StepFailed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.problems)
        self.failure = failure


async def run_conversations(conversations: Sequence[Conversation], target: Target) -> Report:
    """Run each conversation in turn; a conversation stops at its first failing step."""
    started = time.perf_counter()
    outcomes = []
    for conversation in conversations:
        began = time.perf_counter()
        try:
            async with target.session(conversation) as session:
                await _run_steps(conversation, session, target.token)
        except _StepFailed as failed:
            outcomes.append(Outcome(conversation, time.perf_counter() - began, failed.failure))
        else:
            outcomes.append(Outcome(conversation, time.perf_counter() - began))
    return Report(outcomes=tuple(outcomes), mode=target.mode, seconds=time.perf_counter() - started)


async def _run_steps(conversation: Conversation, session: Session, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    last_replies: list[dict[str, Any]] = []
    for step in conversation.steps:
        if step.kind == "api":
            await _api_step(step, session.http, headers)
            continue
        message = meant = step.text
        if step.kind == "button":
            found = _find_button(step, last_replies)
            if found is None:
                raise _StepFailed(
                    Failure(
                        step,
                        (f"no button titled /{step.text}/ in the replies to the previous message",),
                        tuple(last_replies),
                    )
                )
            message, meant = session.chat.press(last_replies, *found)
        last_replies = await session.chat.say(step, message)
        problems = _check_replies(step.expect, last_replies)
        if step.expect.intent is not None:
            understood, confidence = await _intent(step, session.http, headers, meant)
            if not step.expect.intent.fullmatch(understood):
                problems.insert(
                    0,
                    f"expected intent {step.expect.intent.pattern}, the NLU understood {understood} "
                    f"({confidence:.2f})",
                )
        if problems:
            sent = message if step.kind == "button" else None
            raise _StepFailed(Failure(step, tuple(problems), tuple(last_replies), sent=sent))


def _find_button(step: Step, replies: list[dict[str, Any]]) -> tuple[int, int] | None:
    """Where the first matching button is (reply, button), in the last reply that has one."""
    assert step.button is not None
    for reply_index in range(len(replies) - 1, -1, -1):
        for button_index, button in enumerate(replies[reply_index].get("buttons") or []):
            if step.button.search(str(button.get("title", ""))):
                return reply_index, button_index
    return None


@dataclass(frozen=True)
class RestChat:
    """The REST channel (Rasa's shape): a button press sends the button's payload."""

    http: httpx.AsyncClient
    token: str
    sender: str

    async def say(self, step: Step, text: str) -> list[dict[str, Any]]:
        """POST the message to the webhook as `rest:<sender>`."""
        return await _say(step, self.http, {"Authorization": f"Bearer {self.token}"}, self.sender, text)

    def press(self, replies: list[dict[str, Any]], reply: int, button: int) -> tuple[str, str]:
        """The payload, sent as it is."""
        payload = str(replies[reply]["buttons"][button].get("payload", ""))
        return payload, payload


async def _say(
    step: Step, http: httpx.AsyncClient, headers: dict[str, str], sender: str, message: str
) -> list[dict[str, Any]]:
    """Send one message over the REST channel; a slowed-down message is sent again a moment later."""
    for _ in range(SLOW_DOWN_RETRIES):
        response = await _request(
            step, http, "POST", WEBHOOK, headers, {"sender": sender, "message": message}
        )
        _expect_ok(step, response, "the REST channel")
        try:
            replies = response.json()
        except ValueError:
            replies = None
        if not isinstance(replies, list):
            raise _StepFailed(
                Failure(
                    step, ("the REST channel did not answer a list of replies",), body=response.text[:2000]
                )
            )
        # Only a server enforces the rate limit (in process it is generous): wait, as a person would.
        if len(replies) == 1 and replies[0].get("text") in SLOW_DOWN_TEXTS:
            await asyncio.sleep(1.0)
            continue
        return [reply for reply in replies if isinstance(reply, dict)]
    raise _StepFailed(Failure(step, ("the server kept saying to slow down",)))


def _expect_ok(step: Step, response: httpx.Response, what: str) -> None:
    """Fail the step, with the status and body, unless `what` answered 200."""
    if response.status_code != 200:
        raise _StepFailed(
            Failure(
                step,
                (f"{what} answered HTTP {response.status_code}",),
                status=response.status_code,
                body=response.text[:2000],
            )
        )


async def _intent(
    step: Step, http: httpx.AsyncClient, headers: dict[str, str], message: str
) -> tuple[str, float]:
    """What the NLU understands from the message, and how sure it is: a button payload's own intent,
    else the answer of `/model/parse`."""
    payload = parse_payload(message, "en")
    if payload is not None:
        return payload.intent, payload.confidence
    response = await _request(step, http, "POST", PARSE, headers, {"text": message})
    _expect_ok(step, response, PARSE)
    try:
        intent = response.json()["intent"]
        return str(intent["name"]), float(intent["confidence"])
    except (ValueError, KeyError, TypeError):
        raise _StepFailed(
            Failure(step, (f"{PARSE} did not answer Rasa's parse shape",), body=response.text[:2000])
        ) from None


async def _api_step(step: Step, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await _request(step, http, step.method, step.path, headers, step.body)
    problems: list[str] = []
    if step.expect.status is not None and response.status_code != step.expect.status:
        problems.append(f"expected status {step.expect.status}, got {response.status_code}")
    if step.expect.json:
        try:
            document = response.json()
        except ValueError:
            problems.append("expected a JSON body, got something else")
        else:
            for path, expected in step.expect.json.items():
                found, actual = lookup(document, path)
                if not found:
                    problems.append(f"expected {path} = {_show(expected)}, but the body has no {path}")
                elif not matches(expected, actual):
                    problems.append(f"expected {path} = {_show(expected)}, got {_show(actual)}")
    if problems:
        raise _StepFailed(
            Failure(step, tuple(problems), status=response.status_code, body=response.text[:2000])
        )


async def _request(
    step: Step, http: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body: Any
) -> httpx.Response:
    try:
        return await http.request(method, path, headers=headers, json=body if body is not None else None)
    except httpx.HTTPError as exc:
        raise _StepFailed(Failure(step, (f"{method} {path} failed: {exc!r}",))) from None


def _check_replies(expect: Expect, replies: list[dict[str, Any]]) -> list[str]:
    """Regexes are searched in all reply texts and button titles of the step, joined by new lines."""
    said = "\n".join(
        [str(reply.get("text") or "") for reply in replies]
        + [str(button.get("title", "")) for reply in replies for button in reply.get("buttons") or []]
    )
    problems = [
        f"expected a reply matching /{pattern.pattern}/"
        for pattern in expect.reply
        if not pattern.search(said)
    ]
    for pattern in expect.not_reply:
        if (found := pattern.search(said)) is not None:
            problems.append(f"expected no reply matching /{pattern.pattern}/, found {found.group(0)!r}")
    return problems


def lookup(document: Any, path: str) -> tuple[bool, Any]:
    """Follow a dotted path (`items.0.status`): keys in objects, indexes (negative too) in lists."""
    current = document
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif (
            isinstance(current, list)
            and re.fullmatch(r"-?\d+", part)
            and -len(current) <= int(part) < len(current)
        ):
            current = current[int(part)]
        else:
            return False, None
    return True, current


def matches(expected: Any, actual: Any) -> bool:
    """Subset match: an object needs the expected keys (others may be there), a list the same items."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and matches(value, actual[key]) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(want, got) for want, got in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        # JSON true is not 1: Python would say it is.
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    return bool(expected == actual)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)[:300]


# --- targets ------------------------------------------------------------------------------------


async def prepare_demo_database(settings: Settings, path: Path) -> Path:
    """A SQLite file at `path` with the schema and the demo data (`crmbot demo`), ready to be copied."""
    from core.container import build_core
    from core.db.migrate import upgrade
    from core.demo import load_demo

    core = build_core(settings.model_copy(update={"database_url": _sqlite_url(path)}))
    try:
        await upgrade(core.engine)
        await load_demo(core)
    finally:
        await core.close()
    # Fold the write-ahead log into the file, so one file copy is the whole database.
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=DELETE")
    finally:
        connection.close()
    return path


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


ChannelName = Literal["rest", "terminal"]


class InProcessTarget:
    """The real app in this process; every conversation gets its own copy of the freshly loaded demo
    database, so what one conversation changes (or leaves half-asked) never reaches the next. Messages go
    through the REST channel, or through the terminal chat (`crmbot chat`) as its user types them."""

    def __init__(
        self, settings: Settings, nlu: NluEngine, template: Path, workdir: Path, channel: ChannelName = "rest"
    ) -> None:
        self.mode = "in-process" if channel == "rest" else f"in-process, {channel}"
        self.channel = channel
        self.token = secrets.token_urlsafe(24)
        self._settings = settings.model_copy(update={"data_dir": workdir / "var", "api_token": None})
        self._nlu = nlu
        self._template = template
        self._workdir = workdir
        self._app: Any = None
        self._count = 0

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        settings: Settings,
        *,
        nlu: NluEngine | None = None,
        template: Path | None = None,
        channel: ChannelName = "rest",
    ) -> AsyncIterator[InProcessTarget]:
        """Load the demo data into a throw-away database (unless a loaded `template` is given) and the
        NLU model (`crmbot run`'s: trained first when missing); everything is deleted at the end."""
        from bot.nlu.service import build_nlu_async

        with tempfile.TemporaryDirectory(prefix="crmbot-conversations-") as directory:
            workdir = Path(directory)
            # The shipped embedded engine at the configured model path, whatever backend a server uses.
            embedded = settings.model_copy(update={"nlu_backend": "embedded"})
            engine, loaded = await asyncio.gather(
                build_nlu_async(embedded) if nlu is None else _ready(nlu),
                prepare_demo_database(settings, workdir / "demo.db")
                if template is None
                else _ready(template),
            )
            yield cls(settings, engine, loaded, workdir, channel)

    @asynccontextmanager
    async def session(self, conversation: Conversation) -> AsyncIterator[Session]:
        """A copy of the demo database, a new Assistant over it, a client to the app, and the chat."""
        from core.container import build_core
        from crmbot.app import create_app

        self._count += 1
        database = self._workdir / f"conversation-{self._count}.db"
        shutil.copyfile(self._template, database)
        core = build_core(self._settings.model_copy(update={"database_url": _sqlite_url(database)}))
        assistant = Assistant(core, self._nlu, rate_limit=GENEROUS)
        if self._app is None:
            self._app = create_app(core, self.token, assistant=assistant, nlu=self._nlu)
        else:
            # The routes look up the core and the assistant in app.state on every request; one app for
            # the run saves FastAPI's route setup (about half a second) on every conversation.
            self._app.state.core = core
            self._app.state.assistant = assistant
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self._app), base_url="http://conversation-test"
            ) as http:
                if self.channel == "rest":
                    yield Session(http, RestChat(http, self.token, conversation.sender))
                else:
                    async with TerminalChat.open(core, self._nlu, conversation.sender) as terminal:
                        yield Session(http, terminal)
        finally:
            await core.close()
            for leftover in self._workdir.glob(f"{database.name}*"):
                leftover.unlink(missing_ok=True)


class _RecordingAssistant(Assistant):
    """The assistant, keeping the replies of each turn: the terminal prints no payloads, yet a pressed
    button's payload is what an `intent` expectation checks."""

    def __init__(self, core: Core, nlu: NluEngine) -> None:
        super().__init__(core, nlu, rate_limit=GENEROUS)
        self.recorded: list[Reply] = []

    async def handle_as(self, actor: Actor, message: IncomingMessage) -> list[Reply]:
        replies = await super().handle_as(actor, message)
        self.recorded.extend(replies)
        return replies


class TerminalChat:
    """A person at `crmbot chat`: the real chat loop reads what they type and prints its answers, and the
    printed lines are read back into replies, so expectations see what the person sees."""

    def __init__(self, assistant: _RecordingAssistant, actor: Actor) -> None:
        self._typed: queue.Queue[str | None] = queue.Queue()
        self._prompts: asyncio.Queue[None] = asyncio.Queue()
        self._output = io.StringIO()
        self._recorded = assistant.recorded
        loop = asyncio.get_running_loop()

        def read_line(_prompt: str) -> str:
            # Called by the chat loop in a worker thread each time it waits for the person.
            loop.call_soon_threadsafe(self._prompts.put_nowait, None)
            line = self._typed.get()
            if line is None:
                raise EOFError
            return line

        console = Console(file=self._output, width=10_000, color_system=None, force_terminal=False)
        self._loop = asyncio.create_task(
            chat_loop(assistant, actor, console, read_line)
        )

    @classmethod
    @asynccontextmanager
    async def open(cls, core: Core, nlu: NluEngine, sender: str) -> AsyncIterator[TerminalChat]:
        """The chat loop of the user behind `terminal:<sender>` (the demo links every demo user there)."""
        assistant = _RecordingAssistant(core, nlu)
        actor = await core.org.actor_for_identity("terminal", sender)
        if actor is None:
            raise ConnectionError(f"no user is linked to terminal:{sender}: the terminal cannot be them")
        chat = cls(assistant, actor)
        try:
            await chat._next_prompt(None)
            yield chat
        finally:
            chat._typed.put(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(chat._loop, timeout=10)

    async def say(self, step: Step, text: str) -> list[dict[str, Any]]:
        """Type a line; the replies as printed, each checked against what the assistant said."""
        start = len(self._output.getvalue())
        self._recorded.clear()
        self._typed.put(text)
        await self._next_prompt(step)
        printed = read_terminal(self._output.getvalue()[start:])
        said = [
            {"text": reply.text, "buttons": [{"title": b.title, "payload": b.payload} for b in reply.buttons]}
            for reply in self._recorded
        ]
        problems = _misprinted(printed, said)
        if problems:
            raise _StepFailed(Failure(step, tuple(problems), tuple(printed)))
        return said

    def press(self, replies: list[dict[str, Any]], reply: int, button: int) -> tuple[str, str]:
        """The button's number, when it is one of the numbered choices on screen; else its title, typed."""
        chosen = replies[reply]["buttons"][button]
        numbered = max((index for index, item in enumerate(replies) if item.get("buttons")), default=-1)
        typed = str(button + 1) if reply == numbered else str(chosen["title"])
        return typed, str(chosen.get("payload", ""))

    async def _next_prompt(self, step: Step | None) -> None:
        """Until the chat loop waits for the next line (or has stopped, which fails the step)."""
        waiting = asyncio.ensure_future(self._prompts.get())
        done, _pending = await asyncio.wait({waiting, self._loop}, timeout=120, return_when=FIRST_COMPLETED)
        if waiting in done:
            return
        waiting.cancel()
        crash = self._loop.exception() if self._loop.done() else None
        reason = f"the terminal chat stopped: {crash!r}" if crash else "the terminal chat did not answer"
        if step is None:
            raise ConnectionError(reason)
        raise _StepFailed(Failure(step, (reason,), ()))


_NUMBERED = re.compile(r"^  (\d+)\. (.*)$")
_CHART = re.compile(r"^  \(chart: .*\)$")


def read_terminal(printed: str) -> list[dict[str, Any]]:
    """The terminal's output back into replies: `crmbot: ` opens one, `  N. title` lines are its buttons."""
    replies: list[dict[str, Any]] = []
    for line in printed.splitlines():
        if line.startswith(TERMINAL_PREFIX):
            replies.append({"text": line[len(TERMINAL_PREFIX) :], "buttons": []})
            continue
        if not replies:
            continue
        current = replies[-1]
        numbered = _NUMBERED.match(line)
        if numbered and int(numbered.group(1)) == len(current["buttons"]) + 1:
            current["buttons"].append({"title": numbered.group(2)})
        elif _CHART.match(line):
            current["image"] = True
        else:
            current["text"] += "\n" + line
    return replies


def _misprinted(printed: list[dict[str, Any]], said: list[dict[str, Any]]) -> list[str]:
    """Where the terminal shows something else than the assistant said (a lost reply, a mangled text)."""
    if len(printed) != len(said):
        return [f"the terminal printed {len(printed)} replies, the assistant gave {len(said)}"]
    problems = []
    for number, (shown, given) in enumerate(zip(printed, said, strict=True), start=1):
        text = "\n".join(line.rstrip() for line in str(given["text"]).splitlines())
        if shown["text"].rstrip() != text.rstrip():
            problems.append(f"reply {number} printed as {shown['text']!r}, said {given['text']!r}")
        titles = [button["title"] for button in given["buttons"]]
        if [button["title"] for button in shown["buttons"]] != titles:
            problems.append(f"reply {number}: buttons printed as {shown['buttons']}, given {titles}")
    return problems


async def _ready(value: T) -> T:
    """An already available value, where the alternative has to be awaited."""
    return value


class ServerTarget:
    """A running crmbot over HTTP: conversations use its data, and what they change stays changed."""

    mode = "server"

    def __init__(self, url: str, token: str, http: httpx.AsyncClient) -> None:
        self.url = url
        self.token = token
        self._http = http

    @classmethod
    @asynccontextmanager
    async def start(cls, url: str, token: str) -> AsyncIterator[ServerTarget]:
        """Check the server answers (`/healthz`), then keep one connection pool for the run."""
        async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=60.0) as http:
            try:
                health = await http.get("/healthz")
            except httpx.HTTPError as exc:
                raise ConnectionError(f"cannot reach {url}: {exc!r}") from None
            if health.status_code != 200:
                raise ConnectionError(f"{url}/healthz answered HTTP {health.status_code}: is it crmbot?")
            yield cls(url, token, http)

    @asynccontextmanager
    async def session(self, conversation: Conversation) -> AsyncIterator[Session]:
        """The shared client, after dropping any task a previous run left half-asked for this sender."""
        # The server keeps each sender's conversation; /cancel (a button payload) forgets the task in
        # progress, the nearest thing to a fresh start that a client can ask for.
        with contextlib.suppress(httpx.HTTPError):
            # A refused token or a dropped connection shows in the first step's failure instead.
            await self._http.post(
                WEBHOOK,
                headers={"Authorization": f"Bearer {self.token}"},
                json={"sender": conversation.sender, "message": "/cancel"},
            )
        yield Session(self._http, RestChat(self._http, self.token, conversation.sender))


# --- reporting ----------------------------------------------------------------------------------


def format_failure(outcome: Outcome) -> list[str]:
    """A failed conversation for people: where, the step, what was expected, and what came back."""
    failure = outcome.failure
    if failure is None:
        return []
    conversation = outcome.conversation
    lines = [
        f"FAILED {conversation.file}: conversation {json.dumps(conversation.name, ensure_ascii=False)} "
        f"(sender {conversation.sender}) step {failure.step.number}: {failure.step.describe()}"
    ]
    lines.extend(f"  {problem}" for problem in failure.problems)
    if failure.sent is not None:
        lines.append(f"  pressed: {failure.sent}")
    if failure.step.kind != "api" or failure.replies:
        lines.append("  replies received:" if failure.replies else "  replies received: none")
        for reply in failure.replies:
            text = str(reply.get("text") or "")
            lines.extend(f"    | {line}" for line in text.splitlines() or [""])
            titles = [str(button.get("title", "")) for button in reply.get("buttons") or []]
            if titles:
                lines.append("    buttons: " + "  ".join(f"[{title}]" for title in titles))
    if failure.status is not None:
        lines.append(f"  HTTP {failure.status}")
    if failure.body:
        lines.append(f"  body: {failure.body[:1000]}")
    return lines


def run_files(
    files: Sequence[Path],
    *,
    url: str | None = None,
    token: str | None = None,
    settings: Settings | None = None,
    as_json: bool = False,
    channel: ChannelName = "rest",
) -> int:
    """`crmbot test conversations`: validate every file, run, print the report; the exit code."""
    try:
        conversations = load_files(files)
    except ConversationFileError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 2

    async def main() -> Report:
        if url is not None:
            async with ServerTarget.start(url, token or "") as server:
                return await run_conversations(conversations, server)
        print("Loading the demo data into a throw-away database and the NLU model…", file=sys.stderr)
        async with InProcessTarget.start(settings or Settings(), channel=channel) as local:
            return await run_conversations(conversations, local)

    try:
        report = asyncio.run(main())
    except ConnectionError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        for outcome in report.outcomes:
            if not outcome.passed:
                print("\n".join(format_failure(outcome)) + "\n")
        print(
            f"{len(report.outcomes)} conversations in {report.seconds:.1f} s "
            + (
                f"in process through the {channel} channel, each on its own copy of the demo database"
                if url is None
                else f"against {url}"
            )
        )
        print(report.summary())
    return 1 if report.failed else 0
