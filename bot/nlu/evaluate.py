"""Intent evaluation in the layout of Rasa's `intent_report.json`, overall and per language."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from bot.nlu.lang import detect_lang
from bot.nlu.types import FALLBACK_INTENT, NluEngine, ParseContext, ParseResult
from bot.nlu.yaml_data import Example

OUT_OF_SCOPE = "out_of_scope"
SUMMARY_KEYS = ("accuracy", "macro avg", "weighted avg")
CONFUSED_WITH_TOP = 3


class SyncEngine(Protocol):
    """An engine that can also parse without an event loop (EmbeddedNlu)."""

    def parse_sync(self, text: str, context: ParseContext) -> ParseResult: ...


def intent_report(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """sklearn's classification_report(output_dict=True) plus Rasa's per-intent `confused_with`."""
    from sklearn.metrics import classification_report

    if not gold:
        return {"accuracy": 0.0, "macro avg": _empty(), "weighted avg": _empty()}
    report: dict[str, Any] = classification_report(
        list(gold), list(predicted), output_dict=True, zero_division=0
    )
    if "accuracy" not in report:  # sklearn reports micro avg instead when labels are a subset; not here
        report["accuracy"] = sum(1 for g, p in zip(gold, predicted, strict=True) if g == p) / len(gold)
    confusions: dict[str, Counter[str]] = {}
    for g, p in zip(gold, predicted, strict=True):
        if g != p:
            confusions.setdefault(g, Counter())[p] += 1
    for label, row in report.items():
        if label in SUMMARY_KEYS or not isinstance(row, dict):
            continue
        row["confused_with"] = dict(confusions.get(label, Counter()).most_common(CONFUSED_WITH_TOP))
    return report


def _empty() -> dict[str, float]:
    return {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}


def predicted_label(result: ParseResult, gold_labels: set[str]) -> str:
    """The label a prediction counts as: `nlu_fallback` is the data's `out_of_scope` when it has one."""
    if result.intent == FALLBACK_INTENT and OUT_OF_SCOPE in gold_labels:
        return OUT_OF_SCOPE
    return result.intent


def report_from_predictions(
    examples: Sequence[Example], results: Sequence[ParseResult], langs: Sequence[str] | None = None
) -> dict[str, Any]:
    """The report for predictions already made (`langs` defaults to detect_lang of each text)."""
    gold = [example.intent for example in examples]
    labels = set(gold)
    predicted = [predicted_label(result, labels) for result in results]
    languages = list(langs) if langs is not None else [detect_lang(example.text) for example in examples]
    report = intent_report(gold, predicted)
    by_lang: dict[str, Any] = {}
    for lang in sorted(set(languages)):
        rows = [index for index, value in enumerate(languages) if value == lang]
        by_lang[lang] = intent_report([gold[i] for i in rows], [predicted[i] for i in rows])
    report["by_lang"] = by_lang
    return report


def default_context() -> ParseContext:
    """The context evaluation parses with (entities do not affect intents)."""
    return ParseContext(now=datetime.now(UTC))


async def evaluate_async(
    engine: NluEngine, examples: Sequence[Example], context: ParseContext | None = None
) -> dict[str, Any]:
    """Parse every example with any engine (embedded or Rasa) and report."""
    context = context or default_context()
    results = [await engine.parse(example.text, context) for example in examples]
    return report_from_predictions(examples, results)


def evaluate(
    engine: NluEngine | SyncEngine, examples: Sequence[Example], context: ParseContext | None = None
) -> dict[str, Any]:
    """Parse every example and report: per intent precision/recall/f1-score/support/confused_with,
    accuracy, macro avg, weighted avg, and the same per language under "by_lang".

    Engines with `parse_sync` are called directly; others run in a fresh event loop (so call
    `evaluate_async` from async code)."""
    context = context or default_context()
    parse_sync = getattr(engine, "parse_sync", None)
    if callable(parse_sync):
        results: list[ParseResult] = [parse_sync(example.text, context) for example in examples]
        return report_from_predictions(examples, results)
    async_engine: NluEngine = engine  # type: ignore[assignment]
    return asyncio.run(evaluate_async(async_engine, examples, context))


def worst_confusions(report: dict[str, Any], limit: int = 10) -> list[tuple[str, str, int]]:
    """(gold, predicted, count) pairs, most frequent first."""
    pairs: list[tuple[str, str, int]] = []
    for label, row in report.items():
        if label in SUMMARY_KEYS or label == "by_lang" or not isinstance(row, dict):
            continue
        for other, count in row.get("confused_with", {}).items():
            pairs.append((label, other, int(count)))
    pairs.sort(key=lambda item: (-item[2], item[0], item[1]))
    return pairs[:limit]


def intent_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The per-intent rows of a report, by name."""
    return sorted(
        (label, row)
        for label, row in report.items()
        if label not in SUMMARY_KEYS and label != "by_lang" and isinstance(row, dict)
    )
