"""Every store contract test runs on each backend of BACKENDS: memory, local (in a fresh data dir of its own), a
real Redis and a real Redis Cluster (the documented semantics, not fakes). A backend is tested by being listed there.

Redis is the shared one on 127.0.0.1:6379, database 5 (AGENTCAPS_TEST_STORE_REDIS): not one of the databases
tests/api claims and flushes (12..7). Nothing here flushes a database, so several runs can share it: every
test works on fresh random root ids, and the keys of those roots are deleted after the test. The cluster is the
session's own (tests/conftest.py `cluster`), started when the first test on it runs, and thrown away at the end.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis

from app.store.base import KEEP_A_WEEK, ApprovalSpec, Attempt, AuditPolicy, BudgetSpec, RateSpec, Store, Trail
from app.store.local import LocalStore
from app.store.memory import MemoryStore
from app.store.redis import RedisStore
from app.store.redis_cluster import ClusterRunner
from app.store.runner import NodeRunner
from app.store.scripts import base_key
from tests.processes import Cluster

REDIS_URL = os.environ.get("AGENTCAPS_TEST_STORE_REDIS", "redis://127.0.0.1:6379/5")
T0 = 1_800_000_000_000  # now_ms at the start of most tests: a fixed instant, so every number is exact
USD = 1_000_000  # micro-units per unit
BIG = 999_999_999_999_999_999  # 999999999999.999999 units: the largest amount the caveat language allows

_issued: list[str] = []  # root ids handed out during the current test, whose Redis keys are deleted after it


def tid() -> str:
    """A fresh root token id (32 hex digits, as hold ids require)."""
    token_id = secrets.token_hex(16)
    _issued.append(token_id)
    return token_id


def real_ms() -> int:
    """The wall clock, for the few tests about Redis's own TTLs, which it runs on its own clock."""
    return int(time.time() * 1000)


@pytest.fixture(autouse=True)
def _forget_roots() -> Iterator[None]:
    _issued.clear()
    yield
    if not _issued:
        return
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        for token_id in _issued:
            keys = list(client.scan_iter(match=f"ac:{{{token_id}}}*", count=1000))
            if keys:
                client.delete(*keys)
    except redis.ConnectionError:
        pass  # a test about an unreachable store; nothing was written
    finally:
        client.close()
        _issued.clear()


BACKENDS = ["memory", "local", "redis", "redis+cluster"]
REDIS_BACKENDS = ["redis", "redis+cluster"]  # for the tests about Redis's own keys


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Opener = Callable[..., Store]
RedisOf = Callable[[str], redis.Redis]


@pytest.fixture
def open_backend(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    """Opens a client of this test's store, `timeout` seconds for Redis: every client of a Redis backend shares its
    counters; memory:// and local:// are one store each, so open them once."""

    def open_store(timeout: float = 1.0, audit: AuditPolicy = KEEP_A_WEEK) -> Store:
        if backend == "memory":
            return MemoryStore(audit)
        if backend == "local":
            return LocalStore(tmp_path / "local", audit=audit)
        if backend == "redis":
            return RedisStore(NodeRunner(REDIS_URL, timeout), audit)
        return RedisStore(ClusterRunner(request.getfixturevalue("cluster").url, timeout), audit)

    return open_store


@pytest.fixture
async def store(open_backend: Opener) -> AsyncIterator[Store]:
    s = open_backend()
    yield s
    await s.close()


@pytest.fixture
def redis_of(backend: str, request: pytest.FixtureRequest) -> RedisOf:
    """`redis_of(root)`: a client of the Redis that holds the root's keys (the one Redis, or its slot's master)."""

    def connect(token_id: str) -> redis.Redis:
        if backend == "redis":
            return redis.Redis.from_url(REDIS_URL, decode_responses=True)
        cluster: Cluster = request.getfixturevalue("cluster")
        return cluster.node_of_key(base_key(token_id))

    return connect


def decision(
    token_id: str,
    cost: int = 0,
    *,
    budgets: tuple[BudgetSpec, ...] = (),
    rates: tuple[RateSpec, ...] = (),
    revocation: tuple[str, ...] = ("p0",),
    now: int = T0,
    mode: str = "charge",
    hold_ttl_ms: int = 300_000,
    request_id: str | None = None,
    fingerprint: str = "",
    approval: ApprovalSpec | None = None,
    trail: Trail | None = None,
) -> Attempt:
    return Attempt(
        token_id=token_id,
        now_ms=now,
        call_id=secrets.token_hex(16),
        revocation=revocation,
        rates=rates,
        budgets=budgets,
        cost=cost,
        currency="USD",
        mode=mode,  # type: ignore[arg-type]
        hold_ttl_ms=hold_ttl_ms,
        request_id=request_id,
        fingerprint=fingerprint,
        approval=approval,
        trail=trail,
    )


def budget(prefix: str, limit: int, charge: bool = True) -> BudgetSpec:
    return BudgetSpec(prefix, limit, charge, 0)
