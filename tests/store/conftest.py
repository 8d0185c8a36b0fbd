"""Every store contract test runs on each backend: memory and a real Redis (SPEC semantics, not fakes)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest

from app.store.base import BudgetSpec, Decision, RateSpec, Store
from app.store.memory import MemoryStore
from app.store.redis import RedisStore

REDIS_URL = os.environ.get("AGENTCAPS_TEST_STORE_REDIS", "redis://127.0.0.1:6379/5")
T0 = 1_800_000_000_000  # now_ms at the start of every test


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else RedisStore(REDIS_URL)
    yield s
    await s.close()


def tid() -> str:
    return secrets.token_hex(16)  # a fresh root per test: nothing shared with other runs


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
) -> Decision:
    return Decision(
        token_id=token_id,
        now_ms=now,
        call_id=secrets.token_hex(16),
        revocation=revocation,
        rates=rates,
        budgets=budgets,
        cost=cost,
        currency="USD",
        mode=mode,
        hold_ttl_ms=hold_ttl_ms,  # type: ignore[arg-type]
        request_id=request_id,
        fingerprint=fingerprint,
    )


def budget(prefix: str, limit: int, charge: bool = True) -> BudgetSpec:
    return BudgetSpec(prefix, limit, charge, 0)
