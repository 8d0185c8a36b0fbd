"""The Batcher's own rules, with a recording `send` in place of Redis (what a pipeline does on Redis is the stores'
tests): a turn's calls share pipelines of FLUSH_AT, at most MAX_IN_FLIGHT wait for replies, a failed round trip
fails its own calls only, and close() answers what it kept off the wire."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.errors import StoreUnavailable
from app.store.batcher import FLUSH_AT, MAX_IN_FLIGHT, Batcher


class Recorder:
    """A `send` that records each pipeline and answers it when the test says (or at once)."""

    def __init__(self, hold: bool = False) -> None:
        self.pipelines: list[list[int]] = []
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.fail_with: Exception | None = None

    def __call__(self, dest: str, calls: list[int], answer: Callable[[list[Any]], None]) -> Awaitable[None]:
        self.pipelines.append(calls)  # "written" at once, as a connection that is open writes
        return self._round_trip(calls, answer)

    async def _round_trip(self, calls: list[int], answer: Callable[[list[Any]], None]) -> None:
        await self.release.wait()
        if self.fail_with is not None and calls[0] == 0:
            raise self.fail_with
        answer([call * 10 for call in calls])


async def test_a_turns_calls_share_a_pipeline_and_each_gets_its_own_reply() -> None:
    send = Recorder()
    batcher: Batcher[str, int] = Batcher(send)
    futures = [batcher.submit("redis", n) for n in range(FLUSH_AT - 1)]
    assert await asyncio.gather(*futures) == [n * 10 for n in range(FLUSH_AT - 1)]
    assert send.pipelines == [list(range(FLUSH_AT - 1))]


async def test_flush_at_calls_go_out_before_the_turn_ends_and_the_rest_at_its_end() -> None:
    send = Recorder()
    batcher: Batcher[str, int] = Batcher(send)
    futures = [batcher.submit("redis", n) for n in range(2 * FLUSH_AT + 3)]
    # the first two pipelines were written inside submit, in this very turn; the rest waits for the turn's end
    assert send.pipelines == [list(range(FLUSH_AT)), list(range(FLUSH_AT, 2 * FLUSH_AT))]
    assert len(batcher.tasks) == 2
    await asyncio.gather(*futures)
    assert sorted(send.pipelines) == [
        list(range(FLUSH_AT)),
        list(range(FLUSH_AT, 2 * FLUSH_AT)),
        list(range(2 * FLUSH_AT, 2 * FLUSH_AT + 3)),
    ]


async def test_at_most_max_in_flight_pipelines_wait_and_the_rest_go_when_one_returns() -> None:
    send = Recorder(hold=True)
    batcher: Batcher[str, int] = Batcher(send)
    futures = [batcher.submit("redis", n) for n in range(FLUSH_AT * (MAX_IN_FLIGHT + 2))]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(send.pipelines) == MAX_IN_FLIGHT  # the other calls wait in the queue, sent nowhere
    send.release.set()
    assert await asyncio.gather(*futures) == [n * 10 for n in range(len(futures))]
    assert sorted(n for p in send.pipelines for n in p) == list(range(len(futures)))


async def test_a_failed_round_trip_fails_its_own_calls_only() -> None:
    send = Recorder()
    send.fail_with = ConnectionError("cut")
    batcher: Batcher[str, int] = Batcher(send)
    futures = [batcher.submit("redis", n) for n in range(FLUSH_AT + 2)]  # pipelines [0..7] and [8, 9]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results[:FLUSH_AT])
    assert results[FLUSH_AT:] == [FLUSH_AT * 10, (FLUSH_AT + 1) * 10]


async def test_close_answers_what_was_not_sent_and_waits_for_what_was() -> None:
    send = Recorder(hold=True)
    batcher: Batcher[str, int] = Batcher(send)
    futures = [batcher.submit("redis", n) for n in range(FLUSH_AT * (MAX_IN_FLIGHT + 1))]
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0)
    assert not closing.done()  # the pipelines on the wire are awaited
    send.release.set()
    await closing
    results = await asyncio.gather(*futures, return_exceptions=True)
    sent = FLUSH_AT * MAX_IN_FLIGHT
    assert results[:sent] == [n * 10 for n in range(sent)]
    assert all(isinstance(r, StoreUnavailable) for r in results[sent:])
    with pytest.raises(StoreUnavailable):
        await batcher.submit("redis", 0)


async def test_a_caller_cancelled_mid_call_leaves_its_neighbours_answered() -> None:
    send = Recorder(hold=True)
    batcher: Batcher[str, int] = Batcher(send)

    async def caller(n: int) -> Any:
        return await batcher.submit("redis", n)

    callers = [asyncio.ensure_future(caller(n)) for n in range(5)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert send.pipelines == [[0, 1, 2, 3, 4]]  # on the wire
    callers[2].cancel()  # a client that went away: its future is cancelled under the pipeline
    send.release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 2] == [0, 10, 30, 40]
    assert await batcher.submit("redis", 7) == 70  # and the queue goes on


async def test_callers_are_answered_when_their_replies_are_read_not_when_the_round_trip_ends() -> None:
    """A connection hands the replies over from the callback that reads them: the callers go on, while the round
    trip's own task (its bookkeeping, the connection's return) has not run yet."""
    done = asyncio.Event()

    def send(dest: str, calls: list[int], answer: Callable[[list[Any]], None]) -> Awaitable[None]:
        async def round_trip() -> None:
            answer([call * 10 for call in calls])
            await done.wait()

        return round_trip()

    batcher: Batcher[str, int] = Batcher(send)
    futures = [batcher.submit("redis", n) for n in range(3)]
    assert await asyncio.wait_for(asyncio.gather(*futures), 1) == [0, 10, 20]
    assert batcher.queues["redis"].in_flight == 1  # the pipeline still counts as on the wire
    done.set()
    await batcher.close()
    assert batcher.queues["redis"].in_flight == 0


async def test_a_send_that_cannot_start_fails_its_calls_and_frees_its_place() -> None:
    def send(dest: str, calls: list[int], answer: Callable[[list[Any]], None]) -> Awaitable[None]:
        raise ConnectionError("no connection")

    batcher: Batcher[str, int] = Batcher(send)
    results = await asyncio.gather(*(batcher.submit("redis", n) for n in range(3)), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError] * 3
    assert batcher.queues["redis"].in_flight == 0
