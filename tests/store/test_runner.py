"""How a call reaches Redis (app/store/runner.py): packed by its caller, so one that cannot be packed fails alone and
never the pipeline it would have joined; packed exactly as Redis reads it."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from app.store.redis import RedisStore
from app.store.runner import NodeRunner
from app.store.scripts import SCRIPTS
from app.store.wire import pack
from tests.store.conftest import REDIS_URL, budget, decision, tid


def test_commands_are_packed_as_redis_reads_them() -> None:
    assert pack(("EVALSHA", "ab", 1, "ac:{x}", "é\n,")) == (
        b"*5\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$6\r\nac:{x}\r\n$4\r\n\xc3\xa9\n,\r\n"
    )
    assert pack(("X", -5, "")) == b"*3\r\n$1\r\nX\r\n$2\r\n-5\r\n$0\r\n\r\n"
    assert pack(("X", b"\x00\r\n\xff")) == b"*2\r\n$1\r\nX\r\n$4\r\n\x00\r\n\xff\r\n"  # bytes as they are


@pytest.mark.parametrize("arg", [1.5, True, None, bytearray(b"raw")], ids=["float", "bool", "none", "bytearray"])
def test_only_text_bytes_and_integers_are_arguments(arg: object) -> None:
    with pytest.raises(TypeError, match="text, bytes or an integer"):
        pack(("EVALSHA", arg))  # type: ignore[arg-type]


async def test_a_call_that_cannot_be_packed_fails_alone() -> None:
    store = RedisStore(NodeRunner(REDIS_URL))
    root = tid()
    try:
        # All submitted in one turn: without packing first, they would share one pipeline.
        charges = [store.decide(decision(root, 1, budgets=(budget("b", 10),))) for _ in range(5)]
        bad = store.runner.run(SCRIPTS["lookup"], root, (1.5, "x", ""))  # type: ignore[arg-type]
        results = await asyncio.gather(*charges, bad, return_exceptions=True)
        assert isinstance(results[-1], TypeError)
        assert [r.status for r in results[:-1]] == ["allowed"] * 5  # type: ignore[union-attr]
    finally:
        await store.close()


def test_pipelines_run_on_uvloop_as_the_service_serves_them() -> None:
    """uvicorn runs the service on uvloop, whose transports are not asyncio.Transport subclasses: the connections of
    app/store/wire.py must work there as on asyncio's own loop (a first version refused them, every call a 503)."""

    async def charges() -> list[str]:
        store = RedisStore(NodeRunner(REDIS_URL))
        root = tid()
        try:
            outcomes = await asyncio.gather(
                *(store.decide(decision(root, 1, budgets=(budget("b", 3),))) for _ in range(4))
            )
            return [o.status for o in outcomes]
        finally:
            await store.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert sorted(runner.run(charges())) == ["allowed"] * 3 + ["budget_exceeded"]


@pytest.mark.parametrize(("query", "keepalive"), [("", 1), ("?socket_keepalive=false", 0)])
def test_pipeline_connections_keep_tcp_alive_as_redis_py_does(query: str, keepalive: int) -> None:
    """A peer gone without a word (a host down, a dropped NAT entry) is found by TCP keepalive, as on redis-py's own
    connections, rather than by the next pipeline waiting out its timeout; the URL can turn it off, as there."""

    async def options() -> tuple[int, int]:
        runner = NodeRunner(REDIS_URL.split("?")[0] + query)
        store = RedisStore(runner)
        try:
            await store.decide(decision(tid(), 1, budgets=(budget("b", 3),)))
            sock = runner.connections._made[0].transport.get_extra_info("socket")  # type: ignore[union-attr]
            return sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), sock.getsockopt(
                socket.SOL_TCP, socket.TCP_KEEPIDLE
            )
        finally:
            await store.close()

    for loop_factory in (asyncio.new_event_loop, uvloop.new_event_loop):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            on, idle = runner.run(options())
        assert on == keepalive
        if keepalive:
            assert idle == 30  # redis-py's default keepalive options
