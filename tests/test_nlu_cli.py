"""`crmbot nlu …` through Typer's CliRunner on `nlu_app` directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from crmbot.nlu_cli import nlu_app

FIXTURES = Path(__file__).parent / "nlu_fixtures"
NOW = "2026-06-15T10:00:00+08:00"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRMBOT_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


@pytest.fixture
def model(runner: CliRunner, tmp_path: Path) -> Path:
    path = tmp_path / "model.joblib"
    result = runner.invoke(
        nlu_app, ["train", "--data", str(FIXTURES / "train_small.yml"), "--out", str(path)]
    )
    assert result.exit_code == 0, result.output
    return path


def test_train_reports_and_writes_the_model(runner: CliRunner, model: Path) -> None:
    result = runner.invoke(
        nlu_app, ["train", "--data", str(FIXTURES / "train_small.yml"), "--out", str(model)]
    )
    assert result.exit_code == 0
    assert "Trained on 77 examples of 6 intents" in result.stdout
    assert f"Model saved to {model}" in result.stdout
    assert model.stat().st_size > 1000


def test_train_defaults_to_the_data_dir(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(nlu_app, ["train", "--data", str(FIXTURES / "train_small.yml")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "var" / "nlu" / "model.joblib").is_file()


def test_parse_json_is_rasas_shape(runner: CliRunner, model: Path) -> None:
    result = runner.invoke(
        nlu_app,
        [
            "parse",
            "is AB12345 still under warranty by next Friday?",
            "--model",
            str(model),
            "--json",
            "--now",
            NOW,
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["text"] == "is AB12345 still under warranty by next Friday?"
    assert payload["intent"]["name"] == "check_warranty"
    assert 0 < payload["intent"]["confidence"] <= 1
    assert [(e["entity"], e["value"], e["start"], e["end"]) for e in payload["entities"]] == [
        ("serial_number", "AB12345", 3, 10),
        ("date", "2026-06-19", 35, 46),
    ]
    assert {"confidence_entity", "extractor"} <= set(payload["entities"][0])
    assert payload["intent_ranking"][0]["name"] == "check_warranty"
    assert len(payload["intent_ranking"]) == 6


def test_parse_readable(runner: CliRunner, model: Path) -> None:
    result = runner.invoke(nlu_app, ["parse", "明天下午3点来修洗衣机", "--model", str(model), "--now", NOW])
    assert result.exit_code == 0, result.output
    assert "open_service_request" in result.stdout
    assert "language zh" in result.stdout
    assert "2026-06-16T15:00:00+08:00" in result.stdout


def test_test_prints_accuracy_per_language(runner: CliRunner, model: Path) -> None:
    result = runner.invoke(nlu_app, ["test", str(FIXTURES / "heldout_small.yml"), "--model", str(model)])
    assert result.exit_code == 0, result.output
    assert "all: accuracy" in result.stdout and "macro-F1" in result.stdout
    assert "en: accuracy" in result.stdout and "zh: accuracy" in result.stdout
    assert "check_warranty" in result.stdout


def test_test_json_is_the_report(runner: CliRunner, model: Path) -> None:
    result = runner.invoke(
        nlu_app, ["test", str(FIXTURES / "heldout_small.yml"), "--model", str(model), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"accuracy", "macro avg", "weighted avg", "by_lang", "greet"} <= set(report)
    assert set(report["by_lang"]) == {"en", "zh"}
    assert report["greet"]["support"] == 2
    assert report["macro avg"]["support"] == 12


def test_export_rasa(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        nlu_app, ["export-rasa", str(tmp_path / "rasa"), "--data", str(FIXTURES / "train_small.yml")]
    )
    assert result.exit_code == 0, result.output
    domain = yaml.safe_load((tmp_path / "rasa" / "domain.yml").read_text(encoding="utf-8"))
    assert "update_deal" in domain["intents"]
    assert "wrote" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "missing.yml"], "missing.yml:0: no such file or directory"),
        (["train", "--data", str(FIXTURES / "bad_intent_name.yml")], "bad_intent_name.yml:6: intent name"),
        (["test", str(FIXTURES / "bad_yaml.yml"), "--model", "nope.joblib"], "bad_yaml.yml:6: invalid YAML"),
        (["parse", "hello", "--model", "nope.joblib"], "no NLU model at nope.joblib"),
        (["parse", "hello", "--model", "x", "--now", "yesterday"], "--now must be an ISO datetime"),
        (
            ["export-rasa", "out", "--data", str(FIXTURES / "bad_structure.yml")],
            "bad_structure.yml:6: unknown key",
        ),
    ],
)
def test_bad_input_is_a_clear_message_and_exit_1(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(nlu_app, args)
    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_model_of_another_file_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    junk = tmp_path / "junk.joblib"
    junk.write_text("not a model", encoding="utf-8")
    result = runner.invoke(nlu_app, ["parse", "hello", "--model", str(junk)])
    assert result.exit_code == 1
    assert "is not a readable NLU model" in result.stderr
