"""Pure domain rules: warranty arithmetic, state machines, pricing, the value model, references."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.enums import RepairStatus, RequestStatus, ValueTier
from core.domain.pricing import PartLine, PriceList, compute_charge
from core.domain.sla import sla_due
from core.domain.value import Criterion, ValueModel, value_model_from_config
from core.domain.warranty import WarrantyStatus, add_months, next_maintenance, warranty_end
from core.domain.workflow import REPAIR_ACTIONS, REQUEST_ACTIONS, repair_move, request_move
from core.errors import InvalidTransition, ValidationFailed
from core.services.base import parse_ref


@pytest.mark.parametrize(
    ("sold_on", "months", "ends_on"),
    [
        (date(2024, 3, 15), 12, date(2025, 3, 14)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),  # leap February absorbs the missing 31st
        (date(2023, 1, 31), 1, date(2023, 2, 28)),
        (date(2024, 2, 29), 12, date(2025, 2, 28)),  # leap day sale, non-leap anniversary
        (date(2024, 2, 29), 48, date(2028, 2, 28)),  # four years on, the 29th exists: day before it
        (date(2023, 12, 31), 2, date(2024, 2, 29)),
        (date(2024, 1, 1), 24, date(2025, 12, 31)),
        (date(2024, 5, 31), 1, date(2024, 6, 30)),
        (date(2024, 6, 30), 1, date(2024, 7, 29)),
        (date(2024, 6, 1), 0, date(2024, 5, 31)),  # no warranty at all
    ],
)
def test_warranty_end(sold_on: date, months: int, ends_on: date) -> None:
    assert warranty_end(sold_on, months) == ends_on


def test_warranty_status_is_inclusive_of_the_last_day() -> None:
    last_day = WarrantyStatus.on(date(2024, 3, 15), 12, date(2025, 3, 14))
    assert (last_day.in_warranty, last_day.days_left) == (True, 1)
    day_after = WarrantyStatus.on(date(2024, 3, 15), 12, date(2025, 3, 15))
    assert (day_after.in_warranty, day_after.days_left) == (False, 0)
    before_sale = WarrantyStatus.on(date(2024, 3, 15), 12, date(2024, 3, 14))
    assert before_sale.in_warranty is False
    none = WarrantyStatus.on(date(2024, 3, 15), 0, date(2024, 3, 15))
    assert none.in_warranty is False


@given(
    st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 31)),
    st.integers(min_value=1, max_value=240),
)
def test_warranty_end_properties(sold_on: date, months: int) -> None:
    end = warranty_end(sold_on, months)
    # Cover ends inside the last month of the period, never before the sale, and grows with the months.
    month_index = sold_on.month - 1 + months
    assert (end + timedelta(days=1)).year * 12 + (
        end + timedelta(days=1)
    ).month - 1 >= sold_on.year * 12 + month_index
    assert end >= sold_on
    assert warranty_end(sold_on, months + 1) > end
    assert WarrantyStatus.on(sold_on, months, end).in_warranty
    assert not WarrantyStatus.on(sold_on, months, end + timedelta(days=1)).in_warranty


def test_add_months_and_maintenance() -> None:
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2024, 11, 30), 3) == date(2025, 2, 28)
    assert next_maintenance(date(2024, 1, 10), None, 6) == date(2024, 7, 10)
    assert next_maintenance(date(2024, 1, 10), date(2024, 8, 1), 6) == date(2025, 2, 1)
    assert next_maintenance(date(2024, 1, 10), None, None) is None
    with pytest.raises(ValueError):
        add_months(date(2024, 1, 1), -1)


def test_request_state_machine_happy_path() -> None:
    status: str = RequestStatus.NEW
    for action, expected in [
        ("assign", "assigned"),
        ("start", "in_progress"),
        ("hold", "on_hold"),
        ("start", "in_progress"),
        ("escalate", "escalated"),
        ("resolve", "resolved"),
        ("close", "closed"),
        ("reopen", "in_progress"),
    ]:
        status = request_move(action, status)
        assert status == expected


def test_closing_an_open_request_says_resolve_first() -> None:
    with pytest.raises(InvalidTransition, match="resolve it first"):
        request_move("close", RequestStatus.NEW)
    with pytest.raises(InvalidTransition, match="Possible now"):
        request_move("resolve", RequestStatus.NEW)
    with pytest.raises(InvalidTransition, match="Unknown action"):
        request_move("explode", RequestStatus.NEW)


@given(st.sampled_from(list(RequestStatus)), st.sampled_from(sorted(REQUEST_ACTIONS)))
def test_request_moves_only_to_known_states(status: RequestStatus, action: str) -> None:
    try:
        target = request_move(action, status)
    except InvalidTransition:
        assert status not in REQUEST_ACTIONS[action].sources
    else:
        assert target in set(RequestStatus)
        assert status in REQUEST_ACTIONS[action].sources


def test_repair_state_machine() -> None:
    assert repair_move("dispatch", RepairStatus.OPEN) == RepairStatus.DISPATCHED
    assert repair_move("accept", RepairStatus.DISPATCHED) == RepairStatus.ACCEPTED
    assert repair_move("complete", RepairStatus.ACCEPTED) == RepairStatus.COMPLETED
    assert repair_move("settle", RepairStatus.COMPLETED) == RepairStatus.SETTLED
    with pytest.raises(InvalidTransition, match="Cannot accept a job that is cancelled"):
        repair_move("accept", RepairStatus.CANCELLED)
    for action, move in REPAIR_ACTIONS.items():
        assert RepairStatus.SETTLED not in move.sources, action  # settled is final
        assert RepairStatus.CANCELLED not in move.sources, action


def test_charge_free_in_warranty_unless_excluded() -> None:
    parts = [PartLine(quantity=2, unit_price=Decimal("180.00"))]
    prices = PriceList(
        labour_rate_per_hour=Decimal("120"), call_out_fee=Decimal("50"), minimum_labour_minutes=30
    )
    free = compute_charge(in_warranty=True, parts=parts, labour_minutes=90, price_list=prices)
    assert (free.total, free.in_warranty) == (Decimal("0.00"), True)
    billed = compute_charge(in_warranty=False, parts=parts, labour_minutes=90, price_list=prices)
    assert (billed.parts, billed.labour, billed.total) == (
        Decimal("360.00"),
        Decimal("230.00"),
        Decimal("590.00"),
    )
    excluded = compute_charge(
        in_warranty=True, parts=parts, labour_minutes=10, price_list=prices, warranty_excluded=True
    )
    assert excluded.labour == Decimal("110.00")  # minimum 30 minutes + call-out
    assert excluded.total == Decimal("470.00")


def test_sla_complaints_are_stricter() -> None:
    from datetime import UTC, datetime

    opened = datetime(2026, 1, 1, tzinfo=UTC)
    request_response, request_resolution = sla_due("request", "high", opened)
    complaint_response, complaint_resolution = sla_due("complaint", "high", opened)
    assert complaint_response < request_response
    assert complaint_resolution <= request_resolution


def test_value_model_ranks_and_tiers_as_a_pyramid() -> None:
    model = ValueModel()
    metrics = {
        customer_id: {
            "revenue": float(customer_id * 1000),
            "order_frequency": float(customer_id % 5),
            "service_cost": float(10 - customer_id % 10),
            "csat": 3.0 + (customer_id % 3) * 0.5,
        }
        for customer_id in range(1, 101)
    }
    scores = model.score(metrics)
    assert all(0 <= score <= 100 for score in scores.values())
    assert scores[100] > scores[1]
    tiers = model.tiers(scores)
    counts = {tier: sum(1 for value in tiers.values() if value is tier) for tier in ValueTier}
    assert counts == {ValueTier.KEY: 10, ValueTier.MAJOR: 20, ValueTier.REGULAR: 40, ValueTier.MINOR: 30}
    top = max(scores, key=lambda customer_id: scores[customer_id])
    assert tiers[top] is ValueTier.KEY


def test_value_model_configuration_is_checked() -> None:
    with pytest.raises(ValueError):
        ValueModel(criteria=())
    with pytest.raises(ValueError):
        ValueModel(criteria=(Criterion("revenue", -1.0),))
    with pytest.raises(ValueError):
        ValueModel(tier_shares=((ValueTier.KEY, 0.5), (ValueTier.MINOR, 0.2)))
    with pytest.raises(ValueError, match="unknown value criteria"):
        value_model_from_config({"shoe_size": 1.0}, {"key": 1.0})
    configured = value_model_from_config({"revenue": 1.0, "service_cost": 1.0}, {"key": 0.5, "minor": 0.5})
    assert [criterion.higher_is_better for criterion in configured.criteria] == [True, False]
    revenue_only = ValueModel(criteria=(Criterion("revenue", 1.0),))
    assert revenue_only.score({1: {"revenue": 5.0}, 2: {"revenue": 1.0}}) == {1: 100.0, 2: 0.0}


@pytest.mark.parametrize(
    ("text", "number"), [("SR-12", 12), ("sr12", 12), ("SR 7", 7), ("#15", 15), ("42", 42)]
)
def test_parse_ref_accepts_what_people_type(text: str, number: int) -> None:
    assert parse_ref(text, "SR") == number


@pytest.mark.parametrize("text", ["RO-12", "SR-", "SR-12; drop table", "", "SR--1", "x" * 100])
def test_parse_ref_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValidationFailed):
        parse_ref(text, "SR")
