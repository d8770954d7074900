"""Benchmark the staff journeys' chat turns end to end through the REST channel: a real `crmbot run` on SQLite
with the demo data and the embedded NLU, the demo personas (rep, technician, manager, agent) asking what they
ask all day.

Usage: .venv/bin/python bench/staff_chat.py [--rounds 40]
Reports the median and p95 latency per kind of question (each asked `rounds` times, after a warm-up) and the
server's resident memory. The pipeline answer draws a PNG chart, so it is the slow one by design.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import httpx
from demo_server import demo_server, wait_healthy

# (demo persona, what they write); read-only questions, so every round sees the same data.
QUESTIONS: tuple[tuple[str, str], ...] = (
    ("zhang.wei", "my jobs today"),
    ("zhang.wei", "我这周的工单"),
    ("li.lei", "my deals"),
    ("li.lei", "deals closing this month"),
    ("li.lei", "my visits this week"),
    ("chen.jing", "visits of my team this week"),
    ("chen.jing", "pipeline this quarter"),
    ("chen.jing", "本季度的销售漏斗"),
    ("chen.jing", "show me Acme"),
    ("chen.jing", "top customers"),
    ("chen.jing", "customers moving down a tier"),
    ("sun.li", "my team's jobs this week"),
)


def sender(round_number: int, question: int) -> str:
    """Each question of each round comes from its own REST identity of the persona, so the per-sender
    rate limit (a person types a message a second) is not what is measured."""
    return f"bench-{round_number}-{question}"


async def _link_senders(workdir: Path, rounds: int) -> None:
    """Give the personas the identities `sender` names."""
    from core.auth import SYSTEM
    from core.container import build_core
    from core.settings import Settings

    core = build_core(
        Settings(
            database_url=f"sqlite+aiosqlite:///{workdir / 'crmbot.db'}",
            data_dir=workdir / "var",
            _env_file=None,
        )
    )
    try:
        for round_number in range(rounds + 1):
            for question, (username, _message) in enumerate(QUESTIONS):
                await core.org.link_identity(SYSTEM, username, f"rest:{sender(round_number, question)}")
    finally:
        await core.close()


async def measure(base: str, token: str, rounds: int) -> dict[tuple[str, str], list[float]]:
    """Latency of every question, `rounds` times each, interleaved so drift hits them all alike."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await wait_healthy(client)
        headers = {"Authorization": f"Bearer {token}"}

        async def ask(identity: str, message: str) -> float:
            started = time.perf_counter()
            response = await client.post(
                "/webhooks/rest/webhook", json={"sender": identity, "message": message}, headers=headers
            )
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            return elapsed

        for question, (username, message) in enumerate(QUESTIONS):  # warm-up: model, fonts, caches
            response = await client.post(
                "/webhooks/rest/webhook",
                json={"sender": sender(rounds, question), "message": message},
                headers=headers,
            )
            first = response.json()[0]
            # What each persona was answered, so a reader sees the answers are real (not a refusal).
            print(f"  {username:10} {message:32} → {first['text'].splitlines()[0][:60]}"
                  f"{' [+ image]' if first.get('image') else ''}")
        timings: dict[tuple[str, str], list[float]] = {question: [] for question in QUESTIONS}
        for round_number in range(rounds):
            for question, (username, message) in enumerate(QUESTIONS):
                timings[(username, message)].append(await ask(sender(round_number, question), message))
        return timings


def main() -> None:
    """Set up a demo server, measure, stop it, print medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    arguments = parser.parse_args()
    with demo_server(lambda workdir: asyncio.run(_link_senders(workdir, arguments.rounds))) as server:
        timings = asyncio.run(measure(server.url, server.token, arguments.rounds))
        rss = server.rss_mib()
    print(f"{arguments.rounds} rounds; latency of one turn in ms (median / p95)")
    for (username, message), values in timings.items():
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        print(f"  {username:10} {message:32} {statistics.median(ordered) * 1000:7.1f} / {p95 * 1000:7.1f}")
    print(f"server RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
