"""Managers' reports in chat: customer satisfaction (CSAT) by technician, team or month (issue #6).

"CSAT this month", "按技师看客户满意度" → the period, the overall line, one line per group and buttons to
switch the grouping; a small bar chart where the channel shows images. The figures and who may see them
come from core (`SurveyService.csat`): a manager sees the people below them, an admin everyone, and
anyone else is told politely that this is for managers.
"""

from __future__ import annotations

import asyncio
import io
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from bot.charting import cjk_font
from bot.dialogue import Handler, Turn, cue
from bot.i18n import t
from bot.intents.staff import local_today, payload, spoken, whens
from bot.messages import Button, Reply
from bot.nlu.entities import EN_NUMBERS, cn_number
from bot.parsing import month_end, quarter_bounds
from core.domain.enums import Role
from core.errors import PermissionDenied
from core.services.surveys import CSAT_GROUPINGS, CsatReport, CsatRow

__all__ = [
    "IMAGE_CHANNELS",
    "ChartTexts",
    "CsatSummary",
    "Period",
    "chart_texts",
    "csat_period",
    "draw_csat_chart",
    "grouping",
    "handlers",
]

# Chat channels that show a picture with the answer (the terminal prints only a note about it).
IMAGE_CHANNELS = frozenset({"telegram", "slack", "web", "rest"})
DEFAULT_DAYS = 30
DEFAULT_MONTHS = 6
MAX_LINES = 10
# Preferred Simplified Chinese faces first (the same list as notifier/charts.py, which bot must not import).
CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
BAR_COLOURS = ("#16a34a", "#f59e0b", "#dc2626")  # ≥ 80 %, ≥ 60 %, below

# --- which grouping ------------------------------------------------------------------------------------

_BY_MONTH = cue(
    r"(?:by|per|each|every)\s+month|month[\s-]*(?:by|on|over)[\s-]*month|monthly|trend\w*"
    r"|over\s+(?:the\s+)?months",
    "按月|每月|每个月|各月|逐月|分月|月度|趋势|走势",
)
_BY_TEAM = cue(
    r"teams?|departments?|depts?|branch(?:es)?|groups?|units?|divisions?",
    "团队|部门|分公司|网点|小组|班组|各组|分部|服务站",
)
_BY_TECHNICIAN = cue(
    r"tech(?:nician)?s?|engineers?|per\s+person|by\s+person|individual\w*|staff|who",
    "技师|师傅|工程师|技术员|维修工|个人|每个人|每人|员工",
)


def grouping(text: str, default: str = "technician") -> str:
    """The grouping a message asks for: month ('by month', '按月'), team ('by team', '各团队') or technician.

    Month is checked first: "each team by month" is a trend; "this month" alone is a period, not a grouping.
    """
    if _BY_MONTH.search(text):
        return "month"
    if _BY_TEAM.search(text):
        return "team"
    if _BY_TECHNICIAN.search(text):
        return "technician"
    return default


