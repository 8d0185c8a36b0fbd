"""What the verifier remembers is bounded by bytes (AGENTCAPS_CACHE_MB), however many distinct tokens arrive.

The attack: thousands of distinct tokens of about 15 KiB, each caveat a long list (every item a str of its own
once parsed), allowed and denied, sent over HTTP. The caches' accounted bytes stay within the configured total,
and the memory the process holds stops growing once the caches are full.
"""

from __future__ import annotations

import gc
import secrets
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar

import caveats.chain as chain_module
from app.api.app import create_app
from app.store.base import ChainSeen
from app.store.memory import MemoryStore
from app.token import codec
from app.token.mint import mint
from caveats import cache, registry
from tests.api.conftest import LOCATION, make_settings

CACHE_MB = 2


class KeepsNoLog(MemoryStore):
    """The counters without the audit log, whose growth is bounded by its own settings (tests/store/test_audit.py):
    what this test measures is the verifier's caches."""

    def _event(self, tid: str, now: int, event: str) -> None:
        return None

    def _see(self, tid: str, chain: ChainSeen) -> None:
        return None


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Litestar]:
    yield create_app(make_settings(tmp_path, AGENTCAPS_CACHE_MB=str(CACHE_MB)), store=KeepsNoLog())
    cache.configure(cache.DEFAULT_TOTAL_BYTES)  # the next app sets it again; tests in this process expect it


def hostile(app: Litestar, n: int) -> tuple[str, str]:
    """Token `n` (about 15 KiB) and the code verify answers: allowed, malformed_caveat, or invalid_token."""
    settings = app.state.authority
    tag = secrets.token_hex(4)
    lists = [f"tools in search,{tag}{k}," + ",".join(f"{j:03x}" for j in range(245)) for k in range(11)]
    caveats = ["delegate = orchestrator", "budget <= 100 USD", *lists]
    code = "allowed"
    if n % 3 == 1:  # a caveat that never parses: denied, yet a verified chain the verifier remembers
        caveats.append(f"arg.x = \x01{tag}")
        code = "malformed_caveat"
    token, _ = mint(settings.ring, LOCATION, caveats)
    if n % 3 == 2:  # a forged signature: refused before any caveat is read, remembered nowhere
        raw = codec.decode(token)
        token = codec.encode(raw._replace(signature=bytes(32)))
        code = "invalid_token"
    assert 14 * 1024 < len(token) <= 16 * 1024
    return token, code


def accounted(app: Litestar) -> int:
    """The bytes every cache this app's verifier uses accounts for."""
    caches = [
        app.state.authority.verifier.cache,
        registry._memo,
        chain_module._intersections,
    ]
    return sum(c.nbytes for c in caches)


async def send(app: Litestar, start: int, stop: int) -> None:
    """Over HTTP, in-process (the ASGI app itself, no thread between test and app)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agentcaps.test") as client:
        for n in range(start, stop):
            token, code = hostile(app, n)
            body = {"token": token, "tool": "search", "cost": {"amount": "0.01", "currency": "USD"}}
            answer = (await client.post("/v1/verify", json=body)).json()
            assert answer.get("code", "allowed") == code, answer
            assert accounted(app) <= CACHE_MB * cache.MIB


async def test_thousands_of_distinct_large_tokens_stay_within_the_cache_bytes(served: Litestar) -> None:
    assert cache.total_bytes() == CACHE_MB * cache.MIB
    await send(served, 0, 1200)
    assert accounted(served) > CACHE_MB * cache.MIB // 2  # the caches did fill: the bound is what held them
    gc.collect()
    tracemalloc.start()
    try:
        await send(served, 1200, 1450)
        gc.collect()
        after_1450 = tracemalloc.get_traced_memory()[0]
        await send(served, 1450, 2200)
        gc.collect()
        after_2200 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # Four times as many distinct tokens since tracing began, all past the bound: held memory about the same.
    assert after_2200 < 1.25 * after_1450 + 256 * 1024, (after_1450, after_2200)
