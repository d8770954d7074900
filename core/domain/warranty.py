"""Warranty arithmetic: calendar months, month ends and leap days done right."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date


def add_months(start: date, months: int) -> date:
    """Return the same day `months` later, clamped to the last day of a shorter month.

    31 Jan + 1 month is 28/29 Feb; 29 Feb 2024 + 12 months is 28 Feb 2025.
    """
    if months < 0:
        raise ValueError("months must not be negative")
    month_index = start.month - 1 + months
    year = start.year + month_index // 12
    month = month_index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return date(year, month, day)


def warranty_end(sold_on: date, warranty_months: int) -> date:
    """Last day of cover for a warranty of `warranty_months` starting on `sold_on`.

    A period of N months ends the day before the same day N months later; when that day does not
    exist in the final month it ends on that month's last day (the EU rule for periods,
    Regulation 1182/71 art. 3). So 2024-03-15 + 12 → 2025-03-14, 2024-01-31 + 1 → 2024-02-29,
    2024-02-29 + 12 → 2025-02-28. A zero-month warranty never covers: it ends the day before sale.
    """
    if warranty_months < 0:
        raise ValueError("warranty_months must not be negative")
    if warranty_months == 0:
        return date.fromordinal(sold_on.toordinal() - 1)
    month_index = sold_on.month - 1 + warranty_months
    year = sold_on.year + month_index // 12
    month = month_index % 12 + 1
    last_day = calendar.monthrange(year, month)[1]
    if sold_on.day > last_day:
        return date(year, month, last_day)
    return date.fromordinal(date(year, month, sold_on.day).toordinal() - 1)


@dataclass(frozen=True, slots=True)
class WarrantyStatus:
    """Whether a unit is covered on a given day, and for how long."""

    starts_on: date
    ends_on: date
    in_warranty: bool
    days_left: int

    @classmethod
    def on(cls, sold_on: date, warranty_months: int, today: date) -> WarrantyStatus:
        """Status of a unit sold on `sold_on` as seen on `today` (inclusive of the end date)."""
        ends_on = warranty_end(sold_on, warranty_months)
        covered = sold_on <= today <= ends_on and warranty_months > 0
        days_left = (ends_on - today).days + 1 if covered else 0
        return cls(starts_on=sold_on, ends_on=ends_on, in_warranty=covered, days_left=days_left)


def next_maintenance(
    sold_on: date, last_maintenance_on: date | None, interval_months: int | None
) -> date | None:
    """When the next periodic maintenance falls due, if the product has an interval."""
    if not interval_months:
        return None
    return add_months(last_maintenance_on or sold_on, interval_months)
