"""CLINC150 out-of-scope benchmark (Larson et al., 2019) through the user-facing commands.

Converts CLINC150's `data_small.json` (or another of its variants) to Rasa NLU YAML in a temporary
directory — train + oos_train as the training file, test + oos_test as the test file, the oos examples
under the intent `out_of_scope` — then runs exactly what a user would, as subprocesses:

    crmbot nlu train --data TRAIN --out MODEL
    crmbot nlu test TEST --model MODEL --json

and prints the paper's two figures: in-scope accuracy (over the in-scope test examples; `nlu_fallback`
counts as wrong) and out-of-scope recall (oos test examples predicted as `out_of_scope` or
`nlu_fallback`, which `crmbot nlu test` counts as `out_of_scope`), plus train time and the in-process
parse latency (p50/p99) of the trained model over the test texts. The data set is not part of this
repository: give the JSON file, or `--mirror DIR` for a git clone of github.com/clinc/oos-eval.

Usage: .venv/bin/python bench/clinc150.py data_small.json
       .venv/bin/python bench/clinc150.py --mirror DIR_OF_A_CLONE_OF_OOS_EVAL [--split val]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT_OF_SCOPE = "out_of_scope"
# The paper's Table 2 (Small, oos-train): in-scope accuracy / out-of-scope recall.
PAPER_RASA = (
    "paper (Larson et al. 2019, Table 2, Small, oos-train): Rasa 0.889 / 0.550, MLP 0.915 / 0.522, "
    "BERT 0.964 / 0.409 (in-scope accuracy / oos recall)"
)


def load_clinc(path: Path | None, mirror: Path | None, variant: str) -> dict[str, list[list[str]]]:
    """The data set's JSON: from a file, or from `data/<variant>.json` at HEAD of a git mirror."""
    if path is not None:
        loaded: dict[str, list[list[str]]] = json.loads(path.read_text(encoding="utf-8"))
        return loaded
    assert mirror is not None
    shown = subprocess.run(
        ["git", "-C", str(mirror), "show", f"HEAD:data/{variant}.json"],
        capture_output=True,
        check=True,
    )
    loaded = json.loads(shown.stdout.decode("utf-8"))
    return loaded


def _plain(text: str) -> str:
    """One line of example text that Rasa's annotation grammar and YAML block scalars leave alone."""
    text = re.sub(r"\s+", " ", text).strip()
    return text.replace("[", "(").replace("]", ")")


def write_rasa_yaml(rows: list[list[str]], target: Path) -> int:
    """Rasa NLU YAML with one `- intent:` block per label (`oos` becomes `out_of_scope`); examples written."""
    by_intent: dict[str, list[str]] = {}
    for text, label in rows:
        line = _plain(text)
        if line:
            by_intent.setdefault(OUT_OF_SCOPE if label == "oos" else label, []).append(line)
    parts = ['version: "3.1"', "nlu:"]
    for intent in sorted(by_intent):
        parts.append(f"- intent: {intent}")
        parts.append("  examples: |")
        parts.extend(f"    - {line}" for line in by_intent[intent])
    target.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return sum(len(lines) for lines in by_intent.values())


def crmbot_command() -> list[str]:
    """The installed `crmbot` next to this interpreter, or the module when it is not installed."""
    script = Path(sys.executable).with_name("crmbot")
    if script.exists():
        return [str(script)]
    found = shutil.which("crmbot")
    return [found] if found else [sys.executable, "-m", "crmbot"]


def summarise(report: dict[str, Any]) -> tuple[float, int, float, int]:
    """(in-scope accuracy, in-scope support, oos recall, oos support) of a `crmbot nlu test --json`
    report: in-scope accuracy is the support-weighted recall of every intent but out_of_scope."""
    hits = support = 0.0
    oos_recall, oos_support = 0.0, 0
    for label, row in report.items():
        if label in ("accuracy", "macro avg", "weighted avg", "by_lang") or not isinstance(row, dict):
            continue
        if label == OUT_OF_SCOPE:
            oos_recall, oos_support = float(row["recall"]), int(row["support"])
            continue
        support += row["support"]
        hits += row["recall"] * row["support"]
    return (hits / support if support else 0.0), int(support), oos_recall, oos_support


