"""Concurrent callers on a real Redis from 4 OS processes, each with its own RedisStore and asyncio.gather:
never one unit over any limit, one slot over any rate, or one charge more for one request id.

The processes connect first and then wait at a barrier, so that their calls really overlap.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

from app.store.base import Attempt, HoldState, RateSpec
from app.store.redis import RedisStore
from app.store.runner import NodeRunner
from tests.store.conftest import REDIS_URL, T0, budget, decision, tid

PROCESSES = 4


def _decision(kind: str, token_id: str) -> Attempt:
    if kind == "budget":
        return decision(token_id, 1, budgets=(budget("root", 100), budget("leaf", 1000)))
    if kind == "hold":
        return decision(token_id, 1, budgets=(budget("root", 100),), mode="hold")
    if kind == "rate":
        return decision(token_id, rates=(RateSpec("r", 10, 60_000),))
    return decision(token_id, 3, budgets=(budget("b", 100),), request_id="same", fingerprint="f")


def _worker(kind: str, token_id: str, calls: int, barrier: Any, out: Any) -> None:
    async def run() -> list[tuple[str, bool, str | None]]:
        store = RedisStore(NodeRunner(REDIS_URL))
        try:
            assert await store.ready() is None  # connected before the start line
            decisions = [_decision(kind, token_id) for _ in range(calls)]
            barrier.wait(30)
            outcomes = await asyncio.gather(*(store.decide(d) for d in decisions))
        finally:
            await store.close()
        return [(o.status, o.replayed, o.hold_id) for o in outcomes]

    out.put(asyncio.run(run()))


def run_in_processes(kind: str, token_id: str, calls: int) -> list[tuple[str, bool, str | None]]:
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs an event loop
    barrier, queue = ctx.Barrier(PROCESSES), ctx.Queue()
    shares = [calls // PROCESSES + (i < calls % PROCESSES) for i in range(PROCESSES)]
    workers = [ctx.Process(target=_worker, args=(kind, token_id, n, barrier, queue)) for n in shares]
    for w in workers:
        w.start()
    try:
        results = [outcome for _ in workers for outcome in queue.get(timeout=60)]
    finally:
        for w in workers:
            w.join(10)
        queue.close()
        queue.join_thread()
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    return results


async def inspect(token_id: str, prefixes: tuple[str, ...]) -> list[tuple[int, int]]:
    store = RedisStore(NodeRunner(REDIS_URL))
    try:
        return (await store.inspect(token_id, (), prefixes, T0)).balances
    finally:
        await store.close()


async def test_1000_concurrent_spends_of_1_against_100_allow_exactly_100() -> None:
    root = tid()
    outcomes = await asyncio.to_thread(run_in_processes, "budget", root, 1000)
    statuses = [status for status, _, _ in outcomes]
    assert (statuses.count("allowed"), statuses.count("budget_exceeded")) == (100, 900)
    assert await inspect(root, ("root", "leaf")) == [(100, 0), (100, 0)]


async def test_1000_concurrent_holds_against_100_hold_exactly_100_and_settle_once() -> None:
    root = tid()
    outcomes = await asyncio.to_thread(run_in_processes, "hold", root, 1000)
    hold_ids = {hold_id for status, _, hold_id in outcomes if status == "allowed"}
    assert len(hold_ids) == 100 and None not in hold_ids
    assert await inspect(root, ("root",)) == [(0, 100)]
    store = RedisStore(NodeRunner(REDIS_URL))
    try:  # every hold settled twice at once: the second of each is an idempotent answer
        states = await asyncio.gather(*(store.settle(h, 1, T0) for h in sorted(hold_ids) * 2))
    finally:
        await store.close()
    assert {(s.state, s.amount) for s in states} == {("settled", 1)}
    assert await inspect(root, ("root",)) == [(100, 0)]


async def test_a_rate_of_10_admits_exactly_10_of_11_parallel_calls() -> None:
    root = tid()
    outcomes = await asyncio.to_thread(run_in_processes, "rate", root, 11)
    assert sorted(status for status, _, _ in outcomes) == ["allowed"] * 10 + ["rate_limited"]


async def test_50_parallel_retries_of_one_request_charge_once() -> None:
    root = tid()
    outcomes = await asyncio.to_thread(run_in_processes, "idempotent", root, 50)
    assert {status for status, _, _ in outcomes} == {"allowed"}
    assert sum(not replayed for _, replayed, _ in outcomes) == 1
    assert await inspect(root, ("b",)) == [(3, 0)]


async def test_settle_and_release_racing_on_each_hold_close_it_exactly_once() -> None:
    """For each of 100 holds a settle and a release at once: one wins, the other is a Conflict, never both."""
    root = tid()
    store = RedisStore(NodeRunner(REDIS_URL))
    try:
        holds = await asyncio.gather(
            *(store.decide(decision(root, 3, budgets=(budget("b", 300),), mode="hold")) for _ in range(100))
        )
        ids = [h.hold_id for h in holds if h.hold_id is not None]
        assert len(ids) == 100
        calls = [c for h in ids for c in (store.settle(h, 2, T0), store.release(h, T0))]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await store.close()
    settled = 0
    for settle, release in zip(results[::2], results[1::2], strict=True):
        kinds = {type(settle).__name__, type(release).__name__}
        assert kinds == {"HoldState", "Conflict"}, (settle, release)
        settled += isinstance(settle, HoldState)
    assert await inspect(root, ("b",)) == [(2 * settled, 0)]
