"""Hierarchical budgets (docs/caveats.md) and holds (docs/api.md): every level charged at once, holds count,
settle/release."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import httpx
import pytest

from app.store.base import MAX_OPEN_HOLDS, Attempt
from app.store.redis import RedisStore
from app.store.runner import NodeRunner
from app.token.mint import attenuate
from tests.api.conftest import Api


def money(amount: str, currency: str = "USD") -> dict[str, str]:
    return {"amount": amount, "currency": currency}


def remaining(body: dict[str, object]) -> list[str]:
    return [b["remaining"] for b in body["budgets"]]  # type: ignore[attr-defined, index]


# -- hierarchical budgets ------------------------------------------------------------------------------


def test_siblings_share_the_parent_budget(api: Api) -> None:
    root = api.token(budget=money("10"))
    a = attenuate(root, ["delegate = a", "budget <= 8 USD"])
    b = attenuate(root, ["delegate = b", "budget <= 8 USD"])
    body = api.allowed(a, cost=money("8"))
    assert remaining(body) == ["2.00", "0.00"]
    body = api.allowed(b, cost=money("2"))
    assert remaining(body) == ["0.00", "6.00"]
    api.denied(root, "budget_exceeded", cost=money("0.000001"))
    assert api.spent(root) == ["10.00"]
    assert api.spent(a) == ["10.00", "8.00"]
    assert api.spent(b) == ["10.00", "2.00"]


def test_the_sibling_is_told_it_has_exactly_what_the_parent_has_left(api: Api) -> None:
    root = api.token(budget=money("10"))
    a = attenuate(root, ["delegate = a", "budget <= 8 USD"])
    b = attenuate(root, ["delegate = b", "budget <= 8 USD"])
    api.allowed(a, cost=money("8"))
    denied = api.denied(b, "budget_exceeded", cost=money("2.01"))
    assert denied["caveat"] == "budget <= 10.00 USD" and denied["hop"] == 0
    assert remaining(denied) == ["2.00", "8.00"]
    api.allowed(b, cost=money("2"))
    api.denied(b, "budget_exceeded", cost=money("0.000001"))
    assert api.spent(b) == ["10.00", "2.00"]


def test_a_child_cannot_widen_its_parent_budget(api: Api) -> None:
    root = api.token(budget=money("10"))
    wide = attenuate(root, ["delegate = a", "budget <= 100 USD"])
    denied = api.denied(wide, "budget_exceeded", cost=money("10.01"))
    assert denied["caveat"] == "budget <= 10.00 USD" and denied["hop"] == 0
    api.allowed(wide, cost=money("10"))
    api.denied(wide, "budget_exceeded", cost=money("0.01"))
    assert remaining(api.denied(wide, "budget_exceeded", cost=money("0.01"))) == ["0.00", "90.00"]


def test_a_child_without_its_own_budget_spends_the_parents(api: Api) -> None:
    root = api.token(budget=money("1"))
    child = attenuate(root, ["delegate = a", "tools in search"])
    api.allowed(child, cost=money("0.6"))
    api.denied(root, "budget_exceeded", cost=money("0.5"))
    api.allowed(root, cost=money("0.4"))


def test_a_grandchild_is_charged_at_every_level_all_or_nothing(api: Api) -> None:
    root = api.token(budget=money("10"))
    child = attenuate(root, ["delegate = a", "budget <= 5 USD"])
    grandchild = attenuate(child, ["delegate = b", "budget <= 4 USD"])
    api.allowed(child, cost=money("2"))
    body = api.allowed(grandchild, cost=money("3"))
    assert [b["spent"] for b in body["budgets"]] == ["5.00", "5.00", "3.00"]
    # The grandchild's own budget has 1 left, the child's 0: a call of 1 fails at hop 1 and charges no level.
    denied = api.denied(grandchild, "budget_exceeded", cost=money("1"))
    assert denied["hop"] == 1 and denied["caveat"] == "budget <= 5 USD"
    assert api.spent(grandchild) == ["5.00", "5.00", "3.00"]


def test_two_budgets_at_one_hop_are_two_counters(api: Api) -> None:
    root = api.token(budget=money("10"), caveats=["budget <= 3 USD"])
    api.allowed(root, cost=money("3"))
    denied = api.denied(root, "budget_exceeded", cost=money("1"))
    assert denied["caveat"] == "budget <= 3 USD"
    assert api.spent(root) == ["3.00", "3.00"]


def test_the_same_budget_text_in_two_siblings_is_two_counters(api: Api) -> None:
    root = api.token()
    a = attenuate(root, ["delegate = a", "budget <= 1 USD"])
    b = attenuate(root, ["delegate = a", "budget <= 1 USD", "tools in search"])
    # b extends a's chain, so it shares a's counter; c is a sibling with the same text but its own counter.
    c = attenuate(root, ["delegate = c", "budget <= 1 USD"])
    api.allowed(a, cost=money("0.5"))
    api.allowed(b, cost=money("0.5"))
    api.denied(a, "budget_exceeded", cost=money("0.01"))
    api.allowed(c, cost=money("1"))


# -- holds ---------------------------------------------------------------------------------------------


def hold(api: Api, token: str, amount: str, ttl: int | None = None) -> str:
    fields: dict[str, object] = {"cost": money(amount), "mode": "hold"}
    if ttl is not None:
        fields["hold_ttl"] = ttl
    body = api.allowed(token, **fields)
    assert "charged" not in body
    hold_id: str = body["hold_id"]
    return hold_id


def test_a_hold_counts_against_every_level(api: Api) -> None:
    root = api.token(budget=money("10"))
    child = attenuate(root, ["delegate = a", "budget <= 5 USD"])
    body = api.allowed(child, cost=money("4"), mode="hold", hold_ttl=60)
    assert body["hold_id"]
    assert [(b["spent"], b["held"], b["remaining"]) for b in body["budgets"]] == [
        ("0.00", "4.00", "6.00"),
        ("0.00", "4.00", "1.00"),
    ]
    denied = api.denied(child, "budget_exceeded", cost=money("1.01"))
    assert denied["hop"] == 1
    api.denied(root, "budget_exceeded", cost=money("6.01"))
    api.allowed(root, cost=money("6"))


def test_settle_part_of_a_hold_releases_the_rest(api: Api) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "4")
    r = api.settle(hold_id, {"amount": "1.5"})
    assert r.status_code == 200, r.text
    assert r.json() == {"hold_id": hold_id, "state": "settled", "amount": "1.50", "currency": "USD"}
    assert [(b["spent"], b["held"]) for b in api.budgets(token)] == [("1.50", "0.00")]
    again = api.settle(hold_id, {"amount": "1.5"})
    assert again.status_code == 200 and again.json() == r.json()
    assert api.spent(token) == ["1.50"]
    # Settling again with another amount is not the same settle.
    conflict = api.settle(hold_id, {"amount": "2"})
    assert conflict.status_code == 409
    assert api.release(hold_id).status_code == 409
    assert api.spent(token) == ["1.50"]


@pytest.mark.parametrize("body", [None, {}], ids=["empty-body", "no-amount"])
def test_settle_without_an_amount_charges_all_that_is_held(api: Api, body: dict[str, str] | None) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "4")
    r = api.settle(hold_id, body)
    assert r.status_code == 200, r.text
    assert r.json()["amount"] == "4.00" and r.json()["state"] == "settled"
    assert [(b["spent"], b["held"]) for b in api.budgets(token)] == [("4.00", "0.00")]
    again = api.settle(hold_id, body)
    assert again.status_code == 200 and again.json() == r.json()
    assert api.spent(token) == ["4.00"]


def test_settle_zero_and_settle_all_are_the_bounds(api: Api) -> None:
    token = api.token(budget=money("10"))
    zero = hold(api, token, "4")
    assert api.settle(zero, {"amount": "0"}).json()["amount"] == "0.00"
    exact = hold(api, token, "4")
    assert api.settle(exact, {"amount": "4.000000"}).json()["amount"] == "4.00"
    assert api.spent(token) == ["4.00"]


def test_settle_more_than_held_is_400_and_changes_nothing(api: Api) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "4")
    before = api.snapshot()
    r = api.settle(hold_id, {"amount": "4.000001"})
    assert r.status_code == 400
    assert r.json()["field"] == "amount"
    assert api.snapshot() == before
    assert api.settle(hold_id, {"amount": "4"}).status_code == 200


@pytest.mark.parametrize(
    "body",
    [{"amount": 1}, {"amount": "1.0000001"}, {"amount": "-1"}, {"amount": "1", "currency": "USD"}, [], "1"],
)
def test_settle_body_is_strict(api: Api, body: object) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "4")
    before = api.snapshot()
    r = api.settle(hold_id, body)
    assert r.status_code == 400, r.text
    assert api.snapshot() == before


def test_release_frees_everything_and_is_idempotent(api: Api) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "4")
    r = api.release(hold_id)
    assert r.status_code == 200
    assert r.json()["state"] == "released" and r.json()["hold_id"] == hold_id and r.json()["currency"] == "USD"
    again = api.release(hold_id)
    assert again.status_code == 200 and again.json() == r.json()
    assert [(b["spent"], b["held"]) for b in api.budgets(token)] == [("0.00", "0.00")]
    assert api.settle(hold_id).status_code == 409
    assert api.settle(hold_id, {"amount": "0"}).status_code == 409
    assert api.budgets(token)[0]["remaining"] == "10.00"


@pytest.mark.parametrize(
    ("body", "field"),
    [({"x": 1}, "x"), ({"amount": "1"}, "amount"), ([], None), ("1", None), (None, None)],
    ids=["unknown-field", "settle-field", "array", "string", "null"],
)
def test_release_body_is_strict_and_a_bad_one_changes_nothing(api: Api, body: object, field: str | None) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "4")
    before = api.snapshot()
    r = api.post(f"/v1/holds/{hold_id}/release", content=json.dumps(body))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request" and r.json().get("field") == field, r.json()
    assert api.snapshot() == before
    assert [(b["spent"], b["held"]) for b in api.budgets(token)] == [("0.00", "4.00")]


@pytest.mark.parametrize("content", [b"", b" \n", b"{}", b" { } "], ids=["empty", "blank", "object", "spaced"])
def test_release_takes_an_empty_body_or_an_empty_object(api: Api, content: bytes) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "4")
    r = api.post(f"/v1/holds/{hold_id}/release", content=content)
    assert r.status_code == 200, r.text
    assert r.json() == {"hold_id": hold_id, "state": "released", "currency": "USD"}


def test_an_expired_hold_is_404_and_frees_the_budget(api: Api) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "8", ttl=30)
    api.denied(token, "budget_exceeded", cost=money("3"))
    api.clock.advance(29.5)  # halves are exact in binary: no float drift at the boundary
    assert api.budgets(token)[0]["held"] == "8.00"
    api.clock.advance(0.5)
    assert api.budgets(token)[0]["held"] == "0.00"
    api.allowed(token, cost=money("3"))
    assert api.settle(hold_id).status_code == 404
    assert api.release(hold_id).status_code == 404
    assert api.spent(token) == ["3.00"]


def test_a_zero_cost_hold_releases_settles_and_expires_without_breaking_the_root(api: Api) -> None:
    # Regression: releasing 0 once sent HINCRBY '-0', which Redis refuses, and every later call of the root
    # failed in purge (503 for good).
    token = api.token(budget=money("10"))
    assert api.release(hold(api, token, "0")).json()["state"] == "released"
    assert api.settle(hold(api, token, "0")).json()["state"] == "settled"
    hold(api, token, "0", ttl=1)
    api.clock.advance(1)
    api.allowed(token, cost=money("1"))
    assert api.spent(token) == ["1.00"]


def test_an_expired_hold_is_released_by_the_next_verify(api: Api) -> None:
    token = api.token(budget=money("10"))
    hold(api, token, "10", ttl=1)
    api.clock.advance(1)
    body = api.allowed(token, cost=money("10"))
    assert [(b["spent"], b["held"]) for b in body["budgets"]] == [("10.00", "0.00")]


def test_default_hold_ttl_is_300_seconds(api: Api) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "1")
    api.clock.advance(299)
    assert api.settle(hold_id, {"amount": "0.5"}).status_code == 200
    other = hold(api, token, "1")
    api.clock.advance(300)
    assert api.settle(other).status_code == 404


def test_a_settled_hold_survives_its_ttl(api: Api) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "1", ttl=5)
    first = api.settle(hold_id)
    api.clock.advance(60)
    again = api.settle(hold_id)
    assert again.status_code == 200 and again.json() == first.json()
    assert api.spent(token) == ["1.00"]


@pytest.mark.parametrize(
    "hold_id",
    [
        "0" * 32 + "." + "0" * 32,
        "nope",
        "0" * 32,
        "g" * 32 + "." + "0" * 32,
    ],
)
def test_unknown_holds_are_404(api: Api, hold_id: str) -> None:
    assert api.settle(hold_id).status_code == 404
    assert api.release(hold_id).status_code == 404
    assert api.post(f"/v1/holds/{hold_id}/extend", {"hold_ttl": 60}).status_code == 404
    assert api.dbsize() == 0


def test_a_hold_of_another_root_is_unknown(api: Api) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "1")
    other = api.mint()["token_id"]
    forged = other + hold_id[32:]
    assert api.settle(forged).status_code == 404


@pytest.mark.parametrize("ttl", [0, -1, 86401, 1.5, "300", True, None, 1e9, 10**30])
def test_hold_ttl_bounds(api: Api, ttl: object) -> None:
    token = api.token(budget=money("10"))
    before = api.snapshot()
    r = api.verify(token, cost=money("1"), mode="hold", hold_ttl=ttl)
    assert r.status_code == 400
    assert r.json()["field"] == "hold_ttl"
    assert api.snapshot() == before


@pytest.mark.parametrize("ttl", [1, 86400])
def test_hold_ttl_limits_are_inclusive(api: Api, ttl: int) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "1", ttl=ttl)
    api.clock.advance(ttl - 0.5)
    assert api.release(hold_id).status_code == 200


def test_mode_must_be_charge_or_hold(api: Api) -> None:
    token = api.token(budget=money("10"))
    r = api.verify(token, cost=money("1"), mode="reserve")
    assert r.status_code == 400 and r.json()["field"] == "mode"


def test_a_settle_conflict_says_why(api: Api) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "4")
    assert api.settle(hold_id, {"amount": "1"}).status_code == 200
    conflict = api.settle(hold_id, {"amount": "2"})
    assert conflict.status_code == 409
    assert "released" not in conflict.json()["reason"] and "settled" in conflict.json()["reason"]
    released = hold(api, token, "1")
    assert api.release(released).status_code == 200
    assert "released" in api.settle(released).json()["reason"]
    assert "settled" in api.release(hold_id).json()["reason"]


# -- extend ------------------------------------------------------------------------------------------------


def extend(api: Api, hold_id: str, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return api.post(f"/v1/holds/{hold_id}/extend", content=json.dumps(body), headers=headers)


def test_extend_keeps_a_hold_for_hold_ttl_from_now(api: Api) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "4", ttl=30)
    api.clock.advance(20)
    r = extend(api, hold_id, {"hold_ttl": 60})
    assert r.status_code == 200, r.text
    ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(api.clock.now) + 60))
    assert r.json() == {"hold_id": hold_id, "state": "held", "amount": "4.00", "currency": "USD", "expires_at": ends}
    again = extend(api, hold_id, {"hold_ttl": 60})  # idempotent: the same hold, the same end
    assert again.status_code == 200 and again.json() == r.json()
    api.clock.advance(59.5)  # past the first end (30 s), before the new one (80 s)
    assert [(b["spent"], b["held"]) for b in api.budgets(token)] == [("0.00", "4.00")]
    api.denied(token, "budget_exceeded", cost=money("6.01"))
    settled = api.settle(hold_id, {"amount": "3"})
    assert settled.status_code == 200 and settled.json()["amount"] == "3.00"
    assert api.spent(token) == ["3.00"]


def test_an_extended_hold_still_ends_by_itself(api: Api) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "10", ttl=30)
    assert extend(api, hold_id, {"hold_ttl": 5}).status_code == 200  # shorter than before: it now ends sooner
    api.clock.advance(5)
    api.allowed(token, cost=money("10"))
    assert extend(api, hold_id, {"hold_ttl": 60}).status_code == 404
    assert api.settle(hold_id).status_code == 404


def test_extend_of_a_closed_hold_is_409_and_of_an_expired_or_unknown_one_404(api: Api) -> None:
    token = api.token(budget=money("10"))
    settled, released, expired = hold(api, token, "1"), hold(api, token, "1"), hold(api, token, "1", ttl=1)
    assert api.settle(settled).status_code == 200 and api.release(released).status_code == 200
    api.clock.advance(1)
    assert api.budgets(token)[0]["held"] == "0.00"  # the expired hold is released by now (by this inspect)
    before = api.snapshot()
    for hold_id, word in ((settled, "settled"), (released, "released")):
        r = extend(api, hold_id, {"hold_ttl": 60})
        assert (r.status_code, r.json()["code"]) == (409, "conflict"), r.text
        assert word in r.json()["reason"]
    for hold_id in (expired, "0" * 32 + "." + "0" * 32, "nope"):
        r = extend(api, hold_id, {"hold_ttl": 60})
        assert (r.status_code, r.json()["code"]) == (404, "not_found"), r.text
    assert api.snapshot() == before
    assert api.spent(token) == ["1.00"]


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("", "hold_ttl"),
        ("{}", "hold_ttl"),
        ('{"hold_ttl": 0}', "hold_ttl"),
        ('{"hold_ttl": 86401}', "hold_ttl"),
        ('{"hold_ttl": -5}', "hold_ttl"),
        ('{"hold_ttl": 1.5}', "hold_ttl"),
        ('{"hold_ttl": "60"}', "hold_ttl"),
        ('{"hold_ttl": true}', "hold_ttl"),
        ('{"hold_ttl": null}', "hold_ttl"),
        ('{"hold_ttl": 60.0}', "hold_ttl"),
        ('{"hold_ttl": 1e9}', "hold_ttl"),
        ('{"hold_ttl": NaN}', "hold_ttl"),
        ('{"hold_ttl": 100000000000000000000000000000}', "hold_ttl"),
        ('{"hold_ttl": [60]}', "hold_ttl"),
        ('{"hold_ttl": 60, "amount": "1"}', "amount"),
        ('{"hold_ttl": 60, "hold_ttl": 61}', "hold_ttl"),
        ("[60]", None),
    ],
)
def test_extend_body_is_strict_and_a_bad_one_changes_nothing(api: Api, content: str, field: str | None) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "4", ttl=30)
    before = api.snapshot()
    r = api.post(f"/v1/holds/{hold_id}/extend", content=content)
    assert (r.status_code, r.json()["code"]) == (400, "bad_request"), r.text
    assert r.json().get("field") == field, r.json()
    assert api.snapshot() == before


@pytest.mark.parametrize("ttl", [1, 86400])
def test_extend_ttl_limits_are_inclusive(api: Api, ttl: int) -> None:
    token = api.token(budget=money("10"))
    hold_id = hold(api, token, "1", ttl=10)
    assert extend(api, hold_id, {"hold_ttl": ttl}).status_code == 200
    api.clock.advance(ttl - 0.5)
    assert api.release(hold_id).status_code == 200


def test_a_zero_cost_hold_extends_as_any_other(api: Api) -> None:
    token = api.token()
    hold_id = api.allowed(token, mode="hold", hold_ttl=5)["hold_id"]
    r = extend(api, hold_id, {"hold_ttl": 50})
    assert r.status_code == 200 and (r.json()["state"], r.json()["amount"], r.json()["currency"]) == (
        "held",
        "0.00",
        "",
    )
    api.clock.advance(10)
    assert api.settle(hold_id).json()["state"] == "settled"


# -- bounds -----------------------------------------------------------------------------------------------------


def fill_holds(api: Api, token_id: str, count: int, ttl_ms: int) -> list[str]:
    """`count` open zero-cost holds of this root, made straight in the store (10,000 HTTP calls would be slow)."""

    async def fill() -> list[str]:
        store = api.store
        if api.redis is not None:  # the app's client belongs to the app's event loop: a store of this loop's own
            kw = api.redis.connection_pool.connection_kwargs
            store = RedisStore(NodeRunner(f"redis://{kw['host']}:{kw['port']}/{kw['db']}", 5.0))
        made = []
        for start in range(0, count, 1000):
            made += await asyncio.gather(
                *(
                    store.decide(
                        Attempt(
                            token_id,
                            int(api.clock.now * 1000),
                            secrets.token_hex(16),
                            ("p",),
                            mode="hold",
                            hold_ttl_ms=ttl_ms,
                        )
                    )
                    for _ in range(start, min(count, start + 1000))
                )
            )
        if store is not api.store:
            await store.close()
        return [o.hold_id for o in made if o.hold_id]

    return asyncio.run(fill())


def test_a_root_with_10000_open_holds_gets_429_for_the_next_with_a_reason_and_retry_after(api: Api) -> None:
    minted = api.mint(budget=money("10"))
    token = minted["token"]
    made = fill_holds(api, minted["token_id"], MAX_OPEN_HOLDS, 120_000)
    assert len(made) == MAX_OPEN_HOLDS
    api.clock.advance(30)
    r = api.verify(token, cost=money("1"), mode="hold")
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["code"] == "rate_limited" and "10,000 open holds" in body["reason"], body
    assert "caveat" not in body and "hop" not in body  # the root's own bound, not a caveat's
    assert r.headers["retry-after"] == "90"  # when the first of them ends by itself
    assert api.budgets(token)[0]["held"] == "0.00"  # nothing was reserved
    api.allowed(token, cost=money("1"))  # a charge is no hold: not affected
    assert api.release(made[0]).status_code == 200  # a release frees a place at once
    api.allowed(token, cost=money("1"), mode="hold")
    assert api.verify(token, cost=money("1"), mode="hold").status_code == 429
