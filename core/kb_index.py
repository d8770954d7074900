"""In-memory knowledge-base search: an inverted index for recall, rapidfuzz for reranking."""

from __future__ import annotations

import heapq
import math
import operator
import re
import unicodedata
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import compress, repeat

from rapidfuzz import fuzz
from rapidfuzz.distance import OSA
from rapidfuzz.utils import default_process

__all__ = ["DEFAULT_SYNONYMS", "KbDocument", "KbHit", "KbIndex", "extract_error_codes"]


@dataclass(frozen=True, slots=True)
class KbDocument:
    """A knowledge-base article describing one defect and its solution."""

    id: int
    code: str
    title: str
    symptoms: str
    solution: str
    lang: str
    product_code: str | None = None
    category: str = ""


@dataclass(frozen=True, slots=True)
class KbHit:
    """One search result; score is 0..100, higher is better."""

    id: int
    code: str
    score: float


# Each key and its values form one group of interchangeable phrases; matching is symmetric.
DEFAULT_SYNONYMS: dict[str, tuple[str, ...]] = {
    # English: appliances
    "fridge": ("refrigerator", "refridgerator", "icebox"),
    "ac": ("air conditioner", "air conditioning", "aircon", "air con", "split unit"),
    "washing machine": ("washer", "laundry machine", "washer dryer"),
    "dishwasher": ("dish washer", "dishwashing machine"),
    "water heater": ("boiler", "geyser", "hot water tank", "hot water heater"),
    "dryer": ("tumble dryer", "drier"),
    "remote": ("remote control", "controller"),
    # English: symptoms
    "leak": ("leakage", "drip", "dripping", "puddle", "seep", "seeping", "water on the floor"),
    "drain": ("drainage", "standing water", "water left", "won't empty", "not emptying"),
    "noise": ("noisy", "loud", "rattling", "banging", "grinding", "squeaking", "humming", "buzzing"),
    "cooling": ("cold", "cool", "chill", "chilling", "too warm", "not freezing"),
    "dirty": ("not clean", "residue", "film", "stains"),
    # "hot" is deliberately absent: "water too hot" is the opposite complaint of "not heating".
    "heating": ("heat", "warm up", "lukewarm", "no hot water", "not hot"),
    "start": ("power on", "turn on", "switch on", "no power", "dead", "boot"),
    "error": ("fault", "alarm", "error code", "fault code"),
    "door": ("lid", "hatch"),
    "smell": ("odor", "odour", "stink", "smelly", "musty"),
    "frost": ("ice buildup", "icing", "frosting", "iced up"),
    "spin": ("spin cycle", "centrifuge"),
    "vibration": ("vibrate", "shaking", "wobbling", "walking", "shake"),
    "filter": ("strainer", "mesh filter"),
    "thermostat": ("temperature control", "temp control"),
    "light": ("lamp", "bulb", "led"),
    "fill": ("filling", "no water coming in", "water inlet", "not filling"),
    "ignition": ("ignite", "igniter", "burner does not light", "pilot light"),
    "dry": ("drying", "damp", "wet"),
    "pressure": ("weak flow", "low flow", "trickle"),
    "trip": ("tripping", "breaker", "fuse", "rcd"),
    "airflow": ("air flow", "fan not blowing", "not blowing"),
    "overheating": ("too hot", "scalding", "overheat"),
    # Chinese: appliances
    "冰箱": ("电冰箱", "雪柜"),
    "空调": ("空调器", "冷气机", "空调机"),
    "洗碗机": ("洗碗器", "刷碗机"),
    "热水器": ("电热水器", "燃气热水器", "热水炉"),
    # Chinese: symptoms
    "漏水": ("渗水", "滴水", "跑水", "漏液"),
    "不排水": ("排水不畅", "积水", "排不出水", "水排不掉", "排水慢", "不出水"),
    "不制冷": ("制冷差", "不冷", "不凉", "制冷效果差"),
    "不加热": ("不热", "加热慢", "没有热水", "水不热"),
    "噪音": ("噪声", "异响", "响声大", "声音大"),
    "故障码": ("错误码", "故障代码", "错误代码", "报错"),
    "异味": ("臭味", "有味道", "发臭"),
    "结霜": ("结冰", "霜多"),
    "不启动": ("无法启动", "开不了机", "不通电", "开不了"),
    "震动": ("振动", "晃动", "抖动"),
    "不脱水": ("甩干不了", "不甩干", "脱水不了"),
    "烘干效果差": ("不干", "烘不干", "干燥效果差"),
    "水压低": ("出水小", "水流小", "水压不足"),
    "跳闸": ("漏电保护跳闸", "空开跳闸"),
}

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN_RE = re.compile(rf"(?P<cjk>[{_CJK}]+)|(?P<word>[^\W_{_CJK}]+(?:'[^\W_{_CJK}]+)*)")
_CJK_RE = re.compile(rf"[{_CJK}]")
_CODE_RE = re.compile(
    r"(?<![0-9A-Za-z])"
    r"(?:(?P<l>[A-Za-z]{1,2})(?P<sep>[-_:\u2013]|[ \t]{1,2})?(?P<d>[0-9]{1,3})"
    r"|(?P<d2>[0-9])(?P<l2>[A-Za-z]{1,2}))"
    r"(?![0-9A-Za-z])"
)
_CODE_CONTEXT_RE = re.compile(
    r"(?:error|err|code|fault|shows?|showing|displays?|displaying|flashing|blinking"
    r"|故障码|故障代码|错误码|错误代码|代码|故障|显示|报错|报)\s*[:：#]?\s*$",
    re.IGNORECASE,
)
# Letter pairs that follow a digit in ordinary prose ("2nd", "4K", "5G") rather than in error codes.
_NOT_DIGIT_CODES = frozenset({"D", "K", "G", "X", "ST", "ND", "RD", "TH", "AM", "PM", "KG", "CM", "MM", "KW"})


