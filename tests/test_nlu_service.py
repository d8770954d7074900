"""build_nlu: embedded by default, trained when the model is missing or the data changed; Rasa on request."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.nlu.embedded import EmbeddedNlu
from bot.nlu.rasa import RasaNlu
from bot.nlu.service import DEFAULT_DATA_DIR, build_nlu, default_model_path, ensure_model
from bot.nlu.yaml_data import load_nlu_data
from core.settings import Settings

FIXTURES = Path(__file__).parent / "nlu_fixtures"


@dataclass(frozen=True)
class FakeSettings:
    """The three settings the NLU reads."""

    data_dir: Path
    nlu_backend: str = "embedded"
    rasa_url: str | None = None


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(FIXTURES / "train_small.yml", folder / "train.yml")
    return folder


def test_default_model_path_is_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", _env_file=None)
    assert default_model_path(settings) == tmp_path / "var" / "nlu" / "model.joblib"


def test_shipped_data_is_in_the_package() -> None:
    assert Path(__file__).resolve().parent.parent / "bot" / "nlu" / "data" == DEFAULT_DATA_DIR


def test_trains_when_missing_reuses_then_retrains_on_change(tmp_path: Path, data: Path) -> None:
    model = tmp_path / "var" / "nlu" / "model.joblib"
    first = ensure_model(model, data)
    assert model.is_file()
    stamp = model.stat().st_mtime_ns
    again = ensure_model(model, data)
    assert again.data_hash == first.data_hash
    assert model.stat().st_mtime_ns == stamp  # not retrained
    with (data / "train.yml").open("a", encoding="utf-8") as handle:
        handle.write("- intent: greet\n  examples: |\n    - top of the morning\n")
    changed = ensure_model(model, data)
    assert changed.data_hash == load_nlu_data(data).data_hash() != first.data_hash
    assert model.stat().st_mtime_ns != stamp


def test_corrupt_model_is_replaced(tmp_path: Path, data: Path) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes(b"garbage")
    engine = ensure_model(model, data)
    assert EmbeddedNlu.load(model).data_hash == engine.data_hash


def test_build_nlu_embedded_and_rasa(tmp_path: Path, data: Path) -> None:
    embedded = build_nlu(FakeSettings(data_dir=tmp_path / "var"), data=data)
    assert isinstance(embedded, EmbeddedNlu)
    assert (tmp_path / "var" / "nlu" / "model.joblib").is_file()
    rasa = build_nlu(FakeSettings(tmp_path / "var", "rasa", "http://127.0.0.1:5005/"), data=data)
    assert isinstance(rasa, RasaNlu)
    assert rasa.url == "http://127.0.0.1:5005"
    assert isinstance(rasa.fallback, EmbeddedNlu)
    with pytest.raises(ValueError, match="CRMBOT_RASA_URL"):
        build_nlu(FakeSettings(tmp_path / "var", "rasa", None), data=data)


def test_settings_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: Path) -> None:
    monkeypatch.setenv("CRMBOT_NLU_BACKEND", "rasa")
    monkeypatch.setenv("CRMBOT_RASA_URL", "http://rasa:5005")
    monkeypatch.setenv("CRMBOT_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)
    engine = build_nlu(Settings(), data=data)
    assert isinstance(engine, RasaNlu) and engine.url == "http://rasa:5005"


async def test_build_nlu_async_does_not_block_the_loop(tmp_path: Path, data: Path) -> None:
    from bot.nlu.service import build_nlu_async

    engine = await build_nlu_async(FakeSettings(data_dir=tmp_path / "var"), data=data)
    assert isinstance(engine, EmbeddedNlu)
