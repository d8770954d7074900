"""Benchmark `crmbot import products`: rows per second for new rows and for a re-import (updates).

Usage: .venv/bin/python bench/import_products.py [--rows 50000] [--repeat 3]
Each repeat uses a fresh SQLite file (the embedded default); the median of the repeats is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from core.auth import SYSTEM
from core.container import build_core
from core.db.migrate import upgrade
from core.domain.enums import CustomerType
from core.importers import import_csv
from core.schemas import CustomerIn, ProductIn
from core.settings import Settings


def products_csv(rows: int) -> bytes:
    """A products file with `rows` distinct serials spread over ten customers."""
    out = io.StringIO()
    out.write("serial_number,product_code,product_name,customer_code,sold_on,warranty_months,warranty_type\n")
    start = date(2022, 1, 31)
    for index in range(rows):
        sold_on = start + timedelta(days=index % 1000)
        out.write(
            f"BN{index:08d},WM-2023,Washing machine,BC-{index % 10},{sold_on.isoformat()},24,standard\n"
        )
    return out.getvalue().encode("utf-8")


async def one_run(database_url: str, data: bytes) -> tuple[float, float]:
    """Seconds for the first import (all new) and for the second (all updates)."""
    settings = Settings(database_url=database_url, _env_file=None)
    core = build_core(settings)
    try:
        await upgrade(core.engine)
        await core.installed.upsert_product(SYSTEM, ProductIn(code="WM-2023", name="Washing machine"))
        for index in range(10):
            await core.customers.create(
                SYSTEM, CustomerIn(code=f"BC-{index}", name=f"Bench {index}", type=CustomerType.END)
            )
        started = time.perf_counter()
        first = await import_csv(core, "products", data)
        new_seconds = time.perf_counter() - started
        started = time.perf_counter()
        second = await import_csv(core, "products", data)
        update_seconds = time.perf_counter() - started
        assert first.created == second.updated, (first, second)
        return new_seconds, update_seconds
    finally:
        await core.close()


def main() -> None:
    """Run the benchmark and print medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    data = products_csv(arguments.rows)
    new_runs: list[float] = []
    update_runs: list[float] = []
    for _ in range(arguments.repeat):
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
            new_seconds, update_seconds = asyncio.run(one_run(url, data))
        new_runs.append(new_seconds)
        update_runs.append(update_seconds)
    rows = arguments.rows
    new_median, update_median = statistics.median(new_runs), statistics.median(update_runs)
    print(f"rows: {rows}, repeats: {arguments.repeat}")
    print(f"new rows:  median {new_median:.2f} s  ({rows / new_median:,.0f} rows/s)  runs {new_runs}")
    print(
        f"re-import: median {update_median:.2f} s  ({rows / update_median:,.0f} rows/s)  runs {update_runs}"
    )


if __name__ == "__main__":
    main()
