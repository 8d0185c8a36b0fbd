"""The console in a real browser (Debian's headless Chromium): sign in, decide an approval while the call waits,
watch a budget move, see only one's own branch as a holder, revoke from the page, and never leave the origin."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from app.sdk import Token
from tests.console.conftest import WAIT_S, call, chain_of, mint, requested_urls
from tests.keys import ADMIN_KEY
from tests.processes import Service


@pytest.fixture(autouse=True)
def stays_on_the_origin(browser: WebDriver, service: Service) -> Iterator[None]:
    """After every test: each request the page made went to the service itself (no CDN, no outside call)."""
    yield
    urls = requested_urls(browser)
    assert urls, "the DevTools performance log saw no request: the check would prove nothing"
    assert [url for url in urls if not url.startswith(service.url + "/")] == []


def wait(driver: WebDriver, until: Any) -> Any:
    # The Tokens view re-renders itself every few seconds: an element found just before that is stale, look again.
    return WebDriverWait(driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,)).until(until)


def button(driver: WebDriver | WebElement, text: str) -> WebElement:
    return driver.find_element(By.XPATH, f".//button[normalize-space()='{text}']")


def sign_in(driver: WebDriver, service: Service, credential: str) -> None:
    driver.get(service.url + "/console")
    driver.delete_all_cookies()  # a fresh session: each test signs in as whom it needs
    driver.get(service.url + "/console#approvals")
    field = wait(driver, seen.visibility_of_element_located((By.ID, "credential")))
    label = driver.find_element(By.CSS_SELECTOR, "label[for=credential]")
    assert label.text == "Admin key or token"
    field.send_keys(credential)
    button(driver, "Sign in").click()
    wait(driver, seen.visibility_of_element_located((By.ID, "nav")))


def open_page(driver: WebDriver, name: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#nav a[data-page={name}]").click()
    wait(driver, seen.visibility_of_element_located((By.ID, f"{name}-title")))


def test_the_operator_signs_in_and_sees_every_page_and_the_browser_keeps_no_credential(
    browser: WebDriver, service: Service
) -> None:
    sign_in(browser, service, ADMIN_KEY)
    assert browser.find_element(By.ID, "who").text == "Signed in as the operator"
    for name, heading in (("approvals", "Approvals"), ("activity", "Activity"), ("tokens", "Tokens")):
        open_page(browser, name)
        assert browser.find_element(By.ID, f"{name}-title").text == heading
    open_page(browser, "inspect")
    assert browser.find_element(By.CSS_SELECTOR, "label[for=inspect-token]").text == "Token to inspect"
    # The session cookie is HttpOnly: the page's own script cannot read it; nothing is kept in storage.
    assert browser.execute_script("return document.cookie") == ""
    assert browser.execute_script("return localStorage.length + sessionStorage.length") == 0
    button(browser, "Sign out").click()
    wait(browser, seen.visibility_of_element_located((By.ID, "credential")))
    browser.refresh()
    wait(browser, seen.visibility_of_element_located((By.ID, "credential")))  # signed out for good


def test_a_waiting_call_appears_without_a_reload_and_approve_lets_it_through(
    browser: WebDriver, service: Service, http: httpx.Client
) -> None:
    root = mint(http, tools=["pay", "search"])
    buyer = str(Token.parse(root).attenuate(to="buyer", approval_above="1.00 USD"))
    sign_in(browser, service, ADMIN_KEY)
    answers: list[httpx.Response] = []
    waiting = threading.Thread(target=lambda: answers.append(call(http, buyer, amount="2.00", wait=30)))
    waiting.start()
    try:
        card = wait(browser, seen.visibility_of_element_located((By.CSS_SELECTOR, "#approvals-list .card")))
        assert "pay for buyer" in card.text and "2.00 USD" in card.text and "orchestrator → buyer" in card.text
        reason = card.find_element(By.CSS_SELECTOR, "input[name=reason]")
        label = card.find_element(By.CSS_SELECTOR, f"label[for='{reason.get_attribute('id')}']")
        assert label.text == "Reason (optional)"
        reason.send_keys("looks right")
        button(card, "Approve").click()
        waiting.join(WAIT_S)
    finally:
        waiting.join(35)
    assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
    wait(browser, seen.invisibility_of_element_located((By.CSS_SELECTOR, "#approvals-list .card")))


def meter_of(driver: WebDriver, chain: str) -> tuple[str, str]:
    """The budget bar of `chain`'s own budget: its label text and the meter's value."""
    node = driver.find_element(By.CSS_SELECTOR, f".node[data-chain='{chain}']")
    meter = node.find_element(By.CSS_SELECTOR, ".budget:not(.rate) meter")
    label = node.find_element(By.CSS_SELECTOR, f"label[for='{meter.get_attribute('id')}']")
    return label.text, meter.get_attribute("value") or ""


def test_the_budget_bar_moves_after_a_charged_call_without_a_reload(
    browser: WebDriver, service: Service, http: httpx.Client
) -> None:
    root = mint(http, tools=["pay", "search"])
    agent = str(Token.parse(root).attenuate(to="agent", budget="4.00 USD"))
    chain = chain_of(http, agent)
    sign_in(browser, service, ADMIN_KEY)
    open_page(browser, "tokens")
    wait(browser, seen.visibility_of_element_located((By.CSS_SELECTOR, f".node[data-chain='{chain}'] meter")))
    text, value = meter_of(browser, chain)
    assert "0.00 spent, 0.00 held of 4.00 USD" in text and value == "0"
    assert call(http, agent, amount="1.50").status_code == 200
    # The page refreshes the Tokens view every few seconds by itself: no reload here.
    wait(browser, lambda d: "1.50 spent, 0.00 held of 4.00 USD" in meter_of(d, chain)[0])
    assert meter_of(browser, chain)[1] == "1500000"


def test_rate_use_shows_the_calls_in_the_window(browser: WebDriver, service: Service, http: httpx.Client) -> None:
    root = mint(http, tools=["pay", "search"])
    agent = str(Token.parse(root).attenuate(to="agent", rate="5/1h"))
    chain = chain_of(http, agent)  # one call: it makes the chain seen
    assert call(http, agent, "search").status_code == 200
    sign_in(browser, service, ADMIN_KEY)
    open_page(browser, "tokens")
    rate = (By.CSS_SELECTOR, f".node[data-chain='{chain}'] meter[id^='rate-']")
    wait(browser, seen.visibility_of_element_located(rate))
    used = browser.find_element(*rate).get_attribute("value")
    label = browser.find_element(By.CSS_SELECTOR, f"label[for='{browser.find_element(*rate).get_attribute('id')}']")
    assert used == "2" and "rate <= 5/1h — 2 of 5 calls in the last 1h" in label.text


def test_a_holder_sees_only_its_own_branch(browser: WebDriver, service: Service, http: httpx.Client) -> None:
    root = mint(http, tools=["pay", "search"])
    alice = str(Token.parse(root).attenuate(to="alice", budget="2.00 USD"))
    bob = str(Token.parse(root).attenuate(to="bob", budget="2.00 USD"))
    alice_chain, bob_chain = chain_of(http, alice), chain_of(http, bob)
    assert call(http, alice, "search", args={"q": "alice-was-here"}).status_code == 200
    assert call(http, bob, "search", args={"q": "bob-was-here"}).status_code == 200
    sign_in(browser, service, alice)
    assert browser.find_element(By.ID, "who").text == "Signed in as alice (hop 1)"
    open_page(browser, "activity")
    wait(browser, lambda d: "alice" in d.find_element(By.ID, "activity-list").text)
    activity = browser.find_element(By.ID, "activity-list").text
    assert "orchestrator → alice" in activity and "bob" not in activity
    open_page(browser, "tokens")
    wait(browser, seen.visibility_of_element_located((By.CSS_SELECTOR, f".node[data-chain='{alice_chain}']")))
    trees = browser.find_element(By.ID, "tokens-list")
    assert "bob" not in trees.text and bob_chain not in trees.text
    assert len(trees.find_elements(By.CSS_SELECTOR, ".root")) == 1  # its own root only


def test_revoke_on_the_page_denies_the_next_call(browser: WebDriver, service: Service, http: httpx.Client) -> None:
    root = mint(http, tools=["pay", "search"])
    worker = str(Token.parse(root).attenuate(to="worker"))
    chain = chain_of(http, worker)
    sign_in(browser, service, ADMIN_KEY)
    open_page(browser, "tokens")
    node = wait(browser, seen.visibility_of_element_located((By.CSS_SELECTOR, f".node[data-chain='{chain}']")))
    button(node, "Revoke").click()
    wait(browser, seen.alert_is_present()).accept()  # "this cannot be undone": asked before it is done
    wait(browser, seen.visibility_of_element_located((By.CSS_SELECTOR, f".node[data-chain='{chain}'] .badge")))
    denied = call(http, worker, "search")
    assert denied.status_code == 403 and denied.json()["code"] == "revoked", denied.text
    assert call(http, root, "search").status_code == 200  # the parent is untouched


def test_inspect_shows_hops_budgets_and_what_denies(browser: WebDriver, service: Service, http: httpx.Client) -> None:
    root = mint(http, tools=["search"])
    sign_in(browser, service, ADMIN_KEY)
    open_page(browser, "inspect")
    browser.find_element(By.ID, "inspect-token").send_keys(root)
    button(browser, "Inspect").click()
    result = wait(browser, seen.visibility_of_element_located((By.CSS_SELECTOR, "#inspect-result h3")))
    assert result.text.startswith("Token of root ")
    text = browser.find_element(By.ID, "inspect-result").text
    assert "budget <= 10.00 USD" in text and "0.00 spent, 0.00 held, 10.00 remaining" in text
    assert "Nothing: a call within its caveats would be allowed." in text


def test_every_page_fits_a_phone_width_without_sideways_scrolling(
    browser: WebDriver, service: Service, http: httpx.Client
) -> None:
    mint(http, tools=["search"])
    sign_in(browser, service, ADMIN_KEY)
    phone = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)
    try:
        for name in ("approvals", "activity", "tokens", "inspect"):
            open_page(browser, name)
            overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (name, overflow)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
