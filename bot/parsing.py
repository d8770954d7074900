"""One reader per concept for what staff type — deal stages, amounts, probabilities, dates, months and
quarters — and one way to write an amount.

Stages and amounts are read by the NLU's own entity rules (bot/nlu/entities.py), so an answer typed to
"which stage?" and the same words inside a request mean the same thing: there is one vocabulary.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from bot.nlu.entities import MONTHS, cn_number, extract_entities, stage_value
from bot.nlu.types import Entity, ParseContext
from core.domain.enums import OpportunityStage

STAGES: tuple[str, ...] = tuple(stage.value for stage in OpportunityStage)
OPEN_STAGES: tuple[str, ...] = STAGES[:4]
CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("1e12")
# Amounts, stages and numbers do not depend on the day; dates read here are only compared by position.
_ANY_DAY = ParseContext(now=datetime(2000, 1, 3, tzinfo=UTC), timezone="UTC")


def entities_of(text: str, *kinds: str) -> list[Entity]:
    """The entities of these kinds the NLU's rules find in `text`, in text order."""
    return [item for item in extract_entities(text, _ANY_DAY) if item.entity in kinds] if text else []


# --- stages ------------------------------------------------------------------------------------------


def stage_of(raw: str) -> str | None:
    """The stage an answer or an entity value names ('negotiation', 'Closed won', '谈判', '需求确认')."""
    text = raw.strip()
    if not text:
        return None
    named = stage_value(text)
    return named if named is not None else stage_in_text(text)


# "成交日期", "预计3月底成交", "月底签约": words of a stage that here say when the deal closes.
CLOSING_NOT_STAGE = re.compile(
    r"(?:预计)?(?:成交|签约|签单)(?:日期|时间)|预计\S{0,8}?(?:成交|签约|签单)"
    r"|(?:月底|月初|月中|年底|年初|月|年|周|天|号|日|周[一二三四五六日天]|之前|以前|前)(?:成交|签约|签单)")


def closing_spans(text: str) -> list[tuple[int, int]]:
    """Where a message says when a deal closes with a stage's words ('成交日期改到…')."""
    return [match.span() for match in CLOSING_NOT_STAGE.finditer(text)]


def stage_in_text(text: str) -> str | None:
    """The one stage a message names (None when it names none, or several different ones); the words of
    a close date ('成交日期', '月底成交') name no stage."""
    spans = closing_spans(text)
    found = {item.value for item in entities_of(text, "stage")
             if not any(start < item.end and item.start < end for start, end in spans)}
    return found.pop() if len(found) == 1 else None


# --- amounts -----------------------------------------------------------------------------------------

# A bare number of three digits or more counts as an amount in a deal message ("set OP-3 to 50000"), unless
# it is part of a code, a date, a time or a percentage, or counts things ("空调200台", "120 units").
BARE_NUMBER = re.compile(
    r"(?<![A-Za-z0-9.\-_/:#])(\d{3,}(?:\.\d{1,2})?)(?![A-Za-z0-9\-/:%％年月日号点.])"
    r"(?!\s*(?:台|个|套|件|只|部|张|间|units?\b|pcs\b|pieces\b|sets?\b|rooms?\b|beds?\b))", re.IGNORECASE)
PLAIN_AMOUNT = re.compile(
    r"(?:[¥￥$]|rmb|cny)?\s*(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?\s*(?:元|块|rmb|cny|yuan)?",
    re.IGNORECASE)
APPROXIMATE = re.compile(
    r"\b\w+-ish\b|\bish\b|\bsomething\s+like\b|左右|大概|差不多|大约|估计", re.IGNORECASE)


def _checked(value: Decimal) -> Decimal | None:
    return value.quantize(CENT) if 0 <= value <= MAX_AMOUNT else None


def parse_amount(raw: str) -> Decimal | None:
    """An answer that is an amount: '50000', '50,000.00', '¥50,000', '50k', '5万', '1.2m'; else None."""
    text = raw.strip()
    plain = PLAIN_AMOUNT.fullmatch(text)
    if plain is not None:
        try:
            return _checked(Decimal(plain.group(1).replace(",", "") + "." + (plain.group(2) or "0")))
        except InvalidOperation:
            return None
    found = entities_of(text, "amount")
    if len(found) != 1:
        return None
    rest = text[: found[0].start] + text[found[0].end :]
    if any(char.isalnum() for char in rest):
        return None
    return _checked(Decimal(found[0].value))


def amount_in_text(text: str) -> Decimal | None:
    """The first amount a message states ('50k', '¥50,000', '5万', or a bare number of 3+ digits that is
    not part of a date: '30 November 2026' has no amount)."""
    found = extract_entities(text, _ANY_DAY) if text else ()
    for item in found:
        if item.entity == "amount" and (value := _checked(Decimal(item.value))) is not None:
            return value
    for item in found:
        if item.entity in ("date", "time"):
            text = text[: item.start] + " " * (item.end - item.start) + text[item.end :]
    for match in BARE_NUMBER.finditer(text):
        value = _checked(Decimal(match.group(1)))
        if value is not None:
            return value
    return None


CURRENCY_SIGNS = {"CNY": "¥", "RMB": "¥", "USD": "$", "EUR": "€", "GBP": "£", "HKD": "HK$", "JPY": "JP¥"}


