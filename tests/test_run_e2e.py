"""What a newcomer does: `crmbot demo`, `crmbot run`, then ask the API — in real subprocesses,
on the embedded default (SQLite in the working directory, token generated at first start)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

# An end-to-end test of many seconds: left out of `make test-fast`, run by `make test`.
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _clean_env(workdir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CRMBOT_")}
    env["HOME"] = str(workdir)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """A demo-loaded crmbot serving on a free port, with nothing configured."""
    workdir = tmp_path_factory.mktemp("newcomer")
    env = _clean_env(workdir)
    demo = subprocess.run(
        [sys.executable, "-m", "crmbot", "demo"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert demo.returncode == 0, demo.stderr
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "crmbot", "run", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"crmbot run did not come up:\n{output}")
            time.sleep(0.2)
        token = (workdir / "var" / "api_token").read_text(encoding="utf-8").strip()
        yield base, token, demo.stdout
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    assert (workdir / "crmbot.db").exists()


def test_nothing_is_open_without_the_generated_token(server: tuple[str, str, str]) -> None:
    base, token, _ = server
    assert len(token) >= 32
    response = httpx.get(f"{base}/api/v1/customers")
    assert response.status_code == 401
    assert response.json()["error"]["code"]


def test_demo_warranty_requests_and_deals_through_the_api(server: tuple[str, str, str]) -> None:
    base, token, demo_output = server
    assert "wang.fang" in demo_output or "persona" in demo_output.lower()
    headers = {"Authorization": f"Bearer {token}"}
    warranty = httpx.get(f"{base}/api/v1/warranty/WM2023-00917", headers=headers).json()
    assert set(warranty) == {
        "serial_number",
        "product",
        "customer",
        "warranty_type",
        "starts_on",
        "ends_on",
        "in_warranty",
        "days_left",
    }
    assert warranty["serial_number"] == "WM2023-00917" and warranty["in_warranty"] is True
    assert warranty["days_left"] > 0
    requests = httpx.get(f"{base}/api/v1/service-requests", params={"limit": 200}, headers=headers).json()
    statuses = {item["status"] for item in requests["items"]}
    assert {"new", "assigned", "in_progress", "resolved", "closed"} <= statuses
    one = requests["items"][0]
    detail = httpx.get(f"{base}/api/v1/service-requests/{one['ref']}", headers=headers).json()
    assert detail["ref"] == one["ref"] and detail["history"][0]["action"] == "open"
    deals = httpx.get(f"{base}/api/v1/opportunities", params={"limit": 200}, headers=headers).json()
    assert {item["stage"] for item in deals["items"]} >= {
        "qualification",
        "negotiation",
        "closed_won",
        "closed_lost",
    }
    missing = httpx.get(f"{base}/api/v1/warranty/NO-SUCH-SERIAL", headers=headers)
    assert missing.status_code == 404 and "Traceback" not in missing.text


def test_demo_customer_chats_over_the_rest_channel(server: tuple[str, str, str]) -> None:
    base, token, _ = server
    headers = {"Authorization": f"Bearer {token}"}

    def say(message: str) -> list[dict[str, object]]:
        response = httpx.post(
            f"{base}/webhooks/rest/webhook",
            headers=headers,
            timeout=30,
            json={"sender": "demo-customer", "message": message},
        )
        assert response.status_code == 200, response.text
        replies: list[dict[str, object]] = response.json()
        return replies

    warranty = " ".join(str(reply["text"]) for reply in say("is WM2023-00917 still under warranty?"))
    assert "WM2023-00917" in warranty and "covered until" in warranty
    chinese = " ".join(str(reply["text"]) for reply in say("洗碗机显示E13是什么意思"))
    assert "E13" in chinese
    stranger = httpx.post(
        f"{base}/webhooks/rest/webhook", headers=headers, json={"sender": "x", "message": "hi"}
    )
    assert "not linked" in stranger.json()[0]["text"]
