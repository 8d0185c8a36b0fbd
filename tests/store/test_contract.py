"""One contract for every counter store: budgets, holds, idempotency, rate windows, revocation, inspect."""

from __future__ import annotations

import pytest

from app.errors import Conflict, NotFound
from app.store.base import IDEMPOTENCY_TTL_MS, ROOT, RateSpec, Store
from tests.store.conftest import T0, budget, decision, tid

USD = 1_000_000
BIG = 999_999_999_999_999_999  # 999999999999.999999 units: the largest amount the language allows


async def test_sibling_children_share_the_parent_level(store: Store) -> None:
    root = tid()
    a = (budget("parent", 10 * USD), budget("child-a", 8 * USD))
    b = (budget("parent", 10 * USD), budget("child-b", 8 * USD))
    assert (await store.decide(decision(root, 8 * USD, budgets=a))).status == "allowed"
    over = await store.decide(decision(root, 2 * USD + 1, budgets=b))
    assert (over.status, over.index, over.balances) == ("budget_exceeded", 0, [(8 * USD, 0), (0, 0)])
    ok = await store.decide(decision(root, 2 * USD, budgets=b))
    assert (ok.status, ok.balances) == ("allowed", [(10 * USD, 0), (2 * USD, 0)])


async def test_all_or_nothing_when_a_deeper_level_refuses(store: Store) -> None:
    root = tid()
    levels = (budget("l1", 10 * USD), budget("l2", 3 * USD), budget("l3", 5 * USD))
    denied = await store.decide(decision(root, 4 * USD, budgets=levels))
    assert (denied.status, denied.index) == ("budget_exceeded", 1)
    assert denied.balances == [(0, 0), (0, 0), (0, 0)]  # every level reported, none written
    inspected = await store.inspect(root, ("p0",), ("l1", "l2", "l3"), T0)
    assert inspected.balances == [(0, 0), (0, 0), (0, 0)]


async def test_amounts_are_exact_up_to_the_largest_limit(store: Store) -> None:
    root = tid()
    levels = (budget("big", BIG),)
    assert (await store.decide(decision(root, BIG - 1, budgets=levels))).status == "allowed"
    last = await store.decide(decision(root, 1, budgets=levels))
    assert (last.status, last.balances) == ("allowed", [(BIG, 0)])
    assert (await store.decide(decision(root, 1, budgets=levels))).status == "budget_exceeded"
    assert (await store.decide(decision(root, 0, budgets=levels))).status == "allowed"


async def test_a_budget_that_is_not_charged_is_reported(store: Store) -> None:
    root = tid()
    out = await store.decide(decision(root, 5, budgets=(budget("a", 10), budget("b", 1, charge=False))))
    assert (out.status, out.balances) == ("allowed", [(5, 0), (0, 0)])


async def test_holds_count_settle_partially_and_are_idempotent(store: Store) -> None:
    root = tid()
    levels = (budget("l1", 10 * USD), budget("l2", 5 * USD))
    held = await store.decide(decision(root, 4 * USD, budgets=levels, mode="hold"))
    assert held.status == "allowed" and held.hold_id and held.hold_id.startswith(root + ".")
    assert held.balances == [(0, 4 * USD), (0, 4 * USD)]
    assert (await store.decide(decision(root, USD + 1, budgets=levels))).status == "budget_exceeded"
    with pytest.raises(ValueError):
        await store.settle(held.hold_id, 4 * USD + 1, T0)
    state = await store.settle(held.hold_id, 3 * USD, T0)
    assert (state.state, state.amount, state.currency) == ("settled", 3 * USD, "USD")
    assert (await store.settle(held.hold_id, 3 * USD, T0)).amount == 3 * USD  # idempotent
    with pytest.raises(Conflict):
        await store.settle(held.hold_id, 2 * USD, T0)
    with pytest.raises(Conflict):
        await store.release(held.hold_id, T0)
    inspected = await store.inspect(root, ("p0",), ("l1", "l2"), T0)
    assert inspected.balances == [(3 * USD, 0), (3 * USD, 0)]


async def test_release_frees_everything_and_settle_after_release_conflicts(store: Store) -> None:
    root = tid()
    held = await store.decide(decision(root, 7, budgets=(budget("b", 10),), mode="hold"))
    assert held.hold_id is not None
    assert (await store.release(held.hold_id, T0)).state == "released"
    assert (await store.release(held.hold_id, T0)).state == "released"
    with pytest.raises(Conflict):
        await store.settle(held.hold_id, None, T0)
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(0, 0)]


async def test_settle_without_an_amount_charges_the_hold(store: Store) -> None:
    root = tid()
    held = await store.decide(decision(root, 7, budgets=(budget("b", 10),), mode="hold"))
    assert held.hold_id is not None
    assert (await store.settle(held.hold_id, None, T0)).amount == 7


