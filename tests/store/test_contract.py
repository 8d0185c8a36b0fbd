"""One contract for every counter store: budgets, holds, idempotency, rate windows, revocation, inspect.

Each test runs on every backend of BACKENDS (tests/store/conftest.py). Amounts are micro-units; `now` is the
caller's clock (T0 + n), except in the few tests that say they use the wall clock.
"""

from __future__ import annotations

import secrets

import msgspec
import pytest

from app.authority import Authority
from app.errors import Conflict, NotFound
from app.schemas import MintRequest, Money, VerifyRequest
from app.store.base import (
    IDEMPOTENCY_TTL_MS,
    MADE_UP_ID_TTL_MS,
    MAX_HOLD_TTL_MS,
    ROOT,
    SETTLED_HOLD_TTL_MS,
    BudgetSpec,
    RateSpec,
    Store,
)
from app.store.redis import _digest
from app.store.scripts import GC_SLACK_MS, base_key
from app.token.keys import KeyRing, new_key_entry
from tests.store.conftest import BIG, REDIS_BACKENDS, T0, USD, RedisOf, budget, decision, real_ms, tid

# -- budgets ----------------------------------------------------------------------------------------------


async def test_charges_within_the_limit_and_refuses_over_it(store: Store) -> None:
    root = tid()
    levels = (budget("b", 10 * USD),)
    for spent in (4, 8):
        out = await store.decide(decision(root, 4 * USD, budgets=levels))
        assert (out.status, out.balances) == ("allowed", [(spent * USD, 0)])
    over = await store.decide(decision(root, 4 * USD, budgets=levels))
    assert (over.status, over.index, over.balances) == ("budget_exceeded", 0, [(8 * USD, 0)])
    assert (await store.decide(decision(root, 2 * USD, budgets=levels))).balances == [(10 * USD, 0)]
    assert (await store.decide(decision(root, 1, budgets=levels))).status == "budget_exceeded"


async def test_sibling_children_share_the_parent_level(store: Store) -> None:
    """Parent 10, children 8 and 8: each child's budgets list the parent prefix and its own."""
    root = tid()
    a = (budget("parent", 10 * USD), budget("child-a", 8 * USD))
    b = (budget("parent", 10 * USD), budget("child-b", 8 * USD))
    assert (await store.decide(decision(root, 8 * USD, budgets=a))).status == "allowed"
    own = await store.decide(decision(root, 1, budgets=a))  # the parent has room, child-a's own level not
    assert (own.status, own.index, own.balances) == ("budget_exceeded", 1, [(8 * USD, 0), (8 * USD, 0)])
    over = await store.decide(decision(root, 2 * USD + 1, budgets=b))
    assert (over.status, over.index, over.balances) == ("budget_exceeded", 0, [(8 * USD, 0), (0, 0)])
    ok = await store.decide(decision(root, 2 * USD, budgets=b))
    assert (ok.status, ok.balances) == ("allowed", [(10 * USD, 0), (2 * USD, 0)])
    for levels in (a, b):
        assert (await store.decide(decision(root, 1, budgets=levels))).index == 0  # the parent is spent
    inspected = await store.inspect(root, ("p0",), ("parent", "child-a", "child-b"), T0)
    assert inspected.balances == [(10 * USD, 0), (8 * USD, 0), (2 * USD, 0)]


async def test_all_or_nothing_when_a_deeper_level_refuses(store: Store) -> None:
    root = tid()
    levels = (budget("l1", 10 * USD), budget("l2", 3 * USD), budget("l3", 5 * USD))
    assert (await store.decide(decision(root, 2 * USD, budgets=levels))).status == "allowed"
    rate = (RateSpec("r", 2, 60_000),)
    denied = await store.decide(decision(root, 2 * USD, budgets=levels, rates=rate, mode="hold"))
    assert (denied.status, denied.index, denied.hold_id) == ("budget_exceeded", 1, None)
    assert denied.balances == [(2 * USD, 0), (2 * USD, 0), (2 * USD, 0)]  # every level reported, none written
    inspected = await store.inspect(root, ("p0",), ("l1", "l2", "l3"), T0)
    assert inspected.balances == [(2 * USD, 0), (2 * USD, 0), (2 * USD, 0)]
    for _ in range(2):  # and the refused call took no rate slot: both are still free
        assert (await store.decide(decision(root, rates=rate))).status == "allowed"


async def test_micro_units_are_exact(store: Store) -> None:
    root = tid()
    levels = (budget("b", USD + 1),)  # 1.000001
    assert (await store.decide(decision(root, 999_999, budgets=levels))).balances == [(999_999, 0)]
    assert (await store.decide(decision(root, 3, budgets=levels))).status == "budget_exceeded"
    assert (await store.decide(decision(root, 2, budgets=levels))).balances == [(USD + 1, 0)]
    assert (await store.decide(decision(root, 1, budgets=levels))).status == "budget_exceeded"


@pytest.mark.parametrize(
    ("limit", "first"),
    [
        (BIG, BIG - 1),  # 999999999999.999999
        (2_000_000_000, 999_999_999),  # the second charge carries exactly into the high limb
        (10**17 + 1, 10**17),  # a low limb of zeros must print as nine digits
        (1_000_000_000, 999_999_999),  # the limb boundary itself
    ],
)
async def test_amounts_are_exact_at_the_boundary(store: Store, limit: int, first: int) -> None:
    """Limit L: spend L-1... then exactly the rest is allowed, then one micro-unit more is not."""
    root = tid()
    levels = (budget("big", limit), budget("twin", limit))
    out = await store.decide(decision(root, first, budgets=levels))
    assert (out.status, out.balances) == ("allowed", [(first, 0)] * 2)
    assert (await store.decide(decision(root, limit - first + 1, budgets=levels))).status == "budget_exceeded"
    last = await store.decide(decision(root, limit - first, budgets=levels))
    assert (last.status, last.balances) == ("allowed", [(limit, 0)] * 2)
    over = await store.decide(decision(root, 1, budgets=levels))
    assert (over.status, over.balances) == ("budget_exceeded", [(limit, 0)] * 2)
    assert (await store.decide(decision(root, 0, budgets=levels))).status == "allowed"
    assert (await store.inspect(root, (), ("big",), T0)).balances == [(limit, 0)]