def money(value: Decimal | float | int | str, currency: str = "CNY") -> str:
    """¥12,345.50 (another currency by its sign, or '12,345.50 CHF' when it has none we know)."""
    amount = Decimal(str(value)).quantize(CENT)
    code = currency.strip().upper()
    sign = CURRENCY_SIGNS.get(code)
    minus = "-" if amount < 0 else ""
    if sign is not None:
        return f"{minus}{sign}{abs(amount):,.2f}"
    return f"{amount:,.2f} {code}".rstrip()


# --- probabilities -------------------------------------------------------------------------------------

PERCENT = re.compile(
    r"(?P<num>-?\d{1,5}(?:\.\d+)?)\s*(?:%|％|percent\b|pct\b)|百分之(?P<zh>[零一二两三四五六七八九十百\d]+)",
    re.IGNORECASE)
PROBABILITY_NUMBER = re.compile(
    r"(?:\b(?:probability|prob|chances?|likelihood|odds|win\s*rate|win\s*chance|confidence)\b|概率|赢率|胜率|把握"
    r"|可能性|成功率|成单率)\D{0,25}?(?P<num>-?\d{1,5}(?:\.\d+)?)", re.IGNORECASE)


def read_probability(text: str) -> tuple[int | None, str | None]:
    """A win probability said in a message: (value, None); (None, what was said) when it is not 0–100;
    (None, None) when none is said."""
    match = PERCENT.search(text) or PROBABILITY_NUMBER.search(text)
    if match is None:
        return None, None
    raw = match.group(0).strip()
    number = match.group("num")
    if number is None:
        value = cn_number(match.group("zh"))
        number = str(value) if value is not None else ""
    try:
        amount = Decimal(number)
    except InvalidOperation:
        return None, raw
    if amount != amount.to_integral_value() or not 0 <= amount <= 100:
        return None, raw
    return int(amount), None


def parse_probability(raw: str) -> int | None:
    """An answer to 'what probability?': '80', '80%', '百分之八十' → 80; else (or outside 0–100) None."""
    value, _unclear = read_probability(raw)
    if value is not None:
        return value
    text = raw.strip().rstrip("%％ ")
    if re.fullmatch(r"\d{1,3}", text) and 0 <= int(text) <= 100:
        return int(text)
    return None


def without_percentages(text: str) -> str:
    """The message with its probabilities blanked out, so '100%' is never read as an amount of 100."""
    return PROBABILITY_NUMBER.sub(" ", PERCENT.sub(" ", text))


def percent_reading(text: str, raw_amount: str) -> bool:
    """Whether an amount the NLU found is really a probability ('80%' read as 80)."""
    if "%" in raw_amount or "％" in raw_amount:
        return True
    amount = parse_amount(raw_amount)
    numbers = {Decimal(match.group("num")) for match in PERCENT.finditer(text) if match.group("num")}
    numbers |= {Decimal(match.group("num")) for match in PROBABILITY_NUMBER.finditer(text)}
    return amount is not None and amount in numbers


# --- dates, months, quarters ---------------------------------------------------------------------------


def parse_when(value: str, tz: ZoneInfo) -> date | datetime | None:
    """An NLU date ('2026-06-19') or time ('2026-06-19T15:00:00+08:00'); local midnight counts as a date."""
    raw = value.strip()
    try:
        if len(raw) == 10:
            return date.fromisoformat(raw)
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=tz)
    local = moment.astimezone(tz)
    return local.date() if local.time() == time(0) else moment


def month_number(word: str) -> int | None:
    """'March', 'mar', '3', '十二' → the month's number, else None."""
    text = word.strip().casefold()
    if text[:3] in MONTHS and text.isalpha():
        return MONTHS[text[:3]]
    number = cn_number(text)
    return number if number is not None and 1 <= number <= 12 else None


def month_end(day: date) -> date:
    """The last day of the month holding `day`."""
    following = day.replace(day=28) + timedelta(days=4)
    return following - timedelta(days=following.day)


def quarter_bounds(day: date) -> tuple[date, date]:
    """First and last day of the quarter holding `day`."""
    first = date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    return first, month_end(date(first.year, first.month + 2, 1))


ORDINALS_EN = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
               "fifth": 5, "5th": 5, "sixth": 6, "6th": 6, "seventh": 7, "7th": 7, "eighth": 8, "8th": 8}
# "the second one", "2nd", "number 2", "第二个", "第2个": a choice among the buttons offered, by its place.
ORDINAL = re.compile(
    r"^(?:(?:the|that|this|pick|choose|take|it'?s|ok|okay)\s+)*"
    r"(?:(?P<en>first|second|third|fourth|fifth|sixth|seventh|eighth|[1-8](?:st|nd|rd|th))"
    r"|(?:number|no\.?|#)\s*(?P<no>[1-8]))"
    r"(?:\s+(?:one|deal|option|choice|please|pls))*$"
    r"|^(?:选|要|就)?第(?P<zh>[一二三四五六七八1-8])(?:个|条|项|单|家)?(?:吧|商机|客户)?$", re.IGNORECASE)


def ordinal_choice(text: str) -> int | None:
    """The place (1-based) a bare ordinal answer names ('the second one', '第二个'), else None."""
    match = ORDINAL.match(text.strip().strip(" .。!！?？"))
    if match is None:
        return None
    if match["en"]:
        return ORDINALS_EN[match["en"].casefold()]
    if match["no"]:
        return int(match["no"])
    return cn_number(match["zh"])
