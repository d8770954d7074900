"""The Rasa client against a stand-in Rasa server on 127.0.0.1 (real HTTP over loopback), and the
Rasa project exporter."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.nlu.rasa import RasaNlu, export_rasa, parse_result_to_rasa, rasa_to_parse_result
from bot.nlu.types import ParseContext, ParseResult
from bot.nlu.yaml_data import load_nlu_data

FIXTURES = Path(__file__).parent / "nlu_fixtures"
CONTEXT = ParseContext(now=datetime(2026, 6, 15, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))


@dataclass
class StandIn:
    """What the stand-in Rasa server received."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


async def _parse(request: Request) -> Response:
    body = await request.json()
    request.app.state.log.append({"body": body, "token": request.query_params.get("token")})
    text = body["text"]
    if text.startswith("slow"):
        await asyncio.sleep(1.0)
    if text.startswith("boom"):
        return PlainTextResponse("internal error", status_code=500)
    if text.startswith("garbage"):
        return PlainTextResponse("<html>not json</html>")
    if text.startswith("nointent"):
        return JSONResponse({"text": text, "intent": {"name": None, "confidence": 0.0}, "entities": []})
    start = text.find("Acme")
    entities = (
        [
            {
                "entity": "customer",
                "value": "Acme",
                "start": start,
                "end": start + 4,
                "confidence_entity": 0.93,
                "extractor": "DIETClassifier",
            }
        ]
        if start >= 0
        else []
    )
    # Rasa's own (unnormalised) serial annotation overlaps ours: ours must win.
    serial = text.find("AB12345")
    if serial >= 0:
        entities.append(
            {
                "entity": "serial_number",
                "value": "ab12345",
                "start": serial,
                "end": serial + 7,
                "confidence_entity": 0.8,
                "extractor": "DIETClassifier",
            }
        )
    return JSONResponse(
        {
            "text": text,
            "intent": {"name": "check_warranty", "confidence": 0.91},
            "entities": entities,
            "intent_ranking": [
                {"name": "check_warranty", "confidence": 0.91},
                {"name": "open_service_request", "confidence": 0.06},
            ],
        }
    )


@pytest.fixture(scope="module")
def rasa_server() -> Iterator[StandIn]:
    app = Starlette(routes=[Route("/model/parse", _parse, methods=["POST"])])
    app.state.log = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "stand-in Rasa server did not start"
        time.sleep(0.01)
    stand_in = StandIn(url=f"http://127.0.0.1:{port}", requests=app.state.log)
    yield stand_in
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


class FixedEngine:
    """A fallback engine that says which engine answered."""

    def __init__(self) -> None:
        self.calls = 0

    async def parse(self, text: str, context: ParseContext) -> ParseResult:
        self.calls += 1
        return ParseResult(text=text, intent="greet", confidence=0.5, ranking=(("greet", 0.5),), lang="en")


async def test_maps_rasa_answer_and_merges_rule_entities(rasa_server: StandIn) -> None:
    fallback = FixedEngine()
    client = RasaNlu(rasa_server.url, fallback=fallback, token="s3cret", retry_after=0)
    try:
        result = await client.parse("is AB12345 from Acme covered until next Friday?", CONTEXT)
    finally:
        await client.aclose()
    assert fallback.calls == 0
    assert (result.intent, result.confidence) == ("check_warranty", 0.91)
    assert result.ranking == (("check_warranty", 0.91), ("open_service_request", 0.06))
    assert [(e.entity, e.value, e.start, e.end, e.extractor) for e in result.entities] == [
        ("serial_number", "AB12345", 3, 10, "crmbot"),
        ("customer", "Acme", 16, 20, "DIETClassifier"),
        ("date", "2026-06-19", 35, 46, "crmbot"),
    ]
    assert result.entities[1].confidence == 0.93
    assert rasa_server.requests[-1] == {
        "body": {"text": "is AB12345 from Acme covered until next Friday?"},
        "token": "s3cret",
    }


@pytest.mark.parametrize("text", ["slow please", "boom", "garbage"])
async def test_failures_fall_back(rasa_server: StandIn, text: str) -> None:
    fallback = FixedEngine()
    client = RasaNlu(rasa_server.url, fallback=fallback, timeout=0.2, retry_after=0)
    started = time.monotonic()
    try:
        result = await client.parse(text, CONTEXT)
    finally:
        await client.aclose()
    assert result.intent == "greet" and fallback.calls == 1
    assert time.monotonic() - started < 0.9


