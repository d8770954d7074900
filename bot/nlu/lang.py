"""Language of a message: "zh" when CJK ideographs make up a meaningful share of it, else "en"."""

from __future__ import annotations

import re
from typing import Literal

Lang = Literal["en", "zh"]

# CJK Unified Ideographs, extension A, compatibility ideographs, and the supplementary-plane extensions.
CJK_RE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
# One stretch of ideographs, allowing the blanks and middle dots inside a name ("王 芳", "仁济医院·东院").
CJK_RUN_RE = re.compile(
    "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
    "(?:[\\s·]*[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f])*"
)
# Characters that make a run of ideographs a sentence rather than a name ("Oliver Smith的电话是多少").
CHINESE_GRAMMAR_RE = re.compile("[的是吗了么呢吧我你请把给想怎啥哪谁几多]")
# Latin words of two letters or more (a lone "a"/"I" says little about the language).
LATIN_WORD_RE = re.compile(r"[A-Za-z\u00c0-\u024f]{2,}")
# Tokens like WM2023-00917, SR-12 or P-100 are identifiers, not English.
IDENTIFIER_RE = re.compile(r"[A-Za-z]+[-_]?\d[\w-]*")
SCAN_LIMIT = 2000


def detect_lang(text: str, default: Lang = "en") -> Lang:
    """ "zh" when ideographs outnumber Latin words by half again (a Chinese name inside an English
    sentence stays "en"); `default` when the text has neither."""
    sample = text[:SCAN_LIMIT]
    cjk = len(CJK_RE.findall(sample))
    if not cjk:
        return "en" if LATIN_WORD_RE.search(sample) else default
    words = len(LATIN_WORD_RE.findall(IDENTIFIER_RE.sub(" ", sample)))
    return "zh" if cjk * 2 >= words * 3 else "en"


def reply_lang(text: str, default: Lang = "en") -> Lang:
    """The language to answer a message in: `detect_lang`, except that one run of ideographs among two
    English words or more is a name however long it is ("show me 仁济医院" is English), unless its words are
    Chinese grammar ("Oliver Smith的电话是多少" is Chinese around an English name).

    Kept apart from `detect_lang`, which the NLU also uses to group its training data by language.
    """
    sample = text[:SCAN_LIMIT]
    runs = CJK_RUN_RE.findall(sample)
    words = len(LATIN_WORD_RE.findall(IDENTIFIER_RE.sub(" ", sample)))
    if words >= 2 and len(runs) == 1 and not CHINESE_GRAMMAR_RE.search(runs[0]):
        return "en"
    return detect_lang(text, default)