async def test_expired_holds_are_purged_and_unknown_holds_are_not_found(store: Store) -> None:
    root = tid()
    levels = (budget("b", 10),)
    held = await store.decide(decision(root, 8, budgets=levels, mode="hold", hold_ttl_ms=1000))
    assert held.hold_id is not None
    assert (await store.decide(decision(root, 3, budgets=levels, now=T0 + 999))).status == "budget_exceeded"
    assert (await store.decide(decision(root, 3, budgets=levels, now=T0 + 1000))).status == "allowed"
    with pytest.raises(NotFound):
        await store.settle(held.hold_id, None, T0 + 1000)
    for bad in ("nope", root + ".zz", "0" * 32 + "." + "0" * 32, root):
        with pytest.raises(NotFound):
            await store.release(bad, T0)


async def test_zero_cost_holds_release_settle_and_expire(store: Store) -> None:
    root = tid()
    levels = (budget("b", 10),)
    for close in ("release", "settle"):
        held = await store.decide(decision(root, 0, budgets=levels, mode="hold"))
        assert held.hold_id is not None
        closed = await (store.release(held.hold_id, T0) if close == "release" else store.settle(held.hold_id, 0, T0))
        assert closed.amount == 0
    await store.decide(decision(root, 0, budgets=levels, mode="hold", hold_ttl_ms=1))
    assert (await store.decide(decision(root, 10, budgets=levels, now=T0 + 5))).status == "allowed"


async def test_idempotent_retries_return_the_first_answer(store: Store) -> None:
    root = tid()
    levels = (budget("b", 10),)
    first = await store.decide(decision(root, 6, budgets=levels, request_id="r", fingerprint="f"))
    again = await store.decide(decision(root, 6, budgets=levels, request_id="r", fingerprint="f"))
    assert first.status == again.status == "allowed" and again.replayed and not first.replayed
    assert again.balances == first.balances == [(6, 0)]
    other = await store.decide(decision(root, 6, budgets=levels, request_id="r", fingerprint="g"))
    assert other.status == "conflict"
    denied = await store.decide(decision(root, 6, budgets=levels, request_id="d", fingerprint="f"))
    replayed = await store.decide(decision(root, 1, budgets=levels, request_id="d", fingerprint="f"))
    assert denied.status == replayed.status == "budget_exceeded" and replayed.replayed
    assert (await store.lookup(root, "r", "f")) is not None and (await store.lookup(root, "zz", "f")) is None
    assert (await store.lookup(root, "r", "g")).status == "conflict"  # type: ignore[union-attr]
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(6, 0)]


@pytest.mark.parametrize("store", ["memory"], indirect=True)  # Redis expires answers in real time (PX)
async def test_idempotent_answers_expire_after_a_day(store: Store) -> None:
    root = tid()
    levels = (budget("b", 100),)
    await store.decide(decision(root, 1, budgets=levels, request_id="r", fingerprint="f"))
    later = await store.decide(
        decision(root, 1, budgets=levels, request_id="r", fingerprint="f", now=T0 + IDEMPOTENCY_TTL_MS)
    )
    assert not later.replayed and later.balances == [(2, 0)]


async def test_rate_windows_slide_exactly(store: Store) -> None:
    root = tid()
    rate = (RateSpec("r", 3, 60_000),)
    for i in range(3):
        assert (await store.decide(decision(root, rates=rate, now=T0 + i * 1000))).status == "allowed"
    limited = await store.decide(decision(root, rates=rate, now=T0 + 10_000))
    assert (limited.status, limited.retry_after_ms) == ("rate_limited", 50_000)
    assert (await store.decide(decision(root, rates=rate, now=T0 + 59_999))).status == "rate_limited"
    assert (await store.decide(decision(root, rates=rate, now=T0 + 60_000))).status == "allowed"


async def test_denied_calls_use_no_rate_slot_and_a_rate_of_zero_allows_nothing(store: Store) -> None:
    root = tid()
    rate, levels = (RateSpec("r", 1, 60_000),), (budget("b", 1),)
    assert (await store.decide(decision(root, 5, rates=rate, budgets=levels))).status == "budget_exceeded"
    assert (await store.decide(decision(root, 1, rates=rate, budgets=levels))).status == "allowed"
    zero = await store.decide(decision(tid(), rates=(RateSpec("z", 0, 3_600_000),)))
    assert (zero.status, zero.retry_after_ms) == ("rate_limited", 3_600_000)


async def test_revocation_marks_name_the_first_revoked_prefix_and_are_never_shortened(store: Store) -> None:
    root = tid()
    chain = ("p0", "p1", "p2")
    await store.revoke(root, "p1", T0 + 1000)
    out = await store.decide(decision(root, revocation=chain))
    assert (out.status, out.index) == ("revoked", 1)
    assert (await store.decide(decision(root, revocation=("p0", "p9")))).status == "allowed"  # a sibling
    await store.revoke(root, "p1", T0 + 10)  # an earlier expiry never shortens a mark
    assert (await store.decide(decision(root, revocation=chain, now=T0 + 500))).status == "revoked"
    inspected = await store.inspect(root, chain, (), T0)
    assert inspected.revoked_index == 1


async def test_the_whole_root_mark(store: Store) -> None:
    root = tid()
    await store.revoke(root, ROOT, 0)
    out = await store.decide(decision(root))
    assert (out.status, out.index) == ("revoked", -1)
    assert (await store.inspect(root, ("p0",), (), T0)).revoked_index == -1


async def test_ready(store: Store) -> None:
    assert await store.ready() is None
