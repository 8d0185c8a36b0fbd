"""The pipeline connection (app/store/wire.py) against a hostile server of the test's own: replies cut into single
bytes, two pipelines' replies in one segment, error replies, bytes that are not RESP or not text, replies nobody
asked for, a connection cut between two replies, and a caller whose reading of its replies raises.
What a real Redis does through it is the stores' tests (and test_faults.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError

from app.store.wire import Wire, open_wire, pack

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Wire]]]:
    """Start a server that runs `handler` for the connection, and return a Wire connected to it."""
    servers: list[asyncio.Server] = []
    wires: list[Wire] = []
    ends: list[asyncio.StreamWriter] = []  # the server's ends, open until the test is over

    async def start(handler: Handler) -> Wire:
        async def kept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            ends.append(writer)
            await handler(reader, writer)

        server = await asyncio.start_server(kept, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        wire = await open_wire(Connection, {"host": "127.0.0.1", "port": port})
        wires.append(wire)
        return wire

    yield start
    for wire in wires:
        wire.abort()
    for end in ends:
        end.close()
    for server in servers:
        server.close()
        await server.wait_closed()


def collect() -> tuple[list[list[Any]], Callable[[list[Any]], None]]:
    answers: list[list[Any]] = []
    return answers, answers.append


async def test_replies_cut_into_single_bytes_are_one_answer(serve: Callable[[Handler], Awaitable[Wire]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        for byte in b"+PONG\r\n$5\r\nhello\r\n*2\r\n:1\r\n$0\r\n\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.001)

    wire = await serve(handler)
    answers, answer = collect()
    await wire.start([pack(("PING",)), pack(("GET", "a")), pack(("X",))], answer)
    assert answers == [["PONG", "hello", [1, ""]]]


async def test_two_pipelines_replies_in_one_segment_answer_each_in_order(
    serve: Callable[[Handler], Awaitable[Wire]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = b""
        while seen.count(b"*1\r\n") < 3:
            seen += await reader.read(1024)
        writer.write(b"+one\r\n+two\r\n+three\r\n")

    wire = await serve(handler)
    answers, answer = collect()
    first = wire.start([pack(("A",)), pack(("B",))], answer)
    second = wire.start([pack(("C",))], answer)
    await asyncio.gather(first, second)
    assert answers == [["one", "two"], ["three"]]


async def test_an_error_reply_is_that_commands_reply_alone(serve: Callable[[Handler], Awaitable[Wire]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"-NOSCRIPT No matching script. Please use EVAL.\r\n+OK\r\n")

    wire = await serve(handler)
    answers, answer = collect()
    await wire.start([pack(("EVALSHA", "x", 0)), pack(("SET", "a", "b"))], answer)
    assert isinstance(answers[0][0], NoScriptError) and answers[0][1] == "OK"
    assert wire.is_connected


@pytest.mark.parametrize(
    ("sent", "match"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "Protocol error"),  # not RESP at all
        (b"$2\r\n\xff\xfe\r\n", "unreadable reply"),  # RESP, but not UTF-8 text
    ],
    ids=["not-resp", "not-text"],
)
async def test_a_reply_that_cannot_be_read_fails_the_round_trip_and_drops_the_connection(
    serve: Callable[[Handler], Awaitable[Wire]], sent: bytes, match: str
) -> None:
    """An InvalidResponse, a RedisError: the runners say unavailable. Nothing after such bytes can be trusted."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(sent)

    wire = await serve(handler)
    answers, answer = collect()
    with pytest.raises(InvalidResponse, match=match):
        await wire.start([pack(("GET", "a"))], answer)
    assert answers == [] and not wire.is_connected


async def test_an_answer_that_raises_fails_its_own_round_trip_and_the_next_is_read_in_step(
    serve: Callable[[Handler], Awaitable[Wire]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"+first\r\n")
        await reader.read(1024)
        writer.write(b"+second\r\n")

    def refuse(replies: list[Any]) -> None:
        raise ValueError(f"cannot read {replies}")

    wire = await serve(handler)
    with pytest.raises(ValueError, match="cannot read"):
        await wire.start([pack(("A",))], refuse)
    answers, answer = collect()
    await wire.start([pack(("B",))], answer)
    assert answers == [["second"]] and wire.is_connected


async def test_a_reply_nobody_asked_for_drops_the_connection(serve: Callable[[Handler], Awaitable[Wire]]) -> None:
    """An out-of-step stream would answer the next pipeline with an earlier command's reply: never used."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+allowed\r\n")  # before any command
        await reader.read(1024)

    wire = await serve(handler)
    for _ in range(100):
        if not wire.is_connected:
            break
        await asyncio.sleep(0.01)
    answers, answer = collect()
    with pytest.raises(RedisConnectionError):
        await wire.start([pack(("PING",))], answer)
    assert answers == []


async def test_a_connection_cut_between_two_replies_answers_nothing(
    serve: Callable[[Handler], Awaitable[Wire]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"+first\r\n")
        await writer.drain()
        writer.close()

    wire = await serve(handler)
    answers, answer = collect()
    with pytest.raises(RedisConnectionError):
        await wire.start([pack(("A",)), pack(("B",))], answer)
    assert answers == []  # half a pipeline's replies are no answer: its calls stay in doubt, as the runner says


async def test_a_false_reply_is_a_reply_not_a_wait_for_more(serve: Callable[[Handler], Awaitable[Wire]]) -> None:
    """hiredis gives back False for a RESP3 boolean false and, by default, for "not a whole reply yet": the wire
    tells them apart, so such a reply never stalls its pipeline and the ones after it."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"#f\r\n+OK\r\n")

    wire = await serve(handler)
    answers, answer = collect()
    await asyncio.wait_for(wire.start([pack(("A",)), pack(("B",))], answer), 1)
    assert answers == [[False, "OK"]]