async def test_a_single_cost_at_the_largest_limit(store: Store) -> None:
    root = tid()
    assert (await store.decide(decision(root, BIG, budgets=(budget("a", BIG - 1),)))).status == "budget_exceeded"
    out = await store.decide(decision(root, BIG, budgets=(budget("b", BIG),)))
    assert (out.status, out.balances) == ("allowed", [(BIG, 0)])


async def test_huge_holds_count_and_settle_exactly(store: Store) -> None:
    root = tid()
    levels = (budget("b", BIG),)
    held = await store.decide(decision(root, BIG - 1, budgets=levels, mode="hold"))
    assert (held.status, held.balances) == ("allowed", [(0, BIG - 1)])
    assert held.hold_id is not None
    assert (await store.decide(decision(root, 1, budgets=levels))).balances == [(1, BIG - 1)]
    assert (await store.decide(decision(root, 1, budgets=levels))).status == "budget_exceeded"
    assert (await store.settle(held.hold_id, BIG - 2, T0)).amount == BIG - 2
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(BIG - 1, 0)]


async def test_a_budget_that_is_not_charged_is_reported_never_charged(store: Store) -> None:
    """Another currency's level: reported, never charged, never checked (its limit 1 < the cost 5)."""
    root = tid()
    levels = (budget("usd", 10), budget("eur", 1, charge=False))
    out = await store.decide(decision(root, 5, budgets=levels))
    assert (out.status, out.balances) == ("allowed", [(5, 0), (0, 0)])
    held = await store.decide(decision(root, 5, budgets=levels, mode="hold"))
    assert (held.status, held.balances) == ("allowed", [(5, 5), (0, 0)])
    assert held.hold_id is not None
    await store.settle(held.hold_id, 4, T0)
    assert (await store.inspect(root, (), ("usd", "eur"), T0)).balances == [(9, 0), (0, 0)]


async def test_a_token_without_budgets_is_not_spend_limited(store: Store) -> None:
    out = await store.decide(decision(tid(), BIG))
    assert (out.status, out.balances) == ("allowed", [])


# -- holds ------------------------------------------------------------------------------------------------


async def test_holds_count_settle_partially_and_are_idempotent(store: Store) -> None:
    root = tid()
    levels = (budget("l1", 10 * USD), budget("l2", 5 * USD))
    held = await store.decide(decision(root, 4 * USD, budgets=levels, mode="hold"))
    assert held.status == "allowed" and held.hold_id is not None
    assert held.balances == [(0, 4 * USD), (0, 4 * USD)]
    assert held.hold_id.partition(".")[0] == root and len(held.hold_id) == 65
    assert (await store.decide(decision(root, USD + 1, budgets=levels))).status == "budget_exceeded"
    assert (await store.decide(decision(root, 1, budgets=levels, mode="hold"))).balances == [(0, 4 * USD + 1)] * 2
    state = await store.settle(held.hold_id, 3 * USD, T0)
    assert state == type(state)(held.hold_id, "settled", 3 * USD, "USD")
    assert (await store.settle(held.hold_id, 3 * USD, T0)) == state  # idempotent, charges nothing more
    with pytest.raises(Conflict):
        await store.settle(held.hold_id, 2 * USD, T0)
    with pytest.raises(Conflict):
        await store.release(held.hold_id, T0)
    inspected = await store.inspect(root, ("p0",), ("l1", "l2"), T0)
    assert inspected.balances == [(3 * USD, 1), (3 * USD, 1)]


async def test_settling_more_than_held_changes_nothing(store: Store) -> None:
    root = tid()
    levels = (budget("b", 10 * USD),)
    held = await store.decide(decision(root, 4 * USD, budgets=levels, mode="hold"))
    assert held.hold_id is not None
    with pytest.raises(ValueError):
        await store.settle(held.hold_id, 4 * USD + 1, T0)
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(0, 4 * USD)]
    assert (await store.settle(held.hold_id, 4 * USD, T0)).amount == 4 * USD  # still open, settles in full
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(4 * USD, 0)]


async def test_settling_a_negative_amount_is_refused_and_changes_nothing(store: Store) -> None:
    """A negative settle would credit every level of the hold: the store refuses it, whatever its callers check."""
    root = tid()
    levels = (budget("l1", 10 * USD), budget("l2", 5 * USD))
    assert (await store.decide(decision(root, 2 * USD, budgets=levels))).status == "allowed"
    held = await store.decide(decision(root, 3 * USD, budgets=levels, mode="hold"))
    assert held.hold_id is not None
    for amount in (-1, -3 * USD, -BIG):
        with pytest.raises(ValueError, match="negative"):
            await store.settle(held.hold_id, amount, T0)
    assert (await store.inspect(root, (), ("l1", "l2"), T0)).balances == [(2 * USD, 3 * USD)] * 2
    assert (await store.settle(held.hold_id, USD, T0)).amount == USD  # still open: it settles as usual
    with pytest.raises(ValueError, match="negative"):  # and a settled hold refuses it too
        await store.settle(held.hold_id, -USD, T0)
    assert (await store.settle(held.hold_id, USD, T0)).amount == USD
    assert (await store.inspect(root, (), ("l1", "l2"), T0)).balances == [(3 * USD, 0)] * 2


async def test_a_hold_made_for_a_verifier_is_unknown_to_every_other(store: Store) -> None:
    root = tid()
    made = msgspec.structs.replace(decision(root, 5, budgets=(budget("b", 10),), mode="hold"), verifier="search-srv")
    hold_id = (await store.decide(made)).hold_id
    assert hold_id is not None
    for other in ("payments-srv", ""):  # another name, or none: as if there were no such hold
        with pytest.raises(NotFound):
            await store.settle(hold_id, None, T0, other)
        with pytest.raises(NotFound):
            await store.release(hold_id, T0, other)
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(0, 5)]
    assert (await store.settle(hold_id, 2, T0, "search-srv")).amount == 2
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(2, 0)]


