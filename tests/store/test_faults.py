"""Fail closed: every way Redis can fail or refuse is StoreUnavailable, never an allow, and the store recovers.

A small TCP proxy sits between the store and the real Redis and can drop the connection mid-request, hold a
reply past the timeout, or answer a script call with a Redis error line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis

from app.errors import StoreUnavailable
from app.store.redis import RedisStore
from tests.processes import RedisServer, free_port
from tests.store.conftest import budget, decision, tid


class Proxy:
    """Forwards to Redis on 6379 unless told to `drop`, `stall`, or answer scripts with an `error` line."""

    def __init__(self) -> None:
        self.mode = "forward"
        self.error = b""
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/5"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)

        async def upstream_to_client() -> None:
            while data := await up_reader.read(65536):
                while self.mode == "stall":
                    await asyncio.sleep(0.05)
                writer.write(data)
                await writer.drain()

        back = asyncio.create_task(upstream_to_client())
        try:
            while data := await reader.read(65536):
                if b"EVALSHA" in data.upper():
                    if self.mode == "drop":
                        break
                    if self.mode == "error":
                        writer.write(self.error * data.upper().count(b"EVALSHA"))
                        await writer.drain()
                        continue
                up_writer.write(data)
                await up_writer.drain()
        finally:
            back.cancel()
            with contextlib.suppress(Exception):
                writer.close()
                up_writer.close()
            self.tasks.discard(task)


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    p = Proxy()
    await p.start()
    yield p
    await p.stop()


async def charge(store: RedisStore) -> str:
    outcome = await store.decide(decision(tid(), 1, budgets=(budget("b", 10),)))
    return outcome.status


async def test_connection_refused_is_unavailable() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/5", timeout=0.2)
    with pytest.raises(StoreUnavailable):
        await charge(store)
    await store.close()


async def test_a_reply_that_never_comes_is_unavailable_within_the_timeout(proxy: Proxy) -> None:
    store = RedisStore(proxy.url, timeout=0.2)
    assert await charge(store) == "allowed"
    proxy.mode = "stall"
    started = asyncio.get_running_loop().time()
    with pytest.raises(StoreUnavailable):
        await charge(store)
    assert asyncio.get_running_loop().time() - started < 1.5
    proxy.mode = "forward"
    assert await charge(store) == "allowed"  # recovers by itself on a new connection
    await store.close()


async def test_a_connection_dropped_mid_request_is_unavailable_then_recovers(proxy: Proxy) -> None:
    store = RedisStore(proxy.url, timeout=0.5)
    proxy.mode = "drop"
    with pytest.raises(StoreUnavailable):
        await charge(store)
    proxy.mode = "forward"
    assert await charge(store) == "allowed"
    await store.close()


@pytest.mark.parametrize(
    "line",
    [
        b"-BUSY Redis is busy running a script\r\n",
        b"-LOADING Redis is loading the dataset in memory\r\n",
        b"-READONLY You can't write against a read only replica.\r\n",
        b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
        b"-CLUSTERDOWN The cluster is down\r\n",
        b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
        b"-MASTERDOWN Link with MASTER is down\r\n",
        b"-ERR something unexpected\r\n",
    ],
    ids=lambda line: line.split()[0][1:].decode(),
)
async def test_redis_errors_are_unavailable_never_allowed(proxy: Proxy, line: bytes) -> None:
    store = RedisStore(proxy.url, timeout=0.5)
    proxy.mode, proxy.error = "error", line
    with pytest.raises(StoreUnavailable):
        await charge(store)
    proxy.mode = "forward"
    assert await charge(store) == "allowed"
    await store.close()


async def test_a_flushed_script_cache_is_reloaded_transparently(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    root = tid()
    levels = (budget("b", 10),)
    assert (await store.decide(decision(root, 4, budgets=levels))).status == "allowed"
    redis.Redis(port=redis_server.port).script_flush()
    again = await store.decide(decision(root, 4, budgets=levels))
    assert (again.status, again.balances) == ("allowed", [(8, 0)])  # ran exactly once after the reload
    await store.close()
