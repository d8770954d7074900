"""The evaluation report: Rasa's intent_report.json layout, nlu_fallback as out_of_scope, per language."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from bot.nlu.evaluate import evaluate, evaluate_async, report_from_predictions, worst_confusions
from bot.nlu.types import ParseContext, ParseResult
from bot.nlu.yaml_data import Example, load_nlu_data

EXAMPLES = [
    Example("hi", "greet"),
    Example("hello", "greet"),
    Example("bye", "goodbye"),
    Example("weather?", "out_of_scope"),
    Example("你好", "greet"),
    Example("再见", "goodbye"),
]
ANSWERS = {
    "hi": "greet",
    "hello": "goodbye",
    "bye": "goodbye",
    "weather?": "nlu_fallback",
    "你好": "greet",
    "再见": "greet",
}


class Scripted:
    """An engine answering from a script (async only, like RasaNlu)."""

    async def parse(self, text: str, context: ParseContext) -> ParseResult:
        return ParseResult(text=text, intent=ANSWERS[text], confidence=0.9)


def test_report_layout_and_numbers() -> None:
    report = evaluate(Scripted(), EXAMPLES, ParseContext(now=datetime(2026, 6, 15, tzinfo=UTC)))
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["out_of_scope"]["recall"] == 1.0  # nlu_fallback counts as out_of_scope
    assert "nlu_fallback" not in report
    assert report["greet"] == {
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "f1-score": pytest.approx(2 / 3),
        "support": 3,
        "confused_with": {"goodbye": 1},
    }
    assert report["goodbye"]["confused_with"] == {"greet": 1}
    assert set(report["macro avg"]) == {"precision", "recall", "f1-score", "support"}
    assert report["weighted avg"]["support"] == 6
    assert report["by_lang"]["en"]["accuracy"] == pytest.approx(3 / 4)
    assert report["by_lang"]["zh"]["accuracy"] == pytest.approx(1 / 2)
    assert report["by_lang"]["zh"]["goodbye"]["confused_with"] == {"greet": 1}
    assert worst_confusions(report) == [("goodbye", "greet", 1), ("greet", "goodbye", 1)]


async def test_async_evaluation_matches() -> None:
    context = ParseContext(now=datetime(2026, 6, 15, tzinfo=UTC))
    assert await evaluate_async(Scripted(), EXAMPLES, context) == report_from_predictions(
        EXAMPLES, [ParseResult(text=e.text, intent=ANSWERS[e.text], confidence=0.9) for e in EXAMPLES]
    )


def test_without_out_of_scope_in_the_data_fallback_stays_a_miss() -> None:
    examples = [Example("hi", "greet"), Example("bye", "goodbye")]
    results = [ParseResult("hi", "nlu_fallback", 0.3), ParseResult("bye", "goodbye", 0.9)]
    report = report_from_predictions(examples, results)
    assert report["accuracy"] == 0.5
    assert report["greet"]["confused_with"] == {"nlu_fallback": 1}


def _clinc_bench() -> ModuleType:
    """bench/clinc150.py (a script, not a package module)."""
    path = Path(__file__).resolve().parent.parent / "bench" / "clinc150.py"
    spec = importlib.util.spec_from_file_location("clinc150_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clinc150_rows_become_rasa_nlu_yaml(tmp_path: Path) -> None:
    bench = _clinc_bench()
    rows = [
        ["how do i set up direct deposit", "direct_deposit"],
        ["what's  my\tbalance [checking]", "balance"],
        ["how much is an overdraft fee for bank", "oos"],
        ["   ", "balance"],
    ]
    target = tmp_path / "train.yml"
    assert bench.write_rasa_yaml(rows, target) == 3
    data = load_nlu_data(target)
    assert [(e.text, e.intent) for e in data.examples] == [
        ("what's my balance (checking)", "balance"),  # brackets would read as an entity annotation
        ("how do i set up direct deposit", "direct_deposit"),
        ("how much is an overdraft fee for bank", "out_of_scope"),
    ]


def test_clinc150_figures_count_a_fallback_as_out_of_scope_and_as_a_miss_in_scope() -> None:
    bench = _clinc_bench()
    examples = [
        Example("a", "balance"),
        Example("b", "balance"),
        Example("c", "transfer"),
        Example("d", "transfer"),
        Example("e", "out_of_scope"),
        Example("f", "out_of_scope"),
        Example("g", "out_of_scope"),
        Example("h", "out_of_scope"),
    ]
    answers = [
        "balance",
        "nlu_fallback",
        "transfer",
        "balance",
        "nlu_fallback",
        "out_of_scope",
        "transfer",
        "out_of_scope",
    ]
    results = [ParseResult(e.text, intent, 0.9) for e, intent in zip(examples, answers, strict=True)]
    report = report_from_predictions(examples, results, langs=["en"] * len(examples))
    in_scope, in_support, oos_recall, oos_support = bench.summarise(report)
    assert (in_scope, in_support) == (pytest.approx(2 / 4), 4)
    assert (oos_recall, oos_support) == (pytest.approx(3 / 4), 4)
