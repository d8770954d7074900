"""Quiet hours in the person's own timezone, across midnight and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.domain.quiet import parse_quiet_hours, quiet_until


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("now", "timezone", "window", "until"),
    [
        ("2026-06-15T22:30:00+08:00", "Asia/Shanghai", "21:00-08:00", "2026-06-16T08:00:00+08:00"),
        ("2026-06-16T07:59:00+08:00", "Asia/Shanghai", "21:00-08:00", "2026-06-16T08:00:00+08:00"),
        ("2026-06-16T08:00:00+08:00", "Asia/Shanghai", "21:00-08:00", None),
        ("2026-06-15T20:59:00+08:00", "Asia/Shanghai", "21:00-08:00", None),
        ("2026-06-15T12:30:00+02:00", "Europe/Berlin", "12:00-13:00", "2026-06-15T13:00:00+02:00"),
        ("2026-06-15T13:00:00+02:00", "Europe/Berlin", "12:00-13:00", None),
        ("2026-06-15T12:30:00+02:00", "Europe/Berlin", "", None),
        # The night Berlin's clocks go forward: 22:00 CET → 08:00 CEST is nine hours, not ten.
        ("2026-03-28T22:00:00+01:00", "Europe/Berlin", "21:00-08:00", "2026-03-29T08:00:00+02:00"),
    ],
)
def test_quiet_until(now: str, timezone: str, window: str, until: str | None) -> None:
    moment = at(now).astimezone(UTC)
    result = quiet_until(moment, timezone, window)
    assert result == (at(until) if until else None)
    if result is not None:
        assert result.tzinfo is not None and result > moment


@pytest.mark.parametrize("value", ["9pm", "21:00", "24:00-08:00", "21:60-08:00", "21:00–08:00"])
def test_malformed_windows_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="21:00-08:00"):
        parse_quiet_hours(value)


def test_an_empty_window_is_no_window() -> None:
    assert parse_quiet_hours("") is None and parse_quiet_hours("08:00-08:00") is None
