"""Approvals over HTTP, on every store: a gated call asks, the delegator (or the operator) decides, exactly that
call runs once; nobody else may decide or even see the approval.

The tree of these tests: the root (orchestrator) hands `buyer` a token whose payments over 1.00 USD need approval;
the buyer's own child, a sibling of the buyer and a token of another root are the strangers.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from litestar.testing import TestClient

import app.store.memory as memory
from app.api.app import create_app
from app.approvals import WEBHOOK_TIMEOUT, Credential
from app.authority import Authority
from app.config import Settings
from app.schemas import MintRequest, VerifyRequest
from app.sdk import Token
from app.token.keys import KeyRing, new_key_entry
from tests.api.conftest import Api, ApiFactory, Clock, make_settings


class Tree:
    def __init__(self, api: Api) -> None:
        self.root = api.token(budget={"amount": "10.00", "currency": "USD"}, tools=["pay", "search"])
        parent = Token.parse(self.root)
        self.buyer = str(parent.attenuate(to="buyer", approval_above="1.00 USD"))
        self.buyer_child = str(Token.parse(self.buyer).attenuate(to="sub", budget="5.00 USD"))
        self.sibling = str(parent.attenuate(to="seller"))
        self.other_root = api.token(subject="elsewhere")


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def pay(api: Api, token: str, amount: str = "2.00", **fields: Any) -> Any:
    return api.verify(token, "pay", cost={"amount": amount, "currency": "USD"}, args={"to": "acme"}, **fields)


def ask(api: Api, token: str, **fields: Any) -> dict[str, Any]:
    r = pay(api, token, **fields)
    assert r.status_code == 403, r.text
    body: dict[str, Any] = r.json()
    assert body["code"] == "approval_required", body
    return body


def decide(api: Api, approval_id: str, credential: str, action: str = "approve", **body: Any) -> Any:
    return api.post(f"/v1/approvals/{approval_id}/{action}", body or None, headers=bearer(credential))


def listed(api: Api, credential: str, **query: str) -> list[str]:
    r = api.client.get("/v1/approvals", params=query, headers=bearer(credential))
    assert r.status_code == 200, r.text
    return [a["id"] for a in r.json()["approvals"]]


@pytest.fixture
def tree(api: Api) -> Tree:
    return Tree(api)


def test_a_gated_call_asks_once_and_charges_nothing(api: Api, tree: Tree) -> None:
    first = ask(api, tree.buyer)
    assert first["caveat"] == "approval > 1.00 USD" and first["hop"] == 1
    approval = first["approval"]
    assert approval["state"] == "pending" and approval["id"] in first["reason"]
    assert ask(api, tree.buyer, hold_ttl=60, request_id="r-1")["approval"]["id"] == approval["id"]  # same call
    assert api.spent(tree.root) == ["0.00"]
    assert api.allowed(tree.buyer, "pay", cost={"amount": "1.00", "currency": "USD"})  # not over 1.00: no approval
    r = api.client.get(f"/v1/approvals/{approval['id']}", headers=bearer(tree.root))
    assert r.status_code == 200, r.text
    view = r.json()
    assert (view["tool"], view["args"], view["cost"], view["delegation"], view["holder"]) == (
        "pay",
        {"to": "acme"},
        {"amount": "2.00", "currency": "USD"},
        ["orchestrator", "buyer"],
        "buyer",
    )
    assert (view["caveat"], view["hop"], view["state"]) == ("approval > 1.00 USD", 1, "pending")


def test_the_delegator_approves_and_exactly_that_call_runs_once(api: Api, tree: Tree) -> None:
    approval_id = ask(api, tree.buyer)["approval"]["id"]
    r = decide(api, approval_id, tree.root, reason="ok for acme")
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["decided_by"], r.json()["reason"]) == (
        "approved",
        "orchestrator (hop 0)",
        "ok for acme",
    )
    assert pay(api, tree.buyer, amount="3.00").json()["code"] == "approval_required"  # another cost: not this one
    other_args = api.verify(tree.buyer, "pay", cost={"amount": "2.00", "currency": "USD"}, args={"to": "evil"})
    assert other_args.json()["code"] == "approval_required"
    assert pay(api, tree.buyer, audience="elsewhere").json()["code"] == "approval_required"
    assert pay(api, tree.buyer_child).json()["code"] == "approval_required"  # another chain
    allowed = pay(api, tree.buyer)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["charged"] == {"amount": "2.00", "currency": "USD"}
    again = ask(api, tree.buyer)  # one approval, one call
    assert again["approval"]["id"] != approval_id
    assert api.spent(tree.root) == ["2.00"]
    states = {a["id"]: a["state"] for a in api.client.get("/v1/approvals", headers=api.admin).json()["approvals"]}
    assert states[approval_id] == "used"


def test_ten_parallel_retries_of_an_approved_call_run_it_once(api: Api, tree: Tree) -> None:
    approval_id = ask(api, tree.buyer)["approval"]["id"]
    assert decide(api, approval_id, api.settings.admin_keys[0]).status_code == 200
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: pay(api, tree.buyer), range(10)))
    assert sorted(r.status_code for r in answers) == [200] + [403] * 9
    assert api.spent(tree.root) == ["2.00"]


def test_a_denied_call_says_why_to_it_and_its_retries(api: Api, tree: Tree) -> None:
    approval_id = ask(api, tree.buyer)["approval"]["id"]
    r = decide(api, approval_id, tree.root, "deny", reason="acme is not a vendor")
    assert r.status_code == 200 and r.json()["state"] == "denied"
    for _ in range(2):
        body = api.denied(
            tree.buyer, "approval_denied", "pay", cost={"amount": "2.00", "currency": "USD"}, args={"to": "acme"}
        )
        assert "acme is not a vendor" in body["reason"] and body["approval"]["id"] == approval_id
    assert decide(api, approval_id, tree.root, "deny").status_code == 200  # the same decision again
    assert decide(api, approval_id, tree.root).status_code == 409  # the other one
    assert api.spent(tree.root) == ["0.00"]


@pytest.mark.parametrize("who", ["buyer", "buyer_child", "sibling", "other_root", "forged"])
def test_nobody_but_the_delegator_and_above_may_see_or_decide(api: Api, tree: Tree, who: str) -> None:
    approval_id = ask(api, tree.buyer)["approval"]["id"]
    credential = (
        tree.buyer[:-3] + ("AAA" if tree.buyer[-3:] != "AAA" else "BBB") if who == "forged" else getattr(tree, who)
    )
    for action in ("approve", "deny"):
        r = decide(api, approval_id, credential, action)
        assert r.status_code == 404, r.text
    assert api.client.get(f"/v1/approvals/{approval_id}", headers=bearer(credential)).status_code == 404
    r = api.client.get("/v1/approvals", headers=bearer(credential))
    assert r.status_code == (401 if who == "forged" else 200)
    assert who == "forged" or approval_id not in listed(api, credential)
    assert approval_id in listed(api, tree.root) and approval_id in listed(api, api.settings.admin_keys[0])
    assert ask(api, tree.buyer)["approval"]["state"] == "pending"


def test_a_revoked_or_expired_delegator_decides_nothing(api: Api, make_api: ApiFactory, tree: Tree) -> None:
    short = str(Token.parse(tree.root).attenuate(expires_in=60))
    approval_id = ask(api, tree.buyer)["approval"]["id"]
    api.clock.advance(61)
    assert decide(api, approval_id, short).status_code == 404
    assert api.post("/v1/revoke", {"token": tree.root}).status_code == 200
    assert decide(api, approval_id, tree.root).status_code == 404
    assert api.client.get("/v1/approvals", headers=bearer(tree.root)).status_code == 401


def test_approvals_expire_and_the_call_asks_anew(api: Api, tree: Tree) -> None:
    ttl = api.settings.approval_ttl
    first = ask(api, tree.buyer)["approval"]["id"]
    api.clock.advance(ttl)
    assert decide(api, first, tree.root).status_code == 404
    second = ask(api, tree.buyer)["approval"]["id"]
    assert second != first
    assert decide(api, second, tree.root).status_code == 200
    api.clock.advance(ttl)  # approved, not used in time
    assert ask(api, tree.buyer)["approval"]["id"] not in (first, second)
    assert listed(api, tree.root, state="expired") == [second, first]


def test_wait_holds_the_answer_until_the_decision(api: Api, tree: Tree) -> None:
    approval_id = ask(api, tree.buyer)["approval"]["id"]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(pay, api, tree.buyer, wait=20)
        time.sleep(0.5)
        assert not waiting.done()
        started = time.monotonic()
        assert decide(api, approval_id, tree.root).status_code == 200
        answer = waiting.result(timeout=10)
        assert time.monotonic() - started < 3  # woken by the decision, not by a poll
    assert answer.status_code == 200, answer.text
    assert api.spent(tree.root) == ["2.00"]


def test_wait_ends_with_the_pending_answer_when_nobody_decides(api: Api, tree: Tree) -> None:
    started = time.monotonic()
    body = ask(api, tree.buyer, wait=0.6)
    assert 0.6 <= time.monotonic() - started < 5
    assert body["approval"]["state"] == "pending"
    denied = ask(api, tree.buyer)["approval"]["id"]
    assert decide(api, denied, tree.root, "deny").status_code == 200
    started = time.monotonic()
    assert pay(api, tree.buyer, wait=10).json()["code"] == "approval_denied"  # decided: no wait
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"wait": 61}, "wait"),
        ({"wait": -1}, "wait"),
        ({"wait": "5"}, "wait"),
    ],
)
def test_bad_waits_are_refused(api: Api, tree: Tree, body: dict[str, Any], field: str) -> None:
    r = pay(api, tree.buyer, **body)
    assert r.status_code == 400 and field in r.text
    assert api.client.get("/v1/approvals", headers=api.admin).json()["approvals"] == []


def test_bad_decisions_and_queries_are_refused(api: Api, tree: Tree) -> None:
    approval_id = ask(api, tree.buyer)["approval"]["id"]
    r = api.client.get("/v1/approvals", params={"state": "bogus"}, headers=api.admin)
    assert r.status_code == 400 and r.json()["field"] == "state"
    for bad in ({"reason": "a\nb"}, {"reason": "x" * 1025}, {"why": "no"}, {"reason": 5}):
        r = decide(api, approval_id, tree.root, **bad)
        assert r.status_code == 400, (bad, r.text)
    assert api.client.get("/v1/approvals").status_code == 401
    assert listed(api, tree.root, state="pending") == [approval_id]  # nothing changed


def test_a_root_keeps_at_most_max_approvals_and_says_so(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound itself is counted on every store by tests/store/test_approvals.py; here, what the caller hears."""
    monkeypatch.setattr(memory, "MAX_APPROVALS", 2)
    client = TestClient(create_app(settings, store=memory.MemoryStore()))
    client.__enter__()
    api = Api(client, settings, Clock(), client.app.state.authority.store, None)
    tree = Tree(api)
    for amount in ("2.00", "3.00"):
        ask(api, tree.buyer, amount=amount)
    r = pay(api, tree.buyer, amount="4.00")
    assert r.status_code == 429 and r.json()["code"] == "rate_limited" and "approvals" in r.json()["reason"]
    assert int(r.headers["retry-after"]) > 0
    client.__exit__(None, None, None)


