"""request_id (docs/api.md): the same request again returns the first decision and charges nothing more; the same
id for a different request is 409; concurrent duplicates charge exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.api.app import create_app
from app.config import Settings
from app.store.base import Store
from app.store.local import LocalStore
from app.store.memory import MemoryStore
from app.store.redis import RedisStore
from app.store.runner import NodeRunner
from app.token.mint import attenuate
from tests.api.conftest import Api, Clock, padded


def money(amount: str, currency: str = "USD") -> dict[str, str]:
    return {"amount": amount, "currency": currency}


def replay_of(body: dict[str, Any]) -> dict[str, Any]:
    """The body a replay of this first answer carries: the same, marked `"replayed": true`."""
    assert "replayed" not in body, body  # a first answer never carries it, not even as false
    return {**body, "replayed": True}


def test_a_repeated_request_returns_the_first_answer_and_charges_once(api: Api) -> None:
    token = api.token(budget=money("10"))
    first = api.verify(token, cost=money("1"), request_id="call-1")
    assert first.status_code == 200
    for _ in range(3):
        again = api.verify(token, cost=money("1"), request_id="call-1")
        assert again.status_code == 200
        assert again.json() == replay_of(first.json())
    assert api.spent(token) == ["1.00"]
    api.allowed(token, cost=money("1"), request_id="call-2")
    assert api.spent(token) == ["2.00"]


def test_a_repeated_hold_returns_the_same_hold(api: Api) -> None:
    token = api.token(budget=money("10"))
    first = api.allowed(token, cost=money("4"), mode="hold", hold_ttl=60, request_id="h")
    again = api.allowed(token, cost=money("4"), mode="hold", hold_ttl=60, request_id="h")
    assert again == replay_of(first)
    assert [(b["spent"], b["held"]) for b in api.budgets(token)] == [("0.00", "4.00")]


def test_a_repeated_denial_from_the_store_is_the_first_denial(api: Api) -> None:
    token = api.token(budget=money("1"))
    hold = api.allowed(token, cost=money("1"), mode="hold")["hold_id"]
    first = api.verify(token, cost=money("0.5"), request_id="d")
    assert first.status_code == 403 and first.json()["code"] == "budget_exceeded"
    assert api.release(hold).status_code == 200
    again = api.verify(token, cost=money("0.5"), request_id="d")
    assert again.status_code == 403 and again.json()["code"] == "budget_exceeded"
    assert "replayed" not in first.json() and again.json()["replayed"] is True
    assert api.spent(token) == ["0.00"]


def test_a_replay_after_revocation_is_marked_so_a_tool_server_does_not_run_the_tool_again(api: Api) -> None:
    """The attack: a holder revoked after its first call replays that call's request_id. The service answers the
    stored allow (it is the same authorization, charged once), and marks it, so no tool server takes it for a
    new one."""
    token = api.token(budget=money("10"))
    first = api.allowed(token, cost=money("1"), request_id="before-revoke")
    assert api.post("/v1/revoke", {"token": token}).status_code == 200
    api.denied(token, "revoked", cost=money("1"))  # a new request is denied
    r = api.verify(token, cost=money("1"), request_id="before-revoke")
    assert r.status_code == 200 and r.json() == replay_of(first)
    assert api.spent(token) == ["1.00"]


def test_a_replayed_hold_is_the_same_hold_marked_replayed(api: Api) -> None:
    token = api.token(budget=money("10"), expires_in=60)
    first = api.allowed(token, cost=money("4"), mode="hold", hold_ttl=600, request_id="h")
    api.clock.advance(120)  # the token expired: the replay still names the first hold, and says it is a replay
    again = api.allowed(token, cost=money("4"), mode="hold", hold_ttl=600, request_id="h")
    assert again["hold_id"] == first["hold_id"] and again["replayed"] is True
    assert [(b["spent"], b["held"]) for b in api.budgets(token)] == [("0.00", "4.00")]


def test_replayed_rate_and_revocation_denials_are_marked_and_new_denials_are_not(api: Api) -> None:
    token = api.token(rate="1/1h")
    api.allowed(token)
    limited = api.verify(token, request_id="rl")
    assert limited.status_code == 429 and "replayed" not in limited.json()
    again = api.verify(token, request_id="rl")
    assert again.status_code == 429 and again.json() == replay_of(limited.json())
    assert again.headers["retry-after"] == limited.headers["retry-after"]
    revoked = api.token()
    api.post("/v1/revoke", {"token": revoked})
    first = api.denied(revoked, "revoked", request_id="rv")
    assert api.denied(revoked, "revoked", request_id="rv") == replay_of(first)
    # A stateless denial is decided afresh each time, never stored: it is no replay.
    expired = api.token(expires_in=1)
    api.clock.advance(2)
    assert "replayed" not in api.denied(expired, "expired", request_id="ex")
    assert "replayed" not in api.denied(expired, "expired", request_id="ex")


def test_a_repeated_allowed_request_is_answered_even_after_the_token_expired(api: Api) -> None:
    token = api.token(budget=money("10"), expires_in=10)
    first = api.allowed(token, cost=money("1"), request_id="late")
    api.clock.advance(20)
    again = api.allowed(token, cost=money("1"), request_id="late")
    assert again == replay_of(first)
    api.denied(token, "expired", cost=money("1"), request_id="new")


def test_the_padded_encoding_is_the_same_request(api: Api) -> None:
    token = api.token(budget=money("10"))
    first = api.allowed(token, cost=money("1"), request_id="pad")
    if padded(token) != token:
        assert api.allowed(padded(token), cost=money("1"), request_id="pad") == replay_of(first)
    assert api.spent(token) == ["1.00"]


@pytest.mark.parametrize(
    "change",
    [
        {"tool": "fetch"},
        {"args": {"q": "other"}},
        {"args": None},
        {"audience": "other-srv"},
        {"cost": money("1.01")},
        {"cost": money("1", "EUR")},
        {"cost": None},
        {"mode": "hold"},
        {"hold_ttl": 301},
    ],
    ids=lambda c: next(iter(c)) + "=" + str(next(iter(c.values()))),
)
def test_the_same_id_for_another_request_is_409_and_charges_nothing(api: Api, change: dict[str, Any]) -> None:
    token = api.token(budget=money("10"))
    request: dict[str, Any] = {
        "tool": "search",
        "args": {"q": "x"},
        "audience": "search-srv",
        "cost": money("1"),
        "hold_ttl": 300,
        "request_id": "same",
    }
    api.allowed(token, **request)
    before = api.snapshot()
    other = {k: v for k, v in {**request, **change}.items() if v is not None}
    r = api.verify(token, **other)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "conflict"
    assert api.snapshot() == before
    assert api.spent(token) == ["1.00"]


def test_the_same_id_through_another_chain_of_the_same_root_is_409(api: Api) -> None:
    root = api.token(budget=money("10"))
    child = attenuate(root, ["delegate = a"])
    api.allowed(root, cost=money("1"), request_id="same")
    r = api.verify(child, cost=money("1"), request_id="same")
    assert r.status_code == 409
    assert api.spent(root) == ["1.00"]


def test_request_ids_are_per_root(api: Api) -> None:
    a = api.token(budget=money("10"))
    b = api.token(budget=money("10"))
    api.allowed(a, cost=money("1"), request_id="same")
    api.allowed(b, cost=money("2"), request_id="same")
    assert api.spent(a) == ["1.00"] and api.spent(b) == ["2.00"]


def test_a_conflicting_id_is_409_even_when_the_new_request_would_be_denied(api: Api) -> None:
    token = api.token(budget=money("10"), tools=["search"])
    api.allowed(token, cost=money("1"), request_id="same")
    r = api.verify(token, tool="pay", cost=money("1"), request_id="same")
    assert r.status_code == 409


@pytest.mark.parametrize(
    "request_id",
    ["", "x" * 256, "a\nb", "a\tb", "a\x00b", "a\x7fb", "caf\u00e9", "a\u2028b", 7],
    ids=["empty", "256-chars", "newline", "tab", "nul", "del", "non-ascii", "line-separator", "number"],
)
def test_bad_request_ids_are_400_and_change_nothing(api: Api, request_id: object) -> None:
    token = api.token(budget=money("10"))
    before = api.snapshot()
    r = api.verify(token, cost=money("1"), request_id=request_id)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "request_id"
    assert api.snapshot() == before


def test_a_request_id_of_255_printable_characters_is_fine(api: Api) -> None:
    token = api.token(budget=money("10"))
    rid = ("a b~!" * 51)[:255]
    first = api.allowed(token, cost=money("1"), request_id=rid)
    assert api.allowed(token, cost=money("1"), request_id=rid) == replay_of(first)
    assert api.spent(token) == ["1.00"]


# -- concurrency ---------------------------------------------------------------------------------------


async def _gather(
    store: Store,
    settings: Settings,
    clock: Clock,
    calls: list[dict[str, Any]],
    mint: dict[str, Any],
    child_caveats: list[list[str]] | None = None,
) -> tuple[list[Any], Any]:
    async with AsyncTestClient(create_app(settings, store=store, clock=clock)) as client:
        admin = {"Authorization": f"Bearer {settings.admin_keys[0]}"}
        minted = await client.post("/v1/tokens", json={"subject": "o", **mint}, headers=admin)
        root = minted.json()["token"]
        tokens = [attenuate(root, c) for c in child_caveats] if child_caveats else [root]
        responses = await asyncio.gather(
            *(
                client.post("/v1/verify", json={"token": tokens[i % len(tokens)], **call})
                for i, call in enumerate(calls)
            )
        )
        inspected = await client.post("/v1/inspect", json={"token": root})
        return responses, inspected.json()


@pytest.fixture
def fresh_store(store_kind: str, request: pytest.FixtureRequest) -> Store:
    """A store of this test's kind over a flushed database, built inside the test's event loop."""
    if store_kind == "redis":
        request.getfixturevalue("redis_client")
        return RedisStore(NodeRunner(request.getfixturevalue("redis_url"), 2.0))
    if store_kind == "local":
        return LocalStore(request.getfixturevalue("tmp_path") / "local")
    return MemoryStore()


@pytest.mark.parametrize("mode", ["charge", "hold"])
async def test_fifty_parallel_duplicates_charge_once(
    store_kind: str, settings: Settings, clock: Clock, fresh_store: Store, mode: str
) -> None:
    call = {"tool": "search", "cost": money("0.10"), "request_id": "dup", "mode": mode}
    responses, inspected = await _gather(fresh_store, settings, clock, [call] * 50, {"budget": money("10")})
    assert {r.status_code for r in responses} == {200}
    bodies = [r.json() for r in responses]
    first = [b for b in bodies if "replayed" not in b]
    assert len(first) == 1 and first[0]["allowed"] is True  # one new authorization, 49 replays of it
    assert all(b == replay_of(first[0]) for b in bodies if b is not first[0])  # a hold: the same hold_id
    assert ("hold_id" in first[0]) == (mode == "hold")
    budget = inspected["budgets"][0]
    assert (budget["spent"], budget["held"]) == (("0.10", "0.00") if mode == "charge" else ("0.00", "0.10"))


async def test_fifty_parallel_calls_never_overspend(
    store_kind: str, settings: Settings, clock: Clock, fresh_store: Store
) -> None:
    calls = [{"tool": "search", "cost": money("0.10")} for _ in range(50)]
    responses, inspected = await _gather(fresh_store, settings, clock, calls, {"budget": money("1")})
    codes = [r.status_code for r in responses]
    assert sorted(codes) == [200] * 10 + [403] * 40
    assert {r.json()["code"] for r in responses if r.status_code == 403} == {"budget_exceeded"}
    assert inspected["budgets"][0]["spent"] == "1.00"


async def test_fifty_parallel_calls_through_two_children_never_overspend_the_parent(
    store_kind: str, settings: Settings, clock: Clock, fresh_store: Store
) -> None:
    calls = [{"tool": "search", "cost": money("0.10")} for _ in range(50)]
    children = [["delegate = a", "budget <= 0.80 USD"], ["delegate = b", "budget <= 0.80 USD"]]
    responses, inspected = await _gather(fresh_store, settings, clock, calls, {"budget": money("1")}, children)
    codes = [r.status_code for r in responses]
    assert sorted(codes) == [200] * 10 + [403] * 40
    assert inspected["budgets"][0]["spent"] == "1.00"


@pytest.mark.parametrize("retry", [{"n": "7.0"}, {"n": 7}, {"n": "7"}], ids=repr)
def test_an_argument_of_another_json_type_or_spelling_is_another_request(api: Api, retry: dict[str, Any]) -> None:
    """`arg.n = 7` allows 7.0 and denies "7.0": a retry with the string must not replay the number's allow."""
    token = api.token(budget=money("10"), caveats=["arg.n = 7"])
    api.allowed(token, args={"n": 7.0}, cost=money("1"), request_id="typed")
    r = api.verify(token, args=retry, cost=money("1"), request_id="typed")
    assert r.status_code == 409, r.text
    assert api.spent(token) == ["1.00"]


def test_no_args_and_empty_args_are_the_same_request(api: Api) -> None:
    token = api.token(budget=money("10"))
    first = api.allowed(token, cost=money("1"), request_id="empty")
    assert api.allowed(token, args={}, cost=money("1"), request_id="empty") == replay_of(first)
    assert api.spent(token) == ["1.00"]