async def test_release_frees_everything_and_settle_after_release_conflicts(store: Store) -> None:
    root = tid()
    held = await store.decide(decision(root, 7, budgets=(budget("b", 10),), mode="hold"))
    assert held.hold_id is not None
    released = await store.release(held.hold_id, T0)
    assert released == type(released)(held.hold_id, "released", 0, "USD")
    assert (await store.release(held.hold_id, T0)) == released
    for amount in (None, 0, 7):
        with pytest.raises(Conflict):
            await store.settle(held.hold_id, amount, T0)
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(0, 0)]
    assert (await store.decide(decision(root, 10, budgets=(budget("b", 10),)))).status == "allowed"


async def test_settle_without_an_amount_charges_the_hold(store: Store) -> None:
    root = tid()
    held = await store.decide(decision(root, 7, budgets=(budget("b", 10),), mode="hold"))
    assert held.hold_id is not None
    assert (await store.settle(held.hold_id, None, T0)).amount == 7
    assert (await store.settle(held.hold_id, 7, T0)).amount == 7
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(7, 0)]


async def test_an_expired_hold_no_longer_counts_and_is_not_found(store: Store) -> None:
    root = tid()
    levels = (budget("b", 10),)
    held = await store.decide(decision(root, 8, budgets=levels, mode="hold", hold_ttl_ms=1000))
    assert held.hold_id is not None
    assert (await store.inspect(root, (), ("b",), T0 + 999)).balances == [(0, 8)]
    assert (await store.decide(decision(root, 3, budgets=levels, now=T0 + 999))).status == "budget_exceeded"
    assert (await store.inspect(root, (), ("b",), T0 + 1000)).balances == [(0, 0)]  # purged by time alone
    with pytest.raises(NotFound):
        await store.settle(held.hold_id, None, T0 + 1000)
    with pytest.raises(NotFound):
        await store.release(held.hold_id, T0 + 1000)
    assert (await store.decide(decision(root, 10, budgets=levels, now=T0 + 1000))).status == "allowed"


async def test_an_expired_hold_is_purged_by_the_next_decision(store: Store) -> None:
    root = tid()
    levels = (budget("b", 10),)
    held = await store.decide(decision(root, 8, budgets=levels, mode="hold", hold_ttl_ms=1000))
    assert held.hold_id is not None
    out = await store.decide(decision(root, 10, budgets=levels, now=T0 + 1000))
    assert (out.status, out.balances) == ("allowed", [(10, 0)])
    with pytest.raises(NotFound):
        await store.settle(held.hold_id, 8, T0 + 1000)


async def test_every_expired_hold_stops_counting_however_many_expire_at_once(store: Store) -> None:
    root = tid()
    levels = (budget("b", 101),)
    for _ in range(101):
        assert (
            await store.decide(decision(root, 1, budgets=levels, mode="hold", hold_ttl_ms=1000))
        ).status == "allowed"
    out = await store.decide(decision(root, 101, budgets=levels, now=T0 + 1000, request_id="r", fingerprint="f"))
    assert (out.status, out.balances) == ("allowed", [(101, 0)])


async def test_a_hold_with_no_charged_budget_still_settles_by_its_rules(store: Store) -> None:
    """No budget (or only another currency's): the hold is still a hold: ≤ held, idempotent, Conflict."""
    root = tid()
    for levels in ((), (budget("eur", 1, charge=False),)):
        held = await store.decide(decision(root, 5, budgets=levels, mode="hold"))
        assert held.status == "allowed" and held.hold_id is not None
        with pytest.raises(ValueError):
            await store.settle(held.hold_id, 6, T0)
        assert (await store.settle(held.hold_id, 0, T0)).amount == 0
        with pytest.raises(Conflict):
            await store.settle(held.hold_id, None, T0)  # "all that is held" is 5, not the 0 it settled for
    assert (await store.inspect(root, (), ("eur",), T0)).balances == [(0, 0)]


async def test_unknown_and_garbage_hold_ids_are_not_found(store: Store) -> None:
    root, other = tid(), tid()
    held = await store.decide(decision(root, 1, budgets=(budget("b", 10),), mode="hold"))
    assert held.hold_id is not None
    call = held.hold_id.partition(".")[2]
    bad = [
        "",
        "nope",
        root,
        root + ".",
        root + ".zz",
        f"{root}.{secrets.token_hex(16)}",  # well formed, never issued
        f"{other}.{call}",  # the call id of a real hold under another root
        "0" * 32 + "." + "0" * 32,
        held.hold_id.upper(),
        held.hold_id[:-1],
        held.hold_id + "0",
        held.hold_id + "\n",
        " " + held.hold_id,
        held.hold_id + ".x",
        held.hold_id.replace(".", ":"),
        f"{root}.{call[:31]}\u0663",  # an Arabic-Indic digit
        "../" * 30,
    ]
    for hold_id in bad:
        with pytest.raises(NotFound):
            await store.settle(hold_id, 1, T0)
        with pytest.raises(NotFound):
            await store.release(hold_id, T0)
        with pytest.raises(NotFound):
            await store.extend(hold_id, 1000, T0)
    assert (await store.settle(held.hold_id, 1, T0)).amount == 1  # the real one was never touched


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


async def test_extend_keeps_a_hold_past_its_old_end_and_is_idempotent(store: Store) -> None:
    root = tid()
    levels = (budget("l1", 10), budget("l2", 8))
    held = await store.decide(decision(root, 6, budgets=levels, mode="hold", hold_ttl_ms=1000))
    assert held.hold_id is not None
    state = await store.extend(held.hold_id, 2000, T0 + 500)
    assert state == type(state)(held.hold_id, "held", 6, "USD", T0 + 2500)
    assert (await store.extend(held.hold_id, 2000, T0 + 500)) == state  # the same extend again: the same state
    # Past the old end (T0 + 1000) it still counts, and a decision does not purge it.
    assert (await store.decide(decision(root, 3, budgets=levels, now=T0 + 1500))).status == "budget_exceeded"
    assert (await store.inspect(root, (), ("l1", "l2"), T0 + 2499)).balances == [(0, 6)] * 2
    assert (await store.settle(held.hold_id, 5, T0 + 2499)).amount == 5
    assert (await store.inspect(root, (), ("l1", "l2"), T0 + 2600)).balances == [(5, 0)] * 2


