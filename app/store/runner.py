"""How RedisStore's scripts reach Redis: a Runner sends each call through one Batcher and fails closed on doubt.

`NodeRunner` serves `redis://` and `rediss://` (one Redis); `ClusterRunner` (app/store/redis_cluster.py) serves
`redis+cluster://`. Both call a script the same way (Script.command), send each pipeline the same way (Connections:
one write, the replies handed over as they are read, one deadline, on connections of app/store/wire.py), reload a
script on NOSCRIPT by a SCRIPT LOAD sent through the same batcher, and answer StoreUnavailable for anything that
leaves doubt.

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
from app.store.batcher import Answer, Batcher
from app.store.scripts import Script
from app.store.wire import Arg, Wire, open_wire, pack


class Runner(Protocol):
    async def run(self, script: Script, token_id: str, args: tuple[Arg, ...]) -> Any:
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


class Connections:
    """The connections a runner sends its pipelines on (app/store/wire.py): one per pipeline on the wire (at most
    MAX_IN_FLIGHT per destination, app/store/batcher.py), opened as redis-py would open them from the same URL (TLS,
    credentials, database). Each round trip, a connection's opening included, has the store timeout as its deadline;
    past it, or on any failure, the connection is dropped (replies still on their way would answer the next round
    trip's commands), and the exception leaves every command of the round trip in doubt."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._idle: dict[str, list[Wire]] = {}  # by destination
        self._made: list[Wire] = []

    def send(
        self, where: str, kind: type[AbstractConnection], kwargs: dict[str, Any], commands: list[bytes], answer: Answer
    ) -> Awaitable[None]:
        """Send `commands` in one write to `where`, now if a connection there is open, else once one is; `answer`
        gets their replies as soon as the last one is read. Returns what to await for the round trip."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        idle = self._idle.setdefault(where, [])
        wire = idle.pop() if idle else None
        if wire is not None and wire.is_connected:
            return self._round_trip(idle, wire, wire.start(commands, answer), deadline)
        return self._open_and_send(idle, kind, kwargs, commands, answer, deadline)

    async def _open_and_send(
        self,
        idle: list[Wire],
        kind: type[AbstractConnection],
        kwargs: dict[str, Any],
        commands: list[bytes],
        answer: Answer,
        deadline: float,
    ) -> None:
        async with asyncio.timeout_at(deadline):
            wire = await open_wire(kind, kwargs)  # which drops the connection itself if it fails
        self._made = [*(w for w in self._made if w.is_connected), wire]
        await self._round_trip(idle, wire, wire.start(commands, answer), deadline)

    @staticmethod
    async def _round_trip(idle: list[Wire], wire: Wire, answered: Awaitable[None], deadline: float) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await answered
        except BaseException:
            wire.abort()
            raise
        idle.append(wire)

    async def close(self) -> None:
        for wire in self._made:
            await wire.disconnect()


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

    async def run(self, script: Script, token_id: str, args: tuple[Arg, ...]) -> Any:
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

    def _send(self, client: Redis, batch: list[bytes], answer: Answer) -> Awaitable[None]:
        pool = client.connection_pool
        return self.connections.send("", pool.connection_class, pool.connection_kwargs, batch, answer)

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
