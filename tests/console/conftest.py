"""The console's fixtures: one service process and one headless Chromium per test module (started once: a browser
takes about a second), and small helpers for what every console test does (mint, call, sign in)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.keys import ADMIN_KEY
from tests.processes import Service, start_service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 10  # the longest an explicit wait in these tests waits for the page


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    started = start_service("memory://", tmp_path_factory.mktemp("console"))
    yield started
    started.process.terminate()
    started.process.wait(10)


@pytest.fixture(scope="module")
def http(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=40) as client:
        yield client


def mint(http: httpx.Client, subject: str = "orchestrator", **body: Any) -> str:
    body = {"subject": subject, "budget": {"amount": "10.00", "currency": "USD"}, **body}
    r = http.post("/v1/tokens", json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def call(http: httpx.Client, token: str, tool: str = "pay", amount: str | None = None, **fields: Any) -> httpx.Response:
    body: dict[str, Any] = {"token": token, "tool": tool, **fields}
    if amount is not None:
        body["cost"] = {"amount": amount, "currency": "USD"}
    return http.post("/v1/verify", json=body)


def chain_of(http: httpx.Client, token: str) -> str:
    """A token's chain id, as the audit log names it: from an event of a call it made."""
    call(http, token, "search")
    token_id = json.loads(http.post("/v1/inspect", json={"token": token}).text)["token_id"]
    events = http.get("/v1/audit", params={"token_id": token_id}, headers={"Authorization": f"Bearer {token}"})
    assert events.status_code == 200, events.text
    chain: str = events.json()["events"][0]["chain"]
    return chain


@pytest.fixture(scope="module")
def browser(service: Service) -> Iterator[Any]:
    """Debian's headless Chromium through its chromedriver: Selenium Manager is never asked to fetch anything."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run scripts/test, which installs chromium and chromium-driver")
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the test user may be root (containers)
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        # No calls home of the browser's own: the test checks that every request goes to the service.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-features=Translate,OptimizationHints,MediaRouter",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser asked for since the last look (DevTools performance log: Network.requestWillBeSent)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls
