"""Quiet hours: a daily window, in a person's own timezone, when messages that can wait do wait."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def parse_quiet_hours(value: str) -> tuple[time, time] | None:
    """`21:00-08:00` → (21:00, 08:00); an empty value → None; anything else raises ValueError."""
    value = value.strip()
    if not value:
        return None
    match = _WINDOW.match(value)
    if match is None:
        raise ValueError(f"quiet hours must look like 21:00-08:00, not {value!r}")
    start = time(int(match.group(1)), int(match.group(2)))
    end = time(int(match.group(3)), int(match.group(4)))
    return None if start == end else (start, end)


def quiet_until(now: datetime, timezone: str, quiet_hours: str) -> datetime | None:
    """When the quiet window around `now` ends (in UTC-aware time), or None when `now` is not quiet."""
    window = parse_quiet_hours(quiet_hours)
    if window is None:
        return None
    start, end = window
    local = now.astimezone(ZoneInfo(timezone))
    moment = local.time()
    if start < end:
        inside = start <= moment < end
        end_day = local.date()
    else:  # the window crosses midnight (21:00-08:00)
        inside = moment >= start or moment < end
        end_day = local.date() + timedelta(days=1) if moment >= start else local.date()
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=local.tzinfo).astimezone(now.tzinfo)