# --- which period ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """Answers given from `since` to `until` (inclusive); `name` (a catalog key under csat.periods) and its
    parameters say it in words ("this month"), None for a plain range."""

    since: date
    until: date
    name: str | None = None
    params: tuple[tuple[str, Any], ...] = ()

    def words(self, lang: str) -> str:
        """'this month (1 – 15 Jun 2026)' / '本月（2026年6月1日至15日）'."""
        span = date_range(lang, self.since, self.until)
        if self.name is None:
            return span
        params = dict(self.params)
        if "month" in params:
            params["month_name"] = t(lang, "staff.months").split()[int(params["month"]) - 1]
        return t(lang, "csat.period_named", name=t(lang, f"csat.periods.{self.name}", **params), range=span)

    def token(self) -> str:
        """The period as a button carries it: 20260401-20260630."""
        return f"{self.since:%Y%m%d}-{self.until:%Y%m%d}"


_EN_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_EN_MONTH = re.compile(
    r"\b(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?"
    r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\b(?:\s+(\d{4}))?",
    re.IGNORECASE,
)
_ZH_MONTH = re.compile(
    r"(?:(\d{4})年)?(1[0-2]|0?[1-9]|十[一二]?|[一二三四五六七八九])月(?!\d|[一二三四五六七八九十]|底)"
)
_COUNT = r"(\d{1,3}|[一二两三四五六七八九十]{1,3}|a|one|two|three|four|five|six|seven|eight|nine|ten|twelve)"
_LAST_N = re.compile(
    rf"\b(?:last|past|previous|recent|the\s+last)\s+{_COUNT}\s+(days?|weeks?|months?)\b"
    rf"|(?:最近|过去|近)\s*{_COUNT}\s*(天|日|周|星期|个月|月)",
    re.IGNORECASE,
)
_SINCE = re.compile(r"\b(?:since|from|after|starting)\b|以来|以后|之后|自从|从|开始|起", re.IGNORECASE)
_QUARTER_NUMBER = re.compile(r"\bq([1-4])\b|第?([一二三四1-4])季度", re.IGNORECASE)
_ZH_QUARTER = {"一": 1, "二": 2, "三": 3, "四": 4, "1": 1, "2": 2, "3": 3, "4": 4}
_RELATIVE: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), name)
    for pattern, name in (
        (r"(?:last|previous|past)\s+quarter|上(?:个|一)?季度", "last_quarter"),
        (
            r"this\s+quarter|current\s+quarter|quarter\s+to\s+date|\bqtd\b|本季度?|这(?:个|一)?季度|当季",
            "this_quarter",
        ),
        (r"(?:last|previous|past)\s+month|上(?:个|一)?月", "last_month"),
        (r"this\s+month|current\s+month|month\s+to\s+date|\bmtd\b|本月|这个月|这月|当月", "this_month"),
        (r"(?:last|previous|past)\s+week|上(?:个|一)?(?:周|星期|礼拜)", "last_week"),
        (r"this\s+week|current\s+week|本周|这周|这个星期|这星期|这礼拜", "this_week"),
        (r"(?:last|previous|past)\s+year|去年|上一?年", "last_year"),
        (r"this\s+year|current\s+year|year\s+to\s+date|\bytd\b|今年|本年|全年", "this_year"),
        (r"\byesterday\b|昨天|昨日", "yesterday"),
        (r"\btoday\b|今天|今日", "today"),
    )
)


def _count(raw: str) -> int:
    """'3', 'three', '三', '十五' → the number (the entity extractor's own readings)."""
    word = raw.casefold()
    return EN_NUMBERS.get(word) or cn_number(word) or 0


def _months_back(day: date, months: int) -> date:
    """The same day `months` earlier (the month's last day when it is shorter)."""
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    first = date(year, month + 1, 1)
    return first.replace(day=min(day.day, month_end(first).day))


def _past(day: date, today: date) -> date:
    """A date read as looking back: "since May" in June is this May, even if the parser meant next May."""
    while day > today:
        day = day.replace(year=day.year - 1, day=min(day.day, 28) if day.month == 2 else day.day)
    return day


def _month(first: date, today: date, name: str = "month") -> Period:
    return Period(first, min(month_end(first), today), name, (("month", first.month), ("year", first.year)))


def _from_token(value: str) -> tuple[date, date] | None:
    """'20260401-20260630' (or ISO dates joined with '..') → the two dates, None when malformed."""
    match = re.fullmatch(r"(\d{4}-?\d{2}-?\d{2})(?:-|\.\.)(\d{4}-?\d{2}-?\d{2})", value.strip())
    if match is None:
        return None
    try:
        first, last = (
            date.fromisoformat(part if "-" in part else f"{part[:4]}-{part[4:6]}-{part[6:]}")
            for part in match.groups()
        )
    except ValueError:
        return None
    return (first, last) if first <= last else None


def csat_period(turn: Turn, by: str = "technician") -> Period:
    """The period a message names (a button's own period first), else the last 30 days up to today (by
    month: this month and the five before it, a trend needs more than one point)."""
    today = local_today(turn)
    token = turn.entity("period")
    if token:
        found = _from_token(token)
        if found is not None:
            return Period(*found)
    since, until = turn.entity("since"), turn.entity("until")
    if since or until:
        try:
            first = date.fromisoformat(since) if since else today - timedelta(days=DEFAULT_DAYS - 1)
            last = date.fromisoformat(until) if until else today
        except ValueError:
            first, last = today, today - timedelta(days=1)
        if first <= last:
            return Period(first, last)
    text = spoken(turn)
    last_n = _LAST_N.search(text)
    if last_n:
        number = max(1, min(_count(last_n.group(1) or last_n.group(3)), 3660))
        unit = (last_n.group(2) or last_n.group(4)).casefold()
        if unit.startswith("month") or unit.endswith("月"):
            first = _months_back(today, number) + timedelta(days=1)
            return Period(first, today, "last_months", (("n", number),))
        days = number * 7 if unit.startswith("week") or unit in ("周", "星期") else number
        return Period(today - timedelta(days=days - 1), today, "last_days", (("n", days),))
    for pattern, name in _RELATIVE:
        if pattern.search(text):
            return _relative(name, today)
    numbered = _QUARTER_NUMBER.search(text)
    if numbered:
        number = _ZH_QUARTER[numbered.group(1) or numbered.group(2)]
        first = date(today.year, number * 3 - 2, 1)
        if first > today:
            first = first.replace(year=today.year - 1)
        return Period(
            first, min(quarter_bounds(first)[1], today), "quarter", (("number", number), ("year", first.year))
        )
    mentioned = [_past(when.date() if isinstance(when, datetime) else when, today) for when in whens(turn)]
    month_named = _named_month(text, today)
    if len(mentioned) >= 2:
        return Period(min(mentioned), max(mentioned))
    cue = _SINCE.search(text)
    if mentioned:
        if cue:
            return Period(mentioned[0], today)
        if month_named is not None and month_named.since == mentioned[0]:
            return month_named
        return Period(mentioned[0], mentioned[0])
    if month_named is not None:
        if cue:
            return Period(month_named.since, today)
        return month_named
    if by == "month":
        first = _months_back(today.replace(day=1), DEFAULT_MONTHS - 1)
        return Period(first, today, "last_months", (("n", DEFAULT_MONTHS),))
    return Period(today - timedelta(days=DEFAULT_DAYS - 1), today, "last_days", (("n", DEFAULT_DAYS),))


def _means_month(text: str, found: re.Match[str]) -> bool:
    """'may' is the month after 'in/for/since…', before a year or written May mid-sentence; "May I see…" and
    "we may" are not."""
    if found.group(1).casefold() != "may" or found.group(2):
        return True
    before, after = text[: found.start()], text[found.end() :]
    if re.match(r"\s+(?:i|we|you|he|she|they|it|the|our|my|someone|somebody|have|get|see)\b", after, re.I):
        return False
    if re.search(r"\b(?:in|for|since|from|of|during|until|till|to|through)\s+$", before, re.IGNORECASE):
        return True
    return found.group(1) == "May" and bool(before.strip()) and not before.rstrip().endswith((".", "!", "?"))


def _named_month(text: str, today: date) -> Period | None:
    """'April', 'for May 2026', '4月', '2026年3月' → that month (looking back)."""
    english = next((found for found in _EN_MONTH.finditer(text) if _means_month(text, found)), None)
    chinese = _ZH_MONTH.search(text)
    if english:
        number = _EN_MONTHS.index(english.group(1)[:3].casefold()) + 1
        year = int(english.group(2)) if english.group(2) else None
    elif chinese:
        raw = chinese.group(2)
        number = int(raw) if raw.isdigit() else _count(raw)
        year = int(chinese.group(1)) if chinese.group(1) else None
    else:
        return None
    if not 1 <= number <= 12:
        return None
    first = date(year or today.year, number, 1)
    if year is None and first > today:
        first = first.replace(year=today.year - 1)
    return _month(first, today)


def _relative(name: str, today: date) -> Period:
    if name in ("this_quarter", "last_quarter"):
        first = quarter_bounds(today)[0]
        if name == "last_quarter":
            first = quarter_bounds(first - timedelta(days=1))[0]
        return Period(
            first,
            min(quarter_bounds(first)[1], today),
            "quarter",
            (("number", (first.month - 1) // 3 + 1), ("year", first.year)),
        )
    if name == "this_month":
        return _month(today.replace(day=1), today)
    if name == "last_month":
        return _month((today.replace(day=1) - timedelta(days=1)).replace(day=1), today)
    if name == "this_week":
        return Period(today - timedelta(days=today.weekday()), today, name)
    if name == "last_week":
        monday = today - timedelta(days=today.weekday() + 7)
        return Period(monday, monday + timedelta(days=6), name)
    if name == "this_year":
        return Period(date(today.year, 1, 1), today, "year", (("year", today.year),))
    if name == "last_year":
        return Period(
            date(today.year - 1, 1, 1), date(today.year - 1, 12, 31), "year", (("year", today.year - 1),)
        )
    if name == "yesterday":
        return Period(today - timedelta(days=1), today - timedelta(days=1), name)
    return Period(today, today, "today")


# --- words -----------------------------------------------------------------------------------------------


def day_words(lang: str, day: date) -> str:
    """'1 Jun 2026' / '2026年6月1日'."""
    month = t(lang, "staff.months").split()[day.month - 1]
    return t(lang, "csat.day", day=day.day, month=month, year=day.year)


def date_range(lang: str, first: date, last: date) -> str:
    """'1 – 15 Jun 2026', '17 May – 15 Jun 2026', '1 Dec 2025 – 15 Jan 2026' (and the Chinese forms)."""
    if first == last:
        return day_words(lang, first)
    months = t(lang, "staff.months").split()
    params = {
        "d1": first.day,
        "m1": months[first.month - 1],
        "y1": first.year,
        "d2": last.day,
        "m2": months[last.month - 1],
        "y2": last.year,
    }
    if first.year != last.year:
        return t(lang, "csat.range_years", **params)
    if first.month != last.month:
        return t(lang, "csat.range_months", **params)
    return t(lang, "csat.range_days", **params)


def group_name(lang: str, by: str, row: CsatRow, *, cjk: bool = True) -> str:
    """A group's name for people: the technician's or team's name, 'Jun 2026' for a month."""
    if row.group == "-":
        return t(lang, f"csat.nobody.{by}")
    if by == "month":
        year, month = row.group.split("-")
        return t(lang, "csat.month", month=t(lang, "staff.months").split()[int(month) - 1], year=year)
    if not cjk and CJK.search(row.name):
        return row.group  # the username or team code: drawable without a Chinese font
    return row.name


def percent(value: float) -> str:
    """57.1 → '57%'."""
    return f"{value:.0f}%"


def ordered(report: CsatReport) -> list[CsatRow]:
    """Months in calendar order (a trend reads left to right); people and teams best first."""
    if report.by == "month":
        return sorted(report.rows, key=lambda row: row.group)
    return sorted(report.rows, key=lambda row: (-row.csat_percent, -row.average, -row.count, row.name))


def shown(report: CsatReport) -> tuple[list[CsatRow], int]:
    """The rows to list (at most MAX_LINES: the latest months, the best groups) and how many are left out."""
    rows = ordered(report)
    if len(rows) <= MAX_LINES:
        return rows, 0
    if report.by == "month":
        return rows[-MAX_LINES:], len(rows) - MAX_LINES
    return rows[:MAX_LINES], len(rows) - MAX_LINES


# --- the chart --------------------------------------------------------------------------------------------




@dataclass(frozen=True, slots=True)
class ChartTexts:
    """The words a chart is drawn with: `lang` is the language they are in (English without a CJK font)."""

    lang: str
    title: str
    axis: str
    names: tuple[str, ...]
    bars: tuple[str, ...]
    values: tuple[float, ...]


def chart_texts(report: CsatReport, period: Period, lang: str, *, cjk: bool) -> ChartTexts:
    """Labels in the reader's language, or in English when Chinese cannot be drawn (no empty boxes); bars
    from the top: the best group first, months in calendar order."""
    drawn = lang if lang != "zh" or cjk else "en"
    rows, _left_out = shown(report)
    return ChartTexts(
        lang=drawn,
        title=t(drawn, "csat.chart_title", by=t(drawn, f"csat.by.{report.by}"), period=period.words(drawn)),
        axis=t(drawn, "csat.chart_axis"),
        names=tuple(group_name(drawn, report.by, row, cjk=cjk) for row in rows),
        bars=tuple(
            t(drawn, "csat.chart_bar", percent=percent(row.csat_percent), count=row.count) for row in rows
        ),
        values=tuple(row.csat_percent for row in rows),
    )


def draw_csat_chart(report: CsatReport, period: Period, lang: str, *, font: str | None) -> bytes:
    """A small horizontal bar chart of CSAT % per group, as PNG, labelled with `font` for Chinese (None:
    English labels). A private Agg Figure: no pyplot, no global state, safe in a worker thread."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    texts = chart_texts(report, period, lang, cjk=font is not None)
    family = [font, "DejaVu Sans"] if font is not None else ["DejaVu Sans"]
    count = len(texts.values)
    height = 1.4 + 0.42 * count
    figure = Figure(figsize=(7.0, height), dpi=100, facecolor="white")
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.27, 0.55 / height, 0.62, 1 - 1.25 / height))
    positions = list(range(count))[::-1]  # barh counts from the bottom: the first row on top
    colours = [
        BAR_COLOURS[0] if value >= 80 else BAR_COLOURS[1] if value >= 60 else BAR_COLOURS[2]
        for value in texts.values
    ]
    # A group at 0 % still shows a sliver, so the row does not look missing.
    axes.barh(positions, [max(value, 0.8) for value in texts.values], height=0.62, color=colours)
    for position, value, text in zip(positions, texts.values, texts.bars, strict=True):
        axes.text(
            min(value, 100.0) + 1.5,
            position,
            text,
            va="center",
            fontsize=9,
            fontfamily=family,
            color="#0f172a",
        )
    axes.set_yticks(positions, list(texts.names), fontsize=10, fontfamily=family)
    axes.set_xlim(0, 120)
    axes.set_xticks([0, 20, 40, 60, 80, 100], ["0", "20", "40", "60", "80", "100%"], fontsize=8)
    axes.set_xlabel(texts.axis, fontsize=9, fontfamily=family, color="#475569")
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.tick_params(axis="y", length=0)
    figure.text(
        0.02, 1 - 0.3 / height, texts.title, fontsize=11, fontweight="bold", fontfamily=family, va="center"
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


def chart_alt(report: CsatReport, lang: str) -> str:
    """The chart in words, in the reader's language (alt text is text: no font needed)."""
    rows, _left_out = shown(report)
    separator = "；" if lang == "zh" else "; "
    bars = separator.join(f"{group_name(lang, report.by, row)} {percent(row.csat_percent)}" for row in rows)
    return t(lang, "csat.chart_alt", by=t(lang, f"csat.by.{report.by}"), bars=bars)


# --- the handler -------------------------------------------------------------------------------------------


class CsatSummary(Handler):
    """Issue #6 / J8: 'CSAT this month', '本季度各团队的满意度' → CSAT overall and per group, with buttons to
    regroup and a bar chart where the channel shows images. Core decides who may see which figures."""

    intent = "csat_summary"
    roles = None  # everyone is answered: core refuses non-managers, and they hear why

    async def execute(self, turn: Turn) -> list[Reply]:
        """The report of the period, or why there is none."""
        asked = (turn.entity("by") or "").strip().casefold()
        by = asked if asked in CSAT_GROUPINGS else grouping(spoken(turn))
        period = csat_period(turn, by)
        try:
            report = await turn.core.surveys.csat(turn.actor, by=by, since=period.since, until=period.until)
        except PermissionDenied:
            key = "csat.refused_customer" if turn.actor.role is Role.CUSTOMER else "csat.refused_staff"
            return [Reply(text="\n".join([turn.t("csat.refused"), turn.t(key)]))]
        words = period.words(turn.lang)
        if report.overall.count == 0:
            key = "csat.empty_all" if turn.actor.is_admin else "csat.empty_team"
            return [Reply(text="\n".join([turn.t(key, period=words), turn.t("csat.empty_hint")]))]
        rows, left_out = shown(report)
        overall = report.overall
        lines = [
            turn.t("csat.title", by=turn.t(f"csat.by.{by}"), period=words),
            turn.t(
                "csat.overall",
                count=overall.count,
                average=f"{overall.average:.1f}",
                percent=percent(overall.csat_percent),
            ),
        ]
        lines += [
            turn.t(
                "csat.row",
                name=group_name(turn.lang, by, row),
                percent=percent(row.csat_percent),
                average=f"{row.average:.1f}",
                count=row.count,
            )
            for row in rows
        ]
        if left_out:
            lines.append(turn.t("csat.more_months" if by == "month" else "csat.more", count=left_out))
        buttons = tuple(
            Button(
                title=turn.t(f"csat.button.{other}"),
                payload=payload(self.intent, by=other, period=period.token()),
            )
            for other in CSAT_GROUPINGS
            if other != by
        )
        image: bytes | None = None
        alt = ""
        if turn.channel in IMAGE_CHANNELS and rows:
            font = cjk_font() if turn.lang == "zh" or any(CJK.search(row.name) for row in rows) else None
            # Drawing takes tens of milliseconds: off the event loop.
            image = await asyncio.to_thread(draw_csat_chart, report, period, turn.lang, font=font)
            alt = chart_alt(report, turn.lang)
        return [Reply(text="\n".join(lines), buttons=buttons, image=image, image_alt=alt)]


def handlers() -> list[Handler]:
    """One instance of every report handler."""
    return [CsatSummary()]
