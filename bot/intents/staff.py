"""What every staff intent shares: roles, the person's clock and calendar words, money, payloads, labels,
cards, and StaffHandler (a form whose next question follows a rule of its own)."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.dialogue import STOP_KEY, Handler, Slot, Turn
from bot.messages import Reply
from bot.parsing import money as format_money
from bot.parsing import parse_when
from core.domain.enums import Role

SALES_ROLES = frozenset({Role.REP, Role.MANAGER})
STAFF_ROLES = frozenset({Role.REP, Role.MANAGER, Role.AGENT, Role.TECHNICIAN})


def zone(turn: Turn) -> ZoneInfo:
    """The person's timezone, else the company's."""
    for name in (turn.actor.timezone, turn.core.settings.timezone):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def local_now(turn: Turn) -> datetime:
    """Now on the person's wall clock."""
    return turn.now.astimezone(zone(turn))


def local_today(turn: Turn) -> date:
    """Today where the person is."""
    return local_now(turn).date()


def day_label(turn: Turn, day: date) -> str:
    """'Fri 19 Jun' / '6月19日（周五）' (with the year when it is not this year)."""
    weekday = turn.t("staff.weekdays").split()[day.weekday()]
    month = turn.t("staff.months").split()[day.month - 1]
    key = "staff.day" if day.year == local_today(turn).year else "staff.day_year"
    return turn.t(key, weekday=weekday, day=day.day, month=month, year=day.year)


def moment_label(turn: Turn, moment: datetime) -> str:
    """Day and wall-clock time in the person's timezone."""
    local = moment.astimezone(zone(turn))
    return f"{day_label(turn, local.date())} {local:%H:%M}"


def money(value: Decimal | float | int | str, currency: str | None = None) -> str:
    """An amount with its currency's sign ('¥12,345.50'); without a currency, the configured one's
    default (CNY) — pass the deal's or `currency(turn)` where the record or the settings say."""
    return format_money(value, currency or "CNY")


def currency(turn: Turn) -> str:
    """The configured currency (CRMBOT_CURRENCY), for amounts that are not a record's own."""
    return turn.core.settings.currency


def spoken(turn: Turn) -> str:
    """What the person typed; a button payload says nothing beyond its entities."""
    return "" if turn.text.startswith("/") else turn.text


def confirm_card(turn: Turn, text: str) -> Reply:
    """A summary with [Yes] [No]."""
    buttons = (turn.button("staff.yes", "/affirm"), turn.button("staff.no", "/deny"))
    return Reply(text=text, buttons=buttons)


def payload(intent: str, **entities: str) -> str:
    """A compact button payload (Telegram allows 64 bytes of callback data)."""
    return f"/{intent}{json.dumps(entities, ensure_ascii=False, separators=(',', ':'))}"


def label(turn: Turn, prefix: str, value: str) -> str:
    """A catalog label for a stored value, or the value itself when the catalog has none."""
    try:
        return turn.t(f"{prefix}.{value}")
    except KeyError:
        return value.replace("_", " ")


def short(text: str, limit: int = 60) -> str:
    """One line, cut with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def whens(turn: Turn) -> list[date | datetime]:
    """Every date and time this message mentions, in text order."""
    tz = zone(turn)
    found = [item for item in turn.parse.entities if item.entity in ("date", "time")]
    found.sort(key=lambda item: item.start)
    values = [parse_when(item.value, tz) for item in found]
    return [value for value in values if value is not None]


class StaffHandler(Handler):
    """A handler whose next question follows a rule of its own (`next_slot`); notes and stops are the base
    class's (`Handler.note`, `Handler.stop`)."""

    def missing(self, turn: Turn) -> Slot | None:
        """A pending stop first, then the handler's own rule."""
        if STOP_KEY in turn.slots:
            return self.STOP
        return self.next_slot(turn)

    def next_slot(self, turn: Turn) -> Slot | None:
        """The next slot to ask for (default: the base rule, the first needed one without a value)."""
        return super().missing(turn)