def test_approvals_are_in_the_schema(api: Api) -> None:
    paths = api.client.get("/schema").json()["paths"]
    assert {"/v1/approvals", "/v1/approvals/{approval_id}", "/v1/approvals/{approval_id}/approve"} <= set(paths)


# -- the webhook ---------------------------------------------------------------------------------------------


class Listener:
    """A local HTTP server that records each POST; `hang` makes it never answer."""

    def __init__(self, hang: bool = False) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.got = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                outer.bodies.append(json.loads(self.rfile.read(length)))
                outer.got.set()
                if hang:
                    time.sleep(WEBHOOK_TIMEOUT + 1)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


def test_the_webhook_hears_each_new_pending_approval_once(
    make_api: ApiFactory, tmp_path: Any, listener: Listener
) -> None:
    api = make_api(make_settings(tmp_path, AGENTCAPS_APPROVAL_WEBHOOK=listener.url))
    tree = Tree(api)
    approval_id = ask(api, tree.buyer)["approval"]["id"]
    ask(api, tree.buyer)
    assert listener.got.wait(5)
    time.sleep(0.3)
    assert [b["id"] for b in listener.bodies] == [approval_id]
    body = listener.bodies[0]
    assert (body["state"], body["tool"], body["holder"]) == ("pending", "pay", "buyer")
    assert body["url"] == f"{api.settings.public_location}/console#approval-{approval_id}"
    assert tree.root not in json.dumps(body) and tree.buyer not in json.dumps(body)  # never a token


