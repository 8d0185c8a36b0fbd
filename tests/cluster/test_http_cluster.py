"""`serve` processes on the cluster store: several services share keys and budgets, and under 2000 concurrent
spends from 4 client processes every root stops at exactly its budget, on every master."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from typing import Any

import httpx
from redis.crc import key_slot

from app.store.scripts import base_key
from app.token.keys import KeyRing, new_key_entry
from tests.cluster.conftest import mint, spent
from tests.processes import Cluster

ROOTS_PER_MASTER = 4
SPENDS = 2000


def _spender(jobs: list[tuple[str, str]], concurrency: int, out: Any) -> None:
    async def run() -> Counter[tuple[str, int]]:
        answers: Counter[tuple[str, int]] = Counter()
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:

            async def one(url: str, token: str) -> None:
                async with sem:
                    body = {"token": token, "tool": "search", "cost": {"amount": "1", "currency": "USD"}}
                    r = await client.post(url + "/v1/verify", json=body)
                    answers[(token, r.status_code)] += 1

            await asyncio.gather(*(one(url, token) for url, token in jobs))
        return answers

    out.put(dict(asyncio.run(run())))


def test_2000_concurrent_spends_through_2_services_stop_every_root_at_exactly_its_budget(
    cluster: Cluster, service_factory: Any
) -> None:
    ring = KeyRing(new_key_entry())
    a = service_factory(cluster.url, workers=2, ring=ring)
    b = service_factory(cluster.url, workers=2, ring=ring)
    masters = cluster.masters()
    # Roots of 100 USD, the same number on every master (so every shard of the cluster is under load).
    by_master: dict[int, list[str]] = {port: [] for port in masters}
    while any(len(tokens) < ROOTS_PER_MASTER for tokens in by_master.values()):
        token, token_id = mint(a, budget={"amount": "100", "currency": "USD"})
        tokens = by_master[cluster.node_of_slot(key_slot(base_key(token_id).encode()))]
        if len(tokens) < ROOTS_PER_MASTER:
            tokens.append(token)
    roots = [t for tokens in by_master.values() for t in tokens]
    # 2000 spends, each root tried 2000/12 times (> 100), alternately through both services, from 4 processes.
    jobs = [((a.url, b.url)[n % 2], roots[n % len(roots)]) for n in range(SPENDS)]
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_spender, args=(jobs[i::4], 25, queue)) for i in range(4)]
    for w in workers:
        w.start()
    answers: Counter[tuple[str, int]] = Counter()
    for _ in workers:
        answers.update(queue.get(timeout=300))
    for w in workers:
        w.join(10)
    assert sum(answers.values()) == SPENDS
    assert {status for _, status in answers} <= {200, 403}, answers
    for token in roots:
        assert answers[(token, 200)] == 100, answers
        assert spent(a.url, token) == spent(b.url, token) == ["100.00"]


def test_services_with_the_same_master_keys_accept_each_others_tokens_and_share_budgets(
    cluster: Cluster, service_factory: Any
) -> None:
    ring = KeyRing(new_key_entry())
    a = service_factory(cluster.url, ring=ring)
    b = service_factory(cluster.url, ring=ring)
    stranger = service_factory(cluster.url)  # other master keys: the same counters, but not the same tokens
    token, _ = mint(b, budget={"amount": "5", "currency": "USD"})
    body = {"token": token, "tool": "search", "cost": {"amount": "2", "currency": "USD"}}
    assert httpx.post(a.url + "/v1/verify", json=body).status_code == 200
    assert httpx.post(b.url + "/v1/verify", json=body).status_code == 200
    r = httpx.post(a.url + "/v1/verify", json=body)
    assert r.status_code == 403 and r.json()["code"] == "budget_exceeded"
    assert spent(a.url, token) == spent(b.url, token) == ["4.00"]
    r = httpx.post(stranger.url + "/v1/verify", json=body)
    assert r.status_code == 403 and r.json()["code"] == "invalid_token"
