"""Rule-based entity extraction (EN + ZH) with offsets into the original text and normalised values.

Serial numbers, SR-/RO- ids, amounts, ratings, deal stages, dates and times (resolved against
`ParseContext.now` in `ParseContext.timezone`), emails, phones and part codes come from rules;
customer and product names only from `ParseContext.known`, matched with rapidfuzz.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from calendar import monthrange
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rapidfuzz import fuzz, process, utils

from bot.nlu.types import Entity, ParseContext

logger = logging.getLogger("crmbot.nlu")

EXTRACTOR = "crmbot"
FUZZY_EXTRACTOR = "crmbot.fuzzy"
LEXICON_EXTRACTOR = "crmbot.lexicon"
# Entities resolved by the rules below; training-data synonyms/lookups never override them.
RULE_ENTITIES = frozenset(
    {
        "serial_number",
        "ticket_id",
        "job_id",
        "customer",
        "product",
        "amount",
        "rating",
        "date",
        "time",
        "email",
        "phone",
        "part",
    }
)
STAGES = ("qualification", "needs_analysis", "proposal", "negotiation", "closed_won", "closed_lost")

# Which entity wins when two candidates overlap (then the longer one, then the earlier one).
PRIORITY: dict[str, int] = {
    "email": 100,
    "phone": 90,
    "ticket_id": 86,
    "job_id": 85,
    "serial_keyword": 84,
    "part": 82,
    "serial_number": 80,
    "time": 72,
    "date": 70,
    "amount": 60,
    "rating": 56,
    "stage": 50,
    "customer": 40,
    "product": 40,
    "phone_cue": 75,
}
NAME_PRIORITY = 40  # customer / product / part names from ParseContext.known
LEXICON_PRIORITY = 30

# Identifiers never start or end inside a run of ASCII letters/digits (Chinese characters may touch them).
L = r"(?<![A-Za-z0-9])"
R = r"(?![A-Za-z0-9])"
CN_DIGIT = "零〇一二两三四五六七八九"
CN_NUM = f"[{CN_DIGIT}十百千]+"
CN_SMALL = f"[{CN_DIGIT}十]{{1,3}}"
NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"


@dataclass(frozen=True, slots=True)
class _Candidate:
    entity: str
    value: str
    start: int
    end: int
    priority: int
    confidence: float = 1.0
    extractor: str = EXTRACTOR


# --- text normalisation with an offset map ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Text:
    """NFKC-normalised text (full-width → half-width) and, per normalised char, its original index."""

    original: str
    text: str
    index: tuple[int, ...] | None  # None: identical to the original

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Map a normalised [start, end) back into the original text."""
        if self.index is None:
            return start, end
        if start >= len(self.index):
            return len(self.original), len(self.original)
        return self.index[start], (self.index[end - 1] + 1 if end > start else self.index[start])


def _normalise(text: str) -> _Text:
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return _Text(text, text, None)
    pieces: list[str] = []
    index: list[int] = []
    for position, char in enumerate(text):
        normal = unicodedata.normalize("NFKC", char) if not char.isascii() else char
        pieces.append(normal)
        index.extend([position] * len(normal))
    return _Text(text, "".join(pieces), tuple(index))


# --- numbers ---------------------------------------------------------------------------------------

_CN_VALUES = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}
EN_NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "couple of": 2,
    "few": 3,
}
EN_NUMBER_RE = (
    r"(?:\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|a couple of|a few)"
)


def cn_number(text: str) -> int | None:
    """Chinese or Arabic numerals to an int: 十二 → 12, 两 → 2, 一百零五 → 105, 三千五 → 3500, 2万 → 20000."""
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        return int(text)
    if all(char in _CN_VALUES for char in text) and len(text) > 1:
        return int("".join(str(_CN_VALUES[char]) for char in text))  # 二〇二六 → 2026
    total = 0
    section = 0
    digit: int | None = None
    last_unit = 1
    after_zero = False
    for char in text:
        if char in _CN_VALUES:
            digit = _CN_VALUES[char]
            after_zero = after_zero or char in "零〇"
        elif char.isdigit():
            digit = (digit or 0) * 10 + int(char) if digit is not None and digit >= 0 else int(char)
        elif char in _CN_UNITS:
            unit = _CN_UNITS[char]
            if unit >= 10_000:
                section = (section + (digit or 0)) * unit
                total += section
                section = 0
            else:
                section += (1 if digit is None else digit) * unit
            last_unit = unit
            digit = None
            after_zero = False
        else:
            return None
    if digit is not None:
        # 三千五 means 3500: a trailing digit takes the unit below the last one.
        # (after 零 it is a plain unit digit: 一百零五 is 105)
        lower = last_unit // 10 if 100 <= last_unit < 10_000 and not after_zero else 1
        section += digit * lower
    return total + section


def _en_number(word: str) -> int | None:
    word = " ".join(word.lower().split())
    if word.isdigit():
        return int(word)
    if word.startswith("a couple"):
        return 2
    if word.startswith("a few"):
        return 3
    return EN_NUMBERS.get(word)


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


# --- identifiers, contacts -------------------------------------------------------------------------

EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*"
    r"\.[A-Za-z]{2,}(?![A-Za-z0-9-])"
)
PHONE_CN_RE = re.compile(r"(?<![\d+])(?:(?:\+|00)86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2}(?!\d)")
PHONE_INTL_RE = re.compile(r"(?<![A-Za-z0-9+])\+\d{1,3}(?:[\s-]?\(?\d{1,5}\)?){1,5}(?![\d])")
PHONE_LANDLINE_RE = re.compile(r"(?<![\d-])\(?0\d{2,3}\)?[\s-]\d{3,4}[\s-]?\d{4}(?![\d-])")
# Any run of 7-15 digits right after a phone word ("call me at 555-0134", "电话 88881234").
PHONE_CUE_RE = re.compile(
    r"(?:\b(?:call|phone|tel|telephone|mobile|cell|ring|reach|number|whatsapp)\b|电话|手机|号码|联系方式|致电)"
    r"[^\d+]{0,12}?(?P<phone>\+?\d[\d\s()-]{5,20}\d)(?![\d])",
    re.IGNORECASE,
)

TICKET_RE = re.compile(rf"{L}SR[\s-]?#?\s?(\d{{1,9}}){R}", re.IGNORECASE)
TICKET_WORD_RE = re.compile(
    r"\b(?:service request|repair request|support ticket|ticket|request|case|complaint)\s*"
    r"(?:no\.?|number|num|id)?\s*[#:]?\s*(\d{1,9})(?!\d|[.,:/]\d)",
    re.IGNORECASE,
)
TICKET_ZH_RE = re.compile(
    rf"(?<![\d])(\d{{1,9}}|{CN_NUM})\s*号\s*(?:工单|报修单?|服务单|投诉单?|服务请求)"
    rf"|(?:工单|报修单|服务单|投诉单|服务请求)\s*(?:号码|编号|号)?\s*[:：#]?\s*(?:SR[\s-]?)?(\d{{1,9}})(?!\d)",
    re.IGNORECASE,
)
JOB_RE = re.compile(rf"{L}RO[\s-]?#?\s?(\d{{1,9}}){R}", re.IGNORECASE)
JOB_WORD_RE = re.compile(
    r"\b(?:repair order|work order|job order|job)\s*(?:no\.?|number|num|id)?\s*[#:]?\s*"
    r"(\d{1,9})(?!\d|[.,:/]\d)",
    re.IGNORECASE,
)
JOB_ZH_RE = re.compile(
    rf"(?<![\d])(\d{{1,9}}|{CN_NUM})\s*号\s*(?:维修单|派工单|任务单?|工作单|单)"
    rf"|(?:维修单|派工单|任务单|任务|工作单)\s*(?:号码|编号|号)?\s*[:：#]?\s*(?:RO[\s-]?)?(\d{{1,9}})(?!\d)",
    re.IGNORECASE,
)
HASH_NUMBER_RE = re.compile(r"(?<![\w#])#\s?(\d{1,9})(?![\d])")
TICKET_CONTEXT_RE = re.compile(
    r"ticket|request|case|complaint|status|\bsr\b|工单|报修|投诉|服务单|进度", re.IGNORECASE
)
JOB_CONTEXT_RE = re.compile(r"\bjobs?\b|repair order|work order|\bro\b|维修单|派工|任务", re.IGNORECASE)

SERIAL_RE = re.compile(
    r"(?<![A-Za-z0-9-])([A-Za-z]{1,4})(\d{2,})([A-Za-z]{0,2})((?:-[A-Za-z0-9]{2,})*)(?![A-Za-z0-9-])"
)
# HX-3300412, DW-2019-4410 (a dash after the letters: 6 digits or more, so product codes like
# WM-2023 and parts like P-100 are not serials) and 2301WM0045 (digits first).
SERIAL_DASH_RE = re.compile(r"(?<![A-Za-z0-9-])[A-Za-z]{1,4}-\d{2,}(?:-[A-Za-z0-9]{2,})*(?![A-Za-z0-9-])")
SERIAL_DIGITS_FIRST_RE = re.compile(
    r"(?<![A-Za-z0-9-])\d{2,6}[A-Za-z]{1,4}\d{2,}(?:-[A-Za-z0-9]{2,})*(?![A-Za-z0-9-])"
)
SERIAL_KEYWORD_RE = re.compile(
    r"(?:serial(?:\s+(?:number|no\.?|#))?|s/n|\bsn|序列号|机身号|机器号|条码)\s*(?:is|:|：|#|为|是)?\s*"
    r"([A-Za-z0-9][A-Za-z0-9-]{3,30})(?![A-Za-z0-9-])",
    re.IGNORECASE,
)
NOT_SERIAL_PREFIXES = frozenset({"SR", "RO", "OP"})
PART_RE = re.compile(r"(?<![A-Za-z0-9-])P-?(\d{2,6})(?![A-Za-z0-9-])", re.IGNORECASE)
PART_KEYWORD_RE = re.compile(
    r"(?:\bparts?(?:\s+(?:number|no\.?|code))?|配件|零件|备件|部件)\s*[:：#]?\s*([A-Za-z]{1,4}-?\d{2,6})(?![A-Za-z0-9-])",
    re.IGNORECASE,
)

