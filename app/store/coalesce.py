"""Coalesce the script calls of concurrent requests into pipelines: one round trip carries many decisions.

Each EVALSHA in a pipeline is still its own atomic script; batching only shares the socket round trip and
redis-py's per-call overhead. Calls submitted in the same event-loop turn go out together; at most
MAX_IN_FLIGHT pipelines wait for replies at once, and the rest gather into the next one meanwhile.
`close()` lets the pipelines on the wire finish and answers every call not yet sent with StoreUnavailable.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from app.errors import StoreUnavailable
from app.store.scripts import Script

MAX_IN_FLIGHT = 4
MAX_BATCH = 256

_Call = tuple[Script, str, tuple[str | int, ...], "asyncio.Future[Any]"]


def not_sent() -> StoreUnavailable:
    """The answer to a call that close() kept off the wire: the script never ran, so nothing was spent."""
    return StoreUnavailable("counter store closed before the call was sent")


class Coalescer:
    def __init__(self, client: Redis) -> None:
        self.client = client
        self.pending: list[_Call] = []
        self.in_flight = 0
        self.scheduled = False
        self.tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self.closed = False

    def run(self, script: Script, base_key: str, args: tuple[str | int, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self.closed:
            future.set_exception(not_sent())
            return future
        self.pending.append((script, base_key, args, future))
        if not self.scheduled and self.in_flight < MAX_IN_FLIGHT:
            self.scheduled = True
            loop.call_soon(self._start)
        return future

    async def close(self) -> None:
        """Fail closed on what is not sent yet; wait for what is on the wire, so no reply is cut off and no
        connection is opened after the client closes."""
        self.closed = True
        pending, self.pending = self.pending, []
        for *_, future in pending:
            _settle(future, not_sent())
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _start(self) -> None:
        self.scheduled = False
        if self.pending and self.in_flight < MAX_IN_FLIGHT:
            batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            self.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _flush(self, batch: list[_Call]) -> None:
        try:
            await self._send(batch)
        except BaseException as e:  # the round trip failed: every call in it failed with it
            for *_, future in batch:
                _settle(future, e if isinstance(e, Exception) else ConnectionError("cancelled"))
        finally:
            self.in_flight -= 1
            if self.pending and not self.scheduled:
                self.scheduled = True
                asyncio.get_running_loop().call_soon(self._start)

    async def _send(self, batch: list[_Call]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for script, key, args, _ in batch:
            pipe.evalsha(script.sha, 1, key, *args)
        replies = await pipe.execute(raise_on_error=False)
        missing = []
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError):
                missing.append(call)  # the script did not run: loading it and running again is safe
            else:
                _settle(call[3], reply)
        for script, key, args, future in missing:
            try:
                reply = await script(self.client, key, *args)
            except Exception as e:
                reply = e
            _settle(future, reply)


def _settle(future: asyncio.Future[Any], reply: Any) -> None:
    """Hand a reply to its caller, unless the caller has gone (a cancelled request)."""
    if future.done():
        return
    if isinstance(reply, Exception):
        future.set_exception(reply)
    else:
        future.set_result(reply)