async def test_extend_may_shorten_a_hold_and_it_then_ends_then(store: Store) -> None:
    root = tid()
    levels = (budget("b", 10),)
    held = await store.decide(decision(root, 7, budgets=levels, mode="hold", hold_ttl_ms=60_000))
    assert held.hold_id is not None
    assert (await store.extend(held.hold_id, 100, T0 + 10)).expires_ms == T0 + 110
    assert (await store.inspect(root, (), ("b",), T0 + 109)).balances == [(0, 7)]
    out = await store.decide(decision(root, 10, budgets=levels, now=T0 + 110))
    assert (out.status, out.balances) == ("allowed", [(10, 0)])
    with pytest.raises(NotFound):
        await store.extend(held.hold_id, 60_000, T0 + 110)


async def test_extend_refuses_closed_expired_foreign_and_unknown_holds_and_changes_nothing(store: Store) -> None:
    root = tid()
    levels = (budget("b", 100),)
    settled, released, expired = [
        (await store.decide(decision(root, 5, budgets=levels, mode="hold", hold_ttl_ms=ttl))).hold_id
        for ttl in (60_000, 60_000, 1000)
    ]
    mine = msgspec.structs.replace(decision(root, 5, budgets=levels, mode="hold"), verifier="search-srv")
    foreign = (await store.decide(mine)).hold_id
    assert settled and released and expired and foreign
    await store.settle(settled, 2, T0)
    await store.release(released, T0)
    with pytest.raises(Conflict, match="settled"):
        await store.extend(settled, 60_000, T0 + 1)
    with pytest.raises(Conflict, match="released"):
        await store.extend(released, 60_000, T0 + 1)
    for hold_id, verifier in (
        (foreign, ""),
        (foreign, "payments-srv"),
        (f"{root}.{secrets.token_hex(16)}", ""),
        ("nope", ""),
        (expired, ""),
    ):
        with pytest.raises(NotFound):
            await store.extend(hold_id, 60_000, T0 + 1000, verifier)
    # Past 24 h too (the API's bound): Redis formats an end past 2^63 as -2^63 and the hold ended at once, while
    # memory:// kept it for ages; no store takes an end it cannot keep.
    for ttl in (0, -1, -60_000, MAX_HOLD_TTL_MS + 1, 10**20):
        with pytest.raises(ValueError, match="hold_ttl"):
            await store.extend(foreign, ttl, T0 + 1000, "search-srv")
    # Nothing moved: the settled 2 is spent, the foreign hold still holds 5 until its own end (T0 + 300 s).
    assert (await store.inspect(root, (), ("b",), T0 + 1000)).balances == [(2, 5)]
    assert (await store.inspect(root, (), ("b",), T0 + 300_000)).balances == [(2, 0)]
    assert (await store.settle(settled, 2, T0 + 2000)).state == "settled"  # and the closed ones are as they were
    assert (await store.release(released, T0 + 2000)).state == "released"


async def test_an_extended_hold_belongs_to_its_verifier_still(store: Store) -> None:
    root = tid()
    made = msgspec.structs.replace(decision(root, 5, budgets=(budget("b", 10),), mode="hold"), verifier="search-srv")
    hold_id = (await store.decide(made)).hold_id
    assert hold_id is not None
    assert (await store.extend(hold_id, 1000, T0, "search-srv")).state == "held"
    with pytest.raises(NotFound):
        await store.settle(hold_id, None, T0, "payments-srv")
    assert (await store.release(hold_id, T0, "search-srv")).state == "released"


async def test_a_zero_cost_hold_extends_too(store: Store) -> None:
    root = tid()
    held = await store.decide(decision(root, 0, mode="hold", hold_ttl_ms=1000))
    assert held.hold_id is not None
    state = await store.extend(held.hold_id, 5000, T0 + 900)
    assert (state.state, state.amount, state.expires_ms) == ("held", 0, T0 + 5900)
    assert (await store.settle(held.hold_id, 0, T0 + 5000)).state == "settled"


# -- idempotency ------------------------------------------------------------------------------------------


async def test_idempotent_retries_return_the_first_answer(store: Store) -> None:
    root = tid()
    levels = (budget("b", 10),)
    first = await store.decide(decision(root, 6, budgets=levels, request_id="r", fingerprint="f"))
    again = await store.decide(decision(root, 6, budgets=levels, request_id="r", fingerprint="f", now=T0 + 5))
    assert first.status == again.status == "allowed" and again.replayed and not first.replayed
    assert again.balances == first.balances == [(6, 0)]
    other = await store.decide(decision(root, 1, budgets=levels, request_id="r", fingerprint="g"))
    assert (other.status, other.replayed) == ("conflict", False)
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(6, 0)]  # neither charged anything
    assert (await store.decide(decision(root, 6, budgets=levels, request_id="r", fingerprint="f"))).replayed


async def test_a_denial_is_replayed_too(store: Store) -> None:
    root = tid()
    denied = await store.decide(decision(root, 6, budgets=(budget("b", 5),), request_id="d", fingerprint="f"))
    assert (denied.status, denied.replayed) == ("budget_exceeded", False)
    # The same request again, with room now: still the first answer, and still nothing charged.
    replayed = await store.decide(decision(root, 6, budgets=(budget("b", 50),), request_id="d", fingerprint="f"))
    assert (replayed.status, replayed.index, replayed.replayed) == ("budget_exceeded", 0, True)
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(0, 0)]


async def test_a_replayed_hold_is_the_same_hold(store: Store) -> None:
    root = tid()
    levels = (budget("b", 10),)
    first = await store.decide(decision(root, 4, budgets=levels, mode="hold", request_id="h", fingerprint="f"))
    again = await store.decide(decision(root, 4, budgets=levels, mode="hold", request_id="h", fingerprint="f"))
    assert first.hold_id is not None and again.hold_id == first.hold_id and again.replayed
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(0, 4)]


async def test_lookup_reads_a_stored_answer_without_deciding(store: Store) -> None:
    root = tid()
    assert await store.lookup(root, "r", "f") is None
    first = await store.decide(decision(root, 3, budgets=(budget("b", 10),), request_id="r", fingerprint="f"))
    found = await store.lookup(root, "r", "f")
    assert found is not None
    assert (found.status, found.balances, found.replayed) == ("allowed", first.balances, True)
    differs = await store.lookup(root, "r", "g")
    assert differs is not None and differs.status == "conflict"
    assert await store.lookup(root, "other", "f") is None
    assert await store.lookup(tid(), "r", "f") is None  # request ids are per root
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(3, 0)]


