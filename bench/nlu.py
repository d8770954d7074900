"""Benchmark the embedded NLU on the shipped training data and the held-out sets.

Reports train time, model size on disk, the fallback thresholds and novelty floors, memory (this process,
and a fresh process that only loads the model and parses), held-out accuracy / macro-F1 / out_of_scope
recall per language, parse latency p50/p99 (in process, N parses of held-out texts, entity extraction
included), the worst held-out confusions, and the training data's own weak spots (out-of-fold
confusions from training).

Usage: .venv/bin/python bench/nlu.py [--data bot/nlu/data] [--heldout tests/nlu/heldout_en.yml ...]
                                     [--parses 2000] [--errors 10]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.nlu.embedded import EmbeddedNlu, normalise_text  # noqa: E402
from bot.nlu.entities import warm_up  # noqa: E402
from bot.nlu.evaluate import evaluate, predicted_label, worst_confusions  # noqa: E402
from bot.nlu.lang import detect_lang  # noqa: E402
from bot.nlu.service import DEFAULT_DATA_DIR  # noqa: E402
from bot.nlu.types import ParseContext  # noqa: E402
from bot.nlu.yaml_data import load_nlu_data  # noqa: E402

HELDOUT = [ROOT / "tests" / "nlu" / "heldout_en.yml", ROOT / "tests" / "nlu" / "heldout_zh.yml"]
RASA_REFERENCE = (
    "Rasa 3.6 (published figures): DIET training ≈ 55–60 s on 143 examples, RSS ≈ 1.25 GB, parse p50 ≈ 8 ms"
)


def rss_mb() -> float:
    """Current resident set size (Linux /proc), falling back to the peak."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