# --- amounts ---------------------------------------------------------------------------------------

_CURRENCY_PREFIX = r"(?:US\$|HK\$|\$|¥|€|£|rmb|cny|usd|eur)"
_CURRENCY_SUFFIX = r"(?:dollars?|bucks|usd|rmb|cny|yuan|euros?|eur|元|块钱|块|人民币|美元|美金|欧元)"
_MULTIPLIERS = {
    "k": 1_000,
    "thousand": 1_000,
    "grand": 1_000,
    "m": 1_000_000,
    "mn": 1_000_000,
    "million": 1_000_000,
    "bn": 1_000_000_000,
    "billion": 1_000_000_000,
    "千": 1_000,
    "万": 10_000,
    "百万": 1_000_000,
    "千万": 10_000_000,
    "w": 10_000,
    "亿": 100_000_000,
}
_NUM_START = r"(?<![A-Za-z0-9.-])(?<!\d,)"  # not inside a word or another number (a CJK comma is fine)
_EN_MULTIPLIER = r"(?:k|thousand|grand|mn|m|million|bn|billion)(?![A-Za-z])"
_ZH_MULTIPLIER = r"(?:百万|千万|万|千|亿)"
AMOUNT_RES: tuple[re.Pattern[str], ...] = (
    re.compile(
        rf"(?<![A-Za-z0-9])(?P<cur>{_CURRENCY_PREFIX})\s?(?P<num>{NUM})"
        rf"(?:\s?(?P<mul>{_EN_MULTIPLIER}|{_ZH_MULTIPLIER}))?(?![\d])",
        re.IGNORECASE,
    ),
    re.compile(
        rf"{_NUM_START}(?P<num>{NUM})\s?(?P<mul>{_EN_MULTIPLIER})(?:\s?(?P<cur>{_CURRENCY_SUFFIX}))?",
        re.IGNORECASE,
    ),
    re.compile(
        rf"{_NUM_START}(?P<num>{NUM})\s?(?P<mul>{_ZH_MULTIPLIER})(?P<tail>\d(?![\d.,]))?"
        rf"(?:\s?(?P<cur>{_CURRENCY_SUFFIX}))?",
        re.IGNORECASE,
    ),
    re.compile(
        rf"(?P<num>{CN_NUM})(?P<mul>万|亿)(?P<tail>[一二两三四五六七八九](?![千百十万亿]))?(?P<cur>{_CURRENCY_SUFFIX})?"
        rf"|(?P<num2>{CN_NUM})(?P<cur2>元|块钱|人民币|美元)",
    ),
    re.compile(rf"{_NUM_START}(?P<num>{NUM})\s?(?P<cur>{_CURRENCY_SUFFIX})(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"(?<![A-Za-z0-9.,\-/:])(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?)(?!\d|,\d|\.\d)"),
    # "10w" is Chinese chat shorthand for 十万 (checked for Chinese context below)
    re.compile(rf"{_NUM_START}(?P<num>{NUM})\s?(?P<mul>w)(?![A-Za-z0-9])", re.IGNORECASE),
    re.compile(
        r"(?:\b(?:amount|value|worth|budget|deal size|price|valued at|charged?|fee|cost)\s*"
        r"(?:of|is|was|to|at|:)?\s*(?:about|around|approximately)?"
        r"|(?:金额|报价|价格|预算|总价|总额|合同额|成交额|收费|费用|收了|花了)[^\d\s]{0,4}?)\s*"
        r"(?P<num>\d+(?:\.\d{1,2})?)(?!\d|[.,]\d|%|\s*(?:min|hour|day|分钟|小时|天|号|点))",
        re.IGNORECASE,
    ),
)

# --- ratings ---------------------------------------------------------------------------------------

_RATING_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
}
RATING_RES: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?<![\d/.,])(?P<n>\d)\s?/\s?5(?![\d/.,])"),
    re.compile(
        r"\b(?P<n>\d|one|two|three|four|five)\s*(?:out of|of|outta)\s*(?:5|five)(?:\s+stars?)?(?![\d])",
        re.IGNORECASE,
    ),
    re.compile(r"(?<![\d.,])\b(?P<n>\d|one|two|three|four|five)[\s-]?stars?\b", re.IGNORECASE),
    re.compile(
        r"\b(?:rate|rating|score|give)\s*(?:it|you|them|him|her|us|the service|the technician|this)?\s*"
        r"(?:a|an)?\s*[:=]?\s*(?P<n>\d)(?!\d|[.,/:]\d|%|\s*(?:stars?|out|of|pm|am|k\b|days?|hours?|mins?))",
        re.IGNORECASE,
    ),
    re.compile(r"(?<![\d点點.])(?P<n>\d|[一二两三四五])\s?(?:颗)?星(?!期)"),
    re.compile(r"(?<![\d点點.十百千万零〇])(?P<n>\d|[一二两三四五])\s?分(?![钟鐘之析类别配享开散手店公])"),
    re.compile(r"(?P<n>满分)(?!\s*(?:\d|[一二三四五六七八九十]))"),
    re.compile("(?<![★⭐])(?P<n>[★⭐](?:\ufe0f?[★⭐]){0,4})\ufe0f?☆*(?![★⭐])"),
)

# Survey answers and short verdicts: "4", "awesome, 5", "2, the engineer was late", "my score is 3".
RATING_ALONE_RE = re.compile(r"^\W*(?P<n>[1-5]|one|two|three|four|five)\W*$", re.IGNORECASE)
RATING_TAIL_RE = re.compile(r"(?:^|[\s,:;!.])(?P<n>[1-5]|one|two|three|four|five)[\s.!]*$", re.IGNORECASE)
RATING_HEAD_RE = re.compile(r"^\s*(?P<n>[1-5])\s*[,:;]\s")
RATING_CUE_RE = re.compile(
    r"(?:\b(?:rate|rating|rated|score|scored|give|say|feedback|survey|stars?)\b|评分|打分|满意度|评价|打|给)"
    r"[^\d]{0,25}?(?<![A-Za-z0-9-])(?P<n>[1-5])(?![A-Za-z0-9.,/:%\u4e00-\u9fff-]|[.,]\d)",
    re.IGNORECASE,
)
_RATING_CUE_WORDS = re.compile(r"rate|rating|score|feedback|survey|stars?|评分|打分|满意|评价", re.IGNORECASE)
SHORT_MESSAGE_WORDS = 8

# --- stages ----------------------------------------------------------------------------------------

STAGE_TERMS: dict[str, str] = {
    "qualification": "qualification",
    "qualifying": "qualification",
    "qualified": "qualification",
    "qualify": "qualification",
    "lead qualification": "qualification",
    "prospecting": "qualification",
    "needs analysis": "needs_analysis",
    "need analysis": "needs_analysis",
    "needs assessment": "needs_analysis",
    "needs_analysis": "needs_analysis",
    "needs-analysis": "needs_analysis",
    "discovery": "needs_analysis",
    "requirements analysis": "needs_analysis",
    "proposal": "proposal",
    "proposal stage": "proposal",
    "quote stage": "proposal",
    "quotation stage": "proposal",
    "quoting": "proposal",
    "negotiation": "negotiation",
    "negotiations": "negotiation",
    "negotiating": "negotiation",
    "negotiate": "negotiation",
    "closed won": "closed_won",
    "closed-won": "closed_won",
    "closed_won": "closed_won",
    "close won": "closed_won",
    "won": "closed_won",
    "win": "closed_won",
    "closed lost": "closed_lost",
    "closed-lost": "closed_lost",
    "closed_lost": "closed_lost",
    "close lost": "closed_lost",
    "lost": "closed_lost",
    "资格审查": "qualification",
    "资格确认": "qualification",
    "线索确认": "qualification",
    "初步接洽": "qualification",
    "初步沟通": "qualification",
    "商机确认": "qualification",
    "资格认定": "qualification",
    "初期": "qualification",
    "需求分析": "needs_analysis",
    # Confirming there is a need comes before analysing it ("需求确认完了，进入需求分析").
    "需求确认": "qualification",
    "初步接触": "qualification",
    "需求调研": "needs_analysis",
    "需求阶段": "needs_analysis",
    "方案": "proposal",
    "方案阶段": "proposal",
    "提案": "proposal",
    "报价阶段": "proposal",
    "报价": "proposal",
    "方案报价": "proposal",
    "谈判": "negotiation",
    "商务谈判": "negotiation",
    "议价": "negotiation",
    "洽谈": "negotiation",
    "谈判阶段": "negotiation",
    "赢单": "closed_won",
    "签了": "closed_won",
    "签合同": "closed_won",
    "输给": "closed_lost",
    "没戏了": "closed_lost",
    "成交": "closed_won",
    "签约": "closed_won",
    "签单": "closed_won",
    "已成交": "closed_won",
    "拿下": "closed_won",
    "赢了": "closed_won",
    "输单": "closed_lost",
    "丢单": "closed_lost",
    "丢了": "closed_lost",
    "输了": "closed_lost",
    "失单": "closed_lost",
    "黄了": "closed_lost",
}