async def test_idempotent_answers_expire_24_hours_after_now_ms(store: Store) -> None:
    root = tid()
    levels = (budget("b", 100),)
    await store.decide(decision(root, 1, budgets=levels, request_id="r", fingerprint="f"))
    still = await store.decide(
        decision(root, 1, budgets=levels, request_id="r", fingerprint="f", now=T0 + IDEMPOTENCY_TTL_MS - 1)
    )
    assert still.replayed
    later = await store.decide(
        decision(root, 1, budgets=levels, request_id="r", fingerprint="f", now=T0 + IDEMPOTENCY_TTL_MS)
    )
    assert (later.replayed, later.balances) == (False, [(2, 0)])


@pytest.mark.parametrize("backend", ["memory"])
async def test_an_answer_older_than_24_hours_is_not_replayed_for_a_token_that_no_longer_holds(store: Store) -> None:
    now = [T0 / 1000]
    authority = Authority(KeyRing(new_key_entry()), store, "http://agentcaps.test", lambda: now[0])
    minted = await authority.mint(MintRequest(subject="orchestrator", expires_in=3600, budget=Money("10.00", "USD")))
    token = minted.token
    request = VerifyRequest(token=token, tool="search", cost=Money("1.00", "USD"), request_id="r")
    assert (await authority.verify(request, None)).kind == "allowed"
    now[0] += 25 * 3600  # past the token's expiry and past the 24 h of the answer
    assert (await authority.verify(request, None)).kind == "denied"


async def test_a_made_up_request_id_is_kept_minutes_where_a_503_can_follow_the_decision(
    store: Store, backend: str, redis_of: RedisOf
) -> None:
    """The service makes an id up for every call that came without one, so that a 503 after the store decided can
    be resent and replayed. On Redis (a reply can be lost after the script ran) its answer is kept
    MADE_UP_ID_TTL_MS, and no longer: not the day of GC slack, as every such call stores one; a caller's id is
    kept 24 h. In memory the call that decides is the one that answers, so no 503 follows it: nothing is kept.
    local:// is memory with a journal: a journal that fails makes every later call a 503 until a restart, which
    forgets the decision that was not written, so a resend is decided anew there too: nothing is kept."""
    root, levels = tid(), (budget("b", 10),)
    made_up = decision(root, 1, budgets=levels, request_id="m", fingerprint="f")
    made_up = msgspec.structs.replace(made_up, made_up_id=True)
    first = await store.decide(made_up)
    assert (first.status, first.replayed) == ("allowed", False)
    await store.decide(decision(root, 1, budgets=levels, request_id="c", fingerprint="f"))
    assert await store.lookup(root, "c", "f", T0 + MADE_UP_ID_TTL_MS) is not None
    if backend in ("memory", "local"):
        assert await store.lookup(root, "m", "f", T0) is None
        return
    # The resend of a 503 carries the made-up id as its own (the service makes a new one for every call without).
    late = msgspec.structs.replace(made_up, now_ms=T0 + MADE_UP_ID_TTL_MS - 1, made_up_id=False)
    again = await store.decide(late)
    assert (again.status, again.replayed, again.balances) == ("allowed", True, [(1, 0)])
    assert await store.lookup(root, "m", "f", T0 + MADE_UP_ID_TTL_MS) is None
    with redis_of(root) as direct:
        kept = direct.pttl(f"{base_key(root)}:i:{_digest('m')}")
        assert MADE_UP_ID_TTL_MS - 60_000 < kept <= MADE_UP_ID_TTL_MS
        assert direct.pttl(f"{base_key(root)}:i:{_digest('c')}") > IDEMPOTENCY_TTL_MS


# -- rate windows -----------------------------------------------------------------------------------------


async def test_rate_windows_slide_exactly(store: Store) -> None:
    root = tid()
    rate = (RateSpec("r", 3, 60_000),)
    for i in range(3):
        assert (await store.decide(decision(root, rates=rate, now=T0 + i * 1000))).status == "allowed"
    limited = await store.decide(decision(root, rates=rate, now=T0 + 10_000))
    assert (limited.status, limited.index, limited.retry_after_ms) == ("rate_limited", 0, 50_000)
    limited = await store.decide(decision(root, rates=rate, now=T0 + 59_999))
    assert (limited.status, limited.retry_after_ms) == ("rate_limited", 1)
    # The call at T0 slides out; the refused calls took no slot, so one is free now and the next waits
    # for the call at T0 + 1000 to slide out.
    assert (await store.decide(decision(root, rates=rate, now=T0 + 60_000))).status == "allowed"
    limited = await store.decide(decision(root, rates=rate, now=T0 + 60_001))
    assert (limited.status, limited.retry_after_ms) == ("rate_limited", 999)
    assert (await store.decide(decision(root, rates=rate, now=T0 + 61_000))).status == "allowed"


async def test_inspect_names_the_full_rate_windows_as_decide_would_find_them(store: Store) -> None:
    root = tid()
    rates = (RateSpec("a", 2, 60_000), RateSpec("b", 5, 60_000), RateSpec("c", 0, 1000))
    for i in range(2):
        assert (await store.decide(decision(root, rates=rates[:2], now=T0 + i * 1000))).status == "allowed"
    # Inspect and decide agree to the millisecond: full until the call at T0 slides out at T0 + 60 000.
    for now, full, status in [(T0 + 1000, [0, 2], "rate_limited"), (T0 + 59_999, [0, 2], "rate_limited")]:
        assert (await store.inspect(root, (), (), now, rates)).full_rates == full, now
        assert (await store.decide(decision(root, rates=rates[:1], now=now))).status == status
    assert (await store.inspect(root, (), (), T0 + 60_000, rates)).full_rates == [2]
    assert (await store.decide(decision(root, rates=rates[:1], now=T0 + 60_000))).status == "allowed"
    assert (await store.inspect(root, (), (), T0, ())).full_rates == []


