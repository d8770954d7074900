"""Rasa as an optional NLU server: the HTTP client (with fallback) and the project exporter."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Collection, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from bot.nlu.entities import contextualise
from bot.nlu.lang import detect_lang
from bot.nlu.types import FALLBACK_INTENT, Entity, NluEngine, ParseContext, ParseResult
from bot.nlu.yaml_data import Example, NluData, annotate, load_nlu_data

logger = logging.getLogger("crmbot.nlu")

MAX_TEXT_CHARS = 2000
RANKING_SIZE = 10


def parse_result_to_rasa(result: ParseResult) -> dict[str, Any]:
    """A ParseResult in Rasa's `/model/parse` response shape."""
    return {
        "text": result.text,
        "intent": {"name": result.intent, "confidence": result.confidence},
        "entities": [
            {
                "entity": entity.entity,
                "value": entity.value,
                "start": entity.start,
                "end": entity.end,
                "text": entity.text,
                "confidence_entity": entity.confidence,
                "extractor": entity.extractor,
            }
            for entity in result.entities
        ],
        "intent_ranking": [{"name": name, "confidence": confidence} for name, confidence in result.ranking],
        "lang": result.lang,
    }


class RasaResponseError(ValueError):
    """Rasa answered with something that is not a parse result."""


def rasa_to_parse_result(payload: Any, text: str, lang: str, *, offset: int = 0) -> ParseResult:
    """Rasa's `/model/parse` JSON as a ParseResult; RasaResponseError when it is not one. `offset` is
    where the text Rasa parsed starts in `text`: entity offsets are Rasa's plus `offset`."""
    if not isinstance(payload, dict):
        raise RasaResponseError("the response is not a JSON object")
    intent = payload.get("intent")
    if not isinstance(intent, dict):
        raise RasaResponseError("the response has no intent")
    name = intent.get("name") or FALLBACK_INTENT
    confidence = _probability(intent.get("confidence"))
    if not isinstance(name, str):
        raise RasaResponseError("the intent name is not a string")
    ranking: list[tuple[str, float]] = []
    for item in payload.get("intent_ranking") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            ranking.append((item["name"], _probability(item.get("confidence"))))
    if not ranking:
        ranking = [(name, confidence)]
    entities: list[Entity] = []
    for item in payload.get("entities") or []:
        entity = _entity(item, text, offset)
        if entity is not None:
            entities.append(entity)
    return ParseResult(
        text=text,
        intent=name,
        confidence=confidence,
        entities=tuple(entities),
        ranking=tuple(ranking[:RANKING_SIZE]),
        lang=lang,
    )


