"""The dashboard and a device page in a real browser (Debian's chromium via Playwright).

Colours, the offline badge and a queued command are visible; every request the pages make
stays on the console's origin; a screenshot of each page is kept as a test artifact
(``$TIERVAULT_TEST_ARTIFACTS``, else ``artifacts/`` in the repository, git-ignored).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.consolekit import PASSWORD, Agent, ConsoleServer, session

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs Debian's chromium at /usr/bin/chromium "
                                       "(apt-get install chromium; .ci/run installs it)")


def artifacts_dir() -> Path:
    """Where tests leave files for people to look at."""
    env = os.environ.get("TIERVAULT_TEST_ARTIFACTS")
    out = Path(env) if env else Path(__file__).resolve().parents[2] / "artifacts"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium driven by Playwright."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def devices(console: ConsoleServer) -> dict[str, Agent]:
    """A green device, a red one, and one that stopped checking in with a command queued."""
    token = console.token(customer="Browser Ltd", uses=5)
    out = {name: console.agent(token, name=name) for name in ("green-pc", "red-pc", "off-pc")}
    tiers = [{"url": "/vault", "state": "online", "revision": 2, "role": "speed-vault"},
             {"url": "sftp://backup@server/x", "state": "online", "revision": 2,
              "role": "server"}]
    for a in out.values():
        a.checkin(tiers=tiers)
    out["green-pc"].report(session("g@1", bytes_sent=3 << 20, bytes_processed=9 << 20))
    out["red-pc"].report(session("r@1", status="failed",
                                 errors=[{"message": "disk full", "path": "/data"}]))
    out["off-pc"].report(session("o@1"))
    return out


def test_dashboard_and_device_page_in_chromium(console: ConsoleServer, browser: Any,
                                               devices: dict[str, Agent]) -> None:
    console.move_clock(900)      # 15 min later: off-pc is silent for more than 5 intervals
    devices["green-pc"].checkin()
    devices["red-pc"].checkin()
    off = devices["off-pc"].device_id
    with console.api() as api:
        r = api.post("/api/v1/commands", json={"devices": [off], "type": "backup",
                                                "params": {"set": "home"}})
        assert r.status_code in (200, 201), r.text
        queued_id = r.json()[0]["id"]

    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    out = artifacts_dir()

    page.goto(console.url + "/")
    page.fill("#name", "admin")
    page.fill("#password", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_selector("table.devices")
    for name, colour in (("green-pc", "green"), ("red-pc", "red"), ("off-pc", "green")):
        row = page.locator(f"tr[data-device='{devices[name].device_id}']")
        assert row.get_attribute("class") == f"colour-{colour}"
        assert row.locator(".dot").is_visible()
        assert row.locator(".colour-name").inner_text() == colour
    off_badge = page.locator(f"tr[data-device='{off}'] .badge.offline")
    assert off_badge.is_visible() and off_badge.inner_text() == "offline"
    assert page.locator(
        f"tr[data-device='{devices['green-pc'].device_id}'] .badge.offline").count() == 0
    # the colour dots are painted by the vendored stylesheet (not blocked by the CSP)
    green_dot = page.locator(f"tr[data-device='{devices['green-pc'].device_id}'] .dot")
    assert green_dot.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(46, 158, 68)"
    page.screenshot(path=str(out / "console-dashboard.png"), full_page=True)

    # htmx: the colour filter swaps in the table without a page load
    page.select_option("#f-colour", "red")
    page.wait_for_function(
        "() => document.querySelectorAll('table.devices tbody tr[data-device]').length === 1")
    assert page.locator(f"tr[data-device='{devices['red-pc'].device_id}']").is_visible()
    assert "colour=red" in page.url

    page.goto(f"{console.url}/devices/{off}")
    cmd = page.locator(f"tr[data-command='{queued_id}']")
    assert cmd.locator(".badge.state-queued").inner_text() == "queued"
    assert cmd.is_visible()
    assert page.locator("h1 .badge.offline").is_visible()
    page.goto(f"{console.url}/devices/{devices['green-pc'].device_id}")
    page.wait_for_selector("#session-chart .uplot")     # uPlot drew the chart
    # browse: the page asks the device, polls, and shows the listing it answered
    page.fill("#b-path", "/home")
    page.click("#browse button[type=submit]")
    page.wait_for_selector("#listing >> text=Asked the device")
    agent = devices["green-pc"]
    browse = next(c for c in agent.poll() if c["type"] == "browse")
    agent.update(browse["id"], "succeeded", result={"entries": [
        {"path": "/home/<img src=x onerror=alert(1)>.pdf", "type": "file", "size": 123456},
        {"path": "/home/photos", "type": "dir"}]})
    page.wait_for_selector("table.listing")
    first = page.locator("table.listing td.name").first.inner_text()
    assert first == "<img src=x onerror=alert(1)>.pdf"      # shown as text, not an image
    page.screenshot(path=str(out / "console-device.png"), full_page=True)
    page.close()

    assert requests, "no request was recorded"
    outside = [u for u in requests if not u.startswith(console.url + "/")]
    assert outside == [], outside
    assert errors == [], errors          # no CSP violation, no script error
    assert (out / "console-dashboard.png").stat().st_size > 10_000