async def test_inspect_counts_the_calls_in_each_rate_window(store: Store) -> None:
    """What the console shows as rate use: the calls each window holds now, as decide counts them."""
    root = tid()
    rates = (RateSpec("a", 3, 60_000), RateSpec("b", 10, 1000))
    for i in range(3):
        assert (await store.decide(decision(root, rates=rates, now=T0 + i * 500))).status == "allowed"
    assert (await store.inspect(root, (), (), T0 + 1000, rates)).rate_use == [3, 2]  # the call at T0 slid out of b
    assert (await store.inspect(root, (), (), T0 + 60_000, rates)).rate_use == [2, 0]
    assert (await store.inspect(root, (), (), T0, ())).rate_use == []


async def test_rate_levels_are_shared_by_prefix_and_name_the_level_that_refuses(store: Store) -> None:
    root = tid()
    a = (RateSpec("parent", 2, 60_000), RateSpec("child-a", 1, 60_000))
    b = (RateSpec("parent", 2, 60_000), RateSpec("child-b", 5, 60_000))
    assert (await store.decide(decision(root, rates=a, now=T0))).status == "allowed"
    own = await store.decide(decision(root, rates=a, now=T0 + 1))
    assert (own.status, own.index, own.retry_after_ms) == ("rate_limited", 1, 59_999)
    assert (await store.decide(decision(root, rates=b, now=T0 + 2))).status == "allowed"  # a's refusal took none
    parent = await store.decide(decision(root, rates=b, now=T0 + 3))
    assert (parent.status, parent.index, parent.retry_after_ms) == ("rate_limited", 0, 59_997)


async def test_a_refused_call_uses_no_rate_slot(store: Store) -> None:
    root = tid()
    rate, levels = (RateSpec("r", 2, 60_000),), (budget("b", 1),)
    assert (await store.decide(decision(root, 1, rates=rate, budgets=levels))).status == "allowed"
    for _ in range(3):
        assert (await store.decide(decision(root, 1, rates=rate, budgets=levels))).status == "budget_exceeded"
    assert (await store.decide(decision(root, 0, rates=rate, budgets=levels))).status == "allowed"
    limited = await store.decide(decision(root, 1, rates=rate, budgets=levels))
    assert limited.status == "rate_limited"  # a rate refusal wins over the budget's


async def test_a_rate_of_zero_allows_nothing(store: Store) -> None:
    zero = (RateSpec("z", 0, 3_600_000),)
    for now in (T0, T0 + 3_600_000, T0 + 10**9):
        out = await store.decide(decision(tid(), rates=zero, now=now))
        assert (out.status, out.index, out.retry_after_ms) == ("rate_limited", 0, 3_600_000)


# -- revocation -------------------------------------------------------------------------------------------


async def test_revocation_names_the_first_revoked_prefix(store: Store) -> None:
    root = tid()
    chain = ("p0", "p1", "p2", "p3")
    await store.revoke(root, "p2", 0)
    assert (await store.decide(decision(root, revocation=chain))).index == 2
    await store.revoke(root, "p1", 0)
    out = await store.decide(decision(root, revocation=chain))
    assert (out.status, out.index) == ("revoked", 1)
    assert (await store.decide(decision(root, revocation=("p0", "p9")))).status == "allowed"  # a sibling
    assert (await store.decide(decision(root, revocation=("p0",)))).status == "allowed"  # an ancestor
    assert (await store.decide(decision(tid(), revocation=chain))).status == "allowed"  # another root
    assert (await store.inspect(root, chain, (), T0)).revoked_index == 1


async def test_revocation_wins_and_charges_nothing(store: Store) -> None:
    root = tid()
    levels, rate = (budget("b", 10),), (RateSpec("r", 1, 60_000),)
    await store.revoke(root, "p1", 0)
    out = await store.decide(decision(root, 11, revocation=("p0", "p1"), budgets=levels, rates=rate, mode="hold"))
    assert (out.status, out.index, out.hold_id) == ("revoked", 1, None)
    sibling = await store.decide(decision(root, 10, revocation=("p0", "p2"), budgets=levels, rates=rate))
    assert (sibling.status, sibling.balances) == ("allowed", [(10, 0)])  # the rate slot and budget were free


async def test_the_whole_root_mark(store: Store) -> None:
    root = tid()
    await store.revoke(root, "p1", 0)
    await store.revoke(root, ROOT, 0)
    for chain in (("p0",), ("p0", "p1"), ()):
        out = await store.decide(decision(root, revocation=chain))
        assert (out.status, out.index) == ("revoked", -1)
    assert (await store.inspect(root, ("p0", "p1"), (), T0)).revoked_index == -1
    assert (await store.decide(decision(tid()))).status == "allowed"


async def test_revocation_marks_expire_and_are_never_shortened(store: Store) -> None:
    root = tid()
    await store.revoke(root, "a", T0 + 400)
    await store.revoke(root, "a", T0 + 100)  # an earlier expiry never shortens a mark
    await store.revoke(root, "b", 0)
    await store.revoke(root, "b", T0 + 100)  # nor shortens a mark forever
    await store.revoke(root, "c", T0 + 100)
    await store.revoke(root, "c", 0)  # but forever lengthens a mark
    await store.revoke(root, "d", T0 + 100)
    await store.revoke(root, "d", T0 + 250)  # and so does a later expiry
    await store.revoke(root, "e", T0 - 1)  # a mark already over: nothing

    async def revoked_at(now: int) -> dict[str, bool]:
        outs = {p: await store.decide(decision(root, revocation=("p0", p), now=now)) for p in "abcde"}
        return {p: out.status == "revoked" for p, out in outs.items()}

    assert await revoked_at(T0) == {"a": True, "b": True, "c": True, "d": True, "e": False}
    assert await revoked_at(T0 + 249) == {"a": True, "b": True, "c": True, "d": True, "e": False}
    assert await revoked_at(T0 + 250) == {"a": True, "b": True, "c": True, "d": False, "e": False}
    assert await revoked_at(T0 + 400) == {"a": False, "b": True, "c": True, "d": False, "e": False}


async def test_revocation_marks_expire_at_now_ms(store: Store) -> None:
    root = tid()
    await store.revoke(root, "p1", T0 + 1000)
    assert (await store.decide(decision(root, revocation=("p0", "p1"), now=T0 + 999))).status == "revoked"
    assert (await store.decide(decision(root, revocation=("p0", "p1"), now=T0 + 1000))).status == "allowed"


# -- inspect and ready ------------------------------------------------------------------------------------