SERVE_PROBE = """
import resource, sys, time
from pathlib import Path
from datetime import datetime, timezone
sys.path.insert(0, sys.argv[2])
def rss():
    return int(Path('/proc/self/statm').read_text().split()[1]) * resource.getpagesize() / 2**20
base = rss()
started = time.perf_counter()
from bot.nlu.embedded import EmbeddedNlu
from bot.nlu.types import ParseContext
engine = EmbeddedNlu.load(sys.argv[1])
engine.parse_sync("warm up 明天下午3点 SR-12", ParseContext(now=datetime.now(timezone.utc)))
print(f"{rss():.0f} {base:.0f} {time.perf_counter() - started:.2f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, nargs="*", default=[DEFAULT_DATA_DIR])
    parser.add_argument("--heldout", type=Path, nargs="*", default=HELDOUT)
    parser.add_argument("--parses", type=int, default=2000)
    parser.add_argument("--errors", type=int, default=10, help="held-out and training mistakes to print")
    parser.add_argument("--json", type=Path, help="also write the held-out report here")
    args = parser.parse_args()

    rss_start = rss_mb()
    data = load_nlu_data(args.data)
    heldout = load_nlu_data(args.heldout).examples
    langs = Counter(detect_lang(e.text) for e in data.examples)
    print(
        f"training data: {len(data.examples)} examples, {len(data.intents)} intents "
        f"({', '.join(f'{k} {v}' for k, v in sorted(langs.items()))}); held-out: {len(heldout)} examples"
    )

    gc.collect()
    started = time.perf_counter()
    engine, report = EmbeddedNlu.train(data)
    train_s = time.perf_counter() - started
    rss_trained = rss_mb()
    with tempfile.TemporaryDirectory() as folder:
        model_path = Path(folder) / "model.joblib"
        engine.save(model_path)
        size_kib = model_path.stat().st_size / 1024
        probe = subprocess.run(
            [sys.executable, "-c", SERVE_PROBE, str(model_path), str(ROOT)],
            capture_output=True,
            text=True,
            check=False,
        )
    serve = probe.stdout.split() if probe.returncode == 0 else []
    print(
        f"train {train_s:.1f} s ({report.features:,} features, "
        f"{report.extra['folds']}-fold CV for calibration "
        f"and threshold; +{report.extra['augmented_examples']} augmented examples)"
    )
    print(
        f"model on disk {size_kib:,.0f} KiB; temperature {report.temperature:.3f}; "
        f"thresholds {report.thresholds}; novelty floor "
        f"{ {lang: round(value, 3) for lang, value in report.novelty.items()} }"
    )
    print(f"RSS: start {rss_start:.0f} MiB, after training {rss_trained:.0f} MiB (scikit-learn loaded)")
    if serve:
        print(
            f"RSS serving (fresh process: load model + parse): {float(serve[0]):.0f} MiB "
            f"(interpreter {float(serve[1]):.0f} MiB), load + first parse {float(serve[2]):.2f} s"
        )
    else:
        print(f"serving probe failed: {probe.stderr.strip()[-300:]}")
    if report.cv_accuracy is not None and report.cv_macro_f1 is not None:
        print(
            f"training-data cross-validation: accuracy {report.cv_accuracy:.3f}, "
            f"macro-F1 {report.cv_macro_f1:.3f}"
        )

    context = ParseContext(now=datetime(2026, 6, 15, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    result = evaluate(engine, heldout, context)
    print(f"\n{'held-out':<10}{'n':>6}{'accuracy':>10}{'macro-F1':>10}{'oos recall':>12}{'oos prec':>10}")
    for name, sub in [("all", result), *sorted(result["by_lang"].items())]:
        oos = sub.get("out_of_scope", {})
        print(
            f"{name:<10}{int(sub['macro avg']['support']):>6}{sub['accuracy']:>10.3f}"
            f"{sub['macro avg']['f1-score']:>10.3f}{oos.get('recall', 0.0):>12.3f}"
            f"{oos.get('precision', 0.0):>10.3f}"
        )
    # A held-out text that also appears in the training data measures memory, not generalisation.
    seen = {normalise_text(e.text) for e in data.examples}
    unseen = [e for e in heldout if normalise_text(e.text) not in seen]
    if len(unseen) < len(heldout):
        clean = evaluate(engine, unseen, context)
        print(
            f"{len(heldout) - len(unseen)} held-out texts are also in the training data; "
            f"on the {len(unseen)} unseen ones:"
        )
        for name, sub in [("unseen", clean), *sorted(clean["by_lang"].items())]:
            oos = sub.get("out_of_scope", {})
            print(
                f"{name:<10}{int(sub['macro avg']['support']):>6}{sub['accuracy']:>10.3f}"
                f"{sub['macro avg']['f1-score']:>10.3f}{oos.get('recall', 0.0):>12.3f}"
                f"{oos.get('precision', 0.0):>10.3f}"
            )
    if args.json:
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")

    # Latency: N parses cycling through the held-out texts, in process, entities included.
    warm_up()
    texts = [e.text for e in heldout]
    random.Random(7).shuffle(texts)
    for text in texts[:50]:
        engine.parse_sync(text, context)
    wall: list[float] = []
    cpu: list[float] = []
    for index in range(args.parses):
        text = texts[index % len(texts)]
        start, start_cpu = time.perf_counter(), time.process_time()
        engine.parse_sync(text, context)
        cpu.append((time.process_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start) * 1000)
    print(
        f"\nparse latency over {args.parses} parses: p50 {percentile(wall, 0.5):.3f} ms, "
        f"p99 {percentile(wall, 0.99):.3f} ms, max {max(wall):.2f} ms (cpu p50 {percentile(cpu, 0.5):.3f} ms)"
    )
    print(RASA_REFERENCE)

    print("\nworst held-out confusions (gold → predicted ×n):")
    for gold, predicted, count in worst_confusions(result, args.errors):
        print(f"  {gold} → {predicted} ×{count}")
    print("held-out mistakes:")
    labels = {e.intent for e in heldout}
    shown = 0
    for example in heldout:
        parsed = engine.parse_sync(example.text, context)
        label = predicted_label(parsed, labels)
        if label != example.intent and shown < args.errors:
            print(f"  [{example.intent} → {label} {parsed.confidence:.2f}] {example.text}")
            shown += 1

    cv_errors = report.extra.get("cv_errors", [])
    pairs = Counter((gold, predicted) for _text, gold, predicted, _conf in cv_errors)
    print(f"\ntraining data, out-of-fold confusions ({len(cv_errors)} mistakes): the data's weak spots")
    for (gold, predicted), count in pairs.most_common(args.errors):
        samples = [text for text, g, p, _c in cv_errors if (g, p) == (gold, predicted)][:3]
        print(f"  {gold} → {predicted} ×{count}: " + " | ".join(samples))


if __name__ == "__main__":
    main()
