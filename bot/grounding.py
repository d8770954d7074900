"""Grounding: what a person's words point at among the records they may see.

Every resolver answers with a `Grounded`: exactly one record; several (the caller offers buttons); a near
miss ("did you mean …?" — never taken silently); nothing the asker has (the caller says so, naming what
was said); or nothing said at all (the caller asks). The rules are the same for every kind of record:
what this message says beats what was said before, the remembered value only fills in when nothing is
said, and scope comes from core (a customer's own records), never from here.

Resolvers so far: `installed_units` (the installed base). Deals, customers, technicians, parts, requests
and jobs get theirs beside it, answering in the same shape.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Generic, Protocol, TypeVar

from rapidfuzz.distance import OSA

from core.auth import Actor
from core.container import Core
from core.errors import NotFound, ValidationFailed
from core.schemas import InstalledProductOut, ProductOut

T = TypeVar("T")


class Found(StrEnum):
    """What a mention resolved to."""

    ONE = "one"  # use it
    SEVERAL = "several"  # ask which, with a button each
    SUGGESTED = "suggested"  # a near miss: "did you mean …?" with buttons, never taken silently
    NONE = "none"  # something was said that matches nothing the asker has: say so, naming it
    UNSAID = "unsaid"  # nothing said and nothing remembered: ask


class Mention(StrEnum):
    """How the person pointed at the record."""

    SERIAL = "serial"
    MODEL = "model"
    NAME = "name"
    KIND = "kind"
    CONTEXT = "context"
    NOTHING = "nothing"


@dataclass(frozen=True)
class Grounded(Generic[T]):
    """The outcome of grounding one mention: the matches, what was said, and how."""

    found: Found
    matches: tuple[T, ...] = ()
    said: str = ""
    by: Mention = Mention.NOTHING

    @property
    def one(self) -> T | None:
        """The record when exactly one was found."""
        return self.matches[0] if self.found is Found.ONE else None

    @property
    def said_now(self) -> bool:
        """Whether this message named something (as opposed to the context filling in, or nothing)."""
        return self.by not in (Mention.CONTEXT, Mention.NOTHING)

    @classmethod
    def counted(cls, matches: Sequence[T], said: str, by: Mention) -> Grounded[T]:
        """One, several or none, by how many matched."""
        if not matches:
            return cls(Found.NONE, (), said, by)
        return cls(Found.ONE if len(matches) == 1 else Found.SEVERAL, tuple(matches), said, by)


class Asker(Protocol):
    """Who is asking: a dialogue turn, or anything else carrying the core and the acting person."""

    @property
    def core(self) -> Core: ...

    @property
    def actor(self) -> Actor: ...


# --- words and serials as compared ----------------------------------------------------------------

# Shorter serial keys would match inside ordinary words and numbers.
MIN_SERIAL_KEY = 4
# What may stand between the characters of a serial typed loosely ("sn 7731 qa", "WM2023 00917").
_SERIAL_GAP = re.compile(r"^[\s\-_./·]{0,2}$")
_TOKEN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]+(?:[-_./][A-Za-z0-9]+)*(?![A-Za-z0-9])")
_WORD = re.compile(r"[A-Za-z0-9]+")
_EMAIL_OR_URL = re.compile(r"\S+@\S+|https?://\S+|www\.\S+", re.IGNORECASE)
_PAYLOAD = re.compile(r"^/[a-z_]+(\{.*\})?$", re.DOTALL)
# Identifiers that are not serials: SR-12, RO-3, OP-7, parts (P-100), and quantities ("1400rpm", "8kg").
_NOT_SERIAL_KEY = re.compile(r"^(?:SR|RO|OP)\d+$|^P\d{2,6}$")
_QUANTITY = re.compile(r"^\d+[A-Za-z]+$")
# Chinese characters (the unified ideographs, extension A and the compatibility block): one range for every
# reader of names here and in bot/grounding_sales.py.
CJK_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
CJK_RUN = re.compile(f"[{CJK_CHARS}]+")
# What a correction says it does NOT mean ("not the washer, the dishwasher", "不是洗衣机，是洗碗机",
# "the dishwasher, not the washer"): blanked out before matching, so only the meant appliance is left.
# "是不是洗衣机的问题" asks a question and keeps its word.
_NEGATED = re.compile(
    r"\b(?:not|isn'?t)\s+(?:the |my |a |an )?[^,.;!?\n]{1,40}?(?=,|\bbut\b)"
    r"|,\s*(?:not|isn'?t)\s+[^,.;!?\n]{1,40}$"
    r"|(?<!是)不是[^，,。；;！!？?\n]{1,12}?(?=[，,]?\s*而?是)"
    r"|[，,]\s*而?不是[^，,。；;！!？?\n]{1,12}$",
    re.IGNORECASE,
)


def serial_key(text: str) -> str:
    """A serial as compared: upper case, letters and digits only ('sn 7731-qa' → 'SN7731QA')."""
    folded = unicodedata.normalize("NFKC", text).upper()
    return "".join(char for char in folded if char.isascii() and char.isalnum())


def _plain(text: str) -> str:
    """The message as matched: full-width folded (ＷＭ２０２３ → WM2023); no payloads, mails or links."""
    if _PAYLOAD.match(text.strip()):
        return ""
    plain = _EMAIL_OR_URL.sub(" ", unicodedata.normalize("NFKC", text))
    return _NEGATED.sub(lambda negated: " " * len(negated.group(0)), plain.strip())


def _serial_shaped(token: str) -> bool:
    """Whether a word looks like a serial number someone typed (letters and at least three digits)."""
    key = serial_key(token)
    digits = sum(char.isdigit() for char in key)
    return (
        len(key) >= MIN_SERIAL_KEY + 1
        and digits >= 3
        and digits < len(key)
        and not _NOT_SERIAL_KEY.match(key)
        and not _QUANTITY.match(token)
    )


def _typo_allowance(key: str) -> int:
    """Edits tolerated in a serial of this length: one, two in long ones."""
    return 1 if len(key) < 9 else 2


@dataclass(frozen=True)
class _Compact:
    """A text's ASCII letters and digits, upper case, with where each came from (to check word edges)."""

    text: str
    keys: str
    origin: tuple[int, ...]

    @classmethod
    def of(cls, text: str) -> _Compact:
        """Index `text`."""
        chars = [(index, char.upper()) for index, char in enumerate(text) if _is_alnum(char)]
        return cls(text, "".join(char for _index, char in chars), tuple(index for index, _char in chars))

    def spans(self, key: str) -> list[tuple[int, int]]:
        """Where `key` stands as whole words ('sn 7731-qa'), never inside a longer code ('WM2023-00917')."""
        found: list[tuple[int, int]] = []
        tokens = [match.span() for match in _TOKEN.finditer(self.text)]
        start = self.keys.find(key)
        while start >= 0 and key:
            first, last = self.origin[start], self.origin[start + len(key) - 1]
            span = (first, last + 1)
            inside = all(
                _SERIAL_GAP.match(self.text[self.origin[i] + 1 : self.origin[i + 1]])
                for i in range(start, start + len(key) - 1)
            )
            within = any(
                token_start <= first and span[1] <= token_end and (token_start, token_end) != span
                for token_start, token_end in tokens
            )
            before = self.text[first - 1] if first > 0 else " "
            after = self.text[last + 1] if last + 1 < len(self.text) else " "
            edges = not _is_alnum(before) and not _is_alnum(after)
            if inside and edges and not within:
                found.append(span)
            start = self.keys.find(key, start + 1)
        return found