async def test_inspect_reports_balances_holds_and_revocation(store: Store) -> None:
    root = tid()
    levels = (budget("parent", 10), budget("child", 5))
    await store.decide(decision(root, 3, budgets=levels, mode="hold", hold_ttl_ms=1000))
    await store.decide(decision(root, 1, budgets=levels))
    chain, prefixes = ("p0", "p1"), ("parent", "child", "never-charged")
    first = await store.inspect(root, chain, prefixes, T0)
    assert (first.revoked_index, first.balances) == (None, [(1, 3), (1, 3), (0, 0)])
    assert (await store.inspect(root, chain, prefixes, T0 + 1000)).balances == [(1, 0), (1, 0), (0, 0)]
    await store.revoke(root, "p1", 0)
    assert (await store.inspect(root, chain, prefixes, T0 + 1000)).revoked_index == 1
    await store.revoke(root, ROOT, 0)
    assert (await store.inspect(root, chain, (), T0 + 1000)).revoked_index == -1
    empty = await store.inspect(tid(), (), (), T0)
    assert (empty.revoked_index, empty.balances) == (None, [])


async def test_ready(store: Store) -> None:
    assert await store.ready() is None


# -- what a caller passes is data, never syntax ------------------------------------------------------------

# RedisStore.decide packs its arguments into one MessagePack argument (decide.lua); the request id goes in as a
# digest, so no byte of it can shift the fields or the keys, and an empty id is still an id.


async def test_a_request_id_with_a_newline_checks_every_budget_and_rate(store: Store) -> None:
    root = tid()
    levels, rate = (budget("b", 10),), (RateSpec("r", 1, 60_000),)
    over = await store.decide(decision(root, 11, budgets=levels, rates=rate, request_id="a\nb", fingerprint="f"))
    assert (over.status, over.balances) == ("budget_exceeded", [(0, 0)])
    assert (await store.decide(decision(root, 1, budgets=levels, rates=rate))).status == "allowed"
    limited = await store.decide(decision(root, 1, budgets=levels, rates=rate, request_id="c\nd", fingerprint="f"))
    assert limited.status == "rate_limited"
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(1, 0)]


async def test_odd_request_ids_are_ids_like_any_other(store: Store) -> None:
    root = tid()
    levels = (budget("b", 100),)
    for rid in (",", ":", "a,b:c", "\\", "ünïcode", "x" * 255, "{" + root + "}"):
        first = await store.decide(decision(root, 1, budgets=levels, request_id=rid, fingerprint="f"))
        again = await store.decide(decision(root, 1, budgets=levels, request_id=rid, fingerprint="f"))
        assert (first.replayed, again.replayed, again.balances) == (False, True, first.balances), rid
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(7, 0)]


async def test_an_empty_request_id_is_still_a_request_id(store: Store) -> None:
    root = tid()
    levels = (budget("b", 10),)
    await store.decide(decision(root, 3, budgets=levels, request_id="", fingerprint="f"))
    again = await store.decide(decision(root, 3, budgets=levels, request_id="", fingerprint="f"))
    assert again.replayed
    assert (await store.inspect(root, (), ("b",), T0)).balances == [(3, 0)]


async def test_a_budget_with_an_expiry_counts_until_then(store: Store) -> None:
    """BudgetSpec.expires_at_ms (the token's end plus a margin) lets the store forget a counter, never sooner."""
    root, now = tid(), real_ms()
    levels = (BudgetSpec("b", 10, True, now + 3_600_000), BudgetSpec("c", 10, True, now + 60_000))
    for _ in range(2):
        await store.decide(decision(root, 5, budgets=levels, now=now))
    held = await store.decide(decision(root, 0, budgets=levels, now=now, mode="hold"))
    over = await store.decide(decision(root, 1, budgets=levels, now=now))
    assert (over.status, over.balances) == ("budget_exceeded", [(10, 0), (10, 0)])
    assert held.hold_id is not None and (await store.settle(held.hold_id, 0, now)).amount == 0
    assert (await store.inspect(root, (), ("b", "c"), now)).balances == [(10, 0), (10, 0)]


async def test_nothing_live_by_now_ms_is_forgotten_when_the_callers_clock_is_hours_behind_redis(
    store: Store,
) -> None:
    """A caller 20 h behind Redis's clock (a host set to local time): Redis's own expiry (GC_SLACK_MS past each
    record's end) still lies in Redis's future, so a spent budget stays spent, a mark revokes, an answer replays."""
    root, now = tid(), real_ms() - 20 * 3_600_000
    levels = (BudgetSpec("b", 10, True, now + 3_600_000),)
    first = await store.decide(decision(root, 10, budgets=levels, now=now, request_id="r", fingerprint="f"))
    assert first.status == "allowed"
    await store.revoke(root, "p1", now + 3_600_000)
    assert (await store.decide(decision(root, 10, budgets=levels, now=now + 1))).status == "budget_exceeded"
    assert (await store.decide(decision(root, revocation=("p0", "p1"), now=now + 1))).status == "revoked"
    again = await store.lookup(root, "r", "f", now + 1)
    assert again is not None and again.replayed
    assert (await store.inspect(root, ("p0", "p1"), ("b",), now + 1)).balances == [(10, 0)]


async def test_a_closed_hold_is_forgotten_24_hours_after_now_ms(store: Store) -> None:
    root = tid()
    held = await store.decide(decision(root, 4, budgets=(budget("b", 10),), mode="hold"))
    assert held.hold_id is not None
    await store.settle(held.hold_id, 3, T0)
    assert (await store.settle(held.hold_id, 3, T0 + SETTLED_HOLD_TTL_MS - 1)).amount == 3
    with pytest.raises(NotFound):
        await store.settle(held.hold_id, 3, T0 + SETTLED_HOLD_TTL_MS)


async def test_a_fingerprint_with_a_newline_checks_every_budget_and_rate(store: Store) -> None:
    """The authority's fingerprints are hex digests; the Store contract takes any str, as for request ids."""
    root = tid()
    levels, rate = (budget("b", 10),), (RateSpec("r", 1, 60_000),)
    over = await store.decide(decision(root, 11, budgets=levels, rates=rate, request_id="r", fingerprint="f\ng"))
    assert (over.status, over.balances) == ("budget_exceeded", [(0, 0)])
    again = await store.decide(decision(root, 11, budgets=levels, rates=rate, request_id="r", fingerprint="f\ng"))
    assert (again.status, again.replayed) == ("budget_exceeded", True)