def _word_set(text: str) -> frozenset[str]:
    """Whitespace-separated word list as a set, to keep long vocabularies readable."""
    return frozenset(text.split())


_STOPWORDS = _word_set(
    "a an the my me mine i im ive id is are was were be been being am it its this that these "
    "those to of in on at for with and or but if so as by from into onto out up down about over "
    "under not no nor do does did dont doesnt didnt wont cant cannot isnt arent wasnt werent "
    "couldnt wouldnt shouldnt havent hasnt hadnt have has had having what how why when where "
    "which who whom whose please help hi hello hey thanks thank you your yours our we they he she "
    "them his her their can could would should will shall may might must just very too also still "
    "again any some there here get got gets keep keeps kept now then than ok okay yes really"
)
_NEGATIONS = _word_set("not no dont doesnt didnt wont cant cannot isnt arent wasnt never")
_NEG = "!"
_ZH_STOP_BIGRAMS = _word_set(
    "怎么 么办 什么 为什 么回 回事 请问 我的 我家 一下 你好 谢谢 怎样 如何 办法 了怎 么了 "
    "是不 不是 可以 能不 一直 现在 的时 时候 我们 这个 那个 还是 就是 但是 因为 所以"
)
_VOWELS = frozenset("aeiouy")

_MAX_QUERY_CHARS = 512
_MAX_FUZZY_QUERY_CHARS = 200
_MAX_CLAUSES = 40
_MAX_FUZZY_WORDS = 8
_MAX_TRUSTED_CODES = 3
_FIELD_WEIGHTS = (3, 2, 1, 2, 2, 3)  # title, symptoms, solution, code, category, product code (half-units)
_K1 = 1.2
_EPSILON = 1e-9
_SAT_CAP = 1.5
# Term saturation by stored half-unit tf, normalised so one body mention (tf 1.0) scores exactly 1.
_SAT = [min(_SAT_CAP, (n / 2) * (_K1 + 1) / (n / 2 + _K1)) for n in range(256)]
# A clause counts as fully covered once the term is in the title; body-only mentions get partial credit.
_FULL_CREDIT = _SAT[_FIELD_WEIGHTS[0]]


def _normalise(text: str) -> str:
    """Fold width variants and curly apostrophes so that user input matches article text."""
    return unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")


def _code_key(code: str) -> str:
    """Canonical form used for matching, so that E04 and E4 are the same code."""
    m = re.fullmatch(r"([A-Z]{1,2})([0-9]+)", code)
    return f"{m.group(1)}{int(m.group(2))}" if m else code


def _code_spans(text: str) -> list[tuple[int, int, str]]:
    """Find error codes in already-normalised text as (start, end, code) triples."""
    spans: list[tuple[int, int, str]] = []
    for m in _CODE_RE.finditer(text):
        letters, digits = m.group("l"), m.group("d")
        in_context = _CODE_CONTEXT_RE.search(text[max(0, m.start() - 16) : m.start()]) is not None
        if letters is not None and digits is not None:
            sep = m.group("sep") or ""
            if len(letters) == 2 and len(digits) == 3:
                continue  # two letters and three digits is a model number ("DW450"), not a code
            if (
                sep.isspace()
                and not in_context
                and not (len(letters) == 1 and letters.isupper() and letters not in "IA")
            ):
                continue  # "a 3 year old" must not read as code A3
            code = letters.upper() + digits
        else:
            lead, tail = m.group("d2"), m.group("l2")
            if not in_context and (not tail.isupper() or tail in _NOT_DIGIT_CODES):
                continue
            code = lead + tail.upper()
        spans.append((m.start(), m.end(), code))
    return spans


