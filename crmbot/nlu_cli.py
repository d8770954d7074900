"""`crmbot nlu …`: train, parse, test and export the NLU (registered in crmbot/cli.py as `nlu`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.console import Console
from rich.table import Table

from bot.nlu.embedded import EmbeddedNlu, ModelError, TrainingError
from bot.nlu.evaluate import evaluate, intent_rows, worst_confusions
from bot.nlu.rasa import export_rasa, parse_result_to_rasa
from bot.nlu.service import DEFAULT_DATA_DIR, ensure_model, train_model
from bot.nlu.types import ParseContext
from bot.nlu.yaml_data import NluDataError, load_nlu_data

nlu_app = typer.Typer(help="Intent and entity recognition (Rasa NLU YAML data).", no_args_is_help=True)

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

DataOption = Annotated[
    list[Path] | None,
    typer.Option("--data", help="Rasa NLU YAML file or directory (repeatable). Default: the shipped data."),
]
ModelOption = Annotated[
    Path | None, typer.Option("--model", help="Model file. Default: <CRMBOT_DATA_DIR>/nlu/model.joblib.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]Error:[/red] {message}", highlight=False)
    return typer.Exit(1)


def _guard(work: Callable[[], T]) -> T:
    """Known failures become one clear line and exit code 1, never a traceback."""
    try:
        return work()
    except NluDataError as exc:
        raise _fail(str(exc)) from None
    except (ModelError, TrainingError) as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"{exc.filename or ''} {exc.strerror or exc}".strip()) from None


def _settings_model_path() -> Path:
    from pydantic import ValidationError

    from core.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = (
                "CRMBOT_" + "_".join(str(part) for part in error["loc"]).upper()
                if error["loc"]
                else "settings"
            )
            err.print(f"Configuration error: {name}: {error['msg']}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    return Path(settings.data_dir) / "nlu" / "model.joblib"


def _settings_timezone() -> str:
    try:
        from core.settings import Settings

        return Settings().timezone
    except Exception:  # the timezone only affects date entities; the default is fine when settings are broken
        return "Asia/Shanghai"


def _engine(model: Path | None) -> EmbeddedNlu:
    if model is not None:
        return EmbeddedNlu.load(model)
    path = _settings_model_path()
    if not path.exists():
        err.print(f"No NLU model at {path} yet: training one on the shipped data…", highlight=False)
    return ensure_model(path)


@nlu_app.command("train")
def train(
    data: DataOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where to write the model.")] = None,
) -> None:
    """Train the embedded model on Rasa NLU YAML data and save it."""
    target = out or _settings_model_path()

    def work() -> None:
        engine, report = train_model(data or DEFAULT_DATA_DIR, target)
        size = target.stat().st_size
        console.print(
            f"Trained on {report.examples} examples of {report.intents} intents in {report.seconds:.1f} s "
            f"({report.features} features)."
        )
        if report.cv_accuracy is not None and report.cv_macro_f1 is not None:
            console.print(
                f"Cross-validation: accuracy {report.cv_accuracy:.3f}, macro-F1 {report.cv_macro_f1:.3f}; "
                f"fallback threshold {_thresholds(report.thresholds)}."
            )
        console.print(f"Model saved to {target} ({size / 1024:.0f} KiB).", highlight=False)
        del engine

    _guard(work)


def _thresholds(values: dict[str, float]) -> str:
    return ", ".join(f"{key if key != '*' else 'default'} {value:.2f}" for key, value in values.items())


@nlu_app.command("parse")
def parse(
    text: Annotated[str, typer.Argument(help="The message to parse.")],
    model: ModelOption = None,
    as_json: JsonOption = False,
    now: Annotated[
        str | None,
        typer.Option("--now", help="Resolve dates against this ISO datetime instead of the clock."),
    ] = None,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="Timezone for dates (default: CRMBOT_TIMEZONE).")
    ] = None,
) -> None:
    """Parse one message: intent, confidence, ranking and entities."""
    zone_name = timezone or _settings_timezone()
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail(f"unknown timezone {zone_name!r}") from None
    if now is not None:
        try:
            moment = datetime.fromisoformat(now)
        except ValueError:
            raise _fail(
                f"--now must be an ISO datetime such as 2026-06-15T10:00:00+08:00, not {now!r}"
            ) from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=zone)
    else:
        moment = datetime.now(zone)
    engine = _guard(lambda: _engine(model))
    result = engine.parse_sync(text, ParseContext(now=moment, timezone=zone_name))
    if as_json:
        typer.echo(json.dumps(parse_result_to_rasa(result), ensure_ascii=False, indent=2))
        return
    console.print(f"[bold]{result.intent}[/bold] ({result.confidence:.2f}) · language {result.lang}")
    others = ", ".join(f"{name} {score:.2f}" for name, score in result.ranking[1:4])
    if others:
        console.print(f"  then: {others}", highlight=False)
    if not result.entities:
        console.print("  no entities")
        return
    table = Table("entity", "value", "text", "span")
    for entity in result.entities:
        table.add_row(entity.entity, entity.value, entity.text, f"{entity.start}-{entity.end}")
    console.print(table)


@nlu_app.command("test")
def test(
    file: Annotated[Path, typer.Argument(help="Rasa NLU YAML file or directory with labelled examples.")],
    model: ModelOption = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate on labelled data: accuracy, macro-F1 and a per-intent table per language."""

    def work() -> dict[str, Any]:
        examples = load_nlu_data(file).examples
        if not examples:
            raise NluDataError(str(file), 0, "no examples to test on")
        return evaluate(_engine(model), examples)

    report = _guard(work)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    console.print(_summary("all", report))
    for lang, sub in report["by_lang"].items():
        console.print(_summary(lang, sub))
        table = Table(title=lang)
        table.add_column("intent", no_wrap=True)
        for header in ("precision", "recall", "f1", "support"):
            table.add_column(header, justify="right", no_wrap=True)
        table.add_column("confused with")
        for intent, row in intent_rows(sub):
            confused = ", ".join(f"{name} ×{count}" for name, count in row.get("confused_with", {}).items())
            table.add_row(
                intent,
                f"{row['precision']:.2f}",
                f"{row['recall']:.2f}",
                f"{row['f1-score']:.2f}",
                str(int(row["support"])),
                confused,
            )
        console.print(table)
    worst = worst_confusions(report, 5)
    if worst:
        console.print(
            "Worst confusions: " + "; ".join(f"{g} → {p} ×{n}" for g, p, n in worst), highlight=False
        )