def test_a_hanging_or_absent_webhook_never_holds_a_call(make_api: ApiFactory, tmp_path: Any, caplog: Any) -> None:
    hanging = Listener(hang=True)
    try:
        for url in (hanging.url, "http://127.0.0.1:9/nobody"):
            api = make_api(make_settings(tmp_path / url[-6:], AGENTCAPS_APPROVAL_WEBHOOK=url))
            tree = Tree(api)
            started = time.monotonic()
            ask(api, tree.buyer)
            assert time.monotonic() - started < 1.5
            approval_id = ask(api, tree.buyer)["approval"]["id"]
            assert decide(api, approval_id, tree.root).status_code == 200  # the approval works all the same
            assert pay(api, tree.buyer).status_code == 200
        deadline = time.monotonic() + 5
        while "approval webhook failed" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "approval webhook failed" in caplog.text
    finally:
        hanging.close()


@pytest.mark.parametrize("bad_id", ["x", "..", "../tokens", "%2F..%2Fv1%2Ftokens", "a" * 32 + "." + "0" * 32, "é"])
def test_made_up_approval_ids_are_unknown(api: Api, bad_id: str) -> None:
    for path in (f"/v1/approvals/{bad_id}", f"/v1/approvals/{bad_id}/approve", f"/v1/approvals/{bad_id}/deny"):
        send = api.client.get if path.endswith(bad_id) else api.client.post
        r = send(path, headers=api.admin)
        assert r.status_code in (404, 405), (path, r.status_code, r.text)
        assert r.status_code == 404 or ".." in bad_id  # a path that leaves the route is not an approval at all