def extract_error_codes(text: str) -> list[str]:
    """Return the distinct appliance error codes mentioned in text, normalised like "E13"."""
    seen: dict[str, None] = {}
    for _, _, code in _code_spans(_normalise(text)):
        seen.setdefault(code, None)
    return list(seen)


def _stem(word: str) -> str:
    """Strip common English inflections so that "leaking", "leaks" and "leaked" share a term."""
    if len(word) <= 3 or not word.isalpha() or not word.isascii():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses") or word.endswith(("ches", "shes", "xes", "zes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and len(stem) >= 3 and not word.endswith("eed") and _VOWELS & set(stem):
            word = stem
            if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]
            break
    if len(word) >= 4 and word.endswith("e"):
        word = word[:-1]
    return word


def _word_term(word: str) -> str | None:
    """Map a raw Latin word to its index term, or None when it carries no meaning."""
    word = word.replace("'", "")
    if word in _STOPWORDS or len(word) > 32:
        return None
    if len(word) < 2:
        return None
    return _stem(word)


def _cjk_terms(run: str) -> list[str]:
    """Split a run of CJK characters into overlapping bigrams, since Chinese has no spaces."""
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


def _strip_codes(text: str) -> tuple[str, list[str]]:
    """Blank out error codes (so "E13" is not also a word) and return their match keys."""
    spans = _code_spans(text)
    if not spans:
        return text, []
    parts: list[str] = []
    last = 0
    for start, end, _ in spans:
        parts.append(text[last:start])
        parts.append(" ")
        last = end
    parts.append(text[last:])
    return "".join(parts), [_code_key(code) for _, _, code in spans]


def _code_term(key: str) -> str:
    """Index term for an error code; '#' never occurs in word terms so they cannot collide."""
    return "#" + key


def _analyse(text: str) -> list[str]:
    """Turn article text into index terms: error codes, stemmed words and CJK bigrams."""
    codes, words, _, runs = _query_tokens(_normalise(text))
    terms = [_code_term(k) for k in codes]
    terms.extend(w for w in words if w != _NEG)
    for run in runs:
        terms.extend(_cjk_terms(run))
    return terms


def _query_tokens(text: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """Split normalised text into code keys, Latin terms (negations as _NEG), their raw words, CJK runs."""
    stripped, codes = _strip_codes(text)
    words: list[str] = []
    raws: list[str] = []
    runs: list[str] = []
    for m in _TOKEN_RE.finditer(stripped.lower()):
        run = m.group("cjk")
        if run is not None:
            runs.append(run)
            continue
        raw = m.group("word").replace("'", "")
        if raw in _NEGATIONS:
            # Kept only to match synonym phrases such as "no hot water"; negations are never indexed.
            words.append(_NEG)
            raws.append(raw)
        else:
            term = _word_term(raw)
            if term is not None:
                words.append(term)
                raws.append(raw)
    return codes, words, raws, runs


def _trigrams(term: str) -> set[str]:
    """Padded character trigrams of a Latin term, used to find spelling neighbours."""
    padded = f"#{term}#"
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def _is_fuzzy_term(term: str) -> bool:
    """Only alphabetic Latin words are worth spelling-correcting; codes and numbers are exact."""
    return len(term) >= 3 and term.isalpha() and term.isascii()


def _add_grams(grams: dict[str, list[str]], term: str) -> None:
    """Register term under each of its trigrams."""
    for gram in _trigrams(term):
        grams.setdefault(gram, []).append(term)


def _max_edits(word: str) -> int:
    """Typos tolerated in a word of this length: one up to five letters, two beyond."""
    return 0 if len(word) < 3 else 1 if len(word) <= 5 else 2


def _neighbours(
    word: str, grams: Mapping[str, list[str]], known: Container[str], suffix: str = ""
) -> list[tuple[str, float]]:
    """Up to three known terms that, with suffix appended, are within a few edits of word."""
    word_grams = _trigrams(word)
    counts: Counter[str] = Counter()
    for gram in word_grams:
        bucket = grams.get(gram)
        # Very common grams match thousands of terms and barely discriminate; skip them.
        if bucket is not None and len(bucket) <= 4000:
            counts.update(bucket)
    edits = _max_edits(word)
    found: list[tuple[str, float]] = []
    for cand, _ in counts.most_common(40):
        form = cand + suffix
        if abs(len(form) - len(word)) > edits or cand not in known:
            continue
        # OSA counts a swapped pair as one edit, the commonest chat typo ("vlave", "powre").
        distance = OSA.distance(word, form, score_cutoff=edits)
        if distance > edits:
            continue
        # One changed letter in four is too loose: "drop" is a word, not a typo of "drip".
        if len(word) <= 4 and len(form) <= 4 and distance:
            continue
        # Indel ratio as the weight: it forgives a lost suffix ("leakng" vs stem "leak") more kindly.
        found.append((cand, fuzz.ratio(word, form) / 100.0))
    found.sort(key=lambda item: (-item[1], item[0]))
    return found[:3]


def _inflection(raw: str) -> str:
    """The inflectional ending of a raw word, so a misspelt "leaing" is compared with "leak"+"ing"."""
    return next(
        (end for end in ("ing", "ed", "es", "s") if raw.endswith(end) and len(raw) > len(end) + 2), ""
    )


def _merge(*found: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Combine neighbour lists, keeping each term's best similarity."""
    best: dict[str, float] = {}
    for items in found:
        for term, similarity in items:
            best[term] = max(best.get(term, 0.0), similarity)
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))[:3]


