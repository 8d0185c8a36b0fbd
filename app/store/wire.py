"""A Redis connection for pipelines: one write per pipeline, its replies handed over in the callback that reads them.

redis-py's asyncio connection reads through a StreamReader: the bytes arrive in a protocol callback, which wakes the
task waiting in read_response one event-loop turn later, and only then can that task wake the callers, one more turn
later. Under load a turn handles many requests, so every crossing shows in the p99. Here `data_received` feeds
hiredis (the C parser redis-py itself uses) and, as soon as a pipeline's last reply is in, calls that pipeline's
`answer` with its replies: the callers resume in the very next turn.

The connection is opened as redis-py would open it from the same URL (host, port, TLS context, AUTH, SELECT,
CLIENT SETNAME) and knows nothing else of Redis: no retries, no timeouts of its own. The caller (app/store/runner.py
Connections) bounds each round trip and drops the connection on any doubt.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

import hiredis
from redis._parsers import BaseParser
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse

from app.store.batcher import Answer

Arg = str | bytes | int  # bytes as they are, text as UTF-8, an integer in decimal
Command = tuple[Arg, ...]
_MORE = object()  # what the reader gives back until a whole reply is in


def pack(command: Command) -> bytes:
    """A command as Redis reads it (RESP): an array of bulk strings. Packed by the caller, in its own task: a call
    that cannot be packed fails alone, never the pipeline it would have joined."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif type(arg) is int:  # not a bool, not a float that %d would cut
            data = b"%d" % arg
        else:
            raise TypeError(f"a script argument is text, bytes or an integer, not {type(arg).__name__}")
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


@dataclass
class _Pipeline:
    count: int  # replies it waits for
    answer: Answer
    done: asyncio.Future[None]
    replies: list[Any] = field(default_factory=list)


class Wire(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # An error reply as redis-py reads it (NOSCRIPT, MOVED, ASK, TRYAGAIN... as its exception classes, which the
        # runners test for), by the parser its own connections use; pinned with redis-py's major version.
        self.reader = hiredis.Reader(
            encoding="utf-8", replyError=BaseParser.parse_error, protocolError=InvalidResponse, notEnoughData=_MORE
        )
        self.waiting: deque[_Pipeline] = deque()

    @property
    def is_connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one without deriving from it

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = self.reader.gets()
            except Exception as e:  # not RESP, or not text: nothing after it can be trusted
                self._fail(e if isinstance(e, InvalidResponse) else InvalidResponse(f"unreadable reply: {e}"))
                return
            if reply is _MORE:  # not False, which is also a RESP3 boolean
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self._fail(InvalidResponse("a reply with no command waiting for it"))
                return
            pipeline = waiting[0]
            pipeline.replies.append(reply)
            if len(pipeline.replies) == pipeline.count:
                waiting.popleft()
                try:
                    pipeline.answer(pipeline.replies)
                except Exception as e:  # the caller's reading of the replies failed: its round trip failed
                    _settle(pipeline.done, e)
                else:
                    _settle(pipeline.done, None)

    def connection_lost(self, exc: Exception | None) -> None:
        error = RedisConnectionError("connection to the counter store lost")
        while self.waiting:
            _settle(self.waiting.popleft().done, error)

    def _fail(self, error: Exception) -> None:
        while self.waiting:
            _settle(self.waiting.popleft().done, error)
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def disconnect(self) -> None:
        """Close once what was written is sent (the runner's close(), after every round trip has ended)."""
        if self.transport is not None:
            self.transport.close()

    def start(self, commands: list[bytes], answer: Answer) -> asyncio.Future[None]:
        """Write the packed `commands` now, in one write; `answer` gets their replies, in order, from the callback
        that reads the last one (an error reply is that command's reply, an exception object). The future is done
        after that, or fails if the connection is lost first or `answer` raises."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            done.set_exception(RedisConnectionError("connection to the counter store closed"))
            return done
        self.waiting.append(_Pipeline(len(commands), answer, done))
        self.transport.write(b"".join(commands))
        return done


async def open_wire(kind: type[AbstractConnection], kwargs: dict[str, Any]) -> Wire:
    """A connection as redis-py's `kind(**kwargs)` would make it: its TLS context, its TCP keepalive (a peer gone
    without a word is found in about 45 s, not at the next pipeline's timeout), then AUTH, SELECT, CLIENT SETNAME."""
    like: Any = kind(**kwargs)  # redis-py's reading of the URL's options; never connected itself
    ssl = like.ssl_context.get() if isinstance(like, SSLConnection) else None
    transport, wire = await asyncio.get_running_loop().create_connection(Wire, kwargs["host"], kwargs["port"], ssl=ssl)
    try:
        sock = transport.get_extra_info("socket")
        if sock is not None and like.socket_keepalive:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for option, value in like.socket_keepalive_options.items():
                sock.setsockopt(socket.SOL_TCP, option, value)
        hello: list[bytes] = []
        username, password = str(kwargs.get("username") or ""), str(kwargs.get("password") or "")
        if username or password:  # as redis-py: AUTH [username] password
            hello.append(pack(("AUTH", username, password) if username else ("AUTH", password)))
        if kwargs.get("db"):
            hello.append(pack(("SELECT", int(kwargs["db"]))))
        if kwargs.get("client_name"):
            hello.append(pack(("CLIENT", "SETNAME", kwargs["client_name"])))
        if hello:
            replies: list[Any] = []
            await wire.start(hello, replies.extend)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
    except BaseException:
        wire.abort()
        raise
    return wire


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
