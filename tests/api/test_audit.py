"""The audit log over HTTP, on every store: every decision leaves exactly one event, and each credential reads
exactly its own subtree.

The tree of these tests: a root (orchestrator) hands `a` and `b` tokens of their own; `a` hands `ac` one.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from app.api.server import GRACEFUL_SHUTDOWN_S
from app.sdk import Token
from tests.api.conftest import Api, ApiFactory, make_settings


class Tree:
    def __init__(self, api: Api) -> None:
        minted = api.mint(budget={"amount": "10.00", "currency": "USD"}, tools=["search", "pay"])
        self.root, self.token_id = minted["token"], minted["token_id"]
        root = Token.parse(self.root)
        self.a = str(root.attenuate(to="a"))
        self.ac = str(Token.parse(self.a).attenuate(to="ac", budget="1.00 USD"))
        self.b = str(root.attenuate(to="b"))


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def events(api: Api, credential: str, **query: Any) -> list[dict[str, Any]]:
    r = api.client.get("/v1/audit", params=query, headers=bearer(credential))
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["events"]
    return found


@pytest.fixture
def tree(api: Api) -> Tree:
    return Tree(api)


def test_each_credential_reads_exactly_its_subtree(api: Api, tree: Tree) -> None:
    for who, token in (("a", tree.a), ("ac", tree.ac), ("b", tree.b)):
        api.allowed(token, "search", args={"q": who})
    api.denied(tree.ac, "tool_not_allowed", "delete")  # a stateless denial is an event too
    admin = api.settings.admin_keys[0]
    every = events(api, admin)
    assert [e["kind"] for e in every] == ["verify"] * 4 + ["mint"]  # newest first
    by_holder = {who: [e for e in every if e.get("holder") == who] for who in ("a", "ac", "b")}
    assert len(by_holder["ac"]) == 2
    assert events(api, tree.a) == by_holder["ac"] + by_holder["a"]
    assert events(api, tree.ac) == by_holder["ac"]
    assert events(api, tree.b) == by_holder["b"]
    assert events(api, tree.root) == every
    forged = tree.a[:-4] + ("AAAA" if not tree.a.endswith("AAAA") else "BBBB")
    assert api.client.get("/v1/audit", headers=bearer(forged)).status_code == 401
    other = api.token(subject="elsewhere")
    assert [e["kind"] for e in events(api, other)] == ["mint"]  # its own mint, nothing of the tree
    assert events(api, other, token_id=tree.token_id) == []


def test_an_event_says_what_happened_and_never_carries_a_secret(api: Api, tree: Tree) -> None:
    api.allowed(tree.ac, "pay", cost={"amount": "0.25", "currency": "USD"}, args={"to": "acme"}, request_id="r1")
    denied = api.denied(tree.ac, "budget_exceeded", "pay", cost={"amount": "0.80", "currency": "USD"})
    newest, first = events(api, api.settings.admin_keys[0], limit=2)
    assert (first["allowed"], first["charged"], first["request_id"], first["args"]) == (
        True,
        {"amount": "0.25", "currency": "USD"},
        "r1",
        {"to": "acme"},
    )
    assert first["delegation"] == ["orchestrator", "a", "ac"] and first["holder"] == "ac"
    assert first["tool"] == "pay" and first["token_id"] == tree.token_id and len(first["chain"]) == 32
    assert (newest["allowed"], newest["code"], newest["caveat"], newest["hop"]) == (
        False,
        "budget_exceeded",
        denied["caveat"],
        denied["hop"],
    )
    assert newest["at"].endswith("Z") and "." in newest["at"]
    text = json.dumps(events(api, api.settings.admin_keys[0]))
    for secret in (tree.root, tree.a, tree.ac, api.settings.admin_keys[0], tree.ac.split(".")[-1][-20:]):
        assert secret not in text


def test_invalid_tokens_are_counted_not_logged(api: Api, tree: Tree) -> None:
    before = len(events(api, api.settings.admin_keys[0]))
    api.denied("not-a-token", "invalid_token")
    api.denied(tree.a[:-4] + "AAAA", "invalid_token")
    assert len(events(api, api.settings.admin_keys[0])) == before
    assert 'code="invalid_token"' in api.client.get("/metrics").text


def test_args_are_cut_at_4_kib(api: Api, tree: Tree) -> None:
    big = {f"k{i}": "x" * 500 for i in range(20)}
    api.allowed(tree.a, "search", args=big)
    event = events(api, api.settings.admin_keys[0], limit=1)[0]
    assert event["args_truncated"] is True
    assert 0 < len(event["args"]) < len(big) and len(json.dumps(event["args"])) <= 4096
    assert all(event["args"][k] == big[k] for k in event["args"])


def test_args_none_keeps_no_args(make_api: ApiFactory, tmp_path: Any) -> None:
    api = make_api(make_settings(tmp_path, AGENTCAPS_AUDIT_ARGS="none"))
    token = api.token()
    api.allowed(token, "search", args={"secret": "hunter2"})
    assert "hunter2" not in json.dumps(events(api, api.settings.admin_keys[0]))


def test_200_racing_calls_leave_200_events_and_50_charges(api: Api) -> None:
    token = api.token(budget={"amount": "0.50", "currency": "USD"})
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: api.verify(token, cost={"amount": "0.01", "currency": "USD"}), range(200)))
    assert sum(r.status_code == 200 for r in answers) == 50
    found = events(api, token, kind="verify", limit=1000)
    assert len(found) == 200
    assert sum(e["allowed"] for e in found) == 50
    assert {e["code"] for e in found if not e["allowed"]} == {"budget_exceeded"}


def test_holds_approvals_and_revocations_leave_their_events(api: Api, tree: Tree) -> None:
    hold = api.allowed(tree.a, "pay", cost={"amount": "1.00", "currency": "USD"}, mode="hold")["hold_id"]
    assert api.post(f"/v1/holds/{hold}/extend", {"hold_ttl": 60}).status_code == 200
    assert api.settle(hold, {"amount": "0.40"}).status_code == 200
    assert api.settle(hold, {"amount": "0.40"}).status_code == 200  # a repeat changes nothing: no event
    gone = api.allowed(tree.a, "pay", cost={"amount": "1.00", "currency": "USD"}, mode="hold", hold_ttl=1)["hold_id"]
    api.clock.advance(2)
    api.allowed(tree.a, "search")  # the expired hold is released by the next call on the root
    released = api.allowed(tree.b, "pay", cost={"amount": "1.00", "currency": "USD"}, mode="hold")["hold_id"]
    assert api.release(released).status_code == 200
    gated = str(Token.parse(tree.a).attenuate(approval_tools=["pay"]))
    approval = api.denied(gated, "approval_required", "pay")["approval"]["id"]
    assert api.post(f"/v1/approvals/{approval}/approve", None, headers=bearer(tree.a)).status_code == 200
    api.allowed(gated, "pay")
    assert api.post("/v1/revoke", {"token": tree.b}).status_code == 200
    kinds = [(e["kind"], e.get("hold_id") or e.get("approval_id")) for e in events(api, api.settings.admin_keys[0])]
    expected = [
        ("revoke", None),
        ("verify", approval),
        ("approval", approval),
        ("verify", approval),
        ("release", released),
        ("verify", released),
        ("verify", None),
        ("expire", gone),
        ("verify", gone),
        ("settle", hold),
        ("extend", hold),
        ("verify", hold),
        ("mint", None),
    ]
    assert kinds == expected
    settle = next(e for e in events(api, tree.a, kind="settle"))
    assert settle["charged"] == {"amount": "0.40", "currency": "USD"} and settle["holder"] == "a"
    decided = events(api, tree.a, kind="approval")[0]
    assert decided["allowed"] is True and "approved by orchestrator" not in decided["reason"]
    assert decided["reason"].startswith("approved by a (hop 1)")


def test_filters_and_paging_without_gaps_or_repeats_under_concurrent_writes(api: Api, tree: Tree) -> None:
    for n in range(30):
        api.allowed(tree.a, "search" if n % 3 else "pay", args={"n": n})
    admin = api.settings.admin_keys[0]
    assert {e["tool"] for e in events(api, admin, tool="pay")} == {"pay"}
    assert len(events(api, admin, tool="pay")) == 10
    assert events(api, admin, allowed="false") == []
    assert [e["kind"] for e in events(api, admin, kind="mint")] == ["mint"]
    before = [e["id"] for e in events(api, admin, limit=1000)]
    assert len(before) == 31  # the 30 calls and the mint
    writer = threading.Thread(target=lambda: [api.allowed(tree.b, "search", args={"late": n}) for n in range(20)])
    writer.start()
    seen: list[str] = []
    after = None
    while True:
        query: dict[str, Any] = {"limit": 7, "token_id": tree.token_id, **({"after": after} if after else {})}
        page = api.client.get("/v1/audit", params=query, headers=api.admin).json()
        seen += [e["id"] for e in page["events"]]
        after = page.get("next")
        if not after:
            break
    writer.join(10)
    assert len(seen) == len(set(seen))  # no repeats
    assert set(before) <= set(seen)  # no gaps: every event there when paging began


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"kind": "bogus"}, "kind"),
        ({"allowed": "yes"}, "allowed"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01T00:00:00Z"}, "until"),
        ({"token_id": "xyz"}, "token_id"),
        ({"chain": "z" * 64}, "chain"),
        ({"after": "a b"}, "after"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_queries_are_refused_with_their_field(api: Api, query: dict[str, str], field: str) -> None:
    r = api.client.get("/v1/audit", params=query, headers=api.admin)
    assert r.status_code == 400 and r.json()["field"] == field, r.text


def test_the_operator_revokes_one_chain_seen_in_the_log(api: Api, tree: Tree) -> None:
    api.allowed(tree.ac, "search")
    api.allowed(tree.b, "search")
    chain = events(api, tree.a, limit=1)[0]["chain"]  # ac's chain: the newest event a sees
    r = api.post("/v1/revoke", {"token_id": tree.token_id, "chain": chain}, headers=api.admin)
    assert r.status_code == 200, r.text
    api.denied(tree.ac, "revoked")
    api.allowed(tree.a, "search")
    api.allowed(tree.b, "search")
    unseen = {"token_id": tree.token_id, "chain": "0" * 32}
    assert api.post("/v1/revoke", unseen, headers=api.admin).status_code == 404
    assert api.post("/v1/revoke", {"token_id": tree.token_id, "chain": chain}).status_code == 401
    assert api.post("/v1/revoke", {"chain": chain}, headers=api.admin).status_code == 400


@pytest.mark.parametrize("store", ["memory://", "redis://127.0.0.1:6379/4"])
def test_the_stream_sends_events_live_and_resumes_after_an_id(service_factory: Any, store: str) -> None:
    """A real server: the stream never ends by itself, as a test client would wait for it to."""
    service = service_factory(store)
    admin = service.admin()
    with httpx.Client(base_url=service.url, timeout=10) as client:
        minted = client.post("/v1/tokens", json={"subject": "orchestrator"}, headers=admin).json()
        token = minted["token"]

        def verify(n: str) -> None:
            assert (
                client.post("/v1/verify", json={"token": token, "tool": "search", "args": {"n": n}}).status_code == 200
            )

        verify("before")
        with client.stream("GET", "/v1/audit/stream", params={"token_id": minted["token_id"]}, headers=admin) as stream:
            lines = stream.iter_lines()
            assert next(lines) == ": caught up"
            verify("live")
            event_id = next(line for line in lines if line.startswith("id: ")).removeprefix("id: ")
            data = json.loads(next(lines).removeprefix("data: "))
        assert data["args"] == {"n": "live"} and data["id"] == event_id
        found = client.get("/v1/audit", params={"token_id": minted["token_id"]}, headers=admin).json()["events"]
        mint = found[-1]["id"]
        resume = {**admin, "Last-Event-ID": mint}
        ids = []
        with client.stream(
            "GET", "/v1/audit/stream", params={"token_id": minted["token_id"]}, headers=resume
        ) as stream:
            for line in stream.iter_lines():
                if line == ": caught up":
                    break
                if line.startswith("id: "):
                    ids.append(line.removeprefix("id: "))
        assert ids == [e["id"] for e in reversed(found[:-1])] and ids[-1] == event_id


def test_live_streams_are_bounded(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.audit as audit_module

    monkeypatch.setattr(audit_module, "MAX_STREAMS", 0)
    r = api.client.get("/v1/audit/stream", headers=api.admin)
    assert r.status_code == 429 and r.json()["code"] == "too_many"


@pytest.mark.parametrize("name", ["limit", "since", "until"])
def test_a_stream_refuses_what_it_cannot_apply(api: Api, name: str) -> None:
    value = "5" if name == "limit" else "2026-01-01T00:00:00Z"
    r = api.client.get("/v1/audit/stream", params={name: value}, headers=api.admin)
    assert r.status_code == 400 and r.json()["field"] == name


def test_a_stop_does_not_wait_for_an_open_stream(service_factory: Any) -> None:
    """A follower never hangs up by itself: the service stops all the same, within its graceful shutdown."""
    service = service_factory("memory://")
    with (
        httpx.Client(base_url=service.url, timeout=10) as client,
        client.stream("GET", "/v1/audit/stream", headers=service.admin()) as stream,
    ):
        assert next(stream.iter_lines()) == ": caught up"
        started = time.monotonic()
        service.process.terminate()
        service.process.wait(GRACEFUL_SHUTDOWN_S + 5)
    assert time.monotonic() - started < GRACEFUL_SHUTDOWN_S + 5
