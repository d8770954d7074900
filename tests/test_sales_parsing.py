"""One reader per concept (bot/parsing.py): stages and amounts read with the NLU's own rules, so an answer and
a request mean the same; probabilities, months and quarters; one money formatter."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from bot.nlu.entities import default_extractor, stage_value
from bot.parsing import (
    amount_in_text,
    money,
    month_end,
    month_number,
    parse_amount,
    parse_probability,
    quarter_bounds,
    read_probability,
    stage_in_text,
    stage_of,
)


@pytest.mark.parametrize(
    ("raw", "stage"),
    [
        ("negotiation", "negotiation"), ("Closed won", "closed_won"), ("needs_analysis", "needs_analysis"),
        ("needs analysis", "needs_analysis"), ("谈判", "negotiation"), ("赢单", "closed_won"),
        ("需求确认", "qualification"), ("需求分析", "needs_analysis"), ("banana", None), ("", None),
    ],
)
def test_stage_of_an_answer(raw: str, stage: str | None) -> None:
    assert stage_of(raw) == stage


def test_the_chat_and_the_nlu_share_one_stage_vocabulary() -> None:
    # The entity extractor and the chat's answers read every term the same way.
    for term in ("需求确认", "需求分析", "方案", "商务谈判", "输单", "proposal", "lost"):
        assert stage_of(term) == stage_value(term) == default_extractor().stage_value(term)


def test_a_stage_in_a_message_but_not_the_words_of_a_close_date() -> None:
    assert stage_in_text("move OP-3 to negotiation please") == "negotiation"
    assert stage_in_text("成交日期改到1月底") is None
    assert stage_in_text("预计3月底成交") is None
    assert stage_in_text("OP-3下个月成交") is None
    assert stage_in_text("这单成交了") == "closed_won"
    assert stage_in_text("from proposal to negotiation") is None  # two stages: which one is meant?


@pytest.mark.parametrize(
    ("raw", "amount"),
    [
        ("50000", "50000.00"), ("50,000.50", "50000.50"), ("¥50,000", "50000.00"), ("50k", "50000.00"),
        ("5万", "50000.00"), ("1.2m", "1200000.00"), ("十二万", "120000.00"), ("fifty-ish", None),
        ("about 50k or 60k", None), ("", None),
    ],
)
def test_parse_amount_of_an_answer(raw: str, amount: str | None) -> None:
    assert parse_amount(raw) == (Decimal(amount) if amount else None)


def test_amount_in_a_message_is_never_a_date_or_a_code() -> None:
    assert amount_in_text("move OP-3 to negotiation, 50k") == Decimal("50000.00")
    assert amount_in_text("set it to 120000") == Decimal("120000.00")
    assert amount_in_text("close date 30 November 2026") is None
    assert amount_in_text("AC-350 replacement, 2026-12-20") is None


def test_probabilities() -> None:
    assert read_probability("probability 40%") == (40, None)
    assert read_probability("赢率百分之六十") == (60, None)
    assert read_probability("chance of winning 150%") == (None, "150%")
    assert read_probability("50k") == (None, None)
    assert (parse_probability("80"), parse_probability("101")) == (80, None)


def test_months_and_quarters() -> None:
    assert (month_number("March"), month_number("sept"), month_number("十二"), month_number("13")) == (
        3, 9, 12, None)
    assert month_end(date(2028, 2, 10)) == date(2028, 2, 29)
    assert quarter_bounds(date(2026, 11, 5)) == (date(2026, 10, 1), date(2026, 12, 31))


def test_money_honours_the_currency() -> None:
    assert money(Decimal("12345.5")) == "¥12,345.50"
    assert money("1000", "USD") == "$1,000.00"
    assert money(7, "CHF") == "7.00 CHF"
