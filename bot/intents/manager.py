"""Manager intents: the pipeline, and a customer's 360° overview."""

from __future__ import annotations

import asyncio
import io
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from bot.charting import IMAGE_CHANNELS, cjk_font
from bot.dialogue import NOTES_KEY, Handler, Slot, Turn
from bot.i18n import t
from bot.intents.sales import CustomerHandler
from bot.intents.staff import (
    SALES_ROLES,
    STAFF_ROLES,
    StaffHandler,
    currency,
    day_label,
    label,
    local_today,
    money,
    payload,
    short,
    spoken,
    whens,
    zone,
)
from bot.messages import Button, Reply
from bot.parsing import OPEN_STAGES, STAGES, month_end, quarter_bounds
from core.domain.enums import Role
from core.errors import NotFound, PermissionDenied
from core.schemas import CustomerInsightOut, PipelineReportOut

# --- pipeline_summary ------------------------------------------------------------------------------------


def width(text: str) -> int:
    """Columns a string takes in a monospace font (Chinese characters take two)."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def pad(text: str, columns: int, *, right: bool = False) -> str:
    """Pad to `columns` display columns."""
    fill = " " * max(0, columns - width(text))
    return fill + text if right else text + fill


ZH_QUARTER = {"一": 1, "二": 2, "三": 3, "四": 4, "1": 1, "2": 2, "3": 3, "4": 4}


PERIOD_TOKEN = re.compile(r"^(?:q(\d{4})-([1-4])|m(\d{4})-(\d{2})|y(\d{4}))$")
# "pipeline for Li Na", "Li Na's pipeline", "pipeline of the north team", "华北团队的管道", "李娜的销售漏斗".
SUBJECT_EN = (
    re.compile(r"\b(?:pipeline|funnel|forecast)\s+(?:for|of)\s+(?P<who>.+)$", re.IGNORECASE),
    re.compile(r"^(?:show\s+(?:me\s+)?|what\s+is\s+|how\s+is\s+)?(?P<who>.+?)['’]s\s+"
               r"(?:(?:sales\s+)?pipeline|funnel|forecast)", re.IGNORECASE),
    re.compile(r"^(?:show\s+(?:me\s+)?)?(?:the\s+)?(?P<who>.+?\s+(?:team|branch|region))\s+"
               r"(?:(?:sales\s+)?pipeline|funnel|forecast)", re.IGNORECASE),
)
SUBJECT_ZH = re.compile(
    r"(?:看看|查看|看一下|显示)?(?P<who>[^\s的，,。？?]{1,20}?)的(?:销售)?(?:管道|漏斗|预测|商机|pipeline)"
)
TEAM_WORDS = re.compile(
    r"(?:^the\s+|\s+(?:team|branch|region|department|office)$|(?:团队|分公司|部门|大区|区域|组)$)",
    re.IGNORECASE,
)
TEAM_HINT = re.compile(r"(?:\b(?:team|branch|region|department|office)$|(?:团队|分公司|部门|大区|区域|组)$)",
                       re.IGNORECASE)
PERIOD_WORDS = re.compile(
    r"(?:\b(?:this|next|last|previous)\s+(?:quarter|month|year|week)\b|\bq[1-4]\b|\bquarter\b|\b\d{4}\b|"
    r"\b(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|today|tomorrow|ytd)\b|"
    r"季度|本月|这个月|当月|下个?月|上个?月|今年|本年|全年|明年|去年|^(?:我|我们|我们团队|我团队|团队|全部|所有|整个团队|本)$)",
    re.IGNORECASE,
)
FILLER = re.compile(r"(?:\b(?:in|for|of|the|and|to|until|from)\b|[\d\s,，.。\-–/])+", re.IGNORECASE)
# "张伟本季度的销售漏斗": the period around a Chinese name is not part of it.
ZH_PERIOD_EDGE = re.compile(
    r"^(?:(?:明年|去年|今年)?(?:本|这个?|下个?|上个?|第?[一二三四1-4])季度|本月|这个月|下个?月|上个?月|今年|本年|全年"
    r"|明年|去年)|"
    r"(?:(?:明年|去年|今年)?(?:本|这个?|下个?|上个?|第?[一二三四1-4])季度|本月|这个月|下个?月|上个?月|今年|本年|全年"
    r"|明年|去年)$"
)
SELF_WORDS = frozenset((
    "me", "my", "mine", "myself", "us", "our", "our team", "my team", "the team", "everyone", "all",
    "rep", "reps", "each rep", "every rep",
))


# "Q1 next year", "明年一季度", "Q3 2025": the year a numbered quarter is in.
NEXT_YEAR = re.compile(r"\bnext\s+year\b|明年|下一?年")
LAST_YEAR = re.compile(r"\b(?:last|previous)\s+year\b|去年|上一?年")
YEAR_NUMBER = re.compile(r"\b(20\d\d)\b|(20\d\d)年")


def year_said(text: str, today: date) -> int:
    """The year a message names for its period (this year unless it says another)."""
    number = YEAR_NUMBER.search(text)
    if number:
        return int(number.group(1) or number.group(2))
    if NEXT_YEAR.search(text):
        return today.year + 1
    if LAST_YEAR.search(text):
        return today.year - 1
    return today.year


def only_period_words(text: str) -> bool:
    """'March', 'Q3 2026', '本季度': a period, not a person — but 'Ma Jun' is a person despite 'Jun'."""
    rest = PERIOD_WORDS.sub(" ", text)
    return not FILLER.sub("", rest)


def subject_of(text: str) -> tuple[str | None, str | None]:
    """(rep, team) named in the message, or (None, None) for one's own pipeline."""
    text = " ".join(text.split()).strip(" ?？!！.。")
    found: str | None = None
    for pattern in SUBJECT_EN:
        match = pattern.search(text)
        if match:
            found = match["who"]
            break
    if found is None:
        match = SUBJECT_ZH.search(text)
        found = match["who"] if match else None
    if not found:
        return None, None
    # Trailing period words belong to the period, not the person: "pipeline for Li Na this quarter".
    found = re.split(
        r"\s+(?:this|next|last|previous|in|for|by)\s+(?:quarter|month|year|q[1-4])\b|\s+q[1-4]\b",
        found, maxsplit=1, flags=re.IGNORECASE,
    )[0].strip(" ,，")
    found = ZH_PERIOD_EDGE.sub("", found).strip()
    if not found or found.casefold() in SELF_WORDS or only_period_words(found):
        return None, None
    if TEAM_HINT.search(found):
        team = TEAM_WORDS.sub("", found).strip()
        return (None, team) if team and team.casefold() not in SELF_WORDS else (None, None)
    return found, None


