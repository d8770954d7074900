"""Benchmark the manager's pipeline report and the value/lifecycle sweep on a large generated pipeline.

Usage: .venv/bin/python bench/pipeline_report.py [--deals 50000] [--reps 40] [--customers 5000] [--repeat 5]

A fresh SQLite database: one manager over `--reps` reps, `--deals` deals spread over the stages and the
year, each with its creation and one or two stage moves in the history. Prints the median seconds of the
whole-team report for the quarter and for the year, of one rep's report, and of one value/lifecycle sweep.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert, select

from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import build_core
from core.db.migrate import upgrade
from core.db.models import Customer, Opportunity, OpportunityChange, User
from core.domain.enums import OpportunityStage
from core.settings import Settings

NOW = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)
STAGES = [stage.value for stage in OpportunityStage]
PROBABILITY = {
    "qualification": 10,
    "needs_analysis": 25,
    "proposal": 50,
    "negotiation": 75,
    "closed_won": 100,
    "closed_lost": 0,
}


async def build(url: str, deals: int, reps: int, customers: int) -> None:
    """The organisation and the deals, inserted in bulk."""
    core = build_core(Settings(database_url=url), clock=FrozenClock(NOW))
    await upgrade(core.engine)
    async with core.engine.begin() as connection:
        await connection.execute(
            insert(User),
            [
                {
                    "username": "boss",
                    "name": "Boss",
                    "role": "manager",
                    "lang": "en",
                    "skills": [],
                    "created_at": NOW,
                    "active": True,
                }
            ],
        )
        boss = (await connection.execute(select(User.id))).scalar_one()
        await connection.execute(
            insert(User),
            [
                {
                    "username": f"rep{index}",
                    "name": f"Rep {index}",
                    "role": "rep",
                    "lang": "en",
                    "skills": [],
                    "created_at": NOW,
                    "active": True,
                    "manager_id": boss,
                }
                for index in range(reps)
            ],
        )
        rep_ids = list((await connection.execute(select(User.id).where(User.id != boss))).scalars())
        await connection.execute(
            insert(Customer),
            [
                {
                    "code": f"C{index:06d}",
                    "name": f"Customer {index}",
                    "type": "end",
                    "segment": "",
                    "lifecycle_stage": "new",
                    "address": "",
                    "value_score": 0.0,
                    "tier": "regular",
                    "owner_id": rep_ids[index % reps],
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for index in range(customers)
            ],
        )
        first_customer = (
            await connection.execute(select(Customer.id).order_by(Customer.id).limit(1))
        ).scalar_one()
        rows, history = [], []
        for index in range(deals):
            stage = STAGES[index % len(STAGES)]
            created = NOW - timedelta(days=index % 300 + 1)
            moved = created + timedelta(days=(index % 300) // 2)
            closed = stage in ("closed_won", "closed_lost")
            rows.append(
                {
                    "id": index + 1,
                    "customer_id": first_customer + index % customers,
                    "owner_id": rep_ids[index % reps],
                    "name": f"Deal {index}",
                    "stage": stage,
                    "amount": Decimal(1000 + index % 997 * 100),
                    "currency": "CNY",
                    "probability": PROBABILITY[stage],
                    "expected_close": date(2026, 1, 1) + timedelta(days=index % 365),
                    "created_at": created,
                    "updated_at": moved,
                    "stage_changed_at": moved,
                    "closed_at": moved if closed else None,
                }
            )
            history.append(
                {
                    "opportunity_id": index + 1,
                    "at": created,
                    "field": "created",
                    "new_value": f"qualification {1000 + index % 997 * 100}",
                }
            )
            if stage != "qualification":
                history.append(
                    {
                        "opportunity_id": index + 1,
                        "at": moved,
                        "field": "stage",
                        "old_value": "qualification",
                        "new_value": stage,
                    }
                )
            if len(rows) == 5000:
                await connection.execute(insert(Opportunity), rows)
                await connection.execute(insert(OpportunityChange), history)
                rows, history = [], []
        if rows:
            await connection.execute(insert(Opportunity), rows)
            await connection.execute(insert(OpportunityChange), history)
    await core.close()


async def main(deals: int, reps: int, customers: int, repeat: int) -> None:
    """Build, then time each report `repeat` times."""
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"
        started = time.perf_counter()
        await build(url, deals, reps, customers)
        print(
            f"built {deals} deals, {reps} reps, {customers} customers "
            f"in {time.perf_counter() - started:.1f} s"
        )
        core = build_core(
            Settings(database_url=url, data_dir=Path(directory) / "var"), clock=FrozenClock(NOW)
        )
        try:
            boss = await core.org.actor_for_username("boss")
            rep = await core.org.actor_for_username("rep0")
            cases = {
                "team, Q2": lambda: core.pipeline.report(boss, date(2026, 4, 1), date(2026, 6, 30)),
                "team, year": lambda: core.pipeline.report(boss, date(2026, 1, 1), date(2026, 12, 31)),
                "one rep, year (as manager)": lambda: core.pipeline.report(
                    boss, date(2026, 1, 1), date(2026, 12, 31), rep="rep1"
                ),
                "a rep's own, year": lambda: core.pipeline.report(rep, date(2026, 1, 1), date(2026, 12, 31)),
                "value + lifecycle sweep": lambda: core.customers.recompute_values(SYSTEM),
            }
            for name, run in cases.items():
                times = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    await run()
                    times.append(time.perf_counter() - started)
                print(f"{name:28s} median {statistics.median(times) * 1000:8.1f} ms over {repeat}")
        finally:
            await core.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=50_000)
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.deals, arguments.reps, arguments.customers, arguments.repeat))
