"""The embedded engine: trains on a small fixture, predicts it, falls back below the threshold, survives
odd input, round-trips through save/load, refuses other model versions — and meets the quality bar on
the real data."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import joblib
import pytest

from bot.nlu.embedded import (
    MODEL_VERSION,
    EmbeddedNlu,
    ModelError,
    TrainConfig,
    TrainingError,
    normalise_text,
)
from bot.nlu.evaluate import evaluate
from bot.nlu.service import DEFAULT_DATA_DIR
from bot.nlu.types import FALLBACK_INTENT, NluEngine, ParseContext
from bot.nlu.yaml_data import Example, load_nlu_data

FIXTURES = Path(__file__).parent / "nlu_fixtures"
HELDOUT = Path(__file__).parent / "nlu"
CONTEXT = ParseContext(now=datetime(2026, 6, 15, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))


@pytest.fixture(scope="module")
def nlu_engine() -> EmbeddedNlu:
    trained, _report = EmbeddedNlu.train(load_nlu_data(FIXTURES / "train_small.yml"))
    return trained


def test_training_is_fast_and_reports(nlu_engine: EmbeddedNlu) -> None:
    started = time.perf_counter()
    _engine, report = EmbeddedNlu.train(load_nlu_data(FIXTURES / "train_small.yml"))
    assert time.perf_counter() - started < 5
    assert report.examples == 77 and report.intents == 6
    assert report.cv_accuracy is not None and report.cv_accuracy > 0.6
    assert set(nlu_engine.classes) == {
        "greet",
        "goodbye",
        "check_warranty",
        "open_service_request",
        "update_deal",
        "out_of_scope",
    }
    assert 0.0 <= nlu_engine.threshold_for("en") <= 0.7


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("hello there", "greet"),
        ("您好呀", "greet"),
        ("goodbye for now", "goodbye"),
        ("再见啦", "goodbye"),
        ("is DW500-00001 under warranty", "check_warranty"),
        ("保修期还有多久", "check_warranty"),
        ("my fridge is leaking water", "open_service_request"),
        ("空调漏水，要报修", "open_service_request"),
        ("move Acme to proposal", "update_deal"),
        ("商机改成谈判", "update_deal"),
    ],
)
def test_predicts_the_fixture(nlu_engine: EmbeddedNlu, text: str, intent: str) -> None:
    result = nlu_engine.parse_sync(text, CONTEXT)
    assert result.intent == intent
    assert result.ranking[0] == (intent, result.confidence)
    assert 0.0 < result.confidence <= 1.0


async def test_parse_is_the_async_protocol(nlu_engine: EmbeddedNlu) -> None:
    protocol: NluEngine = nlu_engine
    result = await protocol.parse("is AB12345 still under warranty?", CONTEXT)
    assert result.intent == "check_warranty"
    assert result.lang == "en"
    assert [(e.entity, e.value, e.start, e.end) for e in result.entities] == [
        ("serial_number", "AB12345", 3, 10)
    ]
    zh = await protocol.parse("明天下午3点来修洗衣机", CONTEXT)
    assert zh.lang == "zh"
    assert zh.entity("time") is not None and zh.entity("time").value == "2026-06-16T15:00:00+08:00"  # type: ignore[union-attr]


def test_ranking_is_sorted_top_ten_and_sums_to_at_most_one(nlu_engine: EmbeddedNlu) -> None:
    result = nlu_engine.parse_sync("hello", CONTEXT)
    scores = [score for _name, score in result.ranking]
    assert scores == sorted(scores, reverse=True)
    assert len(result.ranking) == min(10, len(nlu_engine.classes))
    assert sum(scores) == pytest.approx(1.0, abs=1e-4)


def test_low_confidence_falls_back(nlu_engine: EmbeddedNlu) -> None:
    sure = nlu_engine.parse_sync("hello warranty", CONTEXT)
    assert sure.intent != FALLBACK_INTENT and sure.confidence < 0.99
    threshold = round(sure.confidence + 0.005, 6)
    nlu_engine.thresholds = {"*": threshold}
    try:
        result = nlu_engine.parse_sync("hello warranty", CONTEXT)
    finally:
        nlu_engine.thresholds = dict(nlu_engine._state["thresholds"])
    assert result.intent == FALLBACK_INTENT
    assert result.confidence == threshold
    assert result.ranking[0] == (FALLBACK_INTENT, threshold)
    assert result.ranking[1] == (sure.intent, sure.confidence)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\n\t",
        "😀😀😀",
        "\x00\x01\x02\x7f",
        "\ud800\udfff",
        "？？？！！！",
        "a" * 10_000,
        "好" * 10_000,
    ],
)
def test_odd_input_never_raises_and_is_fast(nlu_engine: EmbeddedNlu, text: str) -> None:
    started = time.perf_counter()
    result = nlu_engine.parse_sync(text, CONTEXT)
    assert time.perf_counter() - started < 0.2
    assert result.text == text
    if not text.strip() or text in ("😀😀😀", "\x00\x01\x02\x7f", "\ud800\udfff", "？？？！！！"):
        assert result.intent == FALLBACK_INTENT and result.ranking == ((FALLBACK_INTENT, 1.0),)


def test_thumbs_up_is_text(nlu_engine: EmbeddedNlu) -> None:
    assert normalise_text("👍") == "ok"
    assert normalise_text("ＨＥＬＬＯ　  Ｗｏｒｌｄ") == "hello world"
    assert normalise_text("洗衣机　漏水") == "洗衣机 漏水"


def test_save_load_round_trip(nlu_engine: EmbeddedNlu, tmp_path: Path) -> None:
    path = nlu_engine.save(tmp_path / "nlu" / "model.joblib")
    loaded = EmbeddedNlu.load(path)
    assert loaded.data_hash == nlu_engine.data_hash
    assert loaded.thresholds == nlu_engine.thresholds
    for text in ("hello there", "保修期还有多久", "move Acme to proposal", "tell me a joke"):
        assert loaded.parse_sync(text, CONTEXT) == nlu_engine.parse_sync(text, CONTEXT)
    assert list(tmp_path.joinpath("nlu").iterdir()) == [path]  # no temporary file left behind


def test_refuses_other_versions_and_junk(nlu_engine: EmbeddedNlu, tmp_path: Path) -> None:
    state = dict(nlu_engine._state)
    state["version"] = MODEL_VERSION + 1
    old = tmp_path / "old.joblib"
    joblib.dump(state, old)
    with pytest.raises(
        ModelError, match=f"format version {MODEL_VERSION + 1}.*reads version {MODEL_VERSION}"
    ):
        EmbeddedNlu.load(old)
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"\x00not a model at all")
    with pytest.raises(ModelError, match="not a readable NLU model"):
        EmbeddedNlu.load(junk)
    other = tmp_path / "other.joblib"
    joblib.dump({"something": "else"}, other)
    with pytest.raises(ModelError, match="not a crmbot NLU model"):
        EmbeddedNlu.load(other)
    with pytest.raises(ModelError, match="no NLU model at"):
        EmbeddedNlu.load(tmp_path / "missing.joblib")


def test_training_needs_two_intents() -> None:
    with pytest.raises(TrainingError, match="at least two intents"):
        EmbeddedNlu.train([Example(text="hi", intent="greet"), Example(text="hello", intent="greet")])


def test_tiny_and_two_class_data_sets_train() -> None:
    trained, report = EmbeddedNlu.train(
        [
            Example("hi", "greet"),
            Example("hello", "greet"),
            Example("bye", "goodbye"),
            Example("see you", "goodbye"),
        ],
        TrainConfig(folds=5),
    )
    assert trained.parse_sync("hello", CONTEXT).intent in ("greet", FALLBACK_INTENT)
    assert report.intents == 2


def test_many_intents_train_in_seconds() -> None:
    examples = [
        Example(
            f"please do task number {intent} variant {n} {['alpha', 'beta', 'gamma'][n % 3]}",
            f"intent_{intent}",
        )
        for intent in range(150)
        for n in range(8)
    ]
    started = time.perf_counter()
    trained, report = EmbeddedNlu.train(examples, TrainConfig(folds=3))
    assert time.perf_counter() - started < 30
    assert report.intents == 150
    assert len(trained.parse_sync("please do task number 42 variant 1", CONTEXT).ranking) == 10


def test_real_data_meets_the_quality_bar() -> None:
    """One training run on the shipped data; held-out accuracy and macro-F1 ≥ 0.90 per language."""
    heldout = [HELDOUT / "heldout_en.yml", HELDOUT / "heldout_zh.yml"]
    # Shipped with the code: missing files are a broken checkout, not a reason to skip.
    assert all(path.exists() for path in heldout) and any(DEFAULT_DATA_DIR.glob("*.yml"))
    # How long training takes is measured by bench/nlu.py, not asserted here: timings in tests only flake.
    trained, _report = EmbeddedNlu.train(load_nlu_data(DEFAULT_DATA_DIR))
    report = evaluate(trained, load_nlu_data(heldout).examples, CONTEXT)
    for lang in ("en", "zh"):
        assert report["by_lang"][lang]["accuracy"] >= 0.90, lang
        assert report["by_lang"][lang]["macro avg"]["f1-score"] >= 0.90, lang