def parse_latency(model: Path, texts: list[str], count: int) -> tuple[float, float]:
    """p50 and p99 in ms of `count` in-process parses cycling through `texts`."""
    sys.path.insert(0, str(ROOT))
    from bot.nlu.embedded import EmbeddedNlu
    from bot.nlu.entities import warm_up
    from bot.nlu.types import ParseContext

    engine = EmbeddedNlu.load(model)
    context = ParseContext(now=datetime(2026, 6, 15, 2, 0, tzinfo=UTC))
    warm_up()
    shuffled = list(texts)
    random.Random(7).shuffle(shuffled)
    for text in shuffled[:50]:
        engine.parse_sync(text, context)
    timings: list[float] = []
    for index in range(count):
        started = time.perf_counter()
        engine.parse_sync(shuffled[index % len(shuffled)], context)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return timings[len(timings) // 2], timings[min(len(timings) - 1, int(0.99 * len(timings)))]


def _crmbot(command: list[str], env: dict[str, str]) -> tuple[str, float]:
    """Run a crmbot command; its output and wall time (the benchmark stops if it fails)."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[-6:])} failed:\n{done.stdout}{done.stderr}")
    return done.stdout, wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, nargs="?", help="CLINC150 JSON file (e.g. data_small.json)")
    parser.add_argument("--mirror", type=Path, help="a git clone of clinc/oos-eval instead of a file")
    parser.add_argument("--variant", default="data_small", help="with --mirror: data/<variant>.json")
    parser.add_argument(
        "--split", choices=("test", "val"), default="test", help="evaluate on test (default) or val"
    )
    parser.add_argument("--parses", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="keep the YAML files and the model in this directory")
    args = parser.parse_args()
    if (args.data is None) == (args.mirror is None):
        parser.error("give the JSON file or --mirror DIR (one of them)")

    data = load_clinc(args.data, args.mirror, args.variant)
    folder = Path(tempfile.mkdtemp(prefix="clinc150-")) if args.keep is None else args.keep
    folder.mkdir(parents=True, exist_ok=True)
    try:
        train_file, test_file, model = folder / "train.yml", folder / "test.yml", folder / "model.joblib"
        n_train = write_rasa_yaml(data["train"] + data["oos_train"], train_file)
        n_test = write_rasa_yaml(data[args.split] + data[f"oos_{args.split}"], test_file)
        print(
            f"CLINC150 {args.variant}: {n_train} training examples "
            f"({len(data['oos_train'])} out-of-scope), {n_test} {args.split} examples "
            f"({len(data[f'oos_{args.split}'])} out-of-scope)"
        )
        command = crmbot_command()
        # A model path is given to every command: no settings or database are needed.
        env = dict(os.environ, CRMBOT_DATA_DIR=str(folder))
        train = [*command, "nlu", "train", "--data", str(train_file), "--out", str(model)]
        trained, train_wall = _crmbot(train, env)
        print(" ".join(trained.split()))
        test = [*command, "nlu", "test", str(test_file), "--model", str(model), "--json"]
        tested, test_wall = _crmbot(test, env)
        report = json.loads(tested)
        in_scope, in_support, oos_recall, oos_support = summarise(report)
        rows = data[args.split] + data[f"oos_{args.split}"]
        p50, p99 = parse_latency(model, [text for text, _label in rows], args.parses)
        oos_row = report.get(OUT_OF_SCOPE, {})
        print(f"\n{'split':<8}{'in-scope acc':>14}{'oos recall':>12}{'oos prec':>10}{'macro-F1':>10}")
        print(
            f"{args.split:<8}{in_scope:>14.4f}{oos_recall:>12.4f}{oos_row.get('precision', 0.0):>10.4f}"
            f"{report['macro avg']['f1-score']:>10.4f}   ({in_support} in-scope, {oos_support} oos)"
        )
        print(
            f"train {train_wall:.1f} s wall (`crmbot nlu train`, interpreter start included); "
            f"test {test_wall:.1f} s wall; parse p50 {p50:.3f} ms, p99 {p99:.3f} ms (in process)"
        )
        print(PAPER_RASA)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