async def test_a_limit_of_zero_allows_only_zero_cost(store: Store) -> None:
    root = tid()
    levels = (budget("z", 0),)
    assert (await store.decide(decision(root, 0, budgets=levels))).status == "allowed"
    assert (await store.decide(decision(root, 0, budgets=levels, mode="hold"))).status == "allowed"
    out = await store.decide(decision(root, 1, budgets=levels))
    assert (out.status, out.index, out.balances) == ("budget_exceeded", 0, [(0, 0)])


# -- Redis: its own TTLs only collect garbage --------------------------------------------------------------


@pytest.mark.parametrize("backend", REDIS_BACKENDS)
async def test_redis_expires_every_record_gc_slack_after_its_end(store: Store, redis_of: RedisOf) -> None:
    """Relative TTLs too (an answer, a closed hold, a rate log): a verifier whose clock lags another's by hours
    still finds them while its now_ms says they live."""
    root, now = tid(), real_ms()
    levels, rate = (BudgetSpec("b", 10, True, now + 60_000),), (RateSpec("r", 5, 60_000),)
    d = decision(root, 1, budgets=levels, rates=rate, mode="hold", request_id="q", fingerprint="f", now=now)
    held = await store.decide(d)
    assert held.hold_id is not None
    await store.settle(held.hold_id, 1, now)
    await store.revoke(root, "p1", now + 60_000)
    await store.revoke(root, "p2", 0)
    with redis_of(root) as client:
        ends = {
            kind: client.pexpiretime(f"{base_key(root)}:{kind}")
            for kind in ("b:b", "rv:p1", "rv:p2", "r:r", f"i:{_digest('q')}", f"h:{held.hold_id}")
        }
    assert (ends["b:b"], ends["rv:p1"], ends["rv:p2"]) == (now + 60_000 + GC_SLACK_MS,) * 2 + (-1,)
    for kind, ttl in (("r:r", 60_000), ("i:", IDEMPOTENCY_TTL_MS), ("h:", SETTLED_HOLD_TTL_MS)):
        end = next(v for k, v in ends.items() if k.startswith(kind))
        assert now + ttl + GC_SLACK_MS <= end <= real_ms() + ttl + GC_SLACK_MS, kind


@pytest.mark.parametrize("backend", REDIS_BACKENDS)
async def test_redis_keeps_a_budget_counter_as_long_as_a_hold_on_it_is_extended(
    store: Store, redis_of: RedisOf
) -> None:
    """A budget counter ends GC_SLACK_MS after its budget's end; a hold made before then may be extended past it,
    day after day. The counter must outlive the hold: collected under it, the hold's release would write a new,
    never-expiring counter holding minus the hold (more remaining than the limit)."""
    root, now = tid(), real_ms()
    levels = (BudgetSpec("b", 10, True, now + 60_000), BudgetSpec("forever", 10, True, 0))
    held = await store.decide(decision(root, 4, budgets=levels, mode="hold", hold_ttl_ms=86_400_000, now=now))
    assert held.hold_id is not None
    counter = f"{base_key(root)}:b:b"
    with redis_of(root) as client:
        assert client.pexpiretime(counter) == now + 60_000 + GC_SLACK_MS
        ends = now + 80_000_000 + 86_400_000  # extended a day later for another day: past the counter's end
        assert (await store.extend(held.hold_id, 86_400_000, now + 80_000_000)).expires_ms == ends
        assert client.pexpiretime(counter) == ends + GC_SLACK_MS
        assert client.pexpiretime(f"{base_key(root)}:b:forever") == -1  # a counter that never ends gets no end
        # Neither a charge on the budget (by a token still live) nor a shorter extend brings the end back.
        assert (await store.decide(decision(root, 1, budgets=levels, now=now))).status == "allowed"
        assert (await store.extend(held.hold_id, 1000, now + 80_000_000)).state == "held"
        assert client.pexpiretime(counter) == ends + GC_SLACK_MS
    assert (await store.release(held.hold_id, now + 80_000_000)).state == "released"
    assert (await store.inspect(root, (), ("b", "forever"), now + 80_000_000)).balances == [(1, 0)] * 2


@pytest.mark.parametrize("backend", REDIS_BACKENDS)
async def test_records_written_before_they_carried_their_end_keep_their_meaning(
    store: Store, redis_of: RedisOf
) -> None:
    """Marks holding '1', answers without their end and closed holds without `until` (the format before): they
    count until Redis expires them, as they did; an upgrade must not lift a revocation or forget an answer."""
    root, later = tid(), T0 + 10 * IDEMPOTENCY_TTL_MS
    held = await store.decide(decision(root, 4, budgets=(budget("b", 10),), mode="hold"))
    assert held.hold_id is not None
    await store.settle(held.hold_id, 3, T0)
    with redis_of(root) as client:
        b = base_key(root)
        client.set(f"{b}:rv:p1", "1")  # forever
        client.set(f"{b}:rv:p2", "1", px=600_000)  # until Redis expires it
        client.set(f"{b}:i:{_digest('r')}", f"{_digest('f')}\nbudget_exceeded,0,0,,0,7,0", px=600_000)
        client.hdel(f"{b}:h:{held.hold_id}", "until")
    for prefix in ("p1", "p2"):
        out = await store.decide(decision(root, revocation=("p0", prefix), now=later))
        assert (out.status, out.index) == ("revoked", 1), prefix
    await store.revoke(root, "p1", later + 1)  # a later end never shortens a mark forever
    await store.revoke(root, "p2", real_ms())  # nor an end before Redis's own on an old mark
    assert (await store.inspect(root, ("p0", "p1"), (), later + 2)).revoked_index == 1
    assert (await store.inspect(root, ("p0", "p2"), (), later + 2)).revoked_index == 1
    replay = await store.decide(decision(root, 1, request_id="r", fingerprint="f", now=later))
    assert (replay.status, replay.replayed, replay.balances) == ("budget_exceeded", True, [(7, 0)])
    assert (await store.settle(held.hold_id, 3, later)).amount == 3