def _is_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


def _overlaps(span: tuple[int, int], used: Iterable[tuple[int, int]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in used)


# --- the vocabulary of product kinds ----------------------------------------------------------------

# How people name kinds of appliance, beyond what the catalogue's names and categories say. Keys are
# product categories; kinds nobody sells here are kept so "my oven" is answered "you have no oven".
KIND_SYNONYMS: dict[str, tuple[str, ...]] = {
    "washing_machine": ("washing machine", "washer", "laundry machine", "洗衣机", "滚筒", "波轮"),
    "dishwasher": ("dishwasher", "dish washer", "dishwashing machine", "洗碗机"),
    "fridge": ("fridge", "refrigerator", "freezer", "fridge freezer", "icebox", "冰箱", "冰柜", "雪柜"),
    "air_conditioner": ("air conditioner", "air conditioning", "air-conditioner", "aircon", "air con", "ac",
                        "a/c", "空调", "冷气机"),
    "water_heater": ("water heater", "boiler", "heater", "hot water heater", "geyser", "热水器"),
    "oven": ("oven", "烤箱"),
    "microwave": ("microwave", "微波炉"),
    "television": ("tv", "television", "电视", "电视机"),
    "range_hood": ("range hood", "cooker hood", "extractor hood", "油烟机", "抽油烟机"),
    "cooktop": ("cooktop", "hob", "stove", "燃气灶", "电磁炉"),
}
# Real words a typo-tolerant match would otherwise read as an appliance ("heated" is not "heater").
_NOT_TYPOS = frozenset(
    {"washed", "washes", "wasted", "heated", "header", "hearer", "boiled", "freezes", "freezed"}
)
# Words in a product name that say nothing about what it is.
_NAME_NOISE = re.compile(r"^(?:\d+(?:\.\d+)?|kg|l|hp|w|kw|cm|mm|in|inch|litre|liter|liters|litres)$")
# A one-word product name shorter than this says too little to name a product.
_MIN_NAME_WORD = 5
# Shorter words are only taken exactly: "stove" is one slip from "store", "oven" from "over".
_MIN_FUZZY_WORD = 6


@dataclass(frozen=True)
class Term:
    """A way of naming a kind of appliance, or one product: ASCII words or a Chinese phrase."""

    kind: str
    words: tuple[str, ...] = ()
    cjk: str = ""
    product: str | None = None

    @property
    def size(self) -> int:
        """Longer terms are matched first ('water heater' before 'heater', '滚筒洗衣机' before '洗衣机')."""
        return len(self.cjk) if self.cjk else len("".join(self.words)) + 10 * len(self.words)


@dataclass(frozen=True)
class Vocabulary:
    """Kinds and products as people name them, built from the catalogue and the synonym table."""

    terms: tuple[Term, ...]
    models: dict[str, str]  # serial_key(product code) → product code
    kinds: dict[str, str]  # product code → kind
    # Indexes over `terms` (each with its rank, longest first), so a message is read in one pass:
    # Chinese phrases; English terms by their words run together; and, for typos, by first letter and
    # number of words.
    phrases: tuple[tuple[int, Term], ...] = ()
    spelled: dict[str, tuple[tuple[int, Term], ...]] = field(default_factory=dict)
    typo_prone: dict[tuple[str, int], tuple[tuple[int, Term], ...]] = field(default_factory=dict)
    most_words: int = 0

    def kind_of(self, product_code: str) -> str:
        """A product's kind (its category; the code itself when it has none)."""
        return self.kinds.get(product_code, product_code)


@dataclass(frozen=True)
class _Said:
    """A term found in a message, with the words as typed."""

    term: Term
    text: str
    span: tuple[int, int]


def _words(text: str) -> tuple[str, ...]:
    return tuple(word.lower() for word in re.findall(r"[A-Za-z]+", text))


def _kind_from_name(name: str) -> str | None:
    """The kind a product name says, when its category is empty ('Washing machine WM-2023')."""
    lowered = name.lower()
    for kind, names in KIND_SYNONYMS.items():
        for synonym in sorted(names, key=len, reverse=True):
            if (CJK_RUN.fullmatch(synonym) and synonym in name) or (
                not CJK_RUN.search(synonym) and re.search(rf"\b{re.escape(synonym)}\b", lowered)
            ):
                return kind
    return None


@lru_cache(maxsize=8)
def build_vocabulary(catalogue: tuple[tuple[str, str, str], ...]) -> Vocabulary:
    """The vocabulary of a catalogue given as (code, name, category) rows."""
    kinds: dict[str, str] = {}
    terms: list[Term] = []
    product_terms: dict[Term, set[str]] = {}
    synonyms = {(kind, name) for kind, names in KIND_SYNONYMS.items() for name in names}
    for code, name, category in catalogue:
        kind = category or _kind_from_name(name) or code
        kinds[code] = kind
        if category:
            synonyms.add((kind, category.replace("_", " ")))
        code_words = set(_words(code))
        for part in name.split("/"):
            for phrase in CJK_RUN.findall(part):
                if len(phrase) >= 2:
                    product_terms.setdefault(Term(kind, cjk=phrase), set()).add(code)
            words = tuple(w for w in _words(part) if w not in code_words and not _NAME_NOISE.match(w))
            if len(words) >= 2 or (words and len(words[0]) >= _MIN_NAME_WORD):
                product_terms.setdefault(Term(kind, words=words), set()).add(code)
    generic = set()
    for kind, synonym in synonyms:
        term = Term(kind, cjk=synonym) if CJK_RUN.fullmatch(synonym) else Term(kind, words=_words(synonym))
        if term.words or term.cjk:
            generic.add(term)
            terms.append(term)
    for term, codes in product_terms.items():
        # A name shared by several products, or one that is just a kind's name, names the kind, not a product.
        if len(codes) == 1 and term not in generic:
            terms.append(Term(term.kind, term.words, term.cjk, next(iter(codes))))
    models = {serial_key(code): code for code, _name, _category in catalogue if len(serial_key(code)) >= 3}
    ordered = tuple(sorted(set(terms), key=lambda term: (-term.size, term.kind, term.words, term.cjk)))
    spelled: dict[str, list[tuple[int, Term]]] = {}
    typo_prone: dict[tuple[str, int], list[tuple[int, Term]]] = {}
    for rank, term in enumerate(ordered):
        if term.cjk:
            continue
        joined = "".join(term.words)
        spelled.setdefault(joined, []).append((rank, term))
        if len(joined) >= _MIN_FUZZY_WORD:
            typo_prone.setdefault((joined[0], len(term.words)), []).append((rank, term))
    return Vocabulary(
        terms=ordered,
        models=models,
        kinds=kinds,
        phrases=tuple((rank, term) for rank, term in enumerate(ordered) if term.cjk),
        spelled={joined: tuple(ranked) for joined, ranked in spelled.items()},
        typo_prone={key: tuple(ranked) for key, ranked in typo_prone.items()},
        most_words=max((len(term.words) for term in ordered), default=0),
    )


async def vocabulary(asker: Asker) -> Vocabulary:
    """The vocabulary of the current catalogue (the catalogue is public; the parsing is cached)."""
    products: list[ProductOut] = await asker.core.installed.products(asker.actor)
    return build_vocabulary(tuple((item.code, item.name, item.category) for item in products))


def _fuzzy_equal(typed: str, known: str) -> bool:
    """One slip in a long enough word ('dishwsher', 'fridg', 'frdige'), never a real word that differs."""
    if typed == known:
        return True
    if len(known) < _MIN_FUZZY_WORD or typed in _NOT_TYPOS or typed[:1] != known[:1]:
        return False
    return OSA.distance(typed, known) <= (1 if len(known) < 9 else 2)


def find_terms(vocab: Vocabulary, text: str, used: Sequence[tuple[int, int]] = ()) -> list[_Said]:
    """The kinds and product names a text mentions, longest first, each stretch of text used once."""
    taken = list(used)
    found: list[_Said] = []
    for _rank, term in vocab.phrases:
        start = text.find(term.cjk)
        while start >= 0:
            span = (start, start + len(term.cjk))
            if not _overlaps(span, taken):
                taken.append(span)
                found.append(_Said(term, term.cjk, span))
            start = text.find(term.cjk, start + 1)
    words = [
        (match.group(0).lower(), match.span())
        for match in _WORD.finditer(text)
        if match.group(0).isalpha() and not _overlaps(match.span(), taken)
    ]
    # Every run of words that spells a term ("dish washer" for "dishwasher", a plural, one more or one
    # fewer word than the term) or is one slip from it; then the longest terms take their words first.
    candidates: set[tuple[int, int, int, Term]] = set()
    for window in range(1, min(vocab.most_words + 1, len(words)) + 1):
        for index in range(len(words) - window + 1):
            typed = "".join(word for word, _span in words[index : index + window])
            singular = typed[:-1] if typed.endswith("s") and len(typed) > 3 else typed
            for spelling in {typed, singular}:
                for rank, term in vocab.spelled.get(spelling, ()):
                    if window in (len(term.words), len(term.words) + 1, len(term.words) - 1):
                        candidates.add((rank, window, index, term))
            for rank, term in vocab.typo_prone.get((typed[:1], window), ()):
                if _fuzzy_equal(typed, "".join(term.words)):
                    candidates.add((rank, window, index, term))
    for _rank, window, index, term in sorted(candidates, key=lambda candidate: candidate[:3]):
        span = (words[index][1][0], words[index + window - 1][1][1])
        if not _overlaps(span, taken):
            taken.append(span)
            found.append(_Said(term, text[span[0] : span[1]], span))
    return sorted(found, key=lambda said: said.span)


# --- the installed base --------------------------------------------------------------------------


async def installed_units(
    asker: Asker, text: str, *, said_serial: str | None = None, context_serial: str | None = None
) -> Grounded[InstalledProductOut]:
    """The asker's unit(s) a message means by serial, model, name or kind; else the remembered one."""
    # Staff look serials up in the whole base (core decides who sees what) and own no kinds of appliance.
    vocab = await vocabulary(asker)
    if not asker.actor.is_customer:
        return await _staff_unit(asker, _plain(text), said_serial, context_serial, vocab)
    grounded = ground_units(
        await asker.core.installed.own_units(asker.actor), text, said_serial, context_serial, vocab
    )
    if grounded.said_now and grounded.found in (Found.NONE, Found.SUGGESTED):
        # Before a serial is called unknown or mistyped: it may be a unit beyond the list core keeps, or
        # one registered a moment ago by another process; a kind they named may be a new unit of theirs.
        if grounded.by is Mention.SERIAL:
            unit = await _get(asker, grounded.said)
            if unit is not None:
                return Grounded(Found.ONE, (unit,), grounded.said, Mention.SERIAL)
        else:
            fresh = await asker.core.installed.own_units(asker.actor, fresh=True)
            grounded = ground_units(fresh, text, said_serial, context_serial, vocab)
    return grounded


def ground_units(
    units: Sequence[InstalledProductOut],
    text: str,
    said_serial: str | None,
    context_serial: str | None,
    vocab: Vocabulary,
) -> Grounded[InstalledProductOut]:
    """Ground a message in a known list of units (a customer's own base): the rules, without the look-ups."""
    text = _plain(text)
    by_key = {serial_key(unit.serial_number): unit for unit in units}
    compact = _Compact.of(text)
    used: list[tuple[int, int]] = []
    exact: list[InstalledProductOut] = []
    said: list[str] = []
    for key, unit in by_key.items():
        spans = compact.spans(key) if len(key) >= MIN_SERIAL_KEY else []
        if spans or (said_serial and serial_key(said_serial) == key):
            exact.append(unit)
            said.extend(text[start:end] for start, end in spans[:1])
            used.extend(spans)
    if exact:
        return Grounded.counted(exact, said[0] if said else str(said_serial), Mention.SERIAL)

    models: dict[str, str] = {}
    for key, code in vocab.models.items():
        for start, end in compact.spans(key):
            models.setdefault(code, text[start:end])
            used.append((start, end))
    if said_serial and serial_key(said_serial) in vocab.models:
        models.setdefault(vocab.models[serial_key(said_serial)], said_serial)

    candidates = _serial_candidates(text, said_serial, used, vocab)
    for candidate in candidates:
        near = _near(serial_key(candidate), by_key)
        if near:
            return Grounded(Found.SUGGESTED, tuple(near), candidate, Mention.SERIAL)
    if candidates:
        return Grounded(Found.NONE, (), candidates[0], Mention.SERIAL)

    if models:
        of_model = [unit for unit in units if unit.product_code in models]
        return _narrowed(of_model, " ".join(models.values()), Mention.MODEL, context_serial)

    terms = find_terms(vocab, text, used)
    if terms:
        products = {said_term.term.product for said_term in terms if said_term.term.product}
        kinds = {said_term.term.kind for said_term in terms}
        named = [unit for unit in units if unit.product_code in products]
        of_kind = [unit for unit in units if vocab.kind_of(unit.product_code) in kinds]
        words = " ".join(dict.fromkeys(said_term.text for said_term in terms))
        return _narrowed(named or of_kind, words, Mention.NAME if named else Mention.KIND, context_serial)

    remembered = by_key.get(serial_key(context_serial)) if context_serial else None
    if remembered is not None:
        return Grounded(Found.ONE, (remembered,), context_serial or "", Mention.CONTEXT)
    return Grounded(Found.UNSAID)


def _narrowed(
    matches: list[InstalledProductOut], said: str, by: Mention, context_serial: str | None
) -> Grounded[InstalledProductOut]:
    """Several that fit what was said, one of them the unit just talked about: that one is meant."""
    if len(matches) > 1 and context_serial:
        key = serial_key(context_serial)
        remembered = [unit for unit in matches if serial_key(unit.serial_number) == key]
        if remembered:
            return Grounded(Found.ONE, (remembered[0],), said, by)
    return Grounded.counted(matches, said, by)


def _serial_candidates(
    text: str, said_serial: str | None, used: Sequence[tuple[int, int]], vocab: Vocabulary
) -> list[str]:
    """Words of the message that look like a serial number (the NLU's first), models and ids aside."""
    found: list[str] = []
    if said_serial and serial_key(said_serial) not in vocab.models:
        found.append(said_serial.strip())
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if _overlaps(match.span(), used) or serial_key(token) in vocab.models or not _serial_shaped(token):
            continue
        if serial_key(token) not in {serial_key(item) for item in found}:
            found.append(token)
    return found


def _near(key: str, by_key: dict[str, InstalledProductOut]) -> list[InstalledProductOut]:
    """The asker's serials one slip away from `key` (two in long ones), closest first."""
    if len(key) < MIN_SERIAL_KEY + 1:
        return []
    scored = [(OSA.distance(key, known), unit) for known, unit in by_key.items()]
    close = [(distance, unit) for distance, unit in scored if 0 < distance <= _typo_allowance(key)]
    if not close:
        return []
    best = min(distance for distance, _unit in close)
    return [unit for distance, unit in close if distance == best]


async def _staff_unit(
    asker: Asker, text: str, said_serial: str | None, context_serial: str | None, vocab: Vocabulary
) -> Grounded[InstalledProductOut]:
    """Staff may look up any serial: each serial-shaped word is tried as typed."""
    candidates = _serial_candidates(text, said_serial, (), vocab)
    for candidate in candidates:
        unit = await _get(asker, candidate)
        if unit is not None:
            return Grounded(Found.ONE, (unit,), candidate, Mention.SERIAL)
    if candidates:
        return Grounded(Found.NONE, (), candidates[0], Mention.SERIAL)
    if context_serial:
        unit = await _get(asker, context_serial)
        if unit is not None:
            return Grounded(Found.ONE, (unit,), context_serial, Mention.CONTEXT)
    return Grounded(Found.UNSAID)


async def _get(asker: Asker, serial: str) -> InstalledProductOut | None:
    try:
        return await asker.core.installed.get(asker.actor, serial)
    except (NotFound, ValidationFailed):
        return None
