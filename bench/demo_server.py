"""A real `crmbot run` on SQLite with the demo data, in a throw-away folder, for the end-to-end benchmarks
(bench/rest_chat.py, bench/staff_chat.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class DemoServer:
    """Where the server listens, the admin token it printed, and its process."""

    url: str
    token: str
    pid: int

    def rss_mib(self) -> float:
        """The server's resident memory now."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def demo_server(prepare: Callable[[Path], None] | None = None) -> Iterator[DemoServer]:
    """`crmbot demo`, then `prepare(folder)` (e.g. to link identities), then `crmbot run` for the block."""
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        env = {key: value for key, value in os.environ.items() if not key.startswith("CRMBOT_")}
        subprocess.run(
            [sys.executable, "-m", "crmbot", "demo"], cwd=workdir, env=env, check=True, capture_output=True
        )
        if prepare is not None:
            prepare(workdir)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "crmbot", "run", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # The token file appears once the server has started.
            token_file = workdir / "var" / "api_token"
            for _ in range(600):
                if token_file.exists():
                    break
                time.sleep(0.1)
            yield DemoServer(f"http://127.0.0.1:{port}", token_file.read_text().strip(), server.pid)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=15)


async def wait_healthy(client: httpx.AsyncClient) -> None:
    """Until /healthz answers (the model loads at start)."""
    for _ in range(600):
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
