"""Concurrent spenders on a real Redis, from several OS processes: never one unit over any limit."""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

from app.store.base import RateSpec
from app.store.redis import RedisStore
from tests.store.conftest import REDIS_URL, budget, decision, tid


def _spender(token_id: str, calls: int, out: Any) -> None:
    async def run() -> int:
        store = RedisStore(REDIS_URL)
        try:
            outcomes = await asyncio.gather(
                *(
                    store.decide(decision(token_id, 1, budgets=(budget("root", 100), budget("leaf", 1000))))
                    for _ in range(calls)
                )
            )
        finally:
            await store.close()
        return sum(o.status == "allowed" for o in outcomes)

    out.put(asyncio.run(run()))


async def test_1000_concurrent_spends_from_4_processes_allow_exactly_100() -> None:
    root = tid()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_spender, args=(root, 250, queue)) for _ in range(4)]
    for w in workers:
        w.start()
    allowed = sum(queue.get(timeout=60) for _ in workers)
    for w in workers:
        w.join(10)
    assert allowed == 100
    store = RedisStore(REDIS_URL)
    try:
        inspected = await store.inspect(root, (), ("root", "leaf"), 0)
    finally:
        await store.close()
    assert inspected.balances == [(100, 0), (100, 0)]


async def test_a_rate_of_10_admits_exactly_10_of_11_parallel_calls() -> None:
    store = RedisStore(REDIS_URL)
    try:
        root = tid()
        outcomes = await asyncio.gather(
            *(store.decide(decision(root, rates=(RateSpec("r", 10, 60_000),))) for _ in range(11))
        )
    finally:
        await store.close()
    assert sorted(o.status for o in outcomes) == ["allowed"] * 10 + ["rate_limited"]


async def test_50_parallel_retries_of_one_request_charge_once() -> None:
    store = RedisStore(REDIS_URL)
    try:
        root = tid()
        outcomes = await asyncio.gather(
            *(
                store.decide(decision(root, 3, budgets=(budget("b", 100),), request_id="same", fingerprint="f"))
                for _ in range(50)
            )
        )
        inspected = await store.inspect(root, (), ("b",), 0)
    finally:
        await store.close()
    assert {o.status for o in outcomes} == {"allowed"} and sum(not o.replayed for o in outcomes) == 1
    assert inspected.balances == [(3, 0)]
