"""Manager intents: the pipeline, and a customer's 360° overview."""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from bot.dialogue import Handler, Slot, Turn
from bot.intents.sales import (
    OPEN_STAGES,
    SALES_ROLES,
    STAFF_ROLES,
    STAGES,
    CustomerHandler,
    StaffHandler,
    day_label,
    label,
    local_today,
    money,
    payload,
    short,
    spoken,
    whens,
)
from bot.messages import Button, Reply
from core.errors import NotFound

# --- pipeline_summary ------------------------------------------------------------------------------------


def quarter_of(day: date) -> tuple[date, date]:
    """First and last day of the quarter holding `day`."""
    first_month = (day.month - 1) // 3 * 3 + 1
    start = date(day.year, first_month, 1)
    return start, month_end(date(day.year, first_month + 2, 1))


def month_end(day: date) -> date:
    """Last day of `day`'s month."""
    following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return following - timedelta(days=1)


def width(text: str) -> int:
    """Columns a string takes in a monospace font (Chinese characters take two)."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def pad(text: str, columns: int, *, right: bool = False) -> str:
    """Pad to `columns` display columns."""
    fill = " " * max(0, columns - width(text))
    return fill + text if right else text + fill


ZH_QUARTER = {"一": 1, "二": 2, "三": 3, "四": 4, "1": 1, "2": 2, "3": 3, "4": 4}


class PipelineSummary(StaffHandler):
    """J8: 'pipeline this quarter' → funnel by stage and the weighted forecast by month."""

    intent = "pipeline_summary"
    roles = SALES_ROLES

    async def execute(self, turn: Turn) -> list[Reply]:
        """The funnel of the period as a compact table."""
        start, end, period = self._period(turn)
        result = await turn.core.sales.pipeline(turn.actor, close_from=start, close_to=end)
        title = turn.t("pipeline.title", period=period, start=day_label(turn, start),
                       end=day_label(turn, end))
        if not any(stage.count for stage in result.stages):
            return [Reply(text=turn.t("pipeline.empty", period=period))]
        by_stage = {entry.stage: entry for entry in result.stages}
        header = (turn.t("pipeline.col_stage"), turn.t("pipeline.col_count"), turn.t("pipeline.col_amount"),
                  turn.t("pipeline.col_weighted"))
        rows: list[tuple[str, str, str, str]] = [header]
        for stage in OPEN_STAGES:
            entry = by_stage[stage]
            rows.append((turn.t(f"deal.stages.{stage}"), str(entry.count), f"{entry.amount:,.2f}",
                         f"{entry.weighted:,.2f}"))
        rows.append((turn.t("pipeline.open_total"), str(result.open_count), f"{result.open_amount:,.2f}",
                     f"{result.weighted_forecast:,.2f}"))
        for stage in STAGES[4:]:
            entry = by_stage[stage]
            rows.append((turn.t(f"deal.stages.{stage}"), str(entry.count), f"{entry.amount:,.2f}", ""))
        columns = [max(width(row[index]) for row in rows) for index in range(4)]
        table = [
            "  ".join(pad(cell, columns[index], right=index > 0) for index, cell in enumerate(row)).rstrip()
            for row in rows
        ]
        lines = [title, *table, "", turn.t("pipeline.forecast", amount=money(result.weighted_forecast))]
        months = turn.t("staff.months").split()
        for month, amount in result.forecast_by_month.items():
            year, number = month.split("-")
            lines.append(turn.t("pipeline.forecast_month", month=months[int(number) - 1], year=year,
                                amount=money(amount)))
        return [Reply(text="\n".join(lines))]

    def _period(self, turn: Turn) -> tuple[date, date, str]:
        """The closing-date window the person asked for ('this quarter' unless they said otherwise)."""
        today, text = local_today(turn), spoken(turn).casefold()

        def quarter(day: date) -> tuple[date, date, str]:
            first, last = quarter_of(day)
            return first, last, turn.t("pipeline.quarter", number=(first.month - 1) // 3 + 1, year=first.year)

        def month(day: date) -> tuple[date, date, str]:
            first = day.replace(day=1)
            name = turn.t("staff.months").split()[first.month - 1]
            return first, month_end(first), turn.t("pipeline.month", month=name, year=first.year)

        this_quarter = quarter_of(today)[0]
        if re.search(r"next\s+quarter|下(?:个|一)?季度", text):
            return quarter(quarter_of(this_quarter + timedelta(days=100))[0])
        if re.search(r"(?:last|previous)\s+quarter|上(?:个|一)?季度", text):
            return quarter(this_quarter - timedelta(days=1))
        numbered = re.search(r"\bq([1-4])\b|第?([一二三四1-4])季度", text)
        if numbered:
            number = ZH_QUARTER[numbered.group(1) or numbered.group(2)]
            return quarter(date(today.year, number * 3, 1))
        if re.search(r"next\s+month|下(?:个)?月", text):
            return month(month_end(today) + timedelta(days=1))
        if re.search(r"(?:last|previous)\s+month|上(?:个)?月", text):
            return month(today.replace(day=1) - timedelta(days=1))
        if re.search(r"this\s+month|本月|这个月|当月", text):
            return month(today)
        if re.search(r"this\s+year|今年|本年|全年", text):
            return date(today.year, 1, 1), date(today.year, 12, 31), turn.t("pipeline.year", year=today.year)
        if re.search(r"this\s+quarter|本季度?|这(?:个)?季度", text):
            return quarter(today)
        for when in whens(turn):
            day = when.date() if isinstance(when, datetime) else when
            return quarter(day) if re.search(r"quarter|季度", text) else month(day)
        return quarter(today)


# --- customer_overview ---------------------------------------------------------------------------------

SECTIONS = ("summary", "contacts", "products", "requests", "deals", "visits")
SALES_SECTIONS = frozenset({"deals", "visits"})
SECTION_LIMIT = 10


class CustomerOverview(CustomerHandler):
    """J8: 'show me Acme' → profile, contacts, products, open requests, deals and visits in one place."""

    intent = "customer_overview"
    roles = STAFF_ROLES
    slots = (Slot("customer", "overview.ask_customer", entity="customer"),)

    async def prefill(self, turn: Turn) -> None:
        """The customer named (or the one talked about before) and the section asked for."""
        section = (turn.entity("section") or "summary").strip().casefold()
        turn.slots["section"] = section if section in SECTIONS else "summary"
        query, text = turn.entity("customer"), spoken(turn)
        await self.take_customer(turn, query, text)
        remembered = turn.state.context.get("customer")
        if "customer" not in turn.slots and not query and not turn.slots.get("_choices") and remembered:
            turn.slots.pop("_notes", None)
            await self.take_customer(turn, remembered, "")

    async def validate(self, turn: Turn, slot: Slot, raw: str) -> Any:
        """A customer by name or code, within the actor's scope."""
        return await self.customer_answer(turn, raw)

    async def question(self, turn: Turn, slot: Slot) -> list[Reply]:
        """Which customer (buttons when several match)."""
        return [self.customer_question(turn, slot.prompt)]

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
            lines.append(turn.t("overview.deals", count=len(deals),
                                amount=money(sum((deal.amount for deal in deals), Decimal("0"))))
                         if deals else turn.t("overview.no_deals"))
            for deal in deals[: limit if section == "deals" else 0]:
                closes = day_label(turn, deal.expected_close) if deal.expected_close else "—"
                lines.append(f"  • {deal.ref} {deal.name} — {turn.t(f'deal.stages.{deal.stage}')} — "
                             f"{money(deal.amount)} — {turn.t('overview.closes', day=closes)}")
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
                segment=customer.segment or "—", tier=label(turn, "overview.tiers", customer.tier),
                lifecycle=label(turn, "overview.lifecycle", customer.lifecycle_stage),
                owner=customer.owner or "—"))
            if customer.address:
                head.append(turn.t("overview.address", address=customer.address))
        buttons = tuple(
            Button(title=turn.t(f"overview.section_{name}"),
                   payload=payload(self.intent, customer=code, section=name))
            for name in SECTIONS
            if name != section and (name not in SALES_SECTIONS or sales)
            and (name == "summary" or section != "summary" or counts.get(name, 1) > 0)
        )
        return [Reply(text="\n".join([*head, *lines]), buttons=buttons)]


def handlers() -> list[Handler]:
    """One instance of every manager handler."""
    return [PipelineSummary(), CustomerOverview()]
