"""The `rasa` NLU backend against a REAL Rasa Open Source 3.6 server (not the stand-in of test_nlu_rasa.py).

A small Rasa project is exported with `crmbot nlu export-rasa --intents … --per-intent …`, trained with
the real `rasa train nlu` from the cached Rasa venv (tests/rasa/setup_rasa.sh, `make rasa`; the model is
cached by a hash of the exported project, so only the first run trains), served with
`rasa run --enable-api` on a free loopback port, and then: our RasaNlu client parses through it,
conversations run over the REST channel with the NLU built from settings exactly as `crmbot run` builds
it (CRMBOT_NLU_BACKEND=rasa), and once the server is stopped the embedded engine answers instead.

Skipped, with the reason, when there is no Python 3.10 or the Rasa venv is not built."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from bot.nlu.embedded import EmbeddedNlu
from bot.nlu.lang import detect_lang
from bot.nlu.rasa import RasaNlu, export_rasa
from bot.nlu.service import DEFAULT_DATA_DIR, build_nlu, ensure_model
from bot.nlu.types import FALLBACK_INTENT, ParseContext
from bot.nlu.yaml_data import load_nlu_data
from core.container import Core
from core.settings import Settings
from tests.chat import rest_client, say_over_rest
from tests.world import World

pytestmark = pytest.mark.rasa

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "tests" / "rasa" / "setup_rasa.sh"
# A handful of intents, 30 examples each (EN and ZH) and 30 epochs instead of 100: DIET trains in about a
# minute on two cores, and the server loads the small model faster. The pipeline is the exported one.
INTENTS = ("greet", "goodbye", "check_warranty", "search_knowledge", "out_of_scope")
PER_INTENT = 30
EPOCHS = 30
TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
CONTEXT = ParseContext(now=datetime(2026, 6, 15, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
STARTUP_SECONDS = 240.0
TRAIN_SECONDS = 900.0


def _setup(flag: str) -> str | None:
    done = subprocess.run(["bash", str(SETUP), flag], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def _rasa_venv() -> Path:
    """The cached Rasa venv, or a skip that says plainly why there is none (also as a warning, which
    pytest prints in its summary even without -rs)."""
    venv = Path(_setup("--venv") or "")
    if subprocess.run(["bash", str(SETUP), "--ready"], check=False).returncode == 0:
        return venv
    if _setup("--find-python") is None:
        reason = "no Python 3.10 on this machine: the real-Rasa tests are skipped (Rasa 3.6 needs 3.8-3.10)"
    elif (venv / "bin" / "rasa").exists():
        reason = "the Rasa 3.6 venv is out of date with tests/rasa/requirements.lock: run `make rasa`"
    else:
        reason = "Rasa 3.6 not installed: run `make rasa` (needs Python 3.10)"
    warnings.warn(reason, RasaSkipped, stacklevel=1)
    pytest.skip(reason)


class RasaSkipped(UserWarning):
    """Why the real-Rasa tests did not run."""


def _rasa(venv: Path, *arguments: str) -> list[str]:
    """A `rasa` command line of the cached venv."""
    return [str(venv / "bin" / "rasa"), *arguments]


def _logged_to(sink: IO[Any]) -> dict[str, Any]:
    """How Rasa runs here: our environment, no input, everything it prints into `sink`."""
    return {"env": _rasa_env(), "stdin": subprocess.DEVNULL, "stdout": sink, "stderr": subprocess.STDOUT}


def _rasa_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CRMBOT_")}
    # Nothing leaves this machine: no telemetry; and less TensorFlow chatter in the logs.
    env.update(
        RASA_TELEMETRY_ENABLED="false",
        TF_CPP_MIN_LOG_LEVEL="2",
        SQLALCHEMY_SILENCE_UBER_WARNING="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def rasa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Rasa model of the small exported project: trained once, then reused from the venv's cache."""
    venv = _rasa_venv()
    project = tmp_path_factory.mktemp("rasa-project")
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "crmbot",
            "nlu",
            "export-rasa",
            str(project),
            "--intents",
            ",".join(INTENTS),
            "--per-intent",
            str(PER_INTENT),
            "--epochs",
            str(EPOCHS),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    digest = hashlib.sha256()
    for name in ("config.yml", "domain.yml", "data/nlu.yml"):
        digest.update(name.encode() + b"\0" + (project / name).read_bytes() + b"\0")
    # Inside the venv: rebuilding the venv (a new Rasa pin) throws stale models away with it.
    cache = venv / "crmbot-models"
    model = cache / f"nlu-{digest.hexdigest()[:16]}.tar.gz"
    if model.is_file():
        return model
    out = project / "models"
    log = project / "train.log"
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as sink:
        trained = subprocess.run(
            _rasa(venv, "train", "nlu", "--config", "config.yml", "--nlu", "data/nlu.yml",
                  "--domain", "domain.yml", "--out", str(out), "--fixed-model-name", "nlu"),
            cwd=project,
            **_logged_to(sink),
            timeout=TRAIN_SECONDS,
            check=False,
        )
    assert trained.returncode == 0, f"rasa train nlu failed:\n{_tail(log)}"
    [built] = out.glob("nlu*.tar.gz")
    cache.mkdir(exist_ok=True)
    partial = cache / f"{model.name}.{os.getpid()}.part"
    shutil.copyfile(built, partial)
    os.replace(partial, model)
    print(f"\nrasa train nlu: {time.monotonic() - started:.0f} s, cached as {model}")
    return model