_Phrase = tuple[str, ...]


@dataclass(slots=True)
class _Clause:
    """One query concept: a doc scores the best of its alternative phrasings."""

    alts: dict[_Phrase, float]
    is_code: bool = False
    is_cjk: bool = False
    damp: float = 1.0
    weight: float = 0.0
    cost: int = 0
    recall: list[tuple[str, float]] = field(default_factory=list)


@dataclass(slots=True)
class _Synonyms:
    """Synonym groups compiled into index-term phrases for query expansion."""

    latin: dict[_Phrase, set[_Phrase]] = field(default_factory=dict)
    cjk: dict[str, set[_Phrase]] = field(default_factory=dict)
    latin_max: int = 0
    cjk_max: int = 0
    # Surface words of Latin keys mapped to their stems, so a typo in a word that only the synonym
    # table knows ("frdge", "scaldinng") can still be corrected and expanded.
    surface: dict[str, str] = field(default_factory=dict)
    grams: dict[str, list[str]] = field(default_factory=dict)


def _compile_synonyms(mapping: Mapping[str, Iterable[str]]) -> _Synonyms:
    """Expand key -> values entries into symmetric phrase lookups keyed the way queries are split."""
    syn = _Synonyms()
    for key, values in mapping.items():
        group = [key, *values]
        phrases = {member: tuple(_analyse(member)) for member in group}
        for member in group:
            alternatives = {p for other, p in phrases.items() if other != member and p}
            if not alternatives:
                continue
            norm = _normalise(member).lower().strip()
            if norm and all(_CJK_RE.match(ch) for ch in norm):
                syn.cjk.setdefault(norm, set()).update(alternatives)
                syn.cjk_max = max(syn.cjk_max, len(norm))
            elif not _CJK_RE.search(norm):
                _, words, raws, _ = _query_tokens(norm)
                if any(w != _NEG for w in words):
                    syn.latin.setdefault(tuple(words), set()).update(alternatives)
                    syn.latin_max = max(syn.latin_max, len(words))
                    for word, raw in zip(words, raws, strict=True):
                        if word != _NEG and _is_fuzzy_term(raw):
                            syn.surface[raw] = word
                            syn.surface.setdefault(word, word)
    for raw in syn.surface:
        _add_grams(syn.grams, raw)
    return syn