# --- dates and times -------------------------------------------------------------------------------

WEEKDAYS = {
    "monday": 0,
    "mon": 0,
    "tuesday": 1,
    "tue": 1,
    "tues": 1,
    "wednesday": 2,
    "wed": 2,
    "thursday": 3,
    "thu": 3,
    "thur": 3,
    "thurs": 3,
    "friday": 4,
    "fri": 4,
    "saturday": 5,
    "sat": 5,
    "sunday": 6,
    "sun": 6,
}
ZH_WEEKDAYS = {
    "一": 0,
    "二": 1,
    "三": 2,
    "四": 3,
    "五": 4,
    "六": 5,
    "日": 6,
    "天": 6,
    "末": 5,
    "1": 0,
    "2": 1,
    "3": 2,
    "4": 3,
    "5": 4,
    "6": 5,
    "7": 6,
}
MONTHS = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "may": 5,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
}
_MONTH_RE = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?"
    r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
# Month names as the date rules read them, for other readers of months (periods in the chat).
MONTH_NAME_RE = _MONTH_RE
_FULL_WEEKDAY = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_SAFE_SHORT_WEEKDAYS = frozenset({"tue", "tues", "thu", "thur", "thurs", "fri"})  # not English words
_FULL_WEEKDAYS = frozenset({"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"})
_SHORT_WEEKDAY = r"(?:mon|tues?|wed|thu(?:rs?)?|fri|sat|sun)"
# Part of day → default hour, and whether a clock hour under 12 is afternoon/evening.
PARTS: dict[str, tuple[int, bool]] = {
    "morning": (9, False),
    "afternoon": (14, True),
    "evening": (18, True),
    "night": (20, True),
    "tonight": (20, True),
    "noon": (12, False),
    "midday": (12, False),
    "lunchtime": (12, False),
    "早上": (8, False),
    "早晨": (8, False),
    "清晨": (7, False),
    "上午": (9, False),
    "中午": (12, False),
    "下午": (14, True),
    "傍晚": (18, True),
    "晚上": (19, True),
    "夜里": (21, True),
    "晚": (19, True),
    "早": (8, False),
    "凌晨": (1, False),
}


@dataclass(frozen=True, slots=True)
class _When:
    """A piece of a date/time expression; adjacent pieces merge (明天 + 下午 + 3点)."""

    start: int
    end: int
    day: date | None = None
    part: str | None = None
    clock: tuple[int, int] | None = None
    clock_has_meridiem: bool = False
    weak: bool = False  # only counts when merged with another piece ("at 3", "两点")
    # A weekday named alone ("Friday", "周五"): said on that day after the hour it names, it is next week's.
    bare_weekday: bool = False


_DateRule = Callable[[re.Match[str], datetime], _When | None]


def _next_weekday(today: date, weekday: int, *, strictly_after: bool = False) -> date:
    days = (weekday - today.weekday()) % 7
    if days == 0 and strictly_after:
        days = 7
    return today + timedelta(days=days)


def _week_start(today: date) -> date:
    return today - timedelta(days=today.weekday())


def _add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, monthrange(year, month)[1]))


def _end_of_month(day: date) -> date:
    return date(day.year, day.month, monthrange(day.year, day.month)[1])


def _future_day_of_month(today: date, day: int) -> date | None:
    for months in (0, 1, 2):
        candidate = _add_months(date(today.year, today.month, 1), months)
        if day <= monthrange(candidate.year, candidate.month)[1]:
            resolved = date(candidate.year, candidate.month, day)
            if resolved >= today:
                return resolved
    return None


def _month_day(today: date, month: int, day: int, year: int | None) -> date | None:
    try:
        if year is not None:
            return date(year, month, day)
        resolved = date(today.year, month, day)
        return resolved if resolved >= today else date(today.year + 1, month, day)
    except ValueError:
        return None


def _span(match: re.Match[str], group: int | str = 0) -> tuple[int, int]:
    return match.start(group), match.end(group)


def _group(match: re.Match[str], name: str) -> str | None:
    """A named group, or its `name2` twin from the other branch of an alternation."""
    value = match.group(name)
    if value is None and f"{name}2" in match.re.groupindex:
        value = match.group(f"{name}2")
    return value


def _en_relative_day(match: re.Match[str], now: datetime) -> _When | None:
    word = " ".join(match.group(0).lower().split())
    today = now.date()
    offsets = {
        "today": 0,
        "tonight": 0,
        "tomorrow": 1,
        "tmr": 1,
        "tmrw": 1,
        "tmw": 1,
        "yesterday": -1,
        "day after tomorrow": 2,
        "the day after tomorrow": 2,
        "day before yesterday": -2,
        "the day before yesterday": -2,
    }
    if word not in offsets:
        return None
    return _When(
        *_span(match),
        day=today + timedelta(days=offsets[word]),
        part="tonight" if word == "tonight" else None,
    )


def _en_weekday(match: re.Match[str], now: datetime) -> _When | None:
    today = now.date()
    modifier = (match.group("mod") or "").lower().split()
    day_word = match.group("day").lower().rstrip(".")
    # "sat", "sun", "wed" are words too: only with "on/by/next…" in front
    if (
        day_word not in _FULL_WEEKDAYS
        and day_word not in _SAFE_SHORT_WEEKDAYS
        and not modifier
        and not re.search(
            r"\b(?:on|by|before|until|till|from)\s+$", match.string[: match.start()], re.IGNORECASE
        )
    ):
        return None
    weekday = WEEKDAYS[day_word]
    after = (match.group("after") or "").lower().split()
    if "last" in modifier:
        days = (today.weekday() - weekday) % 7 or 7
        return _When(*_span(match, "expr"), day=today - timedelta(days=days))
    if after[-2:] == ["next", "week"] or modifier[-2:] == ["week", "next"]:
        return _When(*_span(match, "expr"), day=_week_start(today) + timedelta(days=7 + weekday))
    if modifier and modifier[-1] in ("next", "nxt"):
        return _When(*_span(match, "expr"), day=_next_weekday(today, weekday, strictly_after=True))
    return _When(*_span(match, "expr"), day=_next_weekday(today, weekday), bare_weekday=True)


