"""Benchmark a chat turn end to end through the REST channel: a real `crmbot run` on SQLite with the demo
data and the embedded NLU, driven over loopback HTTP by many simulated customers.

Usage: .venv/bin/python bench/rest_chat.py [--turns 2000] [--senders 300] [--concurrency 8]
Reports p50/p95/p99 latency per turn (sequential, one sender at a time) and turns/s under concurrency,
plus the server's resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import httpx
from demo_server import demo_server, wait_healthy

MESSAGES = [
    "hi",
    "is AB12345 still under warranty?",
    "error E13 on my dishwasher",
    "status of my requests",
    "what can you do",
    "AB12345还在保修期内吗",
    "洗碗机显示E13怎么办",
    "thanks bye",
]


async def _link_senders(workdir: Path, senders: int) -> None:
    """Each simulated sender is a person of the demo customer CUS-0001 on its own REST identity."""
    from core.auth import SYSTEM
    from core.container import build_core
    from core.domain.enums import Role
    from core.schemas import UserIn
    from core.settings import Settings

    core = build_core(
        Settings(
            database_url=f"sqlite+aiosqlite:///{workdir / 'crmbot.db'}",
            data_dir=workdir / "var",
            _env_file=None,
        )
    )
    try:
        for index in range(senders):
            await core.org.add_user(
                SYSTEM,
                UserIn(
                    username=f"bench{index}",
                    role=Role.CUSTOMER,
                    customer_code="CUS-0001",
                    identities=[f"rest:bench-{index}"],
                ),
            )
    finally:
        await core.close()


async def measure(
    base: str, token: str, turns: int, senders: int, concurrency: int
) -> tuple[list[float], float, list[float]]:
    """Sequential latencies, the wall time of the same number of turns `concurrency` at a time, and
    /model/parse latencies."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await wait_healthy(client)
        headers = {"Authorization": f"Bearer {token}"}

        async def turn(index: int) -> float:
            body = {"sender": f"bench-{index % senders}", "message": MESSAGES[index % len(MESSAGES)]}
            started = time.perf_counter()
            response = await client.post("/webhooks/rest/webhook", json=body, headers=headers)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            return elapsed

        for index in range(50):  # warm-up: model loaded, caches filled
            await turn(index)
        sequential = [await turn(index) for index in range(turns)]
        semaphore = asyncio.Semaphore(concurrency)

        async def bounded(index: int) -> float:
            async with semaphore:
                return await turn(index)

        started = time.perf_counter()
        await asyncio.gather(*(bounded(index) for index in range(turns)))
        concurrent_seconds = time.perf_counter() - started
        parses = []
        for index in range(turns):
            started = time.perf_counter()
            response = await client.post(
                "/model/parse", json={"text": MESSAGES[index % len(MESSAGES)]}, headers=headers
            )
            parses.append(time.perf_counter() - started)
            response.raise_for_status()
        return sequential, concurrent_seconds, parses


def main() -> None:
    """Set up a demo server, measure, stop it, print medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    arguments = parser.parse_args()
    with demo_server(lambda workdir: asyncio.run(_link_senders(workdir, arguments.senders))) as server:
        sequential, concurrent_seconds, parses = asyncio.run(
            measure(server.url, server.token, arguments.turns, arguments.senders, arguments.concurrency)
        )
        rss = server.rss_mib()
    ordered = sorted(sequential)
    p95, p99 = ordered[int(len(ordered) * 0.95)], ordered[int(len(ordered) * 0.99)]
    print(
        f"turns: {arguments.turns} sequential, then {arguments.turns} at concurrency {arguments.concurrency}"
    )
    print(
        f"latency ms: p50 {statistics.median(ordered) * 1000:.1f}  p95 {p95 * 1000:.1f}  p99 {p99 * 1000:.1f}"
    )
    print(f"sequential turns/s: {len(ordered) / sum(ordered):.0f}")
    print(f"concurrent turns/s: {arguments.turns / concurrent_seconds:.0f}")
    parses.sort()
    print(
        f"/model/parse over HTTP ms: p50 {statistics.median(parses) * 1000:.2f}  "
        f"p99 {parses[int(len(parses) * 0.99)] * 1000:.2f}"
    )
    print(f"server RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
