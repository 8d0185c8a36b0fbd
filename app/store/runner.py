"""How RedisStore's scripts reach Redis: a Runner sends each call through one Batcher and fails closed on doubt.

`NodeRunner` serves `redis://` and `rediss://` (one Redis); `ClusterRunner` (app/store/redis_cluster.py) serves
`redis+cluster://`. Both call a script the same way (Script.command), send each pipeline the same way (exchange: one
write, the replies in order, one deadline, on a redis-py connection), reload a script on NOSCRIPT by a SCRIPT LOAD
sent through the same batcher, and answer StoreUnavailable for anything that leaves doubt.

Retries are off: a timeout after a script ran would charge twice on retry. Clients retry with a `request_id`
instead, which makes the second attempt return the first answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from app.errors import StoreUnavailable
from app.store.batcher import Batcher
from app.store.scripts import Script


class Runner(Protocol):
    async def run(self, script: Script, token_id: str, args: tuple[str | int, ...]) -> Any:
        """The script's reply; StoreUnavailable when the store cannot say for sure."""

    async def ready(self) -> str | None:
        """Why the store is not ready, or None."""

    async def listener(self) -> Redis:
        """A client of its own for SUBSCRIBE, without a read timeout (it waits for messages), on a node that hears
        every PUBLISH (on a cluster any node: PUBLISH reaches all). The caller closes it."""

    async def close(self) -> None:
        """Calls not yet sent fail closed; those on the wire are awaited; then the connections close."""


def unavailable(e: RedisError | OSError) -> StoreUnavailable:
    if isinstance(e, RedisError):
        return StoreUnavailable(f"counter store error: {type(e).__name__}")
    return StoreUnavailable(f"counter store unreachable: {type(e).__name__}")


async def eviction_risk(name: str, info: Awaitable[Any]) -> str | None:
    """Why counters on this node may vanish, or what could not be checked; None when its policy is noeviction.

    The policy comes from INFO memory, which least-privilege ACL users and managed Redis allow where CONFIG GET is
    denied. A node that refuses INFO too still answers: say that the policy is unchecked, not that it is
    unreachable. Errors of the connection itself propagate (the caller says unreachable).
    """
    try:
        reply = await info
    except ResponseError as e:  # an answer all the same: INFO denied (NOPERM) or renamed
        why = f"INFO memory: {type(e).__name__}"
        return f"{name} answers, but its maxmemory-policy could not be checked ({why}); it must be noeviction"
    policy = reply.get("maxmemory_policy") if isinstance(reply, dict) else None
    if policy is None:
        return f"{name} answers, but INFO memory gives no maxmemory_policy to check; it must be noeviction"
    if policy != "noeviction":
        return f"{name} has maxmemory-policy {policy}; it must be noeviction or counters may vanish"
    return None


Command = tuple[str | int, ...]


def pack(command: Command) -> bytes:
    """A command as Redis reads it (RESP): an array of bulk strings. Packed by the caller, in its own task: a call
    that cannot be packed fails alone, never the pipeline it would have joined."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        if isinstance(arg, str):
            data = arg.encode()
        elif type(arg) is int:  # not a bool, not a float that %d would cut
            data = b"%d" % arg
        else:
            raise TypeError(f"a script argument is text or an integer, not {type(arg).__name__}")
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


async def exchange(connection: AbstractConnection, commands: list[bytes], timeout: float) -> list[Any]:
    """One round trip: every command (packed) in one write, then each one's reply, in order; an error reply is that
    command's reply alone. One deadline for the whole of it, where redis-py's own pipeline paid a timer per reply
    and a task per write. Past the deadline, or on any failure, the connection is dropped (replies still on their
    way would answer the next round trip's commands), and the exception leaves every command in doubt."""
    try:
        async with asyncio.timeout(timeout):
            await connection.send_packed_command(b"".join(commands), False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as e:  # NOSCRIPT, MOVED, a script's error: one command's reply
                    replies.append(e)
            return replies
    except BaseException:
        await connection.disconnect(nowait=True)
        raise


class Connections:
    """The connections a runner sends its pipelines on: one per pipeline on the wire (at most MAX_IN_FLIGHT per
    destination, app/store/batcher.py), made as the client makes its own (URL, TLS, credentials) but without its
    per-read socket timeout and without retries: exchange() gives each round trip its deadline."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._idle: dict[str, list[AbstractConnection]] = {}  # by destination
        self._made: list[AbstractConnection] = []

    async def send(
        self, where: str, kind: type[AbstractConnection], kwargs: dict[str, Any], commands: list[bytes]
    ) -> list[Any]:
        idle = self._idle.setdefault(where, [])
        connection = idle.pop() if idle else self._make(kind, kwargs)
        try:
            return await exchange(connection, commands, self.timeout)
        finally:
            idle.append(connection)  # dropped on failure, it connects again when next used

    def _make(self, kind: type[AbstractConnection], kwargs: dict[str, Any]) -> AbstractConnection:
        connection = kind(**{**kwargs, "socket_timeout": None, "retry": Retry(NoBackoff(), 0)})
        self._made.append(connection)
        return connection

    async def close(self) -> None:
        for connection in self._made:
            await connection.disconnect()


class NodeRunner:
    """One Redis: every call goes into the one pipeline queue, sent on Connections of the runner's own."""

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.url, self.timeout = url, timeout
        self.client = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self.batcher: Batcher[Redis, bytes] = Batcher(self._send)
        self.connections = Connections(timeout)

    async def run(self, script: Script, token_id: str, args: tuple[str | int, ...]) -> Any:
        command = pack(script.command(token_id, args, cluster=False))
        try:  # inline, not a helper coroutine: this is the hot path, and every coroutine frame costs
            reply = await self.batcher.submit(self.client, command)
            if isinstance(reply, NoScriptError):
                # The script did not run (a restarted or failed-over Redis lost its cache): loading it is safe.
                loaded = await self.batcher.submit(self.client, pack(("SCRIPT", "LOAD", script.source(cluster=False))))
                reply = loaded if isinstance(loaded, Exception) else await self.batcher.submit(self.client, command)
        except (RedisError, OSError) as e:
            raise unavailable(e) from e
        if isinstance(reply, Exception):
            if isinstance(reply, RedisError | OSError):
                raise unavailable(reply) from reply
            raise reply
        return reply

    async def _send(self, client: Redis, batch: list[bytes]) -> list[Any]:
        pool = client.connection_pool
        return await self.connections.send("", pool.connection_class, pool.connection_kwargs, batch)

    async def listener(self) -> Redis:
        return Redis.from_url(self.url, socket_connect_timeout=self.timeout, decode_responses=True)

    async def ready(self) -> str | None:
        try:
            await self.client.ping()
            return await eviction_risk("Redis", self.client.info("memory"))
        except (RedisError, OSError) as e:
            return f"counter store unreachable: {type(e).__name__}"

    async def close(self) -> None:
        await self.batcher.close()  # first: nothing may open a connection after the client closes
        await self.connections.close()
        await self.client.aclose()