async def test_timeout_then_rasa_is_left_alone_for_a_while(rasa_server: StandIn) -> None:
    fallback = FixedEngine()
    client = RasaNlu(rasa_server.url, fallback=fallback, timeout=0.2, retry_after=60)
    before = len(rasa_server.requests)
    try:
        await client.parse("slow again", CONTEXT)
        started = time.monotonic()
        result = await client.parse("is AB12345 covered", CONTEXT)
        assert time.monotonic() - started < 0.1  # no second timeout to wait for
    finally:
        await client.aclose()
    assert result.intent == "greet" and fallback.calls == 2
    assert len(rasa_server.requests) == before + 1


async def test_connection_refused_falls_back() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    fallback = FixedEngine()
    client = RasaNlu(f"http://127.0.0.1:{port}", fallback=fallback, timeout=1.0, retry_after=0)
    try:
        result = await client.parse("hello", CONTEXT)
    finally:
        await client.aclose()
    assert result.intent == "greet" and fallback.calls == 1


async def test_no_intent_from_rasa_is_nlu_fallback(rasa_server: StandIn) -> None:
    client = RasaNlu(rasa_server.url, fallback=FixedEngine(), retry_after=0)
    try:
        result = await client.parse("nointent here", CONTEXT)
    finally:
        await client.aclose()
    assert result.intent == "nlu_fallback"


def test_parse_shape_round_trip() -> None:
    original = ParseResult(text="hi", intent="greet", confidence=0.9, ranking=(("greet", 0.9), ("deny", 0.1)))
    payload = parse_result_to_rasa(original)
    assert payload == {
        "text": "hi",
        "intent": {"name": "greet", "confidence": 0.9},
        "entities": [],
        "intent_ranking": [{"name": "greet", "confidence": 0.9}, {"name": "deny", "confidence": 0.1}],
        "lang": "en",
    }
    assert rasa_to_parse_result(payload, "hi", "en") == original


def test_export_rasa_project(tmp_path: Path) -> None:
    files = export_rasa(FIXTURES / "train_small.yml", tmp_path / "rasa")
    assert sorted(path.relative_to(tmp_path / "rasa").as_posix() for path in files) == [
        "config.yml",
        "data/nlu.yml",
        "domain.yml",
    ]
    config = yaml.safe_load((tmp_path / "rasa" / "config.yml").read_text(encoding="utf-8"))
    assert config["language"] == "zh" and config["recipe"] == "default.v1"
    names = [component["name"] for component in config["pipeline"]]
    assert names[0] == "JiebaTokenizer" and "DIETClassifier" in names and "FallbackClassifier" in names
    assert "WhitespaceTokenizer" in (tmp_path / "rasa" / "config.yml").read_text(encoding="utf-8")  # the why
    domain = yaml.safe_load((tmp_path / "rasa" / "domain.yml").read_text(encoding="utf-8"))
    assert domain["intents"] == [
        "greet",
        "goodbye",
        "check_warranty",
        "open_service_request",
        "update_deal",
        "out_of_scope",
    ]
    assert set(domain["entities"]) == {"serial_number", "customer", "stage"}
    original = load_nlu_data(FIXTURES / "train_small.yml")
    exported = load_nlu_data(tmp_path / "rasa" / "data" / "nlu.yml")
    assert [(e.text, e.intent) for e in exported.examples] == [(e.text, e.intent) for e in original.examples]
    assert [e.entities for e in exported.examples] == [
        tuple(entity for entity in e.entities) for e in original.examples
    ]
    assert exported.synonyms == original.synonyms
    assert exported.regexes == original.regexes and exported.lookups == original.lookups


def test_export_english_only_uses_whitespace_tokenizer(tmp_path: Path) -> None:
    data = tmp_path / "en.yml"
    data.write_text(
        'version: "3.1"\nnlu:\n- intent: affirm\n  examples: |\n    - yes\n    - no doubt\n', "utf-8"
    )
    export_rasa(data, tmp_path / "out")
    config = yaml.safe_load((tmp_path / "out" / "config.yml").read_text(encoding="utf-8"))
    assert config["language"] == "en" and config["pipeline"][0]["name"] == "WhitespaceTokenizer"
    domain = yaml.safe_load((tmp_path / "out" / "domain.yml").read_text(encoding="utf-8"))
    assert domain["intents"] == ["affirm"]
    assert [e.text for e in load_nlu_data(tmp_path / "out" / "data" / "nlu.yml").examples] == [
        "yes",
        "no doubt",
    ]