def percent_text(turn: Turn, value: float | None) -> str:
    """'67%' or a dash when there is nothing to divide."""
    return turn.t("pipeline.none") if value is None else f"{value * 100:.0f}%"


def days_text(turn: Turn, value: float | None) -> str:
    """'12 d' / '12 天', or a dash."""
    return turn.t("pipeline.none") if value is None else turn.t("pipeline.days", days=f"{value:.0f}")


def table_lines(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as aligned columns: the first left, the rest right-aligned."""
    columns = [max(width(row[index]) for row in rows) for index in range(len(rows[0]))]
    return [
        "  ".join(pad(cell, columns[index], right=index > 0) for index, cell in enumerate(row)).rstrip()
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class ChartTexts:
    """What the pipeline chart writes, in the reader's language (or English without a CJK font)."""

    title: str
    funnel: str
    forecast: str
    stages: tuple[str, ...]
    amounts: tuple[float, ...]
    counts: tuple[int, ...]
    months: tuple[str, ...]
    forecasts: tuple[float, ...]


def chart_texts(report: PipelineReportOut, lang: str, period: str) -> ChartTexts:
    """Labels in `lang`; the caller passes "en" when no font can draw Chinese."""
    by_stage = {entry.stage: entry for entry in report.stages}
    months = t(lang, "staff.months").split()
    month_labels = []
    for month in report.forecast_by_month:
        year, number = month.split("-")
        month_labels.append(t(lang, "pipeline.forecast_month", month=months[int(number) - 1], year=year,
                              amount="").strip(" :："))
    return ChartTexts(
        title=t(lang, "manager.chart_title", period=period),
        funnel=t(lang, "manager.chart_funnel"),
        forecast=t(lang, "manager.chart_forecast"),
        stages=tuple(t(lang, f"deal.stages.{stage}") for stage in OPEN_STAGES),
        amounts=tuple(float(by_stage[stage].amount) for stage in OPEN_STAGES),
        counts=tuple(by_stage[stage].count for stage in OPEN_STAGES),
        months=tuple(month_labels),
        forecasts=tuple(float(amount) for amount in report.forecast_by_month.values()),
    )


FUNNEL_COLOURS = ("#93c5fd", "#60a5fa", "#3b82f6", "#1d4ed8")


def draw_pipeline_chart(texts: ChartTexts, *, font: str | None) -> bytes:
    """Funnel by stage (centred bars, widest on top) and weighted forecast by month, as PNG. A private Agg
    Figure: no pyplot, no global state, safe in a worker thread."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    family = [font, "DejaVu Sans"] if font is not None else ["DejaVu Sans"]
    figure = Figure(figsize=(9.0, 3.8), dpi=100, facecolor="white")
    FigureCanvasAgg(figure)
    funnel = figure.add_axes((0.03, 0.08, 0.44, 0.72))
    widest = max(texts.amounts) or 1.0
    positions = list(range(len(texts.stages)))[::-1]
    # A stage with nothing in it still shows a sliver, so the funnel keeps its shape.
    widths = [max(amount / widest, 0.04) for amount in texts.amounts]
    funnel.barh(positions, widths, left=[(1 - value) / 2 for value in widths], height=0.8,
                color=FUNNEL_COLOURS[: len(widths)])
    rows = zip(positions, texts.stages, texts.amounts, texts.counts, strict=True)
    for position, name, amount, count in rows:
        funnel.text(0.5, position, f"{name}  {count} · ¥{amount:,.0f}", ha="center", va="center", fontsize=9,
                    fontfamily=family, color="#0f172a")
    funnel.set_xlim(0, 1)
    funnel.set_axis_off()
    funnel.set_title(texts.funnel, fontsize=10, fontfamily=family)
    forecast = figure.add_axes((0.58, 0.14, 0.39, 0.66))
    if texts.months:
        places = list(range(len(texts.months)))
        forecast.bar(places, texts.forecasts, color="#16a34a", width=0.6)
        forecast.set_xticks(places, list(texts.months), fontsize=8, fontfamily=family)
        for place, value in zip(places, texts.forecasts, strict=True):
            forecast.text(place, value, f"¥{value:,.0f}", ha="center", va="bottom", fontsize=8)
        forecast.set_ylim(0, max(texts.forecasts) * 1.2 or 1.0)
    forecast.tick_params(axis="y", labelsize=8)
    forecast.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:,.0f}"))
    forecast.set_title(texts.forecast, fontsize=10, fontfamily=family)
    for side in ("top", "right"):
        forecast.spines[side].set_visible(False)
    figure.text(0.02, 0.93, texts.title, fontsize=11, fontweight="bold", fontfamily=family, va="center")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


class PipelineSummary(StaffHandler):
    """J8: 'pipeline this quarter', 'pipeline for Li Na', '华北团队的管道' → funnel, forecast by month,
    per rep, conversion and age; a chart where the channel shows images, the tables always in the text."""

    intent = "pipeline_summary"
    roles = SALES_ROLES

    async def execute(self, turn: Turn) -> list[Reply]:
        """The report of the period as compact tables (and a chart where images show)."""
        start, end, period, token = self._period(turn)
        rep, team = turn.entity("rep"), turn.entity("team")
        if rep is None and team is None:
            rep, team = subject_of(spoken(turn))
        try:
            report = await turn.core.pipeline.report(turn.actor, start, end, rep=rep, team=team)
        except PermissionDenied as error:
            key = "pipeline.refused" if error.field in ("rep", "team") else "pipeline.refused_role"
            return [Reply(text=turn.t(key))]
        except NotFound:
            return [Reply(text=turn.t("pipeline.unknown", who=short(rep or team or "", 40)))]
        title = turn.t("pipeline.title", period=period, start=day_label(turn, start),
                       end=day_label(turn, end))
        head: list[str] = []
        if report.rep:
            person = next((entry.name for entry in report.reps), report.rep)
            head.append(turn.t("pipeline.of_rep", name=person))
        elif report.team:
            head.append(turn.t("pipeline.of_team", team=report.team_name or report.team))
        buttons = self._buttons(turn, report, token)
        if not any(stage.count for stage in report.stages):
            return [Reply(text="\n".join([*head, turn.t("pipeline.empty", period=period)]), buttons=buttons)]
        lines = [*head, title, *table_lines(self._stage_rows(turn, report))]
        if len(report.reps) > 1 or (report.reps and turn.actor.role is not Role.REP and not report.rep):
            lines += ["", turn.t("pipeline.by_rep"), *table_lines(self._rep_rows(turn, report))]
        lines += ["", turn.t("pipeline.flow")]
        ages = {entry.stage: entry for entry in report.age}
        for row in report.conversion:
            age = ages[row.stage]
            lines.append(turn.t(
                "pipeline.flow_row", stage=turn.t(f"deal.stages.{row.stage}"), reached=row.reached,
                rate=percent_text(turn, row.rate), win=percent_text(turn, row.win_rate), open=age.count,
                days=days_text(turn, age.average_days_in_stage), age=days_text(turn, age.average_days_open)))
        lines += ["", turn.t("pipeline.forecast", amount=money(report.weighted_forecast, currency(turn)))]
        months = turn.t("staff.months").split()
        for month, amount in report.forecast_by_month.items():
            year, number = month.split("-")
            lines.append(turn.t("pipeline.forecast_month", month=months[int(number) - 1], year=year,
                                amount=money(amount, currency(turn))))
        image: bytes | None = None
        alt = ""
        if turn.channel in IMAGE_CHANNELS and report.open_count:
            font = cjk_font() if turn.lang == "zh" else None
            # Without a font that can write Chinese the chart speaks English rather than drawing empty boxes.
            chart_lang = turn.lang if font is not None or turn.lang != "zh" else "en"
            words = period if chart_lang == turn.lang else self._english(token)
            texts = chart_texts(report, chart_lang, words)
            # Drawing takes tens of milliseconds: off the event loop.
            image = await asyncio.to_thread(draw_pipeline_chart, texts, font=font)
            alt = self._alt(turn, report)
        return [Reply(text="\n".join(lines), buttons=buttons, image=image, image_alt=alt)]

    @staticmethod
    def _stage_rows(turn: Turn, report: PipelineReportOut) -> list[tuple[str, ...]]:
        by_stage = {entry.stage: entry for entry in report.stages}
        rows: list[tuple[str, ...]] = [(turn.t("pipeline.col_stage"), turn.t("pipeline.col_count"),
                                        turn.t("pipeline.col_amount"), turn.t("pipeline.col_weighted"))]
        for stage in OPEN_STAGES:
            entry = by_stage[stage]
            rows.append((turn.t(f"deal.stages.{stage}"), str(entry.count), f"{entry.amount:,.2f}",
                         f"{entry.weighted:,.2f}"))
        rows.append((turn.t("pipeline.open_total"), str(report.open_count), f"{report.open_amount:,.2f}",
                     f"{report.weighted_forecast:,.2f}"))
        for stage in STAGES[4:]:
            entry = by_stage[stage]
            rows.append((turn.t(f"deal.stages.{stage}"), str(entry.count), f"{entry.amount:,.2f}", ""))
        return rows

    @staticmethod
    def _rep_rows(turn: Turn, report: PipelineReportOut) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = [(turn.t("pipeline.col_rep"), turn.t("pipeline.col_open"),
                                        turn.t("pipeline.col_weighted"), turn.t("pipeline.col_won"))]
        for entry in report.reps:
            rows.append((short(entry.name or entry.username, 24), str(entry.open_count),
                         f"{entry.weighted:,.2f}", f"{entry.won_amount:,.2f}"))
        return rows

    def _buttons(self, turn: Turn, report: PipelineReportOut, token: str) -> tuple[Button, ...]:
        """Drill into each rep of a team (or back to the whole team); Telegram allows 64 bytes of payload."""
        if turn.actor.role is Role.REP and not turn.actor.is_admin:
            return ()
        buttons: list[Button] = []
        if report.rep or report.team:
            buttons.append(Button(title=turn.t("pipeline.whole_team"),
                                  payload=payload(self.intent, period=token)))
        elif len(report.reps) > 1:
            for entry in report.reps[:6]:
                data = payload(self.intent, rep=entry.username, period=token)
                if len(data.encode("utf-8")) <= 64:
                    buttons.append(Button(title=short(entry.name or entry.username, 30), payload=data))
        return tuple(buttons)

    @staticmethod
    def _english(token: str) -> str:
        """The period in English words, for a chart that cannot write Chinese."""
        match = PERIOD_TOKEN.match(token)
        if match is None:
            return token
        if match[1]:
            return t("en", "pipeline.quarter", number=int(match[2]), year=match[1])
        if match[3]:
            return t("en", "pipeline.month", month=t("en", "staff.months").split()[int(match[4]) - 1],
                     year=match[3])
        return t("en", "pipeline.year", year=match[5])

    @staticmethod
    def _alt(turn: Turn, report: PipelineReportOut) -> str:
        """The chart in words, in the reader's language."""
        separator = "；" if turn.lang == "zh" else "; "
        by_stage = {entry.stage: entry for entry in report.stages}
        stages = separator.join(f"{turn.t(f'deal.stages.{stage}')} {by_stage[stage].count} · "
                                f"{money(by_stage[stage].amount, currency(turn))}" for stage in OPEN_STAGES)
        months = turn.t("staff.months").split()
        forecast = separator.join(
            turn.t("pipeline.forecast_month", month=months[int(month[5:]) - 1], year=month[:4],
                   amount=money(amount, currency(turn))).strip()
            for month, amount in report.forecast_by_month.items()
        )
        return turn.t("pipeline.chart_alt", stages=stages, months=forecast or turn.t("pipeline.none"))

    def _period(self, turn: Turn) -> tuple[date, date, str, str]:
        """The closing-date window the person asked for ('this quarter' unless they said otherwise), and a
        short token naming it for buttons."""
        today, text = local_today(turn), spoken(turn).casefold()

        def quarter(day: date) -> tuple[date, date, str, str]:
            first, last = quarter_bounds(day)
            number = (first.month - 1) // 3 + 1
            return first, last, turn.t("pipeline.quarter", number=number, year=first.year), \
                f"q{first.year}-{number}"

        def month(day: date) -> tuple[date, date, str, str]:
            first = day.replace(day=1)
            name = turn.t("staff.months").split()[first.month - 1]
            return first, month_end(first), turn.t("pipeline.month", month=name, year=first.year), \
                f"m{first.year}-{first.month:02d}"

        def year(number: int) -> tuple[date, date, str, str]:
            words = turn.t("pipeline.year", year=number)
            return date(number, 1, 1), date(number, 12, 31), words, f"y{number}"

        asked = PERIOD_TOKEN.match((turn.entity("period") or "").strip().casefold())
        if asked is not None:
            if asked[1]:
                return quarter(date(int(asked[1]), int(asked[2]) * 3, 1))
            if asked[3] and 1 <= int(asked[4]) <= 12:
                return month(date(int(asked[3]), int(asked[4]), 1))
            if asked[5]:
                return year(int(asked[5]))
        this_quarter = quarter_bounds(today)[0]
        if re.search(r"next\s+quarter|下(?:个|一)?季度", text):
            return quarter(quarter_bounds(this_quarter + timedelta(days=100))[0])
        if re.search(r"(?:last|previous)\s+quarter|上(?:个|一)?季度", text):
            return quarter(this_quarter - timedelta(days=1))
        numbered = re.search(r"\bq([1-4])\b|第?([一二三四1-4])季度", text)
        if numbered:
            number = ZH_QUARTER[numbered.group(1) or numbered.group(2)]
            return quarter(date(year_said(text, today), number * 3, 1))
        if re.search(r"next\s+month|下(?:个)?月", text):
            return month(month_end(today) + timedelta(days=1))
        if re.search(r"(?:last|previous)\s+month|上(?:个)?月", text):
            return month(today.replace(day=1) - timedelta(days=1))
        if re.search(r"this\s+month|本月|这个月|当月", text):
            return month(today)
        if re.search(r"this\s+year|今年|本年|全年", text):
            return year(today.year)
        if re.search(r"this\s+quarter|本季度?|这(?:个)?季度", text):
            return quarter(today)
        for when in whens(turn):
            day = when.date() if isinstance(when, datetime) else when
            return quarter(day) if re.search(r"quarter|季度", text) else month(day)
        return quarter(today)


# --- customer_overview ---------------------------------------------------------------------------------

SECTIONS = ("summary", "contacts", "products", "requests", "deals", "visits", "surveys")
SALES_SECTIONS = frozenset({"deals", "visits"})
SURVEY_WORDS = re.compile(r"\b(?:csat|surveys?|satisf(?:ied|action)|ratings?)\b|满意|评价", re.IGNORECASE)
SECTION_LIMIT = 10


def local_day(turn: Turn, moment: datetime) -> date:
    """The person's calendar day of a stored instant."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone(turn)).date()


def tier_title(turn: Turn, tier: str) -> str:
    """'Key', '关键客户'."""
    return label(turn, "overview.tier_title", tier)


def value_lines(turn: Turn, insight: CustomerInsightOut) -> list[str]:
    """Value score with the tier move ('Key (was Major)'), CSAT of 12 months and the last comment."""
    score = f"{insight.value_score:.1f}"
    if insight.previous_tier and insight.previous_tier != insight.tier:
        lines = [turn.t("overview.value_moved", score=score, tier=tier_title(turn, insight.tier),
                        previous=tier_title(turn, insight.previous_tier))]
    else:
        lines = [turn.t("overview.value", score=score, tier=tier_title(turn, insight.tier))]
    if insight.csat_count and insight.csat_average is not None:
        lines.append(turn.t("overview.csat", average=f"{insight.csat_average:.1f}", count=insight.csat_count))
    else:
        lines.append(turn.t("overview.csat_none"))
    if insight.last_comment and insight.last_comment_at is not None:
        day = day_label(turn, local_day(turn, insight.last_comment_at))
        lines.append(turn.t("overview.csat_comment", day=day, comment=short(insight.last_comment, 80)))
    return lines


class CustomerOverview(CustomerHandler):
    """J8: 'show me Acme' → profile, contacts, products, open requests, deals and visits in one place."""

    intent = "customer_overview"
    roles = STAFF_ROLES
    slots = (Slot("customer", "overview.ask_customer", entity="customer"),)

    async def prefill(self, turn: Turn) -> None:
        """The customer named (or the one talked about before) and the section asked for."""
        section = (turn.entity("section") or "").strip().casefold()
        if not section and SURVEY_WORDS.search(spoken(turn)):
            section = "surveys"  # "how satisfied is Acme", "Acme的满意度"
        turn.slots["section"] = section if section in SECTIONS else "summary"
        query, text = turn.entity("customer"), spoken(turn)
        await self.take_customer(turn, query, text)
        remembered = turn.state.context.get("customer")
        if "customer" not in turn.slots and not query and not turn.slots.get("_choices") and remembered:
            turn.slots.pop(NOTES_KEY, None)
            await self.take_customer(turn, remembered, "")

    async def execute(self, turn: Turn) -> list[Reply]:
        """The overview, or one section of it in more detail."""
        code, section = turn.slots["customer"], turn.slots.get("section", "summary")
        # Nothing is confirmed here: the task ends with this answer, even when a question filled the slot.
        turn.state.finish()
        sales = turn.actor.is_admin or turn.actor.role in SALES_ROLES
        if section in SALES_SECTIONS and not sales:
            section = "summary"
        try:
            customer = await turn.core.customers.get(turn.actor, code)
        except NotFound:
            return [turn.say("staff.customer_unknown", query=short(code, 40))]
        turn.state.context["customer"] = customer.code
        core, actor = turn.core, turn.actor
        limit = 3 if section == "summary" else SECTION_LIMIT
        lines: list[str] = []
        counts: dict[str, int] = {}
        if section in ("summary", "contacts"):
            contacts = await core.customers.contacts(actor, code)
            counts["contacts"] = len(contacts)
            if contacts or section == "contacts":
                lines.append(turn.t("overview.contacts", count=len(contacts)))
            for contact in contacts[:limit]:
                extra = [contact.title] if contact.title else []
                if section == "contacts":
                    extra += [value for value in (contact.phone, contact.email) if value]
                lines.append(f"  • {contact.name}" + (f" ({', '.join(extra)})" if extra else ""))
        if section in ("summary", "products"):
            shown = 5 if section == "summary" else limit
            units = await core.installed.list(actor, customer_code=code, limit=shown)
            counts["products"] = units.total
            lines.append(turn.t("overview.products", count=units.total) if units.total
                         else turn.t("overview.no_products"))
            for unit in units.items:
                status = (turn.t("overview.warranty_until", day=day_label(turn, unit.warranty_ends_on))
                          if unit.in_warranty else
                          turn.t("overview.warranty_ended", day=day_label(turn, unit.warranty_ends_on)))
                lines.append(f"  • {unit.serial_number} {unit.product_name} — {status}")
        if section in ("summary", "requests"):
            requests = await core.service_desk.list_requests(actor, customer_code=code, open_only=True,
                                                             limit=limit)
            counts["requests"] = requests.total
            lines.append(turn.t("overview.requests", count=requests.total))
            for request in requests.items:
                lines.append(f"  • {request.ref} {short(request.subject, 50)} "
                             f"({label(turn, 'overview.request_status', request.status)})")
        if sales and section in ("summary", "deals"):
            deals = (await core.sales.list_opportunities(actor, customer_code=code, open_only=True,
                                                         limit=200)).items
            counts["deals"] = len(deals)
            total = money(sum((deal.amount for deal in deals), Decimal("0")), currency(turn))
            lines.append(turn.t("overview.deals", count=len(deals), amount=total)
                         if deals else turn.t("overview.no_deals"))
            for deal in deals[: limit if section == "deals" else 0]:
                closes = day_label(turn, deal.expected_close) if deal.expected_close else "—"
                lines.append(f"  • {deal.ref} {deal.name} — {turn.t(f'deal.stages.{deal.stage}')} — "
                             f"{money(deal.amount, deal.currency)} — {turn.t('overview.closes', day=closes)}")
        insight = await core.customers.insight(actor, code, recent_limit=SECTION_LIMIT)
        counts["surveys"] = insight.csat_count
        if section == "surveys":
            average = f"{insight.csat_average:.1f}" if insight.csat_average is not None else "—"
            lines.append(turn.t("overview.surveys", count=insight.csat_count, average=average))
            for survey in insight.recent:
                answered = survey.answered_at or survey.created_at
                lines.append(turn.t("overview.survey_row", day=day_label(turn, local_day(turn, answered)),
                                    score=survey.score, ref=survey.service_request_ref or "",
                                    comment=short(survey.comment or "", 80)))
        if sales and section in ("summary", "visits"):
            visits = await core.sales.visits(actor, customer_code=code, limit=limit)
            counts["visits"] = visits.total
            if visits.total or section == "visits":
                lines.append(turn.t("overview.visits", count=visits.total))
            for visit in visits.items:
                day = day_label(turn, visit.visited_on)
                lines.append(f"  • {day} {visit.rep}: {short(visit.summary, 70)}")
        head = [turn.t("overview.title", name=customer.name, code=customer.code)]
        if section == "summary":
            head.append(turn.t(
                "overview.profile", type=label(turn, "overview.types", customer.type),
                segment=customer.segment or "—",
                lifecycle=label(turn, "overview.lifecycle", customer.lifecycle_stage),
                owner=customer.owner or "—"))
            if customer.address:
                head.append(turn.t("overview.address", address=customer.address))
            head += value_lines(turn, insight)
        buttons = tuple(
            Button(title=turn.t(f"overview.section_{name}"),
                   payload=payload(self.intent, customer=code, section=name))
            for name in SECTIONS
            if name != section and (name not in SALES_SECTIONS or sales)
            and (name == "summary" or section != "summary" or counts.get(name, 1) > 0)
        )
        return [Reply(text="\n".join([*head, *lines]), buttons=buttons)]


# --- customer_ranking ----------------------------------------------------------------------------------

MOVED_DOWN = re.compile(
    r"\b(?:down|dropp?(?:ed|ing)?|fell|fall(?:en|ing)?|slipp?(?:ed|ing)?|lost\s+(?:a\s+)?tier|downgraded?|"
    r"demoted|declin(?:ed|ing)|lower\s+tier)\b|降级|降档|下降|下滑|掉(?:了)?(?:一)?(?:级|档|层)|降了|等级降低|跌",
    re.IGNORECASE,
)
MOVED_UP = re.compile(
    r"\b(?:moved?\s+up|moving\s+up|went\s+up|upgraded?|promoted|climb(?:ed|ing)?|rose|rising)\b|升级|升档|上升|升了",
    re.IGNORECASE,
)
TIER_WORDS = (
    ("key", re.compile(r"\bkey\b|关键|重点|核心|大客户", re.IGNORECASE)),
    ("major", re.compile(r"\bmajor\b|重要", re.IGNORECASE)),
    ("minor", re.compile(r"\bminor\b|一般客户", re.IGNORECASE)),
)
ZH_NUMBERS = {
    "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10,
    "二十": 20, "十五": 15, "二十五": 25, "三十": 30, "五十": 50,
}
LIMIT = re.compile(r"\b(?:top|best|first|biggest|largest)\s+(\d{1,3})\b|\b(\d{1,3})\s+(?:top|best|biggest)\b|"
                   r"前\s*(\d{1,3}|[一二两三四五六七八九十]{1,3})\s*(?:名|个|位|家)?", re.IGNORECASE)
DEFAULT_RANK = 10


def ranking_request(text: str) -> tuple[str | None, str | None, int]:
    """(moved, tier, limit) asked for in the message: 'down'/'up'/None, a tier or None, how many."""
    moved = "down" if MOVED_DOWN.search(text) else "up" if MOVED_UP.search(text) else None
    tier = next((name for name, pattern in TIER_WORDS if pattern.search(text)), None)
    limit = DEFAULT_RANK
    match = LIMIT.search(text)
    if match:
        raw = next(group for group in match.groups() if group)
        limit = int(raw) if raw.isdigit() else ZH_NUMBERS.get(raw, DEFAULT_RANK)
    return moved, tier, max(1, min(limit, 50))


class CustomerRanking(StaffHandler):
    """'top 10 key customers', 'who dropped a tier', '降级的客户' → ranked by value score, or the tier moves,
    each with a button to the 360 view; managers see their team's customers, reps their own."""

    intent = "customer_ranking"
    roles = SALES_ROLES

    async def execute(self, turn: Turn) -> list[Reply]:
        """The ranking, or the customers that moved tier."""
        moved, tier, limit = ranking_request(spoken(turn))
        asked = (turn.entity("moved") or "").strip().casefold()
        moved = asked if asked in ("down", "up") else moved
        asked_tier = (turn.entity("tier") or "").strip().casefold()
        tier = asked_tier if asked_tier in ("key", "major", "regular", "minor") else tier
        try:
            ranked = await turn.core.customers.ranking(turn.actor, limit=limit, moved=moved, tier=tier)
        except PermissionDenied:
            return [Reply(text=turn.t("ranking.refused"))]
        group = tier_title(turn, tier) if tier else ""
        if not ranked:
            key = f"ranking.none_{moved}" if moved else "ranking.none"
            return [Reply(text=turn.t(key, tier=group))]
        if moved:
            lines = [turn.t(f"ranking.title_{moved}", count=len(ranked), tier=group)]
            lines += [
                turn.t("ranking.move_row", rank=entry.rank, name=entry.name, code=entry.code,
                       previous=tier_title(turn, entry.previous_tier or ""),
                       tier=tier_title(turn, entry.tier),
                       score=f"{entry.value_score:.1f}", owner=entry.owner or "—")
                for entry in ranked
            ]
        else:
            lines = [turn.t("ranking.title_top", count=len(ranked), tier=group)]
            lines += [
                turn.t("ranking.top_row", rank=entry.rank, name=entry.name, code=entry.code,
                       tier=tier_title(turn, entry.tier), score=f"{entry.value_score:.1f}",
                       owner=entry.owner or "—",
                       lifecycle=label(turn, "overview.lifecycle", entry.lifecycle_stage))
                for entry in ranked
            ]
        lines.append(turn.t("ranking.hint"))
        buttons = tuple(
            Button(title=short(entry.name, 30), payload=data)
            for entry in ranked[:10]
            if len((data := payload("customer_overview", customer=entry.code)).encode("utf-8")) <= 64
        )
        return [Reply(text="\n".join(lines), buttons=buttons)]


def handlers() -> list[Handler]:
    """One instance of every manager handler."""
    return [PipelineSummary(), CustomerOverview(), CustomerRanking()]
