"""Customer value model: weighted criteria → score 0–100 → pyramid tiers."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from core.domain.enums import ValueTier


@dataclass(frozen=True, slots=True)
class Criterion:
    """One input of the model; `higher_is_better` False for costs."""

    name: str
    weight: float
    higher_is_better: bool = True


@dataclass(frozen=True, slots=True)
class ValueModel:
    """Weights and tier shares; shares are the top fractions of customers per tier, top first."""

    criteria: tuple[Criterion, ...] = (
        Criterion("revenue", 0.45),
        Criterion("order_frequency", 0.25),
        Criterion("service_cost", 0.15, higher_is_better=False),
        Criterion("csat", 0.15),
    )
    tier_shares: tuple[tuple[ValueTier, float], ...] = field(
        default=(
            (ValueTier.KEY, 0.10),
            (ValueTier.MAJOR, 0.20),
            (ValueTier.REGULAR, 0.40),
            (ValueTier.MINOR, 0.30),
        )
    )

    def __post_init__(self) -> None:
        total_weight = sum(criterion.weight for criterion in self.criteria)
        if not self.criteria or total_weight <= 0:
            raise ValueError("a value model needs at least one criterion with a positive weight")
        if any(criterion.weight < 0 for criterion in self.criteria):
            raise ValueError("criterion weights must not be negative")
        if abs(sum(share for _tier, share in self.tier_shares) - 1.0) > 1e-6:
            raise ValueError("tier shares must add up to 1")

    def score(self, metrics: Mapping[int, Mapping[str, float]]) -> dict[int, float]:
        """Score every customer 0–100 by percentile rank on each criterion, weighted.

        Percentile ranks rather than raw values, so one huge account does not flatten everyone else.
        """
        if not metrics:
            return {}
        total_weight = sum(criterion.weight for criterion in self.criteria)
        scores = dict.fromkeys(metrics, 0.0)
        for criterion in self.criteria:
            values = sorted(customer.get(criterion.name, 0.0) for customer in metrics.values())
            for customer_id, customer in metrics.items():
                rank = _percentile_rank(values, customer.get(criterion.name, 0.0))
                if not criterion.higher_is_better:
                    rank = 1.0 - rank
                scores[customer_id] += criterion.weight * rank
        return {customer_id: round(100.0 * value / total_weight, 2) for customer_id, value in scores.items()}

    def tiers(self, scores: Mapping[int, float]) -> dict[int, ValueTier]:
        """Cut the ranked customers into the pyramid by share; ties broken by id for stability."""
        ranked = sorted(scores, key=lambda customer_id: (-scores[customer_id], customer_id))
        result: dict[int, ValueTier] = {}
        start = 0
        cumulative = 0.0
        for index, (tier, share) in enumerate(self.tier_shares):
            cumulative += share
            end = len(ranked) if index == len(self.tier_shares) - 1 else round(cumulative * len(ranked))
            for customer_id in ranked[start:end]:
                result[customer_id] = tier
            start = max(start, end)
        return result


# Pyramid order, top first: a lower number is a better tier.
TIER_RANK: dict[str, int] = {tier.value: index for index, tier in enumerate(ValueTier)}


def moved_down(previous: str | None, current: str) -> bool:
    """Whether a customer's tier is below the one they had before the last move."""
    if previous is None or previous not in TIER_RANK or current not in TIER_RANK:
        return False
    return TIER_RANK[current] > TIER_RANK[previous]


def moved_up(previous: str | None, current: str) -> bool:
    """Whether a customer's tier is above the one they had before the last move."""
    if previous is None or previous not in TIER_RANK or current not in TIER_RANK:
        return False
    return TIER_RANK[current] < TIER_RANK[previous]


KNOWN_CRITERIA = {"revenue": True, "order_frequency": True, "service_cost": False, "csat": True}


def value_model_from_config(weights: Mapping[str, float], tier_shares: Mapping[str, float]) -> ValueModel:
    """Build a model from configuration, refusing unknown criteria or tiers with a clear message."""
    unknown = set(weights) - set(KNOWN_CRITERIA)
    if unknown:
        raise ValueError(f"unknown value criteria {sorted(unknown)}; known: {sorted(KNOWN_CRITERIA)}")
    tiers = {tier.value: tier for tier in ValueTier}
    unknown_tiers = set(tier_shares) - set(tiers)
    if unknown_tiers:
        raise ValueError(f"unknown tiers {sorted(unknown_tiers)}; known: {list(tiers)}")
    return ValueModel(
        criteria=tuple(Criterion(name, weight, KNOWN_CRITERIA[name]) for name, weight in weights.items()),
        tier_shares=tuple((tier, tier_shares[name]) for name, tier in tiers.items() if name in tier_shares),
    )


def _percentile_rank(sorted_values: Sequence[float], value: float) -> float:
    """Mid-rank percentile in [0, 1]; all-equal values rank 0.5."""
    if len(sorted_values) <= 1:
        return 0.5
    below = bisect_left(sorted_values, value)
    equal = bisect_right(sorted_values, value) - below
    return (below + 0.5 * equal - 0.5) / (len(sorted_values) - 1)
