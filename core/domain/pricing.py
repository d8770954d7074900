"""What a repair costs the customer: free under warranty, parts plus labour otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class PriceList:
    """Labour pricing; parts carry their own unit price."""

    labour_rate_per_hour: Decimal = Decimal("120.00")
    call_out_fee: Decimal = Decimal("50.00")
    minimum_labour_minutes: int = 30


@dataclass(frozen=True, slots=True)
class PartLine:
    """A part used: how many, at what unit price."""

    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class RepairCharge:
    """The computed bill of a repair."""

    parts: Decimal
    labour: Decimal
    total: Decimal
    in_warranty: bool


def compute_charge(
    *,
    in_warranty: bool,
    parts: list[PartLine],
    labour_minutes: int,
    price_list: PriceList,
    warranty_excluded: bool = False,
) -> RepairCharge:
    """In warranty and not excluded (misuse, wear parts) → free; otherwise parts + labour + call-out."""
    if labour_minutes < 0:
        raise ValueError("labour minutes must not be negative")
    if in_warranty and not warranty_excluded:
        zero = Decimal("0.00")
        return RepairCharge(parts=zero, labour=zero, total=zero, in_warranty=True)
    parts_total = sum((line.unit_price * line.quantity for line in parts), Decimal("0")).quantize(CENT)
    billed_minutes = max(labour_minutes, price_list.minimum_labour_minutes)
    labour = (price_list.labour_rate_per_hour * billed_minutes / 60 + price_list.call_out_fee).quantize(
        CENT, rounding=ROUND_HALF_UP
    )
    return RepairCharge(parts=parts_total, labour=labour, total=parts_total + labour, in_warranty=in_warranty)
