"""Coalesce the script calls of concurrent requests into pipelines: one round trip per destination carries many.

A destination is whatever one pipeline goes to (the one Redis, or a cluster node). Each EVALSHA in a pipeline is
still its own atomic script; batching only shares the socket round trip and the per-call overhead. Calls
submitted in the same event-loop turn go out together, in pipelines of FLUSH_AT calls as soon as that many wait
and the rest when the turn ends; at most MAX_IN_FLIGHT pipelines per destination wait for replies at once, and
the rest gather into the next one meanwhile. `close()` lets the pipelines on the wire finish and answers every
call not yet sent with StoreUnavailable.

Why FLUSH_AT: requests tend to arrive together (32 clients answered in one turn send their next calls in one
turn). Sent as one pipeline, Redis ran all their scripts while the process, every request waiting, sat idle, and
then the process worked while Redis did: at most one of them busy at a time. In pipelines of 8, Redis runs the
first scripts while the process still handles the requests that came with them (scripts/bench_http.py: 4.1-4.5k
-> 5.6-6.5k verify/s on two cores).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.errors import StoreUnavailable

FLUSH_AT = 8
MAX_IN_FLIGHT = 8
MAX_BATCH = 256

Dest = TypeVar("Dest", bound=Hashable)
Answer = Callable[[list[Any]], None]
Call = TypeVar("Call")


def not_sent() -> StoreUnavailable:
    """The answer to a call that close() kept off the wire: the script never ran, so nothing was spent."""
    return StoreUnavailable("counter store closed before the call was sent")


@dataclass
class _Queue(Generic[Dest, Call]):
    dest: Dest
    pending: list[tuple[Call, asyncio.Future[Any]]] = field(default_factory=list)
    in_flight: int = 0
    scheduled: bool = False


class Batcher(Generic[Dest, Call]):
    """`send(dest, calls, answer)` starts one pipeline and returns what to await for its round trip: it writes the
    pipeline before it returns when it has a connection open (so the first pipeline of a burst is on its way while
    this turn still handles the requests after it), and calls `answer` with one reply per call, in order, from the
    callback that reads them (the callers resume in the next turn, not a turn after a reading task). A reply may be
    the error object for that command alone: the caller's future gets it as its result. An exception from the
    round trip is the exception of every call not answered yet."""

    def __init__(self, send: Callable[[Dest, list[Call], Answer], Awaitable[None]]) -> None:
        self.send = send
        self.queues: dict[Dest, _Queue[Dest, Call]] = {}
        self.tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self.closed = False

    def submit(self, dest: Dest, call: Call) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_exception(not_sent())
            return future
        queue = self.queues.get(dest)
        if queue is None:
            queue = self.queues[dest] = _Queue(dest)
        queue.dest = dest  # an equal but newer object (a cluster node after a topology refresh) is the one to use
        queue.pending.append((call, future))
        if queue.in_flight < MAX_IN_FLIGHT:
            if len(queue.pending) >= FLUSH_AT:
                self._send(queue)  # now, while this turn still handles the requests that came with this one
            elif not queue.scheduled:
                queue.scheduled = True
                asyncio.get_running_loop().call_soon(self._turn_end, queue)
        return future

    async def close(self) -> None:
        """Fail closed on what is not sent yet; wait for what is on the wire, so no reply is cut off and no
        connection is opened after the client closes."""
        self.closed = True
        for queue in self.queues.values():
            pending, queue.pending = queue.pending, []
            for _, future in pending:
                _settle(future, not_sent())
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _turn_end(self, queue: _Queue[Dest, Call]) -> None:
        """Send what waits once the turn that scheduled this has ended (unless MAX_IN_FLIGHT are on the wire: the
        first to return sends it)."""
        queue.scheduled = False
        if queue.pending and queue.in_flight < MAX_IN_FLIGHT:
            self._send(queue)

    def _send(self, queue: _Queue[Dest, Call]) -> None:
        """Hand the next pipeline to `send`, which writes it at once when it has a connection open, and wait for its
        round trip in a task of its own."""
        batch, queue.pending = queue.pending[:MAX_BATCH], queue.pending[MAX_BATCH:]
        queue.in_flight += 1

        def answer(replies: list[Any]) -> None:
            for (_, future), reply in zip(batch, replies, strict=True):
                if not future.done():  # the caller may have gone (a cancelled request)
                    future.set_result(reply)

        try:
            sent = self.send(queue.dest, [call for call, _ in batch], answer)
        except Exception as e:  # could not even start: as a failed round trip
            sent = _raise(e)
        task = asyncio.get_running_loop().create_task(self._round_trip(queue, batch, sent))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _round_trip(
        self, queue: _Queue[Dest, Call], batch: list[tuple[Call, asyncio.Future[Any]]], sent: Awaitable[None]
    ) -> None:
        try:
            await sent
        except BaseException as e:  # the round trip failed: every call in it not answered yet is in doubt
            error = e if isinstance(e, Exception) else ConnectionError("cancelled")
            for _, future in batch:
                _settle(future, error)
        finally:
            queue.in_flight -= 1
            if queue.pending and not self.closed:
                self._send(queue)  # what waited for this pipeline's place on the wire


async def _raise(error: Exception) -> None:
    raise error


def _settle(future: asyncio.Future[Any], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
