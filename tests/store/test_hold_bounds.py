"""Holds are bounded: at most MAX_OPEN_HOLDS open per root, and expired holds are released PURGE_STEP at a time.

The attack these tests run: a chain with the most budget caveats a token may carry (16), 10,000 holds with a
short hold_ttl, then one call after they have all expired. One script used to release them all at once and
stall Redis (single-threaded: every root waits) for as long as that took. The timing test never asserts an
absolute time: it compares the worst single script of the drain with a script measured in the same test.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from typing import Any

import pytest
import redis

from app.errors import NotFound
from app.store.base import MAX_OPEN_HOLDS, PURGE_STEP, BudgetSpec, Outcome, Store
from app.store.memory import MemoryStore
from app.store.redis import RedisStore
from app.store.runner import NodeRunner
from app.store.scripts import base_key
from tests.store.conftest import REDIS_URL, T0, USD, RedisOf, budget, decision, tid

BUDGETS = 16  # the most budget caveats a chain may carry
LEVELS = tuple(budget(f"level{i:02d}", 100 * USD) for i in range(BUDGETS))
TTL_MS = 1000


async def hold_many(store: Store, root: str, count: int, levels: tuple[BudgetSpec, ...] = LEVELS) -> list[Outcome]:
    """`count` holds made at T0 that end at T0 + TTL_MS, costing 0 and 1 micro-unit in turn."""
    outcomes: list[Outcome] = []
    for start in range(0, count, 1000):
        batch = [
            store.decide(decision(root, i % 2, budgets=levels, mode="hold", hold_ttl_ms=TTL_MS))
            for i in range(start, min(count, start + 1000))
        ]
        outcomes += await asyncio.gather(*batch)
    assert {o.status for o in outcomes} == {"allowed"}
    return outcomes


# -- the cap on open holds ---------------------------------------------------------------------------------------


async def test_a_root_has_at_most_max_open_holds(store: Store) -> None:
    root = tid()
    levels = (budget("b", 100 * USD),)
    made = await hold_many(store, root, MAX_OPEN_HOLDS, levels)
    later = await store.decide(decision(root, 1, budgets=levels, mode="hold", hold_ttl_ms=60_000, now=T0 + 400))
    # One more is rate_limited for the root itself (index -1: no caveat), until the first hold ends by itself.
    assert (later.status, later.index, later.retry_after_ms) == ("rate_limited", -1, TTL_MS - 400)
    assert (await store.inspect(root, (), ("b",), T0 + 400)).balances == [(0, MAX_OPEN_HOLDS // 2)]  # none written
    charge = await store.decide(decision(root, 3, budgets=levels, now=T0 + 400))  # charges are not holds
    assert (charge.status, charge.balances) == ("allowed", [(3, MAX_OPEN_HOLDS // 2)])
    # Settling or releasing one frees its place at once; the next hold takes it, and the one after is refused.
    first = made[0].hold_id
    assert first is not None
    await store.release(first, T0 + 400)
    assert (await store.decide(decision(root, 1, budgets=levels, mode="hold", now=T0 + 400))).status == "allowed"
    again = await store.decide(decision(root, 1, budgets=levels, mode="hold", now=T0 + 400))
    assert (again.status, again.index) == ("rate_limited", -1)
    # Extending a hold does not make it another: still at the cap.
    second = made[1].hold_id
    assert second is not None and (await store.extend(second, 5000, T0 + 400)).state == "held"
    assert (await store.decide(decision(root, 1, budgets=levels, mode="hold", now=T0 + 400))).index == -1
    # Once the first ones end, holds are allowed again: the cap counts open holds, not holds ever made.
    out = await store.decide(decision(root, 1, budgets=levels, mode="hold", now=T0 + TTL_MS))
    assert out.status == "allowed"


async def test_the_cap_is_per_root_and_a_replay_is_not_a_new_hold(store: Store) -> None:
    root, other = tid(), tid()
    await hold_many(store, root, MAX_OPEN_HOLDS, ())
    replayed = decision(root, 0, mode="hold", request_id="r", fingerprint="f")
    assert (await store.decide(replayed)).status == "rate_limited"
    assert (await store.decide(replayed)).replayed  # the stored denial, replayed
    assert (await store.decide(decision(other, 0, mode="hold"))).status == "allowed"


# -- bounded release of expired holds ---------------------------------------------------------------------------


class StepCountingRedisStore(RedisStore):
    """A RedisStore that times each script call and records how many holds the root has left after it."""

    def __init__(self, url: str) -> None:
        super().__init__(NodeRunner(url, timeout=30.0))  # the unbounded drain (the bug) must be measured, not time out
        self.steps: list[tuple[str, float, int]] = []  # script, seconds, open holds of the watched root after it
        self.watch: str | None = None
        self.sync = redis.Redis.from_url(REDIS_URL, decode_responses=True)

    async def _run(self, name: str, token_id: str, *args: str | int) -> Any:
        started = time.perf_counter()
        reply = await super()._run(name, token_id, *args)
        elapsed = time.perf_counter() - started
        if token_id == self.watch:
            self.steps.append((name, elapsed, int(self.sync.zcard(base_key(token_id) + ":holds"))))
        return reply

    async def close(self) -> None:
        self.sync.close()
        await super().close()


async def test_ten_thousand_expired_holds_are_released_in_bounded_steps_and_balances_end_exact() -> None:
    store = StepCountingRedisStore(REDIS_URL)
    try:
        # The baseline: one ordinary decision that releases one full step of expired holds, in this run.
        baseline = []
        for _ in range(5):
            root = tid()
            await hold_many(store, root, PURGE_STEP)
            store.watch, store.steps = root, []
            out = await store.decide(decision(root, 1, budgets=LEVELS, now=T0 + TTL_MS))
            assert out.status == "allowed" and store.steps[-1][2] == 0
            baseline.append(sum(seconds for _, seconds, _ in store.steps))
        one_step = statistics.median(baseline)

        # The attack, measured up to three times on fresh roots: a loaded machine can stall any one script call
        # for tens of milliseconds, while the unbounded drain was 55x a step every time.
        tries = []
        for _ in range(3):
            root = tid()
            await hold_many(store, root, MAX_OPEN_HOLDS)
            store.watch, store.steps = root, []
            spend_all = 100 * USD
            out = await store.decide(decision(root, spend_all, budgets=LEVELS, now=T0 + TTL_MS))
            # Decided on exact balances: every expired hold was released first, so the whole limit was free.
            assert (out.status, out.balances) == ("allowed", [(spend_all, 0)] * BUDGETS)
            left = [MAX_OPEN_HOLDS] + [n for _, _, n in store.steps]
            released = [before - after for before, after in itertools.pairwise(left)]
            assert left[-1] == 0 and max(released) <= PURGE_STEP, released  # the work per script is bounded
            keys = store.sync.keys(base_key(root) + ":h:*")
            assert keys == []  # every expired hold's record is gone
            assert (await store.inspect(root, (), tuple(b.prefix for b in LEVELS), T0 + TTL_MS)).balances == [
                (spend_all, 0)
            ] * BUDGETS
            tries.append(max(seconds for _, seconds, _ in store.steps))
            if tries[-1] <= 5 * one_step:
                break
        assert min(tries) <= 5 * one_step, (tries, one_step)
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["memory"])
async def test_the_memory_store_lets_other_calls_run_between_steps(store: Store) -> None:
    """memory:// is one event loop: between two steps of one root's release, another root's call runs."""
    assert isinstance(store, MemoryStore)
    root, other = tid(), tid()
    await hold_many(store, root, 4 * PURGE_STEP + 1)
    order: list[str] = []

    async def call(token_id: str, name: str) -> None:
        await store.decide(decision(token_id, 1, budgets=LEVELS, now=T0 + TTL_MS))
        order.append(name)

    await asyncio.gather(call(root, "drain"), call(other, "other"))
    assert order == ["other", "drain"]
    assert (await store.inspect(root, (), (LEVELS[0].prefix,), T0 + TTL_MS)).balances == [(1, 0)]
    assert not store.active.get(root)


