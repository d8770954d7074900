"""The embedded NLU engine: TF-IDF n-grams and a linear classifier; trains in seconds, parses in < 1 ms.

Training uses scikit-learn (TfidfVectorizer char_wb + word + CJK n-grams, LinearSVC). Every intent's
classifier also learns from synthetic negatives (random bags of the training data's own words), and the
final weights average a few such fits. Confidences are a softmax over the SVM scores with a temperature
fitted on out-of-fold scores. A message becomes `nlu_fallback` when the model is unsure between intents
(confidence below a threshold tuned on the same out-of-fold predictions) or when no intent claims it
(its best in-scope score is lower than that of all but 0.6% of the out-of-fold examples understood
right, and no intent is more likely than not): never tuned on held-out data. The saved model holds
only plain Python and numpy objects (vocabularies, idf, weights), so parsing needs no scikit-learn
object and a model does not depend on the scikit-learn version that trained it.
"""

from __future__ import annotations

import math
import os
import random
import re
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt

from bot.nlu.entities import RULE_ENTITIES, EntityExtractor, contextualise
from bot.nlu.lang import detect_lang
from bot.nlu.types import FALLBACK_INTENT, Entity, ParseContext, ParseResult
from bot.nlu.yaml_data import Example, NluData

MODEL_FORMAT = "crmbot-nlu-embedded"
MODEL_VERSION = 1
MAX_CLASSIFY_CHARS = 1000
RANKING_SIZE = 10
# The out-of-fold macro-F1 curve over thresholds is flat within a few thousandths, and a handful of new
# training examples move its top by as much: the threshold is the lowest within this margin of the best.
TIE_MARGIN = 0.005
# The tuned fallback threshold stays in this range: an intent no class claims with 20% is not understood
# (the out-of-fold F1 curve is flat near zero, so tuning alone would happily pick 0).
MIN_THRESHOLD, MAX_THRESHOLD = 0.2, 0.7
# The novelty gate never overrules an intent the model finds more likely than not.
NOVELTY_MAX_CONFIDENCE = 0.5
# The novelty gate needs this many understood examples (per language) to place its quantile; synthetic
# negatives need this many source examples (a random bag of a tiny vocabulary too often IS a request).
MIN_NOVELTY_EXAMPLES = 200
MIN_NOISE_SOURCES = 200
OUT_OF_SCOPE = "out_of_scope"
# Identifiers are replaced by a placeholder before classification: "WM2023-00917" says nothing about the
# intent that "a serial number" does not, and unseen ids would otherwise look like noise.
MASKED_ENTITIES: dict[str, str] = {
    "serial_number": "zzserial",
    "ticket_id": "zzticket",
    "job_id": "zzjob",
    "phone": "zzphone",
    "email": "zzemail",
    "part": "zzpart",
}
# A few emoji carry a whole answer in chat.
EMOJI_WORDS: dict[str, str] = {
    "👍": " ok ",
    "👌": " ok ",
    "✅": " ok ",
    "🆗": " ok ",
    "✔": " ok ",
    "👎": " no ",
    "❌": " no ",
    "🚫": " no ",
    "👋": " hi ",
    "🙏": " thanks ",
    # Star ratings typed as glyphs ("⭐⭐⭐⭐⭐") are words, not noise.
    "★": " star ",
    "⭐": " star ",
    "☆": " nostar ",
}
_SPACE_RE = re.compile(r"\s+")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd\ufeff\u200b-\u200f\u2028-\u202f\ud800-\udfff]")
_MEANINGFUL_RE = re.compile(
    r"[0-9A-Za-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)
_CJK_TOKEN_RE = re.compile("[\u3400-\u9fff\uf900-\ufaff]")
_EMOJI_RE = re.compile("|".join(map(re.escape, EMOJI_WORDS)))


class ModelError(RuntimeError):
    """A model file that cannot be used (missing, corrupt, another format version)."""


class TrainingError(ValueError):
    """Training data this engine cannot learn from."""


def normalise_text(text: str) -> str:
    """NFKC (full-width → half-width), lower case, no control characters, whitespace collapsed; CJK kept."""
    text = text[: MAX_CLASSIFY_CHARS * 2]
    text = _CONTROL_RE.sub(" ", text)
    text = _EMOJI_RE.sub(lambda match: EMOJI_WORDS[match.group(0)], text)
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE_RE.sub(" ", text).strip()[:MAX_CLASSIFY_CHARS]


def cjk_ngrams(doc: str) -> list[str]:
    """Chinese characters and character bigrams (words are not space-separated in Chinese)."""
    chars = _CJK_TOKEN_RE.findall(doc)
    return chars + [a + b for a, b in pairwise(chars)]


def mask_entities(text: str, entities: Sequence[Entity]) -> str:
    """The text with identifier entities replaced by placeholders (offsets from the original text)."""
    pieces: list[str] = []
    position = 0
    for entity in sorted(entities, key=lambda item: item.start):
        placeholder = MASKED_ENTITIES.get(entity.entity)
        if placeholder is None or entity.start < position:
            continue
        pieces.append(text[position : entity.start])
        pieces.append(f" {placeholder} ")
        position = entity.end
    pieces.append(text[position:])
    return "".join(pieces)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """How to train; the defaults were picked on cross-validation and the held-out sets (see bench/nlu.py)."""

    char_ngrams: tuple[int, int] = (1, 3)
    word_ngrams: tuple[int, int] = (1, 2)
    cjk_ngrams: bool = True
    c: float = 1.0
    class_weight: str | None = "balanced"
    folds: int = 5
    augment: int = 2  # extra copies of each example with the customer name swapped for another one
    # Synthetic negatives per training example: bags of words drawn at random from the training data
    # itself. Every intent's classifier learns that a mix of common in-domain words is not its intent,
    # so it leans on what really marks the intent, and a message no intent claims scores low everywhere
    # (better out-of-scope detection and better accuracy). They never become a class of their own.
    noise: float = 0.5
    # The final model averages this many fits, each with its own synthetic negatives (less variance).
    ensemble: int = 5
    seed: int = 13
    threshold: float | None = None  # None: tuned on out-of-fold predictions
    per_language_threshold: bool = True
    # "No intent claims it": a message whose best in-scope score is below the scores of all but this
    # share of the training examples understood right (out of fold), and whose intent is not more likely
    # than not, is out of scope. 0 turns it off.
    novelty: float = 0.006


@dataclass(slots=True)
class _Features:
    """One TF-IDF block at inference: analyzer, vocabulary, idf, and its first column in the weight matrix."""

    analyzer: Callable[[str], list[str]]
    vocabulary: dict[str, int]
    idf: npt.NDArray[np.float32]
    offset: int


@dataclass(slots=True)
class TrainReport:
    """What training did (shown by `crmbot nlu train` and bench/nlu.py)."""

    examples: int
    intents: int
    features: int
    seconds: float
    temperature: float
    thresholds: dict[str, float]
    novelty: dict[str, float]
    cv_accuracy: float | None
    cv_macro_f1: float | None
    extra: dict[str, Any] = field(default_factory=dict)


def _vectorizer_specs(config: TrainConfig) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = [
        {"name": "char", "analyzer": "char_wb", "ngram_range": tuple(config.char_ngrams)},
        {
            "name": "word",
            "analyzer": "word",
            "ngram_range": tuple(config.word_ngrams),
            "token_pattern": r"(?u)\b\w+\b",
        },
    ]
    if config.cjk_ngrams:
        specs.append({"name": "cjk", "analyzer": "cjk"})
    return specs


def char_wb_ngrams(text: str, low: int, high: int) -> list[str]:
    """Character n-grams inside word boundaries, padded with a space (scikit-learn's "char_wb")."""
    grams: list[str] = []
    for word in text.split():
        padded = f" {word} "
        length = len(padded)
        for n in range(low, high + 1):
            if n >= length:
                grams.append(padded)  # a short word counts once, whole
                break
            grams.extend(padded[i : i + n] for i in range(length - n + 1))
    return grams


def word_ngrams(text: str, low: int, high: int, pattern: re.Pattern[str]) -> list[str]:
    """Word n-grams (scikit-learn's "word" analyzer without stop words)."""
    tokens = pattern.findall(text)
    grams = list(tokens) if low == 1 else []
    for n in range(max(low, 2), min(high, len(tokens)) + 1):
        grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


def build_analyzer(spec: dict[str, Any]) -> Callable[[str], list[str]]:
    """The text → features function of one block; the same function trains and parses, so no
    scikit-learn object is needed (or imported) to parse."""
    kind = spec["analyzer"]
    if kind == "cjk":
        return cjk_ngrams
    low, high = (int(value) for value in spec["ngram_range"])
    if kind == "char_wb":
        return partial(char_wb_ngrams, low=low, high=high)
    if kind == "word":
        return partial(word_ngrams, low=low, high=high, pattern=re.compile(spec["token_pattern"]))
    raise ModelError(f"unknown feature analyzer {kind!r}")


def _pretokenized(tokens: list[str]) -> list[str]:
    """Training documents arrive already split into features (once, not once per fold)."""
    return tokens


def _make_vectorizer() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    # dtype float32 halves memory; normalise_text has lower-cased already.
    return TfidfVectorizer(analyzer=_pretokenized, sublinear_tf=True, lowercase=False, dtype=np.float32)


def _softmax(scores: npt.NDArray[np.float64], temperature: float) -> npt.NDArray[np.float64]:
    z = scores / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    result: npt.NDArray[np.float64] = e / e.sum(axis=-1, keepdims=True)
    return result


def _fit_temperature(scores: npt.NDArray[np.float64], gold: npt.NDArray[np.int64]) -> float:
    """The softmax temperature with the lowest negative log-likelihood on out-of-fold scores."""
    best_t, best_nll = 1.0, math.inf
    rows = np.arange(len(gold))
    for t in np.exp(np.linspace(math.log(0.02), math.log(5.0), 80)):
        p = _softmax(scores, float(t))
        nll = float(-np.log(np.clip(p[rows, gold], 1e-12, None)).mean())
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def _claims(scores: npt.NDArray[np.float64], classes: Sequence[str]) -> npt.NDArray[np.float64]:
    """Per row, the best score of an in-scope intent (any intent but `out_of_scope`)."""
    keep = [index for index, name in enumerate(classes) if name != OUT_OF_SCOPE]
    result: npt.NDArray[np.float64] = scores[..., keep].max(axis=-1)
    return result


def _macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    hits: Counter[str] = Counter()
    false_positives: Counter[str] = Counter()
    misses: Counter[str] = Counter()
    for g, p in zip(gold, predicted, strict=True):
        if g == p:
            hits[g] += 1
        else:
            false_positives[p] += 1
            misses[g] += 1
    labels = set(gold) | set(predicted)
    total = sum(
        2 * hits[label] / (2 * hits[label] + false_positives[label] + misses[label])
        for label in labels
        if hits[label]
    )
    return total / len(labels) if labels else 0.0


def _tune_threshold(
    probabilities: npt.NDArray[np.float64],
    classes: Sequence[str],
    gold: Sequence[str],
    fallback_label: str,
    rejected: Sequence[bool] | None = None,
) -> tuple[float, float, float]:
    """(threshold, accuracy, macro-F1) maximising macro-F1 when unsure answers count as `fallback_label`
    (and so do the `rejected` rows, whatever their confidence: the novelty gate's)."""
    top = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    predicted = [classes[index] for index in top]
    gated = list(rejected) if rejected is not None else [False] * len(predicted)
    scored: list[tuple[float, float, float]] = []
    for threshold in np.round(np.arange(MIN_THRESHOLD, MAX_THRESHOLD + 0.001, 0.02), 2):
        labels = [
            fallback_label if c < threshold or gate else p
            for c, p, gate in zip(confidence, predicted, gated, strict=True)
        ]
        accuracy = sum(1 for g, p in zip(gold, labels, strict=True) if g == p) / max(len(gold), 1)
        scored.append((float(threshold), accuracy, _macro_f1(gold, labels)))
    # The F1 curve is flat and noisy near its top: take the lowest threshold within TIE_MARGIN of the
    # best, so fewer in-scope messages get "I did not get that" for a gain that is only noise.
    best_f1 = max(f1 for _t, _a, f1 in scored)
    return next(item for item in scored if item[2] >= best_f1 - TIE_MARGIN)


def _augment(examples: Sequence[Example], copies: int, seed: int) -> tuple[list[Example], list[int]]:
    """Each example with a customer name, `copies` more times with other customers' names (same language);
    and for every resulting example the index of the example it came from."""
    origins = list(range(len(examples)))
    if copies <= 0:
        return list(examples), origins
    rng = random.Random(seed)
    pools: dict[tuple[str, str], list[str]] = {}
    for example in examples:
        for entity in example.entities:
            if entity.entity == "customer":
                pools.setdefault((detect_lang(example.text), entity.entity), []).append(entity.text)
    pools = {key: sorted(set(names)) for key, names in pools.items()}
    augmented = list(examples)
    for origin, example in enumerate(examples):
        names = [entity for entity in example.entities if entity.entity == "customer"]
        if not names:
            continue
        pool = pools.get((detect_lang(example.text), "customer"), [])
        if len(pool) < 2:
            continue
        for _ in range(copies):
            text = example.text
            for entity in sorted(names, key=lambda item: -item.start):
                text = text[: entity.start] + rng.choice(pool) + text[entity.end :]
            augmented.append(
                Example(text=text, intent=example.intent, source=example.source, line=example.line)
            )
            origins.append(origin)
    return augmented, origins


NOISE_LABEL = "\x00noise"  # the synthetic negatives' label while training; never a class of the model
_CJK_RUN_RE = re.compile("[\u3400-\u9fff\uf900-\ufaff]+")


def _units(text: str) -> list[str]:
    """The pieces a synthetic negative is drawn from: the words of a (normalised) text; a Chinese run
    becomes its character bigrams (words are not space-separated in Chinese)."""
    units: list[str] = []
    for word in text.split():
        if not _CJK_RUN_RE.search(word):
            units.append(word)
            continue
        for piece in re.split("([\u3400-\u9fff\uf900-\ufaff]+)", word):
            if not piece:
                continue
            if _CJK_RUN_RE.fullmatch(piece) and len(piece) > 1:
                units.extend(a + b for a, b in pairwise(piece))
            else:
                units.append(piece)
    return units


def _noise(
    units: Sequence[list[str]], langs: Sequence[str], exclude: set[str], count: int, seed: int
) -> list[str]:
    """`count` synthetic negatives: each as long (in units) as a random text, made of units (see `_units`)
    of random texts of the same language, so common words come often and rare ones seldom; never one of
    `exclude`."""
    rng = random.Random(seed)
    by_lang: dict[str, list[int]] = {}
    for index, pieces in enumerate(units):
        if pieces:
            by_lang.setdefault(langs[index], []).append(index)
    sources = [index for rows in by_lang.values() for index in rows]
    noise: list[str] = []
    attempts = 0
    while sources and len(noise) < count and attempts < count * 3:
        attempts += 1
        lang_rows = by_lang[langs[rng.choice(sources)]]
        length = max(2, len(units[rng.choice(lang_rows)]))
        picked = [rng.choice(units[rng.choice(lang_rows)]) for _ in range(length)]
        text = "".join(
            unit if index and _CJK_RUN_RE.match(unit) and _CJK_RUN_RE.match(picked[index - 1]) else f" {unit}"
            for index, unit in enumerate(picked)
        ).strip()
        if text not in exclude:
            noise.append(text)
    return noise


def _lexicon_from(data: NluData) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """Entity synonyms, lookups and regexes of the data set, keyed by entity (Rasa's RegexEntityExtractor
    and EntitySynonymMapper, in one). Rule-resolved entities keep their rules."""
    value_entity: dict[str, str] = {}
    lexicon: dict[str, dict[str, str]] = {}
    entity_names = set(data.entity_names)
    for example in data.examples:
        for entity in example.entities:
            value_entity.setdefault(entity.value, entity.entity)
            if entity.entity not in RULE_ENTITIES:
                lexicon.setdefault(entity.entity, {})[entity.text] = entity.value
    for text, value in data.synonyms.items():
        entity_name = value_entity.get(value)
        if entity_name is not None and entity_name not in RULE_ENTITIES:
            lexicon.setdefault(entity_name, {})[text] = value
    for name, items in data.lookups.items():
        if name in entity_names and name not in RULE_ENTITIES:
            for item in items:
                lexicon.setdefault(name, {}).setdefault(item, data.synonyms.get(item.lower(), item))
    regexes = {name: list(patterns) for name, patterns in data.regexes.items() if name in entity_names}
    return lexicon, regexes


class EmbeddedNlu:
    """Train, save, load and parse. `parse` is async for the NluEngine protocol; `parse_sync` is the same."""

    def __init__(self, state: dict[str, Any]) -> None:
        if state.get("format") != MODEL_FORMAT:
            raise ModelError("this is not a crmbot NLU model")
        if state.get("version") != MODEL_VERSION:
            raise ModelError(
                f"the NLU model has format version {state.get('version')!r} but this crmbot reads version "
                f"{MODEL_VERSION}; train a new one with `crmbot nlu train`"
            )
        self._state = state
        self.classes: tuple[str, ...] = tuple(state["classes"])
        self.temperature: float = float(state["temperature"])
        self.thresholds: dict[str, float] = dict(state["thresholds"])
        self.novelty: dict[str, float] = dict(state.get("novelty") or {})
        self.data_hash: str = state["data_hash"]
        self._weights: npt.NDArray[np.float32] = state["weights"]
        self._bias: npt.NDArray[np.float32] = state["bias"]
        self._blocks: list[_Features] = []
        for spec, vocabulary, idf, offset in zip(
            state["specs"], state["vocabularies"], state["idfs"], state["offsets"], strict=True
        ):
            analyzer = build_analyzer(spec)
            self._blocks.append(_Features(analyzer, vocabulary, idf, int(offset)))
        self.extractor = EntityExtractor(state.get("lexicon") or {}, state.get("regexes") or {})
        self.fallback_label = OUT_OF_SCOPE if OUT_OF_SCOPE in self.classes else FALLBACK_INTENT
        self._in_scope = np.asarray([i for i, name in enumerate(self.classes) if name != OUT_OF_SCOPE])

    # --- training ---------------------------------------------------------------------------------

    @classmethod
    def train(
        cls, data: NluData | Sequence[Example], config: TrainConfig | None = None
    ) -> tuple[EmbeddedNlu, TrainReport]:
        """Fit on the examples; returns the engine and what training measured."""
        from scipy.sparse import hstack
        from sklearn.model_selection import KFold, StratifiedKFold
        from sklearn.svm import LinearSVC

        config = config or TrainConfig()
        started = time.perf_counter()
        nlu_data = data if isinstance(data, NluData) else NluData(examples=list(data))
        examples = [example for example in nlu_data.examples if example.text.strip()]
        counts = Counter(example.intent for example in examples)
        if len(counts) < 2:
            raise TrainingError(f"training needs examples of at least two intents, found {len(counts)}")
        extractor = EntityExtractor()
        context = ParseContext(now=datetime(2026, 1, 1, tzinfo=UTC))
        augmented, origins = _augment(examples, config.augment, config.seed)

        def prepare(text: str) -> str:
            return normalise_text(mask_entities(text, extractor.extract(text[:MAX_CLASSIFY_CHARS], context)))

        texts = [prepare(example.text) for example in augmented]
        labels = np.asarray([example.intent for example in augmented])
        classes = sorted(counts)
        class_index = {name: index for index, name in enumerate(classes)}
        specs = _vectorizer_specs(config)

        analyzers = [build_analyzer(spec) for spec in specs]
        features = [[analyzer(text) for text in texts] for analyzer in analyzers]
        langs = [detect_lang(example.text) for example in examples]
        fallback_label = OUT_OF_SCOPE if OUT_OF_SCOPE in class_index else FALLBACK_INTENT
        seen_texts = set(texts)
        units = [_units(text) for text in texts[: len(examples)]]
        use_noise = sum(example.intent != OUT_OF_SCOPE for example in examples) >= MIN_NOISE_SOURCES

        def noise_for(rows: Sequence[int], seed: int) -> list[list[list[str]]]:
            """Features (per block) of synthetic negatives drawn from these original examples."""
            sources = [i for i in rows if i < len(examples) and examples[i].intent != OUT_OF_SCOPE]
            count = round(config.noise * len(sources)) if use_noise else 0
            if count <= 0:
                return [[] for _ in analyzers]
            noise = _noise([units[i] for i in sources], [langs[i] for i in sources], seen_texts, count, seed)
            return [[analyzer(text) for text in noise] for analyzer in analyzers]

        def fit(
            rows: Sequence[int],
            train_labels: npt.NDArray[Any],
            noise_rows: Sequence[int],
            seeds: Sequence[int],
        ) -> tuple[list[Any], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
            """Vectorizers fitted on `rows`, and the (classes, features) weights and (classes,) bias of one
            LinearSVC per seed (each with its own synthetic negatives), averaged, in `classes` order."""
            from scipy.sparse import vstack

            vectorizers: list[Any] = []
            blocks = []
            for block in features:
                vectorizer = _make_vectorizer()
                try:
                    blocks.append(vectorizer.fit_transform([block[i] for i in rows]))
                except ValueError:  # "empty vocabulary": e.g. no Chinese at all for the CJK block
                    vectorizers.append(None)
                    continue
                vectorizers.append(vectorizer)
            if not blocks:
                raise TrainingError("the training examples contain no usable text")
            matrix = hstack(blocks).tocsr()
            coef = np.zeros((len(classes), matrix.shape[1]))
            bias = np.full(len(classes), -10.0)  # a class missing from these rows never wins
            present = np.zeros(len(classes), dtype=bool)
            for seed in seeds:
                noise = noise_for(noise_rows, seed)
                fit_matrix, fit_labels = matrix, train_labels
                if noise[0]:  # the vocabulary and idf are the real examples' alone
                    noise_matrix = hstack(
                        [
                            vec.transform(block)
                            for vec, block in zip(vectorizers, noise, strict=True)
                            if vec is not None
                        ]
                    )
                    fit_matrix = vstack([matrix, noise_matrix]).tocsr()
                    fit_labels = np.concatenate([train_labels, np.full(len(noise[0]), NOISE_LABEL)])
                # (Threads would train these side by side, liblinear releasing the GIL, but were slower
                # on a busy two-core machine.)
                model = LinearSVC(C=config.c, class_weight=config.class_weight, random_state=config.seed)
                model.fit(fit_matrix, fit_labels)
                model_coef = np.asarray(model.coef_, dtype=np.float64)
                model_bias = np.asarray(model.intercept_, dtype=np.float64)
                if model_coef.shape[0] == 1:  # two classes: one row, the score of classes_[1]
                    model_coef = np.vstack([-model_coef, model_coef])
                    model_bias = np.concatenate([-model_bias, model_bias])
                for row, name in enumerate(model.classes_):
                    if name in class_index:  # not the synthetic negatives' row
                        index = class_index[name]
                        if not present[index]:
                            present[index], bias[index] = True, 0.0
                        coef[index] += model_coef[row] / len(seeds)
                        bias[index] += model_bias[row] / len(seeds)
            return vectorizers, coef, bias

        def scores(
            vectorizers: list[Any],
            coef: npt.NDArray[np.float64],
            bias: npt.NDArray[np.float64],
            rows: Sequence[int],
        ) -> npt.NDArray[np.float64]:
            matrix = hstack(
                [
                    vec.transform([block[i] for i in rows])
                    for vec, block in zip(vectorizers, features, strict=True)
                    if vec is not None
                ]
            ).tocsr()
            result: npt.NDArray[np.float64] = np.asarray(matrix @ coef.T) + bias
            return result

        # Out-of-fold scores of the ORIGINAL examples (augmented copies stay in the training folds only).
        original = len(examples)
        temperature, thresholds = 0.3, {"*": config.threshold if config.threshold is not None else 0.3}
        cv_accuracy: float | None = None
        cv_f1: float | None = None
        cv_errors: list[tuple[str, str, str, float]] = []
        novelty: dict[str, float] = {}
        # Without synthetic negatives every fit of the final model would be the same one.
        final_seeds = [config.seed + k for k in range(max(1, config.ensemble) if use_noise else 1)]
        smallest = min(counts.values())
        folds = min(config.folds, smallest) if smallest >= 2 else min(config.folds, original)
        if folds >= 2:
            gold = labels[:original]
            splitter: Any = (
                StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
                if smallest >= folds
                else KFold(n_splits=folds, shuffle=True, random_state=config.seed)
            )
            oof = np.zeros((original, len(classes)))
            for fold, (train_index, test_index) in enumerate(splitter.split(np.zeros(original), gold)):
                held_out = set(test_index.tolist())
                extra = [i for i in range(original, len(augmented)) if origins[i] not in held_out]
                fold_index = list(train_index) + extra
                fold_labels = labels[fold_index]
                if len(set(fold_labels)) < 2:
                    continue
                fold_seeds = [config.seed + 1000 * (fold + 1)]
                vectorizers, coef, bias = fit(fold_index, fold_labels, train_index.tolist(), fold_seeds)
                oof[test_index] = scores(vectorizers, coef, bias, list(test_index))
            gold_index = np.asarray([class_index[name] for name in gold], dtype=np.int64)
            temperature = _fit_temperature(oof, gold_index)
            probabilities = _softmax(oof, temperature)
            gold_list = [str(name) for name in gold]
            # The novelty gate first (it reads scores, not probabilities); the threshold then only has to
            # catch the messages the model is unsure about among those some intent claims.
            claims = _claims(oof, classes)
            if config.novelty > 0:
                understood = (oof.argmax(axis=1) == gold_index) & (gold != OUT_OF_SCOPE)
                for lang in ["*", *sorted(set(langs))]:
                    rows = [i for i, value in enumerate(langs) if understood[i] and lang in ("*", value)]
                    if len(rows) >= MIN_NOVELTY_EXAMPLES:
                        novelty[lang] = float(np.quantile(claims[rows], config.novelty))
            top_is_oos = np.asarray([classes[index] == OUT_OF_SCOPE for index in oof.argmax(axis=1)])
            unsure = probabilities.max(axis=1) < NOVELTY_MAX_CONFIDENCE
            novel = [
                not top_is_oos[row]
                and unsure[row]
                and claims[row] < novelty.get(lang, novelty.get("*", -math.inf))
                for row, lang in enumerate(langs)
            ]
            threshold, _accuracy, _f1 = _tune_threshold(
                probabilities, classes, gold_list, fallback_label, novel
            )
            thresholds = {"*": config.threshold if config.threshold is not None else threshold}
            if config.threshold is None and config.per_language_threshold:
                for lang in sorted(set(langs)):
                    rows = [i for i, value in enumerate(langs) if value == lang]
                    if len(rows) >= 200:
                        thresholds[lang], _acc, _f1 = _tune_threshold(
                            probabilities[rows],
                            classes,
                            [gold_list[i] for i in rows],
                            fallback_label,
                            [novel[i] for i in rows],
                        )
            # What the tuned engine gets wrong out of fold: the training data's weak spots.
            predicted: list[str] = []
            for row, lang in enumerate(langs):
                best = int(probabilities[row].argmax())
                low = probabilities[row, best] < thresholds.get(lang, thresholds["*"]) or novel[row]
                predicted.append(fallback_label if low else classes[best])
            cv_accuracy = sum(g == p for g, p in zip(gold_list, predicted, strict=True)) / original
            cv_f1 = _macro_f1(gold_list, predicted)
            cv_errors = [
                (examples[row].text, gold_list[row], predicted[row], float(probabilities[row].max()))
                for row in range(original)
                if gold_list[row] != predicted[row]
            ]
        fitted, coef, bias = fit(range(len(texts)), labels, range(original), final_seeds)
        used_specs = [spec for spec, vec in zip(specs, fitted, strict=True) if vec is not None]
        vectorizers = [vec for vec in fitted if vec is not None]
        weights = np.ascontiguousarray(coef.T, dtype=np.float32)  # (features, classes): one row per n-gram
        offsets = np.cumsum([0] + [len(vec.vocabulary_) for vec in vectorizers])[:-1]
        lexicon, regexes = _lexicon_from(nlu_data)
        state: dict[str, Any] = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data_hash": nlu_data.data_hash(),
            "config": asdict(config),
            "classes": classes,
            "specs": used_specs,
            "vocabularies": [{str(k): int(v) for k, v in vec.vocabulary_.items()} for vec in vectorizers],
            "idfs": [np.asarray(vec.idf_, dtype=np.float32) for vec in vectorizers],
            "offsets": [int(offset) for offset in offsets],
            "weights": weights,
            "bias": np.asarray(bias, dtype=np.float32),
            "temperature": temperature,
            "thresholds": thresholds,
            "novelty": novelty,
            "lexicon": lexicon,
            "regexes": regexes,
            "examples": len(examples),
        }
        engine = cls(state)
        report = TrainReport(
            examples=len(examples),
            intents=len(classes),
            features=int(weights.shape[0]),
            seconds=time.perf_counter() - started,
            temperature=temperature,
            thresholds=thresholds,
            novelty=novelty,
            cv_accuracy=cv_accuracy,
            cv_macro_f1=cv_f1,
            extra={
                "augmented_examples": len(augmented) - len(examples),
                "folds": folds,
                "cv_errors": cv_errors,
            },
        )
        return engine, report

    # --- persistence ------------------------------------------------------------------------------

    def save(self, path: Path | str) -> Path:
        """Write the model atomically (a temporary file renamed into place)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        os.close(handle)
        try:
            joblib.dump(self._state, temporary, compress=3)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def load(cls, path: Path | str) -> EmbeddedNlu:
        """Read a model written by `save`; ModelError when it is missing, corrupt or of another version."""
        source = Path(path)
        if not source.is_file():
            raise ModelError(f"no NLU model at {source}")
        try:
            state = joblib.load(source)
        except Exception as exc:  # unpickling can fail in many ways; all mean "not a usable model"
            raise ModelError(f"{source} is not a readable NLU model ({type(exc).__name__})") from None
        if not isinstance(state, dict):
            raise ModelError(f"{source} is not a crmbot NLU model")
        try:
            return cls(state)
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source} is not a complete crmbot NLU model ({exc})") from None

    # --- inference --------------------------------------------------------------------------------

    @property
    def info(self) -> dict[str, Any]:
        """Format, version, training time, data hash, intents, thresholds."""
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "trained_at": self._state.get("trained_at"),
            "data_hash": self.data_hash,
            "intents": list(self.classes),
            "features": int(self._weights.shape[0]),
            "temperature": self.temperature,
            "thresholds": dict(self.thresholds),
            "examples": self._state.get("examples"),
        }

    @property
    def config(self) -> dict[str, Any]:
        """The TrainConfig the model was trained with, as a dict."""
        config: dict[str, Any] = dict(self._state.get("config") or {})
        return config

    def threshold_for(self, lang: str) -> float:
        """The fallback threshold for a language (or the overall one)."""
        return self.thresholds.get(lang, self.thresholds.get("*", 0.0))

    def scores(self, text: str) -> npt.NDArray[np.float64]:
        """Linear scores per class for already normalised text."""
        total = self._bias.astype(np.float64)
        for block in self._blocks:
            counts = Counter(block.analyzer(text))
            columns: list[int] = []
            values: list[float] = []
            for token, count in counts.items():
                column = block.vocabulary.get(token)
                if column is not None:
                    columns.append(column + block.offset)
                    values.append((1.0 + math.log(count)) * float(block.idf[column]))
            if not columns:
                continue
            vector = np.asarray(values, dtype=np.float32)
            vector /= np.float32(np.linalg.norm(vector))
            total = total + vector @ self._weights[columns]
        return total

    def rank(self, text: str) -> list[tuple[str, float]]:
        """(intent, probability) for every class, best first, for already normalised text."""
        return self._ranked(self.scores(text))

    def _ranked(self, scores: npt.NDArray[np.float64]) -> list[tuple[str, float]]:
        probabilities = _softmax(scores[None, :], self.temperature)[0]
        order = np.argsort(-probabilities)
        return [(self.classes[index], float(probabilities[index])) for index in order]

    def novelty_for(self, lang: str) -> float:
        """The lowest best in-scope score a message of this language may have to be understood."""
        return self.novelty.get(lang, self.novelty.get("*", -math.inf))

    def parse_sync(self, text: str, context: ParseContext) -> ParseResult:
        """Intent, ranking, entities and language of one message; never raises on odd input."""
        if not isinstance(text, str):
            text = str(text)
        head = text[:MAX_CLASSIFY_CHARS]
        lang = detect_lang(head, default="zh" if context.lang == "zh" else "en")
        try:
            entities = self.extractor.extract(head, context)
        except Exception:  # a rule bug must not take the conversation down; the intent still counts
            import logging

            logging.getLogger("crmbot.nlu").exception("Entity extraction failed")
            entities = ()
        normal = normalise_text(mask_entities(head, entities))
        if not _MEANINGFUL_RE.search(normal):
            ranking: tuple[tuple[str, float], ...] = ((FALLBACK_INTENT, 1.0),)
            return ParseResult(
                text=text,
                intent=FALLBACK_INTENT,
                confidence=1.0,
                entities=entities,
                ranking=ranking,
                lang=lang,
            )
        scores = self.scores(normal)
        ranked = self._ranked(scores)
        intent, confidence = ranked[0]
        threshold = self.threshold_for(lang)
        top = [(name, round(score, 6)) for name, score in ranked[:RANKING_SIZE]]
        # Unsure between intents, or no intent claims the message (unless out_of_scope itself does, or
        # the model still finds its intent more likely than not).
        novel = (
            intent != OUT_OF_SCOPE
            and confidence < NOVELTY_MAX_CONFIDENCE
            and float(scores[self._in_scope].max()) < self.novelty_for(lang)
        )
        if confidence < threshold or novel:
            # Like Rasa's FallbackClassifier: nlu_fallback on top with the threshold as its confidence.
            top = [(FALLBACK_INTENT, round(threshold, 6)), *top[: RANKING_SIZE - 1]]
            return ParseResult(
                text=text,
                intent=FALLBACK_INTENT,
                confidence=round(threshold, 6),
                entities=entities,
                ranking=tuple(top),
                lang=lang,
            )
        return ParseResult(
            text=text,
            intent=intent,
            confidence=round(confidence, 6),
            entities=contextualise(entities, intent),
            ranking=tuple(top),
            lang=lang,
        )

    async def parse(self, text: str, context: ParseContext) -> ParseResult:
        """The NluEngine protocol (parsing is sub-millisecond: no thread hop)."""
        return self.parse_sync(text, context)
