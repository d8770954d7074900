"""Benchmark the scheduler's sweeps on a large installed base: the first pass, and the idempotent repeat.

Usage: .venv/bin/python bench/scheduler_sweeps.py [--units 100000] [--customers 20000] [--repeat 3]

A fresh SQLite database per repeat: customers in several segments and lifecycle stages, `--units` units
whose warranties end evenly over three years (so about 1/36 of them fall within the 30-day window).
For each sweep: the seconds of the first pass (which raises the reminders) and of the pass right after
(which must find everything done and raise nothing); medians of the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select

from core.clock import FrozenClock
from core.container import build_core
from core.db.migrate import upgrade
from core.db.models import Customer, InstalledProduct, Product
from core.settings import Settings
from notifier.care import SWEEPS

NOW = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)
STAGES = ("new", "active", "loyal", "at_risk", "churned")
SEGMENTS = ("household", "small_business", "dealer")


async def build(database_url: str, units: int, customers: int) -> None:
    core = build_core(Settings(database_url=database_url), clock=FrozenClock(NOW))
    await upgrade(core.engine)
    async with core.engine.begin() as connection:
        await connection.execute(
            insert(Product),
            [
                {
                    "code": "WM-2023",
                    "name": "Washing machine",
                    "category": "washing_machine",
                    "default_warranty_months": 24,
                    "maintenance_interval_months": 12,
                }
            ],
        )
        product_id = (await connection.execute(select(Product.id))).scalar_one()
        await connection.execute(
            insert(Customer),
            [
                {
                    "code": f"C{index:06d}",
                    "name": f"Customer {index}",
                    "type": "end",
                    "segment": SEGMENTS[index % len(SEGMENTS)],
                    "lifecycle_stage": STAGES[index % len(STAGES)],
                    "address": "",
                    "value_score": 0.0,
                    "tier": "regular",
                    "created_at": NOW - timedelta(days=index % 400),
                    "updated_at": NOW,
                }
                for index in range(customers)
            ],
        )
        first_customer = (
            await connection.execute(select(Customer.id).order_by(Customer.id).limit(1))
        ).scalar_one()
        today = NOW.date()
        rows = []
        for index in range(units):
            ends_on = today + timedelta(days=index % 1095 - 30)
            rows.append(
                {
                    "serial_number": f"SN{index:08d}",
                    "product_id": product_id,
                    "customer_id": first_customer + index % customers,
                    "sold_on": ends_on - timedelta(days=730),
                    "warranty_months": 24,
                    "warranty_type": "standard",
                    "warranty_ends_on": ends_on,
                    "last_maintenance_on": date(2025, 6, 1) + timedelta(days=index % 365),
                    "created_at": NOW,
                }
            )
            if len(rows) == 10_000:
                await connection.execute(insert(InstalledProduct), rows)
                rows = []
        if rows:
            await connection.execute(insert(InstalledProduct), rows)
    await core.close()


async def one_run(units: int, customers: int) -> dict[str, tuple[float, float, int]]:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"
        await build(url, units, customers)
        core = build_core(
            Settings(database_url=url, data_dir=Path(directory) / "var"), clock=FrozenClock(NOW)
        )
        results: dict[str, tuple[float, float, int]] = {}
        try:
            for sweep in SWEEPS:
                started = time.perf_counter()
                raised = await sweep.run(core, NOW)
                first = time.perf_counter() - started
                started = time.perf_counter()
                again = await sweep.run(core, NOW)
                repeat = time.perf_counter() - started
                if again != 0 and sweep.name != "care.tasks":
                    raise SystemExit(f"{sweep.name} raised {again} more on an immediate repeat")
                results[sweep.name] = (first, repeat, raised)
        finally:
            await core.close()
        return results


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for _ in range(args.repeat):
        for name, figures in (await one_run(args.units, args.customers)).items():
            runs[name].append(figures)
    print(f"{args.units} units, {args.customers} customers, SQLite; medians of {args.repeat} runs")
    for name, figures in runs.items():
        first = statistics.median(item[0] for item in figures)
        repeat = statistics.median(item[1] for item in figures)
        raised = figures[0][2]
        line = f"  {name:18} first pass {first * 1000:8.0f} ms ({raised} raised)"
        print(f"{line}   repeat {repeat * 1000:7.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