async def test_a_hold_that_ended_is_not_found_even_before_the_steps_reach_it(store: Store) -> None:
    root = tid()
    levels = (budget("b", 10 * USD),)
    made = await hold_many(store, root, 2 * PURGE_STEP + 1, levels)
    last = max(o.hold_id or "" for o in made)  # among equal ends, the steps take hold ids in order: this one last
    for close in (lambda: store.settle(last, None, T0 + TTL_MS), lambda: store.extend(last, 60_000, T0 + TTL_MS)):
        with pytest.raises(NotFound):
            await close()
    assert (await store.inspect(root, (), ("b",), T0 + TTL_MS)).balances == [(0, 0)]


async def test_a_closed_hold_is_small_whatever_the_chain_budgets(store: Store, redis_of: RedisOf) -> None:
    """Closed holds are kept 24 h to answer a repeated settle or release: without their budget list."""
    root = tid()
    sizes = []
    for levels in (LEVELS[:1], LEVELS):
        hold_id = (await store.decide(decision(root, 5, budgets=levels, mode="hold"))).hold_id
        assert hold_id is not None
        assert (await store.settle(hold_id, 2, T0)).amount == 2
        assert (await store.settle(hold_id, 2, T0)).amount == 2  # still answers the repeat
        if isinstance(store, MemoryStore):
            sizes.append(len(store.holds[hold_id].prefixes))
        else:
            with redis_of(root) as client:
                sizes.append(int(client.memory_usage(base_key(root) + ":h:" + hold_id) or 0))
    assert sizes[1] <= sizes[0] + 8, sizes  # 16 budgets cost a closed hold no more than one does


@pytest.mark.parametrize("backend", ["memory"])
async def test_extending_one_hold_again_and_again_keeps_the_memory_store_bounded(store: Store) -> None:
    assert isinstance(store, MemoryStore)
    root = tid()
    hold_id = (await store.decide(decision(root, 1, budgets=(budget("b", 10),), mode="hold"))).hold_id
    assert hold_id is not None
    for i in range(5000):
        await store.extend(hold_id, 60_000 + i, T0)
    assert len(store.ends[root]) <= 2 + PURGE_STEP
    assert (await store.inspect(root, (), ("b",), T0 + 60_000 + 4998)).balances == [(0, 1)]
    assert (await store.inspect(root, (), ("b",), T0 + 60_000 + 4999)).balances == [(0, 0)]
