"""A Redis killed in the middle of a run (kill -9, AOF with appendfsync always) loses no acknowledged event: each
event is written by the script that decides, so an answer the caller got is on disk with its event."""

from __future__ import annotations

import asyncio
import itertools

from app.errors import StoreUnavailable
from app.store.base import Trail
from app.store.redis import RedisStore
from app.store.runner import NodeRunner
from tests.processes import RedisServer
from tests.store.conftest import USD, budget, decision, real_ms, tid


async def test_a_redis_killed_mid_run_loses_no_acknowledged_event(redis_server: RedisServer) -> None:
    store = RedisStore(NodeRunner(redis_server.url, 1.0))
    root = tid()
    numbers = itertools.count()
    acknowledged: list[int] = []

    async def caller() -> None:
        while True:
            n = next(numbers)
            trail = Trail(f'"token_id":"{root}","n":{n}')
            attempt = decision(root, 1, budgets=(budget("b", 10**6 * USD),), now=real_ms(), trail=trail)
            try:
                outcome = await store.decide(attempt)
            except StoreUnavailable:
                return
            assert outcome.status == "allowed"
            acknowledged.append(n)

    callers = [asyncio.create_task(caller()) for _ in range(8)]
    await asyncio.sleep(0.5)
    redis_server.kill()  # SIGKILL, in the middle of the callers' calls
    await asyncio.gather(*callers)
    await store.close()
    assert len(acknowledged) > 50  # the run did run

    redis_server.start()  # the same data dir: Redis replays its AOF
    store = RedisStore(NodeRunner(redis_server.url, 1.0))
    try:
        kept = await store.audit_events(root, None, "0", 100_000)
        spent = (await store.inspect(root, ("p0",), ("b",), real_ms())).balances[0][0]
    finally:
        await store.close()
    logged = {int(raw.split('"n":')[1].split(",")[0].rstrip("}")) for _, _, raw in kept}
    assert set(acknowledged) <= logged  # every answered call has its event; a call killed unanswered may too
    assert len(logged) <= len(acknowledged) + 8  # and no event of a call that did not happen: at most those in flight
    assert spent == len(kept) == len(logged)  # each charge (1 micro-unit) with its event, each event with its charge