def _probability(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return min(max(number, 0.0), 1.0) if math.isfinite(number) else 0.0


def _entity(item: Any, text: str, offset: int = 0) -> Entity | None:
    if not isinstance(item, dict) or not isinstance(item.get("entity"), str):
        return None
    try:
        start, end = int(item["start"]) + offset, int(item["end"]) + offset
    except (KeyError, TypeError, ValueError):
        return None
    if not 0 <= start <= end <= len(text):
        return None
    value = item.get("value", text[start:end])
    return Entity(
        entity=item["entity"],
        value=value if isinstance(value, str) else json.dumps(value, ensure_ascii=False),
        start=start,
        end=end,
        text=text[start:end],
        confidence=_probability(item.get("confidence_entity", 1.0)),
        extractor=str(item.get("extractor") or "rasa"),
    )


def _merge_entities(ours: Iterable[Entity], theirs: Iterable[Entity]) -> tuple[Entity, ...]:
    """Our rule entities (normalised values) win; Rasa's fill in what the rules do not cover (e.g. names)."""
    kept = list(ours)
    for entity in theirs:
        if not any(entity.start < other.end and other.start < entity.end for other in kept):
            kept.append(entity)
    kept.sort(key=lambda item: (item.start, item.end))
    return tuple(kept)


class RasaNlu:
    """Calls a Rasa server's `POST {url}/model/parse`; on timeout, connection error, 5xx or a malformed
    answer it logs and uses `fallback`, and leaves Rasa alone for `retry_after` seconds so one dead
    server does not cost every message a timeout."""

    def __init__(
        self,
        url: str,
        *,
        fallback: NluEngine,
        timeout: float = 2.0,
        token: str | None = None,
        retry_after: float = 30.0,
        merge_entities: bool = True,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.fallback = fallback
        self.timeout = timeout
        self.token = token
        self.retry_after = retry_after
        self.merge_entities = merge_entities
        self._client = client
        self._owns_client = client is None
        self._down_until = 0.0

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    async def parse(self, text: str, context: ParseContext) -> ParseResult:
        """Rasa's answer, or the fallback engine's when Rasa cannot give one."""
        if time.monotonic() < self._down_until:
            return await self.fallback.parse(text, context)
        # Rasa strips the text (its UserMessage does) and counts entity offsets in what is left, so we
        # send it stripped and shift the offsets back by the leading whitespace.
        clipped = text[:MAX_TEXT_CHARS]
        lead = len(clipped) - len(clipped.lstrip())
        try:
            payload = await self._request(clipped.strip())
            lang = detect_lang(text, default="zh" if context.lang == "zh" else "en")
            result = rasa_to_parse_result(payload, text, lang, offset=lead)
        except (httpx.HTTPError, RasaResponseError, ValueError) as exc:
            self._down_until = time.monotonic() + self.retry_after
            logger.warning(
                "Rasa at %s failed (%s: %s); using the embedded NLU for %.0f s",
                self.url,
                type(exc).__name__,
                exc,
                self.retry_after,
            )
            return await self.fallback.parse(text, context)
        if not self.merge_entities:
            return result
        ours = await self._rule_entities(text, context)
        return ParseResult(
            text=result.text,
            intent=result.intent,
            confidence=result.confidence,
            entities=contextualise(_merge_entities(ours, result.entities), result.intent),
            ranking=result.ranking,
            lang=result.lang,
        )

    async def _request(self, text: str) -> Any:
        params = {"token": self.token} if self.token else None
        response = await self._http().post(
            f"{self.url}/model/parse", json={"text": text}, params=params, timeout=self.timeout
        )
        if response.status_code >= 400:
            raise RasaResponseError(f"HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise RasaResponseError("the response is not JSON") from None

    async def _rule_entities(self, text: str, context: ParseContext) -> tuple[Entity, ...]:
        extractor = getattr(self.fallback, "extractor", None)
        if extractor is None:
            from bot.nlu.entities import default_extractor

            extractor = default_extractor()
        try:
            entities: tuple[Entity, ...] = extractor.extract(text[:MAX_TEXT_CHARS], context)
        except Exception:  # entity rules must not break a parse Rasa already answered
            logger.exception("Entity extraction failed")
            return ()
        return entities

    async def aclose(self) -> None:
        """Close the HTTP client (if this object created it)."""
        if self._client is not None and self._owns_client:
            await self._client.aclose()
        self._client = None


# --- export ----------------------------------------------------------------------------------------

CONFIG_ZH = """\
# Rasa 3.6 NLU pipeline exported by crmbot (`crmbot nlu export-rasa`).
# Train with `rasa train nlu`, serve with `rasa run --enable-api`, then set
# CRMBOT_NLU_BACKEND=rasa and CRMBOT_RASA_URL=http://host:5005 for crmbot.
#
# Tokenizer: this data set contains Chinese, which is written without spaces, so WhitespaceTokenizer
# would see each Chinese sentence as one token. JiebaTokenizer segments Chinese into words and still
# splits English on spaces and punctuation, so it serves the mixed English + Chinese data; it needs
# `pip install jieba` in the Rasa environment and `language: zh`. The char_wb n-gram featurizer
# (1-4 characters) is language-agnostic and tolerates typos, like crmbot's embedded engine.
# Entities such as dates, amounts and ids are resolved by crmbot's own rules and merged with Rasa's.
recipe: default.v1
language: zh
assistant_id: crmbot-nlu
pipeline:
  - name: JiebaTokenizer
  - name: RegexFeaturizer
  - name: LexicalSyntacticFeaturizer
  - name: CountVectorsFeaturizer
  - name: CountVectorsFeaturizer
    analyzer: char_wb
    min_ngram: 1
    max_ngram: 4
  - name: DIETClassifier
    epochs: {epochs}
    constrain_similarities: true
  - name: EntitySynonymMapper
  - name: FallbackClassifier
    threshold: {threshold}
    ambiguity_threshold: 0.1
"""

CONFIG_EN = """\
# Rasa 3.6 NLU pipeline exported by crmbot (`crmbot nlu export-rasa`).
# Train with `rasa train nlu`, serve with `rasa run --enable-api`, then set
# CRMBOT_NLU_BACKEND=rasa and CRMBOT_RASA_URL=http://host:5005 for crmbot.
#
# Tokenizer: this data set has no Chinese, so words are separated by spaces and WhitespaceTokenizer
# is enough; the char_wb n-gram featurizer (1-4 characters) adds robustness to typos.
# (For Chinese data crmbot writes a JiebaTokenizer pipeline instead.)
recipe: default.v1
language: {language}
assistant_id: crmbot-nlu
pipeline:
  - name: WhitespaceTokenizer
  - name: RegexFeaturizer
  - name: LexicalSyntacticFeaturizer
  - name: CountVectorsFeaturizer
  - name: CountVectorsFeaturizer
    analyzer: char_wb
    min_ngram: 1
    max_ngram: 4
  - name: DIETClassifier
    epochs: {epochs}
    constrain_similarities: true
  - name: EntitySynonymMapper
  - name: FallbackClassifier
    threshold: {threshold}
    ambiguity_threshold: 0.1
"""


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML; `yes`/`no` stay strings)."""
    return json.dumps(value, ensure_ascii=False)


def _example_block(lines: Iterable[str]) -> list[str]:
    block = ["  examples: |"]
    for line in lines:
        block.append("    - " + " ".join(line.split()))
    return block


def nlu_yaml(data: NluData) -> str:
    """The data set as one Rasa 3.x NLU YAML document."""
    out = ['version: "3.1"', "nlu:"]
    by_intent: dict[str, list[str]] = {}
    for example in data.examples:
        by_intent.setdefault(example.intent, []).append(annotate(example))
    for intent, lines in by_intent.items():
        out.append(f"- intent: {_q(intent)}")
        out.extend(_example_block(dict.fromkeys(lines)))
    synonyms: dict[str, list[str]] = {}
    for text, value in data.synonyms.items():
        if text != value.lower():
            synonyms.setdefault(value, []).append(text)
    for value, texts in synonyms.items():
        out.append(f"- synonym: {_q(value)}")
        out.extend(_example_block(texts))
    for name, patterns in data.regexes.items():
        out.append(f"- regex: {_q(name)}")
        out.extend(_example_block(patterns))
    for name, items in data.lookups.items():
        out.append(f"- lookup: {_q(name)}")
        out.extend(_example_block(items))
    return "\n".join(out) + "\n"


def domain_yaml(data: NluData) -> str:
    """A domain listing the data set's intents and entities."""
    out = ['version: "3.1"', "intents:"]
    out.extend(f"  - {_q(intent)}" for intent in data.intents)
    entities = data.entity_names
    if entities:
        out.append("entities:")
        out.extend(f"  - {_q(entity)}" for entity in entities)
    out.append("session_config:")
    out.append("  session_expiration_time: 60")
    out.append("  carry_over_slots_to_new_session: true")
    return "\n".join(out) + "\n"


def select_examples(
    data: NluData, intents: Collection[str] | None = None, per_intent: int | None = None
) -> NluData:
    """The data set cut down to `intents` (in the data's order) and at most `per_intent` examples of
    each, spread evenly over the intent's examples so every file and language keeps its share.
    ValueError names the intents the data does not have."""
    if intents is not None:
        unknown = sorted(set(intents) - set(data.intents))
        if unknown:
            raise ValueError(
                f"no such intent in the data: {', '.join(unknown)} (it has {', '.join(data.intents)})"
            )
    if per_intent is not None and per_intent < 1:
        raise ValueError("at most 0 examples per intent leaves nothing to train on")
    by_intent: dict[str, list[Example]] = {}
    for example in data.examples:
        if intents is None or example.intent in intents:
            by_intent.setdefault(example.intent, []).append(example)
    kept: set[int] = set()
    for examples in by_intent.values():
        count = len(examples) if per_intent is None else min(per_intent, len(examples))
        kept.update(id(examples[index * len(examples) // count]) for index in range(count))
    return replace(data, examples=[example for example in data.examples if id(example) in kept])


def export_rasa(
    data_paths: Path | str | Iterable[Path | str],
    out_dir: Path | str,
    *,
    threshold: float = 0.3,
    intents: Collection[str] | None = None,
    per_intent: int | None = None,
    epochs: int = 100,
) -> list[Path]:
    """Write a Rasa 3.6 project (config.yml, domain.yml, data/nlu.yml) from our training data; with
    `intents` and/or `per_intent`, of just those intents and at most that many examples of each, and
    `epochs` for DIET (fewer: a small project for tests and trials trains in a minute)."""
    if epochs < 1:
        raise ValueError("DIET needs at least 1 epoch")
    data = select_examples(load_nlu_data(data_paths), intents, per_intent)
    target = Path(out_dir)
    (target / "data").mkdir(parents=True, exist_ok=True)
    zh = sum(1 for example in data.examples if detect_lang(example.text) == "zh")
    config = (CONFIG_ZH if zh else CONFIG_EN).replace("{threshold}", f"{threshold:g}")
    config = config.replace("{language}", "en").replace("{epochs}", str(epochs))
    files = {
        target / "config.yml": config,
        target / "domain.yml": domain_yaml(data),
        target / "data" / "nlu.yml": nlu_yaml(data),
    }
    for path, content in files.items():
        path.write_text(content, encoding="utf-8")
    return list(files)
