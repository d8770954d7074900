"""The web chat page in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) through J1.

A real uvicorn server serves the whole app with the real embedded NLU; the browser signs in as the demo
customer, reports a leaking washing machine, answers the time question, clicks "Yes" and sees SR-1. Then
the history survives a reload, and the page shows it is reconnecting while the server is down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "Debian's Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)",
        allow_module_level=True,
    )

import httpx  # noqa: E402
from playwright.async_api import BrowserContext, Page, ViewportSize, async_playwright, expect  # noqa: E402

from bot.assistant import Assistant, RateLimit  # noqa: E402
from bot.nlu.embedded import EmbeddedNlu  # noqa: E402
from bot.nlu.service import ensure_model  # noqa: E402
from core.auth import SYSTEM  # noqa: E402
from core.container import Core  # noqa: E402
from crmbot.app import create_app  # noqa: E402
from tests.test_webchat import TOKEN, LiveServer, load_demo_marker  # noqa: E402
from tests.world import World  # noqa: E402

# An end-to-end test of many seconds: left out of `make test-fast`, run by `make test`.
pytestmark = pytest.mark.slow

# The flags this machine needs: without the background-networking ones Chromium keeps dialling out.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LEAK = "my washing machine WM2023-00917 is leaking"
PHONE: ViewportSize = {"width": 390, "height": 844}
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def nlu(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedNlu:
    """The real engine trained on the shipped data, once per run."""
    return ensure_model(Path(tmp_path_factory.mktemp("nlu")) / "model.joblib")


@pytest.fixture
async def server(core: Core, world: World, nlu: EmbeddedNlu) -> AsyncIterator[LiveServer]:
    """The whole app on a real port, with demo data marked and the ACME buyer as the web customer persona."""
    await core.org.link_identity(SYSTEM, "acme.buyer", "web:demo-customer")
    await load_demo_marker(core)
    assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=100, per_second=100))
    app = create_app(core, TOKEN, assistant=assistant, nlu=nlu)
    live = LiveServer(app)
    await live.start()
    try:
        yield live
    finally:
        await live.stop()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Chromium in a new, empty profile with a phone-sized viewport."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport=PHONE,
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            locale="en-US",
        )
        try:
            yield context
        finally:
            await context.close()


async def send(page: Page, text: str) -> None:
    await page.locator("#input").fill(text)
    await page.locator("#send").click()


async def test_j1_in_chromium_with_reload_and_reconnect(
    server: LiveServer, browser: BrowserContext, tmp_path: Path
) -> None:
    page = browser.pages[0] if browser.pages else await browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "console",
        lambda message: problems.append(message.text) if "Content Security Policy" in message.text else None,
    )
    chat = page.locator("#chat")
    last_bot = page.locator(".msg.bot").last
    try:
        await page.goto(server.url + "/")
        await expect(chat).to_have_attribute("data-connection", "open")
        await expect(page.locator("#personas")).to_be_visible()
        await page.screenshot(path=str(tmp_path / "webchat-personas.png"))

        # Sign in as the demo customer.
        await page.locator(".persona", has_text="Acme Buyer").click()
        await expect(page.locator("#who")).to_have_text("Signed in as Acme Buyer")
        await expect(page.locator("#personas")).to_be_hidden()
        await expect(chat).to_have_attribute("data-connection", "open")

        # J1: the product is found, its warranty stated, and only the visit time asked.
        await send(page, LEAK)
        await expect(page.locator(".msg.user").last).to_have_text(LEAK)
        await expect(page.locator(".msg.bot", has_text="under warranty until")).to_have_count(1)
        await expect(last_bot).to_contain_text("When would you like")
        await expect(page.locator("#typing")).to_be_hidden()
        await send(page, "tomorrow at 10am")
        yes = page.locator(".msg.bot .buttons button", has_text="Yes").last
        await expect(yes).to_be_enabled()
        await yes.click()
        await expect(page.locator(".msg.user").last).to_have_text("Yes")  # the title, not the payload
        await expect(last_bot).to_contain_text("SR-1")
        await expect(yes).to_be_disabled()
        await page.screenshot(path=str(tmp_path / "webchat-j1.png"))

        async with httpx.AsyncClient(base_url=server.url) as api:
            listing = await api.get(
                "/api/v1/service-requests",
                params={"customer": "ACME"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
        [request] = listing.json()["items"]
        opened = (request["ref"], request["serial_number"], request["channel"])
        assert opened == ("SR-1", "WM2023-00917", "web")

        # A reload re-renders the history from sessionStorage and keeps the session.
        await page.reload()
        await expect(chat).to_have_attribute("data-connection", "open")
        await expect(page.locator(".msg.user").first).to_have_text(LEAK)
        await expect(last_bot).to_contain_text("SR-1")
        await expect(page.locator("#who")).to_have_text("Signed in as Acme Buyer")

        # The server goes away: the page says so, keeps retrying, and comes back by itself.
        await server.stop()
        await expect(chat).to_have_attribute("data-connection", "reconnecting")
        await expect(page.locator("#status")).to_have_text("Connection lost. Reconnecting…")
        await send(page, "hello")  # typed while offline: kept and sent once the socket is back
        await page.screenshot(path=str(tmp_path / "webchat-reconnecting.png"))
        await server.start()
        await expect(chat).to_have_attribute("data-connection", "open")
        await expect(page.locator("#status")).to_be_hidden()
        await expect(last_bot).to_contain_text("Hello Acme Buyer")
        assert problems == []
    except BaseException:
        await page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"screenshot of the failure: {tmp_path / 'failure.png'}")
        raise


async def test_j2_and_j3_in_chromium(server: LiveServer, browser: BrowserContext, tmp_path: Path) -> None:
    page = browser.pages[0] if browser.pages else await browser.new_page()
    chat = page.locator("#chat")
    last_bot = page.locator(".msg.bot").last
    try:
        await page.goto(server.url + "/")
        await expect(chat).to_have_attribute("data-connection", "open")
        await page.locator(".persona", has_text="Acme Buyer").click()
        await expect(page.locator("#who")).to_have_text("Signed in as Acme Buyer")
        # J2: warranty of an own product; another customer's serial reads like an unknown one.
        await send(page, "is WM2023-00917 still under warranty?")
        await expect(last_bot).to_contain_text("is covered until")
        await send(page, "is AB12345 still under warranty?")
        await expect(last_bot).not_to_contain_text("Globex")
        await expect(last_bot).not_to_contain_text("covered until")
        # J3: an error code finds the article, with "this solved it" / "open a repair request" buttons.
        await send(page, "error E13 on my dishwasher")
        await expect(page.locator(".msg.bot", has_text="E13").last).to_be_visible()
        solved = page.locator(".msg.bot .buttons button", has_text="This solved it").last
        await expect(solved).to_be_enabled()
        await solved.click()
        await expect(last_bot).to_contain_text("glad that solved it")
        await page.screenshot(path=str(tmp_path / "webchat-j2-j3.png"))
    except BaseException:
        await page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"screenshot of the failure: {tmp_path / 'failure.png'}")
        raise