def _en_period(match: re.Match[str], now: datetime) -> _When | None:
    today = now.date()
    words = " ".join(match.group(0).lower().split())
    words = words.replace("the ", "").replace("this ", "").replace("nxt", "next").replace(" wk", " week")
    if words in ("next quarter",):
        first_month = ((today.month - 1) // 3) * 3 + 1
        return _When(*_span(match), day=_add_months(date(today.year, first_month, 1), 3))
    if words in ("next week",):
        return _When(*_span(match), day=_week_start(today) + timedelta(days=7))
    if words in ("next month",):
        return _When(*_span(match), day=_add_months(date(today.year, today.month, 1), 1))
    if words in ("next year",):
        return _When(*_span(match), day=date(today.year + 1, 1, 1))
    if words in ("weekend", "next weekend"):
        saturday = _next_weekday(today, 5)
        return _When(
            *_span(match), day=saturday + timedelta(days=7) if words.startswith("next") else saturday
        )
    if words.startswith("end of") or words in ("eom", "eow", "eoy", "eod", "eoq"):
        target = {"eom": "month", "eow": "week", "eoy": "year", "eod": "day", "eoq": "quarter"}.get(
            words, words.split()[-1]
        )
        base = today
        if " next " in f" {words} ":
            base = {
                "week": today + timedelta(days=7),
                "month": _add_months(date(today.year, today.month, 1), 1),
                "quarter": _add_months(date(today.year, today.month, 1), 3),
                "year": date(today.year + 1, 1, 1),
            }.get(target, today)
        if target == "day":
            return _When(*_span(match), day=today)
        if target == "week":
            friday = _week_start(base) + timedelta(days=4)
            return _When(
                *_span(match), day=friday if friday >= today else _week_start(base) + timedelta(days=6)
            )
        if target == "month":
            return _When(*_span(match), day=_end_of_month(base))
        if target == "quarter":
            last_month = ((base.month - 1) // 3) * 3 + 3
            return _When(*_span(match), day=_end_of_month(date(base.year, last_month, 1)))
        if target == "year":
            return _When(*_span(match), day=date(base.year, 12, 31))
    return None


def _en_in_n(match: re.Match[str], now: datetime) -> _When | None:
    count = _en_number(_group(match, "n") or "")
    unit = (_group(match, "unit") or "").lower()
    if count is None or count > 366:
        return None
    if unit.startswith(("hour", "hr", "minute", "min")):
        delta = timedelta(hours=count) if unit.startswith(("hour", "hr")) else timedelta(minutes=count)
        moment = now + delta
        return _When(
            *_span(match), day=moment.date(), clock=(moment.hour, moment.minute), clock_has_meridiem=True
        )
    today = now.date()
    sign = -1 if match.groupdict().get("ago") else 1  # "3 days ago" is explicitly in the past
    if unit.startswith("day"):
        day = today + timedelta(days=sign * count)
    elif unit.startswith("week"):
        day = today + timedelta(weeks=sign * count)
    else:
        day = _add_months(today, sign * count)
    return _When(*_span(match), day=day)


def _en_month_date(match: re.Match[str], now: datetime) -> _When | None:
    """Month-name dates ("June 20", "20th of June 2026") are resolved by dateparser."""
    month_word = _group(match, "month") or ""
    if month_word in ("may", "march") and not re.search(
        r"\b(?:on|by|in|from|until|till|before|after|since)\s+$", match.string[: match.start()], re.IGNORECASE
    ):
        return None  # "you may 5…", "march 3 times": lower-case verbs, not months
    month = MONTHS[month_word[:3].lower()]
    year_text = _group(match, "year")
    year = int(year_text) if year_text else None
    # Our own arithmetic first: dateparser's "future" pushes today's date a year ahead.
    resolved = _month_day(now.date(), month, int(_group(match, "d") or 0), year)
    if resolved is None:
        resolved = _dateparser_date(match.group(0), now)
    return _When(*_span(match), day=resolved) if resolved else None


def _en_month_only(match: re.Match[str], now: datetime) -> _When | None:
    """ "in June", "by end of May", "march 2022": a month without a day needs a preposition or a year."""
    modifier = " ".join((match.group("mod") or "").lower().split()).replace("the ", "")
    year_text = match.group("year")
    if not modifier and not year_text:
        return None
    month = MONTHS[match.group("month")[:3].lower()]
    today = now.date()
    year = int(year_text) if year_text else today.year
    if not year_text and month < today.month:
        year += 1
    if modifier in ("end of", "by", "until", "till", "before", "late"):
        day = monthrange(year, month)[1]
    elif modifier == "mid":
        day = 15
    else:
        day = 1
    resolved = date(year, month, day)
    if not year_text and resolved < today:
        resolved = today  # "in June", said in June
    return _When(*_span(match), day=resolved)


def _en_day_of_month(match: re.Match[str], now: datetime) -> _When | None:
    resolved = _future_day_of_month(now.date(), int(match.group("d")))
    return _When(*_span(match), day=resolved) if resolved else None


def _numeric_date(match: re.Match[str], now: datetime) -> _When | None:
    try:
        return _When(
            *_span(match), day=date(int(match.group("y")), int(match.group("m")), int(match.group("d")))
        )
    except ValueError:
        return None


def _slash_date(match: re.Match[str], now: datetime) -> _When | None:
    resolved = _dateparser_date(match.group(0), now)
    return _When(*_span(match), day=resolved) if resolved else None


def _en_clock(match: re.Match[str], now: datetime) -> _When | None:
    hour = int(match.group("h"))
    minute = int(match.group("m") or 0)
    meridiem = (match.group("ampm") or "").lower().replace(".", "")
    if minute > 59:
        return None
    if meridiem:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if meridiem.startswith("p") else 0)
        return _When(*_span(match), clock=(hour, minute), clock_has_meridiem=True)
    if hour > 23:
        return None
    return _When(
        *_span(match), clock=(hour, minute), clock_has_meridiem=match.group("m") is not None and hour > 12
    )


def _en_at_hour(match: re.Match[str], now: datetime) -> _When | None:
    hour = int(match.group("h"))
    minute = int(match.group("m") or 0)
    if hour > 23 or minute > 59:
        return None
    return _When(*_span(match), clock=(hour, minute), weak=True)


def _en_oclock(match: re.Match[str], now: datetime) -> _When | None:
    hour = _en_number(match.group("h"))
    if hour is None or not 1 <= hour <= 12:
        return None
    return _When(*_span(match), clock=(hour, 0))


def _en_part(match: re.Match[str], now: datetime) -> _When | None:
    part = match.group("part").lower()
    if part == "midnight":
        return _When(*_span(match), clock=(0, 0), clock_has_meridiem=True)
    if part in ("noon", "midday"):
        return _When(*_span(match), clock=(12, 0), clock_has_meridiem=True)
    day = now.date() if part == "tonight" else None
    return _When(*_span(match), day=day, part=part)


def _zh_day(match: re.Match[str], now: datetime) -> _When | None:
    offsets = {
        "今天": 0,
        "今日": 0,
        "今儿": 0,
        "明天": 1,
        "明日": 1,
        "明儿": 1,
        "后天": 2,
        "後天": 2,
        "大后天": 3,
        "昨天": -1,
        "昨日": -1,
        "前天": -2,
    }
    word = match.group(0)
    return _When(*_span(match), day=now.date() + timedelta(days=offsets[word])) if word in offsets else None


def _zh_day_part(match: re.Match[str], now: datetime) -> _When | None:
    offsets = {"今": 0, "明": 1, "后": 2}
    return _When(
        *_span(match), day=now.date() + timedelta(days=offsets[match.group("d")]), part=match.group("p")
    )


def _zh_weekday(match: re.Match[str], now: datetime) -> _When | None:
    today = now.date()
    modifier = match.group("mod") or ""
    weekday = ZH_WEEKDAYS[match.group("day")]
    if modifier.startswith("下下"):
        return _When(*_span(match), day=_week_start(today) + timedelta(days=14 + weekday))
    if modifier.startswith("下"):
        return _When(*_span(match), day=_week_start(today) + timedelta(days=7 + weekday))
    if modifier.startswith("上"):
        return _When(*_span(match), day=_week_start(today) + timedelta(days=weekday - 7))
    if modifier:  # 这周五 / 本周五: this calendar week's day
        return _When(*_span(match), day=_week_start(today) + timedelta(days=weekday))
    return _When(*_span(match), day=_next_weekday(today, weekday), bare_weekday=True)


def _zh_period(match: re.Match[str], now: datetime) -> _When | None:
    today = now.date()
    word = match.group(0)
    next_ = word.startswith(("下", "明"))
    if word.endswith(("周", "星期", "礼拜")):
        weeks = 2 if word.startswith("下下") else 1
        return _When(*_span(match), day=_week_start(today) + timedelta(days=7 * weeks))
    month_start = _add_months(date(today.year, today.month, 1), 1 if next_ else 0)
    if word.endswith("月底") or word.endswith("月末"):
        return _When(*_span(match), day=_end_of_month(month_start))
    if word.endswith("月初"):
        first = month_start if next_ or month_start >= today else _add_months(month_start, 1)
        return _When(*_span(match), day=first)
    if word.endswith("月"):
        return _When(*_span(match), day=month_start) if next_ else None
    if word.endswith(("年底", "年末")):
        return _When(*_span(match), day=date(today.year + (1 if next_ else 0), 12, 31))
    if word.endswith("季度末") or word.endswith("季末"):
        last_month = ((today.month - 1) // 3) * 3 + 3
        return _When(*_span(match), day=_end_of_month(date(today.year, last_month, 1)))
    if word.endswith("季度"):  # 下季度: the day the next quarter starts
        first_month = ((today.month - 1) // 3) * 3 + 1
        return _When(*_span(match), day=_add_months(date(today.year, first_month, 1), 3))
    if word == "明年":
        return _When(*_span(match), day=date(today.year + 1, 1, 1))
    return None


def _zh_month(match: re.Match[str], now: datetime) -> _When | None:
    """9月, 9月底, 明年3月, 2027年1月: a month without a day (future unless a past year is named)."""
    month = cn_number(match.group("m"))
    if month is None or not 1 <= month <= 12:
        return None
    today = now.date()
    relative = match.group("rel")
    if match.group("y"):
        year = cn_number(match.group("y")) or today.year
    elif relative:
        year = today.year + {"去年": -1, "今年": 0, "明年": 1}[relative]
    else:
        year = today.year + (1 if month < today.month else 0)
    edge = match.group("edge") or ""
    if edge in ("底", "末"):
        day = monthrange(year, month)[1]
    elif edge == "中":
        day = 15
    else:
        day = 1
    resolved = date(year, month, day)
    if not relative and not match.group("y") and resolved < today:
        resolved = today  # "6月", said in June
    return _When(*_span(match), day=resolved)


def _zh_after(match: re.Match[str], now: datetime) -> _When | None:
    unit = match.group("unit")
    if match.group("n") == "半":  # 半小时后, 半个月后
        sign = -1 if match.group("dir").endswith("前") else 1
        if unit in ("小时", "个小时", "钟头", "个钟头"):
            moment = now + sign * timedelta(minutes=30)
            return _When(
                *_span(match), day=moment.date(), clock=(moment.hour, moment.minute), clock_has_meridiem=True
            )
        if unit in ("个月", "月"):
            return _When(*_span(match), day=now.date() + sign * timedelta(days=15))
        return None
    count = cn_number(match.group("n"))
    if count is None or count > 366:
        return None
    today = now.date()
    if match.group("dir").endswith("前"):
        count = -count  # 三天前 is explicitly in the past
    if unit in ("小时", "个小时", "钟头", "个钟头"):
        moment = now + timedelta(hours=count)
        return _When(
            *_span(match), day=moment.date(), clock=(moment.hour, moment.minute), clock_has_meridiem=True
        )
    if unit in ("天", "日"):
        return _When(*_span(match), day=today + timedelta(days=count))
    if unit in ("周", "星期", "个星期", "礼拜", "个礼拜"):
        return _When(*_span(match), day=today + timedelta(weeks=count))
    return _When(*_span(match), day=_add_months(today, count))


def _zh_full_date(match: re.Match[str], now: datetime) -> _When | None:
    month, day = cn_number(match.group("m")), cn_number(match.group("d"))
    year = cn_number(match.group("y")) if match.group("y") else None
    if month is None or day is None:
        return None
    resolved = _month_day(now.date(), month, day, year)
    return _When(*_span(match), day=resolved) if resolved else None


def _zh_day_of_month(match: re.Match[str], now: datetime) -> _When | None:
    day = cn_number(match.group("d"))
    if day is None or not 1 <= day <= 31:
        return None
    resolved = _future_day_of_month(now.date(), day)
    return _When(*_span(match), day=resolved) if resolved else None


def _zh_clock(match: re.Match[str], now: datetime) -> _When | None:
    hour = cn_number(match.group("h"))
    if hour is None or hour > 24:
        return None
    minute = 0
    extra = match.group("min")
    if extra == "半":
        minute = 30
    elif extra == "一刻":
        minute = 15
    elif extra == "三刻":
        minute = 45
    elif extra:
        value = cn_number(extra.rstrip("分"))
        if value is None or value > 59:
            return None
        minute = value
    part = match.group("part")
    weak = not match.group("h").isdigit() and not match.group("zhong") and not part and not extra
    return _When(*_span(match), part=part or None, clock=(hour % 24, minute), weak=weak)


def _colon_clock(match: re.Match[str], now: datetime) -> _When | None:
    hour, minute = int(match.group("h")), int(match.group("m"))
    if hour > 23 or minute > 59:
        return None
    return _When(
        *_span(match), part=match.group("part") or None, clock=(hour, minute), clock_has_meridiem=hour > 12
    )


def _zh_part(match: re.Match[str], now: datetime) -> _When | None:
    word = match.group(0)
    if word == "今晚":
        return _When(*_span(match), day=now.date(), part="晚上")
    return _When(*_span(match), part=word)


_ZH_PART_RE = r"早上|早晨|清晨|上午|中午|下午|傍晚|晚上|夜里|凌晨"
DATE_RULES: tuple[tuple[re.Pattern[str], _DateRule], ...] = (
    (
        re.compile(
            r"\b(?:the\s+)?day\s+(?:after\s+tomorrow|before\s+yesterday)\b|\b(?:today|tonight|tomorrow|tmrw?|tmw|yesterday)\b",
            re.IGNORECASE,
        ),
        _en_relative_day,
    ),
    (
        re.compile(
            rf"\b(?P<expr>(?:(?P<mod>next|nxt|this coming|this|coming|last)\s+)?"
            rf"(?P<day>{_FULL_WEEKDAY}|{_SHORT_WEEKDAY})"
            rf"(?P<after>\s+(?:of\s+)?next\s+week)?)\b",
            re.IGNORECASE,
        ),
        _en_weekday,
    ),
    (
        re.compile(
            r"\b(?:(?:the\s+)?end\s+of\s+(?:the\s+|this\s+|next\s+)?(?:week|month|quarter|year|day)|eo[mwyqd]"
            r"|(?:next|this|the)\s+weekend|weekend|(?:next|nxt)\s+(?:week|wk|month|quarter|year))\b",
            re.IGNORECASE,
        ),
        _en_period,
    ),
    (
        re.compile(
            rf"\bin\s+(?P<n>{EN_NUMBER_RE})\s+(?P<unit>days?|weeks?|months?|hours?|hrs?|minutes?|mins?)\b"
            rf"|\b(?P<n2>{EN_NUMBER_RE})\s+(?P<unit2>days?|weeks?|months?)\s+(?:from\s+(?:now|today)|later|(?P<ago>ago))\b",
            re.IGNORECASE,
        ),
        _en_in_n,
    ),
    (
        re.compile(
            rf"\b(?:(?P<month>{_MONTH_RE})\.?\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s*(?P<year>\d{{4}}))?"
            rf"|(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<month2>{_MONTH_RE})\.?(?:,?\s*(?P<year2>\d{{4}}))?)\b",
            re.IGNORECASE,
        ),
        _en_month_date,
    ),
    (
        re.compile(
            rf"\b(?:(?P<mod>in|by|until|till|before|from|after|since|early|mid|late|(?:the\s+)?end\s+of|"
            rf"(?:the\s+)?(?:beginning|start)\s+of)\s+)?(?P<month>{_MONTH_RE})\.?(?:,?\s+(?P<year>\d{{4}}))?\b",
            re.IGNORECASE,
        ),
        _en_month_only,
    ),
    (
        re.compile(r"\bthe\s+(?P<d>\d{1,2})(?:st|nd|rd|th)\b", re.IGNORECASE),
        _en_day_of_month,
    ),
    (
        re.compile(
            r"(?<![A-Za-z0-9.-])(?P<y>\d{4})[-/.年](?P<m>\d{1,2})[-/.月](?P<d>\d{1,2})日?(?![A-Za-z0-9-]|\.\d)"
        ),
        _numeric_date,
    ),
    (re.compile(r"(?<![\w./-])\d{1,2}[/.]\d{1,2}[/.]\d{4}(?![\w./-])"), _slash_date),
    (
        re.compile(
            r"(?<![\d:])(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)(?![A-Za-z])", re.IGNORECASE
        ),
        _en_clock,
    ),
    (
        re.compile(
            r"\bat\s+(?P<h>\d{1,2})(?::(?P<m>\d{2}))?(?![\d:.,/%]|\s*(?:[ap]\.?m|%|percent))", re.IGNORECASE
        ),
        _en_at_hour,
    ),
    (re.compile(rf"\b(?P<h>\d{{1,2}}|{EN_NUMBER_RE})\s+o'?clock\b", re.IGNORECASE), _en_oclock),
    (
        re.compile(
            r"(?:\b(?:in\s+the|this)\s+)?(?<!good )(?<!good)"
            r"\b(?P<part>morning|afternoon|evening|tonight|noon|midday|midnight|lunchtime)\b",
            re.IGNORECASE,
        ),
        _en_part,
    ),
    (re.compile(r"大后天|今天|今日|今儿|明天|明日|明儿|后天|後天|昨天|昨日|前天"), _zh_day),
    (re.compile(r"(?P<d>[今明后])(?P<p>早|晚)(?!饭|餐|上|点)"), _zh_day_part),
    (
        re.compile(r"(?P<mod>下下个?|下个?|这个?|本|上个?)?(?:周|星期|礼拜)(?P<day>[一二三四五六日天1-7末])"),
        _zh_weekday,
    ),
    (
        re.compile(
            r"下下?个?(?:周|星期|礼拜)|(?:下个?|本|这个?)?月(?:底|末|初)|下个?月|(?:下|今|明)?年(?:底|末)"
            r"|(?:本|这个?)?季(?:度)?末|下个?季度|明年"
        ),
        _zh_period,
    ),
    (
        re.compile(
            r"(?:(?P<rel>去年|今年|明年)|(?P<y>\d{4})\s*年)?\s*(?<![\d个.])(?P<m>1[0-2]|0?[1-9]|十[一二]?|[一二三四五六七八九])"
            r"\s*月份?(?P<edge>底|末|初|中)?(?!\s*(?:\d|[一二三四五六七八九十])+\s*[日号號])"
        ),
        _zh_month,
    ),
    (
        re.compile(
            rf"(?:过)?(?P<n>\d+|{CN_NUM}|半)\s*(?P<unit>个小时|小时|个钟头|钟头|天|日|个星期|星期|个礼拜|礼拜|周|个月|月)\s*(?P<dir>以后|之后|后|以前|之前|前)"
        ),
        _zh_after,
    ),
    (
        re.compile(
            rf"(?:(?P<y>\d{{4}}|[{CN_DIGIT}]{{4}})\s*年\s*)?(?P<m>\d{{1,2}}|{CN_SMALL})\s*月\s*(?P<d>\d{{1,2}}|{CN_SMALL})\s*[日号號]"
        ),
        _zh_full_date,
    ),
    (
        re.compile(
            rf"(?<![\d月.])(?P<d>\d{{1,2}}|{CN_SMALL})\s*[号號](?!\s*(?:工单|单|维修单|派工单|任务|房|楼|机|线|门|位|桌|窗口|柜台|码|选手|球员|\d))"
        ),
        _zh_day_of_month,
    ),
    (
        re.compile(
            rf"(?P<part>{_ZH_PART_RE})?\s*(?P<h>\d{{1,2}}|{CN_SMALL})\s*[点點时](?P<zhong>钟)?"
            rf"(?:\s*(?P<min>半|一刻|三刻|(?:\d{{1,2}}|{CN_SMALL})\s*分?))?(?![\d])"
        ),
        _zh_clock,
    ),
    (
        re.compile(rf"(?P<part>{_ZH_PART_RE})?\s*(?<![\d:])(?P<h>\d{{1,2}})[:：](?P<m>\d{{2}})(?![\d:])"),
        _colon_clock,
    ),
    (re.compile(rf"(?:今晚|{_ZH_PART_RE})(?!好)"), _zh_part),
)


_GAP_RE = re.compile(r"^[\s,，]*(?:at|@|on|around|about|by|的|,|，|in the)?[\s,，]*$", re.IGNORECASE)


def _merge_whens(pieces: list[_When], text: str) -> list[_When]:
    """Drop overlapped pieces, then join neighbours (date + part of day + clock) into one expression."""
    pieces.sort(key=lambda piece: (piece.start, -(piece.end - piece.start)))
    kept: list[_When] = []
    for piece in pieces:
        if kept and piece.start < kept[-1].end:
            previous = kept[-1]
            if piece.end - piece.start > previous.end - previous.start:
                kept[-1] = piece
            continue
        kept.append(piece)
    merged: list[_When] = []
    for piece in kept:
        if merged:
            last = merged[-1]
            compatible = (
                (last.day is None or piece.day is None)
                and (last.clock is None or piece.clock is None)
                and (last.part is None or piece.part is None)
            )
            if compatible and _GAP_RE.match(text[last.end : piece.start]):
                merged[-1] = _When(
                    start=last.start,
                    end=piece.end,
                    day=last.day or piece.day,
                    part=last.part or piece.part,
                    clock=last.clock or piece.clock,
                    clock_has_meridiem=last.clock_has_meridiem or piece.clock_has_meridiem,
                    weak=False,
                    bare_weekday=last.bare_weekday or piece.bare_weekday,
                )
                continue
        merged.append(piece)
    return [piece for piece in merged if not piece.weak]


def _resolve_when(piece: _When, now: datetime) -> tuple[str, str] | None:
    """("date", "2026-06-19") or ("time", "2026-06-19T14:00:00+08:00")."""
    if piece.clock is None and piece.part is None:
        return ("date", piece.day.isoformat()) if piece.day else None
    tz = now.tzinfo
    part = piece.part.lower() if piece.part else None
    if piece.clock is not None:
        hour, minute = piece.clock
        if not piece.clock_has_meridiem:
            afternoon = PARTS.get(part, (0, False))[1] if part else None
            if afternoon is True and hour < 12:
                hour += 12
            elif afternoon is True and hour == 12 and part in ("晚上", "夜里", "night", "tonight"):
                hour = 24
            elif part in ("中午", "noon", "midday", "lunchtime") and hour < 6:
                hour += 12
            elif afternoon is None and 1 <= hour <= 6:
                hour += 12  # "at 3", "3点": business hours, so the afternoon
        extra_day = 0
        if hour >= 24:
            hour, extra_day = 0, 1
    else:
        hour, minute = PARTS.get(part or "", (9, False))[0], 0
        extra_day = 0
    if piece.day is None:
        moment = datetime.combine(now.date() + timedelta(days=extra_day), time(hour, minute), tzinfo=tz)
        if moment < now and piece.clock is not None:
            moment += timedelta(days=1)
    else:
        moment = datetime.combine(piece.day + timedelta(days=extra_day), time(hour, minute), tzinfo=tz)
        if moment < now and piece.bare_weekday:
            moment += timedelta(days=7)
    return "time", moment.isoformat()


@lru_cache(maxsize=1)
def _dateparser() -> Any:
    import dateparser  # a slow import (~0.1 s): only when a month-name or d/m/y date appears

    return dateparser


def _dateparser_date(span: str, now: datetime) -> date | None:
    try:
        parsed = _dateparser().parse(
            span,
            languages=["en"],
            settings={
                # midnight: a date that is today must not count as past and jump a year
                "RELATIVE_BASE": now.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None),
                "PREFER_DATES_FROM": "future",
                "PREFER_DAY_OF_MONTH": "first",
                "DATE_ORDER": "DMY",
                "REQUIRE_PARTS": ["day", "month"],
            },
        )
    except Exception:  # dateparser raises a variety of errors on odd input; the rule then just does not fire
        logger.debug("dateparser failed on %r", span, exc_info=True)
        return None
    return parsed.date() if parsed is not None else None


def warm_up() -> None:
    """Load dateparser's English tables and run every rule once, so the first real message is fast."""
    _dateparser_date("20/06/2026", datetime(2026, 1, 1))
    context = ParseContext(now=datetime(2026, 1, 1), known={"customer": ("Acme Corporation",)})
    extract_entities("Acme tomorrow 2pm SR-1 $5k 明天下午3点 4/5", context)


# --- names from the CRM ----------------------------------------------------------------------------

_COMPANY_SUFFIX_RE = re.compile(
    r"(?:[\s,]+(?:inc|ltd|llc|co|corp|corporation|company|limited|group|gmbh|plc|holdings)\.?)+$"
    r"|(?:股份有限公司|有限责任公司|有限公司|集团公司|集团|公司|分公司)$",
    re.IGNORECASE,
)
_CJK_RE = re.compile("[\u3400-\u9fff\uf900-\ufaff]")


_ZH_PLACE_RE = re.compile(
    "^(?:中国|北京|上海|天津|重庆|广州|深圳|杭州|南京|苏州|成都|武汉|西安|长沙|郑州|青岛|济南|厦门|福州|合肥|宁波|无锡|"
    "东莞|佛山|沈阳|大连|哈尔滨|长春|昆明|南宁|贵阳|南昌|太原|石家庄|兰州|乌鲁木齐|呼和浩特|海口|珠海|"
    "广东|江苏|浙江|山东|河南|河北|湖南|湖北|四川|福建|安徽|江西|辽宁|吉林|黑龙江|云南|广西|贵州|山西|陕西|甘肃)(?:市|省)?"
)
_ZH_TRADE_RE = re.compile(
    "(?:技术|科技|电子|电器|电气|实业|贸易|商贸|网络|信息|工程|发展|控股|国际|机电|设备|制造|服务|酒店|餐饮|物业|医院|学校)+$"
)


def _name_variants(name: str) -> list[str]:
    """The name, without its legal suffix, and for Chinese companies the short form people say (华为)."""
    variants = [name]
    short = _COMPANY_SUFFIX_RE.sub("", name).strip(" ,.")
    if short and short != name and len(short) >= 2:
        variants.append(short)
    if _CJK_RE.search(short):
        core = _ZH_TRADE_RE.sub("", _ZH_PLACE_RE.sub("", short))
        if len(core) >= 2 and core not in variants:
            variants.append(core)
    return variants


def _fold(text: str) -> str:
    """Lower case and punctuation → space, keeping the length (so offsets stay valid)."""
    return "".join(
        (char.lower() if len(char.lower()) == 1 else char) if char.isalnum() else " " for char in text
    )


def _trim_words(folded: str, start: int, end: int, needle: str) -> tuple[int, int]:
    """Drop Latin words at the edges of a fuzzy span that resemble no word of the name ("my …")."""
    needle_words = needle.split()
    words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", folded[start:end])]

    def foreign(span: tuple[int, int]) -> bool:
        word = folded[span[0] : span[1]]
        return word.isascii() and max(fuzz.ratio(word, other) for other in needle_words) < 70

    while len(words) > 1 and foreign(words[0]):
        words.pop(0)
    while len(words) > 1 and foreign(words[-1]):
        words.pop()
    return (words[0][0], words[-1][1]) if words else (start, end)


_LATIN_WORD_RE = re.compile(r"[a-z]+")
_ASCII_WORD_RE = re.compile(r"[A-Za-z]+")
_NAME_STOPWORDS = frozenset({"the", "and", "for", "inc", "ltd", "llc", "corp", "company", "group", "limited"})


def _find_names(kind: str, names: Sequence[str], text: _Text, folded: str) -> list[_Candidate]:
    if not names or not folded.strip():
        return []
    candidates: list[_Candidate] = []
    choices: dict[str, str] = {}
    for name in names:
        for variant in _name_variants(name):
            choices.setdefault(variant, name)
    # Exact (case-insensitive, whole-word for Latin) hits first: cheap, and they decide short names.
    for variant, name in choices.items():
        needle = _fold(variant).strip()
        if not needle:
            continue
        cjk = bool(_CJK_RE.search(needle))
        if len(needle) < 2:
            continue
        start = folded.find(needle)
        while start >= 0:
            end = start + len(needle)
            before_ok = (
                cjk or start == 0 or not folded[start - 1].isalnum() or bool(_CJK_RE.match(folded[start - 1]))
            )
            after_ok = (
                cjk or end == len(folded) or not folded[end].isalnum() or bool(_CJK_RE.match(folded[end]))
            )
            if before_ok and after_ok:
                candidates.append(
                    _Candidate(kind, name, *text.span(start, end), NAME_PRIORITY + 2, 1.0, FUZZY_EXTRACTOR)
                )
            start = folded.find(needle, start + 1)
    # Fuzzy hits for typos ("Acmee Corp", "华为技朮"): only names long enough to mean much.
    long_choices = [v for v in choices if len(_fold(v).strip()) >= (3 if _CJK_RE.search(v) else 5)]
    if long_choices:
        hits = process.extract(
            text.text,
            long_choices,
            scorer=fuzz.partial_ratio,
            processor=utils.default_process,
            score_cutoff=80,
            limit=5,
        )
        for variant, score, _index in hits:
            needle = _fold(variant).strip()
            threshold = 80 if len(needle) >= 8 else 86
            if score < threshold:
                continue
            alignment = fuzz.partial_ratio_alignment(needle, folded)
            if alignment is None or alignment.score < threshold:
                continue
            start, end = alignment.dest_start, alignment.dest_end
            while start < end and folded[start] == " ":
                start += 1
            while end > start and folded[end - 1] == " ":
                end -= 1
            # A typo shifts the window: widen it to whole Latin words.
            while 0 < start < end and folded[start - 1].isascii() and folded[start - 1].isalnum():
                start -= 1
            while start < end < len(folded) and folded[end].isascii() and folded[end].isalnum():
                end += 1
            start, end = _trim_words(folded, start, end, needle)
            if end - start < max(2, len(needle) // 2):
                continue
            candidates.append(
                _Candidate(
                    kind,
                    choices[variant],
                    *text.span(start, end),
                    NAME_PRIORITY,
                    round(score / 100, 3),
                    FUZZY_EXTRACTOR,
                )
            )
    # Every word of a name, in order, as whole words ("my dishwasher" → "DW-500 dishwasher").
    text_words = [(match.start(), match.end(), match.group(0)) for match in _LATIN_WORD_RE.finditer(folded)]
    positions: dict[str, list[int]] = {}
    for index, (_start, _end, word) in enumerate(text_words):
        positions.setdefault(word, []).append(index)
    for variant, name in choices.items():
        words = [word for word in _LATIN_WORD_RE.findall(_fold(variant)) if len(word) >= 3]
        if not words or all(word in _NAME_STOPWORDS for word in words) or sum(map(len, words)) < 5:
            continue
        for index in positions.get(words[0], ()):
            window = text_words[index : index + len(words)]
            if [word for _s, _e, word in window] == words:
                start, end = window[0][0], window[-1][1]
                candidates.append(
                    _Candidate(kind, name, *text.span(start, end), NAME_PRIORITY - 1, 0.9, FUZZY_EXTRACTOR)
                )
    return candidates


# --- the extractor ---------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _local_now(context: ParseContext) -> datetime:
    zone = _zone(context.timezone)
    now = context.now
    if now.tzinfo is None:
        return now.replace(tzinfo=zone) if zone else now
    return now.astimezone(zone) if zone else now


def _term_key(term: str) -> str:
    return re.sub(r"[\s_-]+", " ", term.strip().lower())


def _term_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    ordered = sorted({term for term in terms if term}, key=len, reverse=True)
    if not ordered:
        return None
    parts = []
    for term in ordered:
        escaped = r"[\s_-]+".join(re.escape(word) for word in re.split(r"[\s_-]+", term.strip()))
        parts.append(escaped if _CJK_RE.search(term) else rf"(?<![A-Za-z0-9]){escaped}(?![A-Za-z0-9'’])")
    return re.compile("|".join(parts), re.IGNORECASE)


class EntityExtractor:
    """All rules, compiled once; optionally extended by a data set's synonyms, lookups and regexes."""

    def __init__(
        self,
        lexicon: Mapping[str, Mapping[str, str]] | None = None,
        regexes: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        stage_terms = dict(STAGE_TERMS)
        self._lexicon: dict[str, tuple[re.Pattern[str], dict[str, str]]] = {}
        for entity, terms in (lexicon or {}).items():
            lowered = {_term_key(term): value for term, value in terms.items() if term.strip()}
            if entity == "stage":
                stage_terms.update({term: value for term, value in lowered.items() if value in STAGES})
                continue
            if entity in RULE_ENTITIES:
                continue
            pattern = _term_pattern(lowered)
            if pattern is not None:
                self._lexicon[entity] = (pattern, lowered)
        stage_pattern = _term_pattern(stage_terms)
        assert stage_pattern is not None
        self._stage_pattern = stage_pattern
        self._stage_terms = {_term_key(term): value for term, value in stage_terms.items()}
        self._fuzzy_stage_words = [
            term for term in self._stage_terms if term.isascii() and term.isalpha() and len(term) >= 7
        ]
        self._regexes: list[tuple[str, re.Pattern[str]]] = []
        for entity, patterns in (regexes or {}).items():
            if entity in RULE_ENTITIES:
                continue
            for source in patterns:
                try:
                    self._regexes.append((entity, re.compile(source)))
                except re.error:
                    logger.warning("Ignoring invalid regex for entity %s: %r", entity, source)

    def stage_value(self, term: str) -> str | None:
        """The stage a word or phrase names in this extractor's vocabulary ('谈判' → negotiation), or None."""
        return self._stage_terms.get(_term_key(term))

    def extract(self, text: str, context: ParseContext) -> tuple[Entity, ...]:
        """Every entity found, in text order, without overlaps."""
        if not text or not text.strip():
            return ()
        normal = _normalise(text)
        candidates: list[_Candidate] = []
        for finder in (
            self._contacts,
            self._ids,
            self._serials,
            self._parts,
            self._amounts,
            self._ratings,
            self._stages,
            self._lexicon_terms,
        ):
            candidates.extend(finder(normal))
        candidates.extend(self._dates(normal, _local_now(context)))
        if context.known:
            folded = _fold(normal.text)
            for kind in ("customer", "product", "part"):
                names = context.known.get(kind)
                if names:
                    candidates.extend(_find_names(kind, names, normal, folded))
        return _select(candidates, text)

    # Each finder returns candidates with offsets already mapped to the original text.

    def _contacts(self, t: _Text) -> list[_Candidate]:
        found: list[_Candidate] = []
        for match in EMAIL_RE.finditer(t.text):
            local, _, domain = match.group(0).partition("@")
            found.append(
                _Candidate("email", f"{local}@{domain.lower()}", *t.span(*match.span()), PRIORITY["email"])
            )
        for pattern in (PHONE_CN_RE, PHONE_INTL_RE, PHONE_LANDLINE_RE):
            for match in pattern.finditer(t.text):
                compact = re.sub(r"[\s()-]", "", match.group(0))
                if compact.startswith("00"):
                    compact = "+" + compact[2:]
                digits = len(compact.lstrip("+"))
                if 7 <= digits <= 15:
                    found.append(_Candidate("phone", compact, *t.span(*match.span()), PRIORITY["phone"]))
        for match in PHONE_CUE_RE.finditer(t.text):
            compact = re.sub(r"[\s()-]", "", match.group("phone"))
            if compact.startswith("00"):
                compact = "+" + compact[2:]
            if 7 <= len(compact.lstrip("+")) <= 15:
                found.append(
                    _Candidate("phone", compact, *t.span(*match.span("phone")), PRIORITY["phone_cue"])
                )
        return found

    def _ids(self, t: _Text) -> list[_Candidate]:
        found: list[_Candidate] = []
        for pattern, entity, prefix in (
            (TICKET_RE, "ticket_id", "SR"),
            (TICKET_WORD_RE, "ticket_id", "SR"),
            (TICKET_ZH_RE, "ticket_id", "SR"),
            (JOB_RE, "job_id", "RO"),
            (JOB_WORD_RE, "job_id", "RO"),
            (JOB_ZH_RE, "job_id", "RO"),
        ):
            for match in pattern.finditer(t.text):
                number = cn_number(next(group for group in match.groups() if group is not None))
                if number is None:
                    continue
                found.append(
                    _Candidate(entity, f"{prefix}-{number}", *t.span(*match.span()), PRIORITY[entity])
                )
        hashes = list(HASH_NUMBER_RE.finditer(t.text))
        if hashes:
            kind = (
                "ticket_id"
                if TICKET_CONTEXT_RE.search(t.text)
                else "job_id"
                if JOB_CONTEXT_RE.search(t.text)
                else None
            )
            if kind is not None:
                entity, prefix = kind, "SR" if kind == "ticket_id" else "RO"
                for match in hashes:
                    found.append(
                        _Candidate(
                            entity,
                            f"{prefix}-{int(match.group(1))}",
                            *t.span(*match.span()),
                            PRIORITY[entity] - 1,
                        )
                    )
        return found

    def _serials(self, t: _Text) -> list[_Candidate]:
        found: list[_Candidate] = []
        for match in SERIAL_RE.finditer(t.text):
            letters, digits, _tail, groups = match.groups()
            if letters.upper() in NOT_SERIAL_PREFIXES:
                continue
            group_digits = sum(char.isdigit() for char in groups)
            if groups:
                ok = len(digits) + group_digits >= 5
            else:
                ok = len(digits) >= 5 or (len(letters) >= 2 and len(digits) >= 4)
            if ok:
                found.append(
                    _Candidate(
                        "serial_number",
                        match.group(0).upper(),
                        *t.span(*match.span()),
                        PRIORITY["serial_number"],
                    )
                )
        for match in SERIAL_KEYWORD_RE.finditer(t.text):
            value = match.group(1)
            prefix = value.split("-")[0].upper()
            if prefix in NOT_SERIAL_PREFIXES or not any(char.isdigit() for char in value):
                continue
            found.append(
                _Candidate(
                    "serial_number", value.upper(), *t.span(*match.span(1)), PRIORITY["serial_keyword"]
                )
            )
        for pattern, minimum in ((SERIAL_DASH_RE, 6), (SERIAL_DIGITS_FIRST_RE, 6)):
            for match in pattern.finditer(t.text):
                value = match.group(0).upper()
                if value.split("-")[0] in NOT_SERIAL_PREFIXES or sum(c.isdigit() for c in value) < minimum:
                    continue
                found.append(
                    _Candidate("serial_number", value, *t.span(*match.span()), PRIORITY["serial_number"])
                )
        return found

    def _parts(self, t: _Text) -> list[_Candidate]:
        found = [
            _Candidate("part", f"P-{match.group(1)}", *t.span(*match.span()), PRIORITY["part"])
            for match in PART_RE.finditer(t.text)
        ]
        for match in PART_KEYWORD_RE.finditer(t.text):
            code = re.sub(r"^([A-Z]+)-?(\d+)$", r"\1-\2", match.group(1).upper())
            if code.split("-")[0] in NOT_SERIAL_PREFIXES:
                continue
            found.append(_Candidate("part", code, *t.span(*match.span(1)), PRIORITY["part"] + 1))
        return found

    def _amounts(self, t: _Text) -> list[_Candidate]:
        found: list[_Candidate] = []
        for pattern in AMOUNT_RES:
            for match in pattern.finditer(t.text):
                groups = match.groupdict()
                raw = groups.get("num") or groups.get("num2")
                if raw is None:
                    continue
                mul = (groups.get("mul") or "").lower()
                if raw.isascii():
                    number = _decimal(raw)
                else:
                    if raw in ("千", "百", "十") and not (groups.get("cur") or groups.get("cur2")):
                        continue  # 千万 ("by all means"), not 10 million
                    parsed = cn_number(raw)
                    number = Decimal(parsed) if parsed is not None else None
                if number is None:
                    continue
                if mul == "w" and not _CJK_RE.search(t.text):
                    continue  # "10w" is 十万 only in Chinese chat; in English it is more likely watts
                value = number * _MULTIPLIERS.get(mul, 1)
                tail = groups.get("tail")
                if tail:  # 一万五 / 8万5 mean 15,000 / 85,000
                    digit = int(tail) if tail.isdigit() else _CN_VALUES[tail]
                    value += Decimal(digit) * _MULTIPLIERS[mul] / 10
                if pattern is AMOUNT_RES[-1]:
                    start, end = match.span("num")
                else:
                    start, end = match.span()
                found.append(
                    _Candidate(
                        "amount",
                        f"{value.quantize(Decimal('0.01'))}",
                        *t.span(start, end),
                        PRIORITY["amount"],
                    )
                )
        return found

    def _ratings(self, t: _Text) -> list[_Candidate]:
        found: list[_Candidate] = []
        for pattern in RATING_RES:
            for match in pattern.finditer(t.text):
                word = match.group("n").lower().replace("\ufe0f", "")
                if word[0] in "★⭐":
                    word = str(len(word))
                elif word == "满分":  # "full marks"
                    word = "5"
                before = t.text[max(0, match.start() - 1) : match.start()]
                if match.group(0) == "三星" and before not in ("给", "打", "评"):
                    continue  # the brand, not three stars
                score = int(word) if word.isdigit() else _RATING_WORDS.get(word)
                if score is not None and 1 <= score <= 5:
                    found.append(_Candidate("rating", str(score), *t.span(*match.span()), PRIORITY["rating"]))
        # Bare numbers count as ratings only in a short message or next to a rating word.
        short = len(t.text.split()) <= SHORT_MESSAGE_WORDS
        cue = bool(_RATING_CUE_WORDS.search(t.text))
        contextual: list[tuple[re.Match[str], bool]] = []
        for pattern, applies in (
            (RATING_ALONE_RE, True),
            (RATING_TAIL_RE, short),
            (RATING_HEAD_RE, short),
            (RATING_CUE_RE, True),
        ):
            if applies:
                contextual.extend((match, pattern is RATING_ALONE_RE) for match in pattern.finditer(t.text))
        for match, alone in contextual:
            word = match.group("n").lower()
            if not word.isdigit() and not cue and not alone:
                continue  # "give me five" is not a rating; "…feedback: five" is
            score = int(word) if word.isdigit() else _RATING_WORDS.get(word)
            if score is not None and 1 <= score <= 5:
                found.append(
                    _Candidate("rating", str(score), *t.span(*match.span("n")), PRIORITY["rating"] - 2)
                )
        return found

    def _stages(self, t: _Text) -> list[_Candidate]:
        found: list[_Candidate] = []
        for match in self._stage_pattern.finditer(t.text):
            value = self._stage_terms.get(_term_key(match.group(0)))
            if value is not None:
                found.append(_Candidate("stage", value, *t.span(*match.span()), PRIORITY["stage"]))
        # Typos of the long English stage words ("negotiaton", "propsal"); short words are too risky.
        taken = {candidate.start for candidate in found}
        for match in _ASCII_WORD_RE.finditer(t.text):
            word = match.group(0).lower()
            if len(word) < 7 or t.span(*match.span())[0] in taken or _term_key(word) in self._stage_terms:
                continue
            hit = process.extractOne(word, self._fuzzy_stage_words, scorer=fuzz.ratio, score_cutoff=88)
            if hit is not None:
                found.append(
                    _Candidate(
                        "stage",
                        self._stage_terms[hit[0]],
                        *t.span(*match.span()),
                        PRIORITY["stage"] - 1,
                        round(hit[1] / 100, 3),
                    )
                )
        return found

    def _lexicon_terms(self, t: _Text) -> list[_Candidate]:
        found: list[_Candidate] = []
        for entity, (pattern, terms) in self._lexicon.items():
            for match in pattern.finditer(t.text):
                value = terms.get(_term_key(match.group(0)), match.group(0))
                found.append(
                    _Candidate(
                        entity, value, *t.span(*match.span()), LEXICON_PRIORITY, 1.0, LEXICON_EXTRACTOR
                    )
                )
        for entity, regex in self._regexes:
            for match in regex.finditer(t.text):
                if match.end() > match.start():
                    found.append(
                        _Candidate(
                            entity,
                            match.group(0),
                            *t.span(*match.span()),
                            LEXICON_PRIORITY,
                            1.0,
                            LEXICON_EXTRACTOR,
                        )
                    )
        return found

    def _dates(self, t: _Text, now: datetime) -> list[_Candidate]:
        pieces: list[_When] = []
        for pattern, rule in DATE_RULES:
            for match in pattern.finditer(t.text):
                piece = rule(match, now)
                if piece is not None and piece.end > piece.start:
                    pieces.append(piece)
        found: list[_Candidate] = []
        for piece in _merge_whens(pieces, t.text):
            resolved = _resolve_when(piece, now)
            if resolved is not None:
                entity, value = resolved
                found.append(_Candidate(entity, value, *t.span(piece.start, piece.end), PRIORITY[entity]))
        return found


def _select(candidates: list[_Candidate], text: str) -> tuple[Entity, ...]:
    """Highest priority first, then longest; a candidate overlapping one already kept is dropped.
    Fuzzy name alternatives for the very same span are all kept (the dialogue offers a choice)."""
    ordered = sorted(candidates, key=lambda c: (-c.priority, -(c.end - c.start), c.start))
    kept: list[_Candidate] = []
    for candidate in ordered:
        clash = False
        for other in kept:
            if candidate.start < other.end and other.start < candidate.end:
                same_alternative = (
                    candidate.entity == other.entity
                    and candidate.extractor == FUZZY_EXTRACTOR
                    and (candidate.start, candidate.end) == (other.start, other.end)
                    and candidate.value != other.value
                    and candidate.confidence >= other.confidence - 0.02
                )
                if not same_alternative:
                    clash = True
                    break
        if not clash and not any(
            k.entity == candidate.entity and k.value == candidate.value and k.start == candidate.start
            for k in kept
        ):
            kept.append(candidate)
    kept.sort(key=lambda c: (c.start, c.end))
    return tuple(
        Entity(
            entity=c.entity,
            value=c.value,
            start=c.start,
            end=c.end,
            text=text[c.start : c.end],
            confidence=c.confidence,
            extractor=c.extractor,
        )
        for c in kept
    )


_DEFAULT: EntityExtractor | None = None


def default_extractor() -> EntityExtractor:
    """The shared extractor without training-data extensions."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = EntityExtractor()
    return _DEFAULT


def extract_entities(text: str, context: ParseContext) -> tuple[Entity, ...]:
    """Entities in `text` (see the module docstring)."""
    return default_extractor().extract(text, context)


def stage_value(term: str) -> str | None:
    """The stage a term names in the one stage vocabulary (STAGE_TERMS), or None: the chat's answers
    and the NLU's entities read '需求确认' the same way."""
    key = _term_key(term)
    return key.replace(" ", "_") if key.replace(" ", "_") in STAGES else default_extractor().stage_value(term)


JOB_INTENTS = frozenset({"accept_job", "complete_job", "my_jobs", "on_my_way", "reschedule_job"})


def contextualise(entities: tuple[Entity, ...], intent: str) -> tuple[Entity, ...]:
    """Entities read in the light of the intent: a technician's "45号工单" / "#45" is a repair order
    (工单 means any work order), so for job intents a ticket id not written as SR-n becomes RO-n."""
    if intent not in JOB_INTENTS or not any(entity.entity == "ticket_id" for entity in entities):
        return entities
    result: list[Entity] = []
    for entity in entities:
        if entity.entity == "ticket_id" and "sr" not in entity.text.lower():
            number = entity.value.partition("-")[2]
            entity = replace(entity, entity="job_id", value=f"RO-{number}")
        result.append(entity)
    return tuple(result)


def with_offsets(entity: Entity, shift: int) -> Entity:
    """The same entity moved by `shift` characters."""
    return replace(entity, start=entity.start + shift, end=entity.end + shift)