class KbIndex:
    """Inverted index over KB articles with typo, synonym, CJK and error-code aware ranking."""

    # Not thread-safe: guard add/remove/search with one lock if an instance is shared.

    # Tunables are class attributes so a subclass or test can adjust them without a new signature.
    candidates: int = 120
    product_candidates: int = 60
    posting_budget: int = 150_000
    synonym_weight: float = 0.85
    min_score: float = 8.0

    def __init__(self, synonyms: Mapping[str, Iterable[str]] | None = None) -> None:
        """Create an empty index; synonyms replaces DEFAULT_SYNONYMS (pass {} to disable)."""
        self._syn = _compile_synonyms(DEFAULT_SYNONYMS if synonyms is None else synonyms)
        self._docs: list[KbDocument | None] = []
        self._slot_of: dict[int, int] = {}
        self._postings: dict[str, tuple[array[int], array[int]]] = {}
        self._df: dict[str, int] = {}
        self._grams: dict[str, list[str]] = {}
        self._product_slots: dict[str, set[int]] = {}
        self._dead = 0

    def __len__(self) -> int:
        """Number of live documents."""
        return len(self._slot_of)

    # -- maintenance ---------------------------------------------------------------------------

    def add(self, doc: KbDocument) -> None:
        """Index doc, replacing any document with the same id."""
        if doc.id in self._slot_of:
            self.remove(doc.id)
        slot = len(self._docs)
        self._docs.append(doc)
        self._slot_of[doc.id] = slot
        postings, df = self._postings, self._df
        # Slots only grow, so appending keeps every postings list sorted for bisect lookups.
        for term, tf in self._doc_terms(doc).items():
            entry = postings.get(term)
            if entry is None:
                entry = (array("i"), array("B"))
                postings[term] = entry
                if _is_fuzzy_term(term):
                    _add_grams(self._grams, term)
            entry[0].append(slot)
            entry[1].append(min(tf, 255))
            df[term] = df.get(term, 0) + 1
        if doc.product_code:
            self._product_slots.setdefault(doc.product_code, set()).add(slot)

    def remove(self, doc_id: int) -> None:
        """Drop the document with doc_id; unknown ids are ignored."""
        slot = self._slot_of.pop(doc_id, None)
        if slot is None:
            return
        doc = self._docs[slot]
        assert doc is not None
        self._docs[slot] = None
        for term in self._doc_terms(doc):
            left = self._df[term] - 1
            if left:
                self._df[term] = left
            else:
                del self._df[term]
        if doc.product_code:
            self._product_slots[doc.product_code].discard(slot)
        self._dead += 1
        # Dead slots stay in postings until they are a sizeable share, keeping remove O(doc size).
        if self._dead > max(256, len(self._slot_of) // 4):
            self._compact()

    @staticmethod
    def _doc_terms(doc: KbDocument) -> Counter[str]:
        """Field-weighted term frequencies of doc, in half-units."""
        tf: Counter[str] = Counter()
        fields = (
            doc.title,
            doc.symptoms,
            doc.solution,
            doc.code,
            doc.category.replace("/", " "),
            doc.product_code or "",
        )
        for text, weight in zip(fields, _FIELD_WEIGHTS, strict=True):
            if text:
                # Presence per field, not raw counts: a solution that says "drain" five times is not
                # more about draining than a title that says it once.
                for term in set(_analyse(text)):
                    tf[term] += weight
        return tf

    def _compact(self) -> None:
        """Renumber live documents densely, dropping dead slots and terms no live document uses."""
        # Query cost scales with the slot count, so churn must not let dead slots pile up.
        new_slot = array("i", [-1]) * len(self._docs)
        live: list[KbDocument | None] = []
        for old, doc in enumerate(self._docs):
            if doc is not None:
                new_slot[old] = len(live)
                live.append(doc)
        postings: dict[str, tuple[array[int], array[int]]] = {}
        for term, (slots, tfs) in self._postings.items():
            if term in self._df:
                pairs = [(new_slot[s], tf) for s, tf in zip(slots, tfs, strict=True) if new_slot[s] >= 0]
                postings[term] = (array("i", [p[0] for p in pairs]), array("B", [p[1] for p in pairs]))
        self._postings = postings
        self._docs = live
        self._slot_of = {doc.id: slot for slot, doc in enumerate(live) if doc is not None}
        self._product_slots = {}
        for slot, doc in enumerate(live):
            if doc is not None and doc.product_code:
                self._product_slots.setdefault(doc.product_code, set()).add(slot)
        self._grams = {}
        for term in postings:
            if _is_fuzzy_term(term):
                _add_grams(self._grams, term)
        self._dead = 0

    # -- query planning ------------------------------------------------------------------------

    def _idf(self, df: int) -> float:
        """BM25 idf, never negative."""
        n = len(self._slot_of)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def _plan(self, text: str) -> list[_Clause]:
        """Split a normalised query into weighted clauses with synonym and spelling alternatives."""
        codes, words, raws, runs = _query_tokens(text)
        distinct = list(dict.fromkeys(codes))
        # A chat message names one or two codes; a string full of them is noise (logs, junk), and
        # letting each one claim the error-code tier would rank garbage highly.
        trusted = len(distinct) <= _MAX_TRUSTED_CODES
        clauses: list[_Clause] = [_Clause({(_code_term(k),): 1.0}, is_code=trusted) for k in distinct]
        clauses.extend(self._latin_clauses(words, raws))
        for run in runs:
            clauses.extend(self._cjk_clauses(run))
        unique: dict[frozenset[_Phrase], _Clause] = {}
        for clause in clauses:
            unique.setdefault(frozenset(clause.alts), clause)
        return list(unique.values())[:_MAX_CLAUSES]

    def _latin_clauses(self, words: list[str], raws: list[str]) -> list[_Clause]:
        """Clauses for Latin words: longest synonym phrase first, else the word plus spelling fixes."""
        syn, sw, df = self._syn, self.synonym_weight, self._df
        terms = list(words)
        trust = [1.0] * len(words)
        fixes: dict[int, list[tuple[str, float]]] = {}
        synonym_stems = set(syn.surface.values())
        for i, (word, raw) in enumerate(zip(words, raws, strict=True)):
            if len(fixes) >= _MAX_FUZZY_WORDS:
                break
            if not _is_fuzzy_term(word) or df.get(word, 0) > 2 or word in synonym_stems:
                continue
            # Stemming can mangle a typo ("leaing" -> "lea"), so the raw word gets a try as well.
            fixes[i] = _merge(
                _neighbours(word, self._grams, df), _neighbours(raw, self._grams, df, _inflection(raw))
            )
            in_table = _merge(
                _neighbours(raw, syn.grams, syn.surface), _neighbours(word, syn.grams, syn.surface)
            )
            # Prefer the synonym table's word when it is at least as close: it brings its group along.
            if in_table and in_table[0][1] >= (fixes[i][0][1] if fixes[i] else 0.0):
                terms[i] = syn.surface[in_table[0][0]]
                trust[i] = in_table[0][1]
        clauses: list[_Clause] = []
        i = 0
        while i < len(terms):
            for size in range(min(syn.latin_max, len(terms) - i), 0, -1):
                phrase = tuple(terms[i : i + size])
                if phrase in syn.latin:
                    factor = min(trust[i : i + size])
                    alts = {tuple(w for w in phrase if w != _NEG): factor}
                    for alt in syn.latin[phrase]:
                        alts.setdefault(alt, sw * factor)
                    clauses.append(_Clause(alts))
                    i += size
                    break
            else:
                word = words[i]  # a correction that completed no synonym phrase is dropped
                near = fixes.get(i, [])
                i += 1
                if word == _NEG:
                    continue
                alts = {(word,): 1.0}
                for fixed, sim in near:
                    alts.setdefault((fixed,), 0.9 * sim)
                    for alt in syn.latin.get((fixed,), ()):
                        alts.setdefault(alt, 0.9 * sim * sw)
                clauses.append(_Clause(alts))
        return clauses

    def _cjk_clauses(self, run: str) -> list[_Clause]:
        """Clauses for a CJK run: bigrams, with bigrams inside a synonym phrase merged into one clause."""
        syn, sw = self._syn, self.synonym_weight
        spans: list[tuple[int, int]] = []
        i = 0
        while i < len(run):
            for size in range(min(syn.cjk_max, len(run) - i), 1, -1):
                if run[i : i + size] in syn.cjk:
                    spans.append((i, i + size))
                    i += size
                    break
            else:
                i += 1
        clauses: list[_Clause] = []
        for start, end in spans:
            phrase = run[start:end]
            alts = {tuple(_cjk_terms(phrase)): 1.0}
            for alt in syn.cjk[phrase]:
                alts.setdefault(alt, sw)
            clauses.append(_Clause(alts, is_cjk=True))
        grams = _cjk_terms(run)
        for pos, gram in enumerate(grams):
            if gram in _ZH_STOP_BIGRAMS or any(start <= pos and pos + 2 <= end for start, end in spans):
                continue
            # A bigram straddling a known phrase's edge is almost always two half-words ("器漏" in
            # "点火器漏电"), so it gets a lower weight; other bigrams can't be told apart without a lexicon.
            straddles = any(start - 1 == pos or end - 1 == pos for start, end in spans)
            clauses.append(_Clause({(gram,): 1.0}, is_cjk=True, damp=0.4 if straddles else 1.0))
        return clauses

    def _weigh(self, clauses: list[_Clause]) -> float:
        """Set each clause's idf weight and recall terms; return the coverage denominator."""
        df = self._df
        known: list[float] = []
        for clause in clauses:
            best = 0.0
            recall: dict[str, float] = {}
            for index, (phrase, weight) in enumerate(clause.alts.items()):
                present = [t for t in phrase if t in df]
                if len(present) == len(phrase):
                    best = max(best, sum(self._idf(df[t]) for t in phrase) / len(phrase))
                if index == 0:
                    # The customer's own words earn partial credit, so each of them recalls.
                    for term in present:
                        recall[term] = max(recall.get(term, 0.0), weight / len(phrase))
                elif len(present) == len(phrase):
                    # A synonym counts only when complete, so its rarest term recalls every match
                    # without scanning the long postings of words like "water".
                    rarest = min(present, key=df.__getitem__)
                    recall[rarest] = max(recall.get(rarest, 0.0), weight)
            clause.recall = list(recall.items())
            clause.cost = sum(df[t] for t in recall)
            if best:
                clause.weight = (max(best, 3.0) * 2.0 if clause.is_code else best) * clause.damp
                known.append(clause.weight)
        denominator = sum(known)
        mean = denominator / len(known) if known else 1.0
        for clause in clauses:
            if not clause.weight:
                # A query word found nowhere still counts against coverage, but CJK bigrams that
                # straddle two words are expected noise, so they count for less.
                denominator += mean * (0.3 if clause.is_cjk else 0.6)
        return denominator

    # -- retrieval -----------------------------------------------------------------------------

    def _lookup(self, clause: _Clause, slot: int) -> float:
        """Exact clause score for one slot: best alternative, synonyms only when complete."""
        best = 0.0
        for index, (phrase, weight) in enumerate(clause.alts.items()):
            total = 0.0
            found = 0
            for term in phrase:
                entry = self._postings.get(term)
                if entry is None:
                    continue
                slots = entry[0]
                pos = bisect_left(slots, slot)
                if pos < len(slots) and slots[pos] == slot:
                    total += _SAT[entry[1][pos]]
                    found += 1
            if index == 0 or found == len(phrase):  # a synonym counts only when complete
                best = max(best, weight * total / len(phrase))
        return best

    def _retrieve(self, clauses: list[_Clause]) -> list[float]:
        """Approximate lexical score per slot, scanning the rarest clauses first within a posting budget."""
        # Phrases are approximated by their recall terms: this only picks candidates, whose exact
        # clause scores are computed afterwards by _lookup.
        # A dense list beats a dict here: postings are slot-sorted, so the writes walk memory in order.
        acc = [0.0] * len(self._docs)
        postings = self._postings
        spent = 0
        for clause in sorted((c for c in clauses if c.weight), key=lambda c: c.cost):
            if spent and spent + clause.cost > self.posting_budget:
                continue  # left out of recall; common clauses barely change which docs are candidates
            spent += clause.cost
            if len(clause.recall) == 1:
                ((term, scale),) = clause.recall
                table = [clause.weight * scale * v for v in _SAT]
                slots, tfs = postings[term]
                for slot, value in zip(slots, map(table.__getitem__, tfs), strict=True):
                    acc[slot] += value
                continue
            # Take the best alternative per slot, not the sum: an article saying both "drain" and
            # "drainage" must not outrank one that also matches another concept of the query.
            best: dict[int, float] = {}
            get = best.get
            for term, scale in clause.recall:
                table = [clause.weight * scale * v for v in _SAT]
                slots, tfs = postings[term]
                for slot, value in zip(slots, map(table.__getitem__, tfs), strict=True):
                    if value > get(slot, 0.0):
                        best[slot] = value
            for slot, value in best.items():
                acc[slot] += value
        return acc

    def _select(self, acc: list[float], product_code: str | None, limit: int) -> list[int]:
        """Top lexical candidates, plus the best ones for the preferred product."""
        n = max(self.candidates, min(limit, len(acc)))
        # Dead slots still sit in postings, so over-fetch to keep n live ones.
        best = heapq.nlargest(n + (n if self._dead else 0), acc)
        threshold = best[-1] if best and best[-1] > 0.0 else _EPSILON
        chosen = self._top(acc, compress(range(len(acc)), map(operator.ge, acc, repeat(threshold))), n)
        if product_code:
            mine = [s for s in self._product_slots.get(product_code, ()) if acc[s] > 0.0]
            chosen_set = set(chosen)
            chosen.extend(s for s in self._top(acc, mine, self.product_candidates) if s not in chosen_set)
        return chosen

    def _top(self, acc: list[float], slots: Iterable[int], n: int) -> list[int]:
        """The n best live slots by lexical score, ties broken by document id."""
        docs = self._docs
        pool = [s for s in slots if docs[s] is not None] if self._dead else list(slots)
        if len(pool) > n:
            threshold = heapq.nlargest(n, [acc[s] for s in pool])[-1]
            pool = [s for s in pool if acc[s] >= threshold]

        def key(s: int) -> tuple[float, int]:
            """Best score first, then lowest document id."""
            doc = docs[s]
            return (-acc[s], doc.id if doc is not None else 0)

        pool.sort(key=key)
        return pool[:n]

    # -- ranking -------------------------------------------------------------------------------

    def search(
        self, query: str, limit: int = 5, *, product_code: str | None = None, lang: str | None = None
    ) -> list[KbHit]:
        """Best articles for a customer's message; product_code and lang are soft preferences."""
        if limit <= 0 or not self._slot_of or not isinstance(query, str):
            return []
        text = _normalise(query[:_MAX_QUERY_CHARS])
        clauses = self._plan(text)
        if not clauses:
            return []
        denominator = self._weigh(clauses)
        if not denominator or not any(c.weight for c in clauses):
            return []
        acc = self._retrieve(clauses)
        candidates = self._select(acc, product_code, limit)
        # An error code that no article mentions cannot separate tiers, so it only costs coverage.
        has_code_clause = any(c.is_code and c.weight for c in clauses)
        fuzzy_query = self._fuzzy_query(text)
        cjk_query = _CJK_RE.search(fuzzy_query) is not None
        ranked: list[tuple[float, int, str]] = []
        for slot in candidates:
            doc = self._docs[slot]
            assert doc is not None
            coverage = 0.0
            code_hit = False
            for clause in clauses:
                if not clause.weight:
                    continue
                value = self._lookup(clause, slot)
                if value > 0.0 and clause.is_code:
                    code_hit = True
                coverage += clause.weight * min(1.0, value / _FULL_CREDIT)
            coverage /= denominator
            similarity = _similarity(fuzzy_query, doc, cjk_query)
            # Fuzzy similarity can be high by accident on short strings, so it only counts in full
            # once the article also covers a fair share of the query's concepts.
            text_score = 100.0 * (0.6 * coverage + 0.4 * similarity * min(1.0, coverage / 0.4))
            text_score *= self._preference(doc, product_code, lang)
            if has_code_clause:
                # A matching error code outranks everything else; the text only orders within tiers.
                score = 50.0 + 0.5 * text_score if code_hit else 0.5 * text_score
            else:
                score = text_score
            score = round(max(0.0, min(100.0, score)), 2)
            if score >= self.min_score:
                ranked.append((score, doc.id, doc.code))
        ranked.sort(key=lambda r: (-r[0], r[1]))
        return [KbHit(id=doc_id, code=code, score=score) for score, doc_id, code in ranked[:limit]]

    @staticmethod
    def _preference(doc: KbDocument, product_code: str | None, lang: str | None) -> float:
        """Soft multipliers: the customer's own product and language rank first among equals."""
        factor = 1.0
        if product_code:
            if doc.product_code == product_code:
                pass
            elif doc.product_code is None:
                factor *= 0.95  # generic articles may still apply to the customer's product
            else:
                factor *= 0.85
        if lang and doc.lang != lang:
            factor *= 0.9
        return factor

    @staticmethod
    def _fuzzy_query(text: str) -> str:
        """Query text for rapidfuzz: stopwords removed so they do not dilute token ratios."""
        kept = []
        for word in text[:_MAX_FUZZY_QUERY_CHARS].split():
            bare = word.lower().replace("'", "")
            # Negations stay: "not heating" and "heating element" differ only by them.
            if bare in _NEGATIONS:
                kept.append("not")
            elif bare not in _STOPWORDS:
                kept.append(word)
        return str(default_process(" ".join(kept)))


def _similarity(query: str, doc: KbDocument, cjk: bool) -> float:
    """Fuzzy similarity of the query to an article's title and symptoms, 0..1."""
    if not query:
        return 0.0
    title = str(default_process(doc.title))
    symptoms = str(default_process(doc.symptoms[:400]))
    if cjk:
        # Token scorers split on whitespace, which Chinese lacks, so compare characters.
        best = max(fuzz.partial_ratio(query, title), 0.9 * fuzz.partial_ratio(query, symptoms))
    else:
        best = max(
            fuzz.token_set_ratio(query, title),
            fuzz.partial_ratio(query, title),
            0.9 * fuzz.token_set_ratio(query, symptoms),
        )
    return best / 100.0