def _summary(name: str, report: dict[str, Any]) -> str:
    support = int(report["macro avg"]["support"]) if "support" in report["macro avg"] else 0
    return (
        f"[bold]{name}[/bold]: accuracy {report['accuracy']:.3f}, "
        f"macro-F1 {report['macro avg']['f1-score']:.3f} ({support} examples)"
    )


@nlu_app.command("export-rasa")
def export_rasa_command(
    directory: Annotated[Path, typer.Argument(help="Directory for the Rasa project (created if missing).")],
    data: DataOption = None,
    intents: Annotated[
        str | None,
        typer.Option("--intents", help="Only these intents, comma-separated (e.g. greet,goodbye)."),
    ] = None,
    per_intent: Annotated[
        int | None,
        typer.Option("--per-intent", min=1, help="At most this many examples per intent, spread evenly."),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="DIET's training epochs.")] = 100,
) -> None:
    """Write a Rasa 3.6 project (config.yml, domain.yml, data/nlu.yml) from the training data."""
    chosen = [name.strip() for name in intents.split(",") if name.strip()] if intents is not None else None
    if chosen is not None and not chosen:
        raise _fail("--intents needs at least one intent name")

    def work() -> list[Path]:
        try:
            return export_rasa(
                data or DEFAULT_DATA_DIR, directory, intents=chosen, per_intent=per_intent, epochs=epochs
            )
        except NluDataError:
            raise
        except ValueError as exc:
            raise _fail(str(exc)) from None

    files = _guard(work)
    for path in files:
        console.print(f"wrote {path}", highlight=False)
    console.print(
        "Next: `rasa train nlu` and `rasa run --enable-api` in that directory "
        "(Rasa runs in its own Python ≤ 3.10)."
    )