async def test_many_waiting_calls_sleep_until_their_decision(tmp_path: Any) -> None:
    """100 calls wait at once: none polls the store more than its first look and one poll in POLL_S, and one
    decision wakes exactly its own call."""
    store = CountingStore()
    ring = KeyRing(new_key_entry())
    authority = Authority(ring, store, "http://test")
    root = (await authority.mint(MintRequest("orchestrator", tools=["pay"]))).token
    buyer = str(Token.parse(root).attenuate(to="buyer", approval_tools=["pay"]))

    def call(n: int, wait: float) -> VerifyRequest:
        return VerifyRequest(buyer, "pay", args={"n": n}, wait=wait)

    ids = [(await authority.verify(call(n, 0), None)).body.approval.id for n in range(100)]  # type: ignore[union-attr]
    store.looks = 0
    waiting = [asyncio.create_task(authority.verify(call(n, 30), None)) for n in range(100)]
    await asyncio.sleep(1.0)
    assert store.looks <= 2 * 100  # each: its decide and its first look, then it sleeps
    assert not any(task.done() for task in waiting)
    await authority.approvals.decide(Credential(), ids[7], True, None)
    done, _ = await asyncio.wait(waiting, timeout=2, return_when=asyncio.FIRST_COMPLETED)
    assert done == {waiting[7]} and waiting[7].result().kind == "allowed"
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    await authority.approvals.close()


class CountingStore(memory.MemoryStore):
    """A memory store that counts the calls a waiting verify makes."""

    looks = 0

    async def decide(self, d: Any) -> Any:
        self.looks += 1
        return await super().decide(d)

    async def approval(self, approval_id: str, now_ms: int) -> Any:
        self.looks += 1
        return await super().approval(approval_id, now_ms)