def _die_with_us() -> None:
    """In the child before exec: SIGKILL when pytest dies, even killed (Linux's PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RasaServer:
    """A `rasa run --enable-api` subprocess."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    started: float
    startup_seconds: float = 0.0

    def stop(self, *, crash: bool = False) -> None:
        """SIGTERM to the server's process group (SIGKILL if it lingers, or at once: a crash); idempotent."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL if crash else signal.SIGTERM)
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass


def _wait_ready(server: RasaServer) -> None:
    """Until the model is loaded and answers (Rasa's cold start takes tens of seconds)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    with httpx.Client(base_url=server.url, timeout=5.0) as http:
        while True:
            if server.process.poll() is not None:
                pytest.fail(f"rasa run exited with {server.process.returncode}:\n{_tail(server.log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"rasa run not ready after {STARTUP_SECONDS:.0f} s:\n{_tail(server.log)}")
            try:
                status = http.get("/status")
                if status.status_code == 200 and status.json().get("model_file"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        # The first parses build TensorFlow's graph and load jieba's dictionary: warm both up here, so
        # our client's 2 s timeout in the tests measures a warm server as in production.
        for text in ("hello", "你好"):
            http.post("/model/parse", json={"text": text}, timeout=60.0).raise_for_status()


@pytest.fixture(scope="module")
def rasa_started(rasa_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RasaServer]:
    """The real server starting on a free loopback port; killed (with its process group) whatever happens."""
    workdir = tmp_path_factory.mktemp("rasa-run")
    port = _free_port()
    log = workdir / "rasa.log"
    venv = rasa_model.parent.parent
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            _rasa(venv, "run", "--enable-api", "-m", str(rasa_model), "--port", str(port), "-i", "127.0.0.1"),
            cwd=workdir,
            **_logged_to(sink),
            start_new_session=True,
            preexec_fn=_die_with_us,
        )
    server = RasaServer(url=f"http://127.0.0.1:{port}", process=process, log=log, started=started)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rasa_server(rasa_started: RasaServer, embedded_model: Path) -> RasaServer:
    """The real server, ready (the embedded model, the fallback, trains while Rasa starts)."""
    _wait_ready(rasa_started)
    rasa_started.startup_seconds = time.monotonic() - rasa_started.started
    print(f"\nrasa run: ready in {rasa_started.startup_seconds:.0f} s on {rasa_started.url}")
    return rasa_started


@pytest.fixture(scope="module")
def embedded_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model on the whole shipped data (the fallback), trained once for the module."""
    path = tmp_path_factory.mktemp("nlu") / "model.joblib"
    ensure_model(path)
    return path


@pytest.fixture
async def rasa_nlu(
    settings: Settings, rasa_server: RasaServer, embedded_model: Path
) -> AsyncIterator[RasaNlu]:
    """The NLU as `crmbot run` builds it from settings with CRMBOT_NLU_BACKEND=rasa."""
    rasa_settings = settings.model_copy(update={"nlu_backend": "rasa", "rasa_url": rasa_server.url})
    nlu = await asyncio.to_thread(build_nlu, rasa_settings, model_path=embedded_model)
    assert isinstance(nlu, RasaNlu) and isinstance(nlu.fallback, EmbeddedNlu)
    yield nlu
    await nlu.aclose()


@pytest.fixture
async def client(core: Core, world: World, rasa_nlu: RasaNlu) -> AsyncIterator[httpx.AsyncClient]:
    async with rest_client(core, rasa_nlu, TOKEN) as http:
        yield http


def _no_fallback(caplog: pytest.LogCaptureFixture) -> None:
    failures = [
        record.getMessage() for record in caplog.records if "using the embedded NLU" in record.getMessage()
    ]
    assert not failures, failures


async def test_real_rasa_parse_shapes(
    rasa_server: RasaServer, rasa_nlu: RasaNlu, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="crmbot.nlu")
    # Rasa's own answer, as it comes over the wire.
    async with httpx.AsyncClient(base_url=rasa_server.url, timeout=10.0) as http:
        raw = (await http.post("/model/parse", json={"text": "is WM2023-00917 still under warranty?"})).json()
    assert raw["text"] == "is WM2023-00917 still under warranty?"
    assert set(raw["intent"]) >= {"name", "confidence"} and raw["intent"]["name"] == "check_warranty"
    assert {item["name"] for item in raw["intent_ranking"]} <= {*INTENTS, FALLBACK_INTENT}
    assert all({"entity", "value", "start", "end", "extractor"} <= set(e) for e in raw["entities"])

    result = await rasa_nlu.parse("is WM2023-00917 still under warranty?", CONTEXT)
    assert result.intent == "check_warranty" and 0.3 < result.confidence <= 1.0
    # Only the five exported intents rank: the answer is Rasa's, not the embedded model's (29 intents).
    assert {name for name, _ in result.ranking} <= {*INTENTS, FALLBACK_INTENT}
    assert len(result.ranking) > 1 and result.ranking[0][0] == "check_warranty"
    assert all(0.0 <= score <= 1.0 for _, score in result.ranking)
    # DIET may tag the serial in pieces (jieba splits at the hyphen): our rule entity wins over them.
    [serial] = [entity for entity in result.entities if entity.entity == "serial_number"]
    assert (serial.value, serial.start, serial.end, serial.text) == ("WM2023-00917", 3, 15, "WM2023-00917")
    assert result.lang == "en"

    zh = await rasa_nlu.parse("AB12345还在保修期内吗", CONTEXT)
    assert zh.intent == "check_warranty" and zh.lang == "zh"
    assert [(e.entity, e.value, e.start, e.end) for e in zh.entities if e.entity == "serial_number"] == [
        ("serial_number", "AB12345", 0, 7)
    ]
    for text, intent in (
        ("hello there", "greet"),
        ("再见", "goodbye"),
        ("error E13 on my dishwasher", "search_knowledge"),
    ):
        assert (await rasa_nlu.parse(text, CONTEXT)).intent == intent, text
    # Whatever entities Rasa adds (DIET's, on jieba's tokens), their spans are the text they name.
    for parsed in (result, zh):
        assert all(parsed.text[e.start : e.end] == e.text for e in parsed.entities)
    _no_fallback(caplog)


async def say(client: httpx.AsyncClient, sender: str, message: str) -> list[dict[str, Any]]:
    return await say_over_rest(client, sender, message, ADMIN)


def text(replies: list[dict[str, Any]]) -> str:
    return "\n".join(reply.get("text", "") for reply in replies)


def payloads(replies: list[dict[str, Any]]) -> list[str]:
    return [button["payload"] for reply in replies for button in reply.get("buttons", [])]


async def test_english_conversation_through_real_rasa(
    client: httpx.AsyncClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="crmbot.nlu")
    me = "acme-buyer"
    assert "Hello" in text(await say(client, me, "hi there"))
    warranty = text(await say(client, me, f"is {world.acme_serial} still under warranty?"))
    assert f"{world.acme_serial}) is covered until" in warranty and "days left" in warranty
    found = await say(client, me, "error E13 on my dishwasher")
    assert "E13" in text(found)
    assert any(payload.startswith("/kb_solved") for payload in payloads(found))
    assert text(await say(client, me, "bye, thanks")).strip()
    _no_fallback(caplog)


async def test_chinese_conversation_through_real_rasa(
    client: httpx.AsyncClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="crmbot.nlu")
    me = "globex.buyer"
    assert "您好" in text(await say(client, me, "你好"))
    assert "保修" in text(await say(client, me, f"{world.globex_serial}还在保修期内吗"))
    found = await say(client, me, "洗碗机显示E13怎么办")
    assert any(payload.startswith("/kb_solved") for payload in payloads(found))
    assert text(await say(client, me, "再见")).strip()
    _no_fallback(caplog)


async def test_leading_whitespace_keeps_rasas_entity_offsets_right(
    rasa_server: RasaServer, rasa_nlu: RasaNlu, caplog: pytest.LogCaptureFixture
) -> None:
    """The real server strips the text and counts offsets in what is left (the stand-in did not)."""
    caplog.set_level(logging.WARNING, logger="crmbot.nlu")
    raw_client = RasaNlu(rasa_server.url, fallback=rasa_nlu.fallback, merge_entities=False, retry_after=0)
    try:
        # Rasa's own intent shortcut: its entity spans the JSON, whatever the model learnt.
        shortcut = '  /search_knowledge{"query": "E13"}'
        result = await raw_client.parse(shortcut, CONTEXT)
        assert result.intent == "search_knowledge"
        [query] = result.entities
        assert (query.entity, query.value, query.text) == ("query", "E13", '{"query": "E13"}')
        # DIET's entities too (whichever this model finds): every span is the text it names.
        spaced = "\u3000 AB12345还在保修期内吗 "
        result = await raw_client.parse(spaced, CONTEXT)
        assert result.intent == "check_warranty"
        assert all(spaced[e.start : e.end] == e.text and e.start >= 2 for e in result.entities)
    finally:
        await raw_client.aclose()
    _no_fallback(caplog)


async def test_our_parse_endpoint_answers_with_rasa(client: httpx.AsyncClient) -> None:
    text = "  is AB12345 covered"
    response = await client.post("/model/parse", json={"text": text}, headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["intent"]["name"] == "check_warranty"
    assert {item["name"] for item in body["intent_ranking"]} <= {*INTENTS, FALLBACK_INTENT}
    spans = [(e["entity"], text[e["start"] : e["end"]], e["value"]) for e in body["entities"]]
    assert ("serial_number", "AB12345", "AB12345") in spans
    assert all(e["text"] == text[e["start"] : e["end"]] for e in body["entities"])


def test_export_a_small_project(tmp_path: Path) -> None:
    """The exporter's subset options (no Rasa needed)."""
    files = export_rasa(DEFAULT_DATA_DIR, tmp_path, intents=["goodbye", "greet"], per_intent=7, epochs=12)
    assert [path.name for path in files] == ["config.yml", "domain.yml", "nlu.yml"]
    config = yaml.safe_load((tmp_path / "config.yml").read_text(encoding="utf-8"))
    [diet] = [item for item in config["pipeline"] if item["name"] == "DIETClassifier"]
    assert diet["epochs"] == 12
    exported = load_nlu_data(tmp_path / "data" / "nlu.yml")
    assert exported.intents == ["greet", "goodbye"]  # the data's order
    for intent in ("greet", "goodbye"):
        texts = [example.text for example in exported.examples if example.intent == intent]
        assert len(texts) == 7
        assert {detect_lang(text) for text in texts} == {"en", "zh"}  # both files keep a share
    with pytest.raises(ValueError, match="no such intent in the data: nope"):
        export_rasa(DEFAULT_DATA_DIR, tmp_path / "x", intents=["greet", "nope"])


async def test_server_gone_then_the_embedded_engine_answers(
    rasa_server: RasaServer, client: httpx.AsyncClient, rasa_nlu: RasaNlu, caplog: pytest.LogCaptureFixture
) -> None:
    """Last in the module: it stops the shared server."""
    caplog.set_level(logging.WARNING, logger="crmbot.nlu")
    alive = await rasa_nlu.parse("hi there", CONTEXT)
    assert alive.intent == "greet" and {name for name, _ in alive.ranking} <= {*INTENTS, FALLBACK_INTENT}
    rasa_server.stop(crash=True)  # as when it dies: no goodbye on open connections
    assert rasa_server.process.returncode is not None
    started = time.monotonic()
    result = await rasa_nlu.parse("my jobs today", CONTEXT)
    assert time.monotonic() - started < 5
    # An intent the Rasa model was never trained on: only the embedded engine knows it.
    assert result.intent == "my_jobs"
    assert any("using the embedded NLU" in record.getMessage() for record in caplog.records)
    assert "Hello" in text(await say(client, "acme-buyer", "hi there"))
