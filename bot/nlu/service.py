"""Build the NLU engine from settings: the embedded model (trained when missing or stale), or Rasa with
the embedded engine as its fallback."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from bot.nlu.embedded import EmbeddedNlu, ModelError, TrainConfig, TrainReport
from bot.nlu.entities import warm_up
from bot.nlu.rasa import RasaNlu
from bot.nlu.types import NluEngine
from bot.nlu.yaml_data import load_nlu_data

logger = logging.getLogger("crmbot.nlu")

# The shipped training data (package data: pyproject includes *.yml).
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"
MODEL_FILENAME = "model.joblib"

DataPaths = Path | str | Iterable[Path | str]


class NluSettings(Protocol):
    """What the NLU needs from core.settings.Settings."""

    @property
    def data_dir(self) -> Path: ...

    @property
    def nlu_backend(self) -> str: ...

    @property
    def rasa_url(self) -> str | None: ...


def default_model_path(settings: NluSettings) -> Path:
    """`<data_dir>/nlu/model.joblib`."""
    return Path(settings.data_dir) / "nlu" / MODEL_FILENAME


def train_model(
    data: DataPaths | None = None, out: Path | str | None = None, config: TrainConfig | None = None
) -> tuple[EmbeddedNlu, TrainReport]:
    """Train on `data` (default: the shipped data) and save to `out` when given."""
    engine, report = EmbeddedNlu.train(load_nlu_data(data if data is not None else DEFAULT_DATA_DIR), config)
    if out is not None:
        engine.save(out)
    return engine, report


def ensure_model(model_path: Path | str, data: DataPaths | None = None) -> EmbeddedNlu:
    """The model at `model_path`, retrained and saved first when it is missing, unreadable, of another
    format version, or trained on data other than `data` (compared by content hash)."""
    path = Path(model_path)
    source = data if data is not None else DEFAULT_DATA_DIR
    try:
        nlu_data = load_nlu_data(source)
    except Exception:
        if path.is_file():
            # Without readable training data, a model we already have is better than none.
            logger.exception("NLU training data unreadable; using the existing model %s", path)
            return EmbeddedNlu.load(path)
        raise
    wanted = nlu_data.data_hash()
    try:
        engine = EmbeddedNlu.load(path)
    except ModelError as exc:
        if path.exists():
            logger.warning("Retraining the NLU model: %s", exc)
        else:
            logger.info("No NLU model at %s yet: training one", path)
    else:
        if engine.data_hash == wanted and engine.config == asdict(TrainConfig()):
            return engine
        logger.info("NLU training data or settings changed since %s was trained: retraining", path)
    engine, report = EmbeddedNlu.train(nlu_data)
    engine.save(path)
    logger.info(
        "NLU model trained on %d examples (%d intents) in %.1f s, saved to %s",
        report.examples,
        report.intents,
        report.seconds,
        path,
    )
    return engine


async def build_nlu_async(
    settings: NluSettings, *, data: DataPaths | None = None, model_path: Path | str | None = None
) -> NluEngine:
    """`build_nlu` in a worker thread, for async composition roots (training takes seconds)."""
    import asyncio

    return await asyncio.to_thread(build_nlu, settings, data=data, model_path=model_path)


def build_nlu(
    settings: NluSettings, *, data: DataPaths | None = None, model_path: Path | str | None = None
) -> NluEngine:
    """The engine the bot uses: embedded by default; with CRMBOT_NLU_BACKEND=rasa and CRMBOT_RASA_URL,
    Rasa over HTTP falling back to the embedded engine."""
    embedded = ensure_model(model_path if model_path is not None else default_model_path(settings), data)
    warm_up()
    if settings.nlu_backend == "rasa":
        if not settings.rasa_url:
            raise ValueError("CRMBOT_NLU_BACKEND=rasa needs CRMBOT_RASA_URL (e.g. http://127.0.0.1:5005)")
        return RasaNlu(settings.rasa_url, fallback=embedded)
    return embedded
