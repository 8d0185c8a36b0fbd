"""Attacks on holds as a hostile agent or a buggy tool server would make them, on memory:// and a real Redis.

Each test fires many calls at once (asyncio.gather; on Redis over several clients, so their scripts interleave)
with callers' clocks that disagree, then accounts for every micro-unit: a hold is closed at most once, what was
settled is spent, what is still held is held, and nothing else.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest

from app.errors import BadRequest, Conflict, NotFound
from app.store.base import MAX_OPEN_HOLDS, PURGE_STEP, Attempt, HoldState, Store
from tests.store.conftest import T0, USD, Opener, budget, decision, tid

LEVELS = (budget("root", 1000 * USD), budget("leaf", 500 * USD))
PREFIXES = tuple(b.prefix for b in LEVELS)


@pytest.fixture
async def stores(backend: str, open_backend: Opener) -> AsyncIterator[list[Store]]:
    """Three clients of one store: on Redis, three connections whose scripts interleave; memory:// and local:// are
    one store."""
    made = [open_backend(5.0)] if backend in ("memory", "local") else [open_backend(5.0) for _ in range(3)]
    yield [made[0]] * 3 if len(made) == 1 else made
    for s in made:
        await s.close()


async def balances(store: Store, root: str, now: int) -> list[tuple[int, int]]:
    return (await store.inspect(root, (), PREFIXES, now)).balances


async def hold(store: Store, root: str, cost: int, ttl_ms: int, now: int = T0, **kw: Any) -> str:
    out = await store.decide(decision(root, cost, budgets=LEVELS, mode="hold", hold_ttl_ms=ttl_ms, now=now, **kw))
    assert out.status == "allowed" and out.hold_id is not None, out
    return out.hold_id


# -- extend racing settle, release and expiry --------------------------------------------------------------------


async def test_extend_settle_release_and_expiry_racing_on_each_hold_close_it_at_most_once(stores: list[Store]) -> None:
    """60 holds, each hit at once by extends, settles, releases and calls at or past its end, from callers whose
    clocks disagree by up to a second either way. Whatever order they land in, the books balance exactly."""
    rng = random.Random(20261203)
    root = tid()
    costs = [rng.randint(1, 5 * USD) for _ in range(60)]
    ids = [await hold(stores[0], root, cost, 1000) for cost in costs]
    calls: list[tuple[str, str, Callable[[], Awaitable[HoldState]]]] = []
    for n, hold_id in enumerate(ids):
        part = costs[n] // 2
        for _ in range(3):
            s = rng.choice(stores)
            now = T0 + rng.choice((0, 400, 900, 999, 1000, 1001, 1500))  # some at or past the first end
            calls += [
                (hold_id, "extend", lambda s=s, h=hold_id, now=now: s.extend(h, 2000, now)),
                (hold_id, "settle", lambda s=s, h=hold_id, now=now, a=part: s.settle(h, a, now)),
                (hold_id, "release", lambda s=s, h=hold_id, now=now: s.release(h, now)),
            ]
    rng.shuffle(calls)
    results = await asyncio.gather(*(call() for _, _, call in calls), return_exceptions=True)

    closed: dict[str, set[str]] = {}
    for (hold_id, kind, _), result in zip(calls, results, strict=True):
        assert isinstance(result, HoldState | Conflict | NotFound), (kind, result)
        if isinstance(result, HoldState) and result.state != "held":
            closed.setdefault(hold_id, set()).add(result.state)
            assert result.state == {"settle": "settled", "release": "released"}[kind]
    assert all(len(states) == 1 for states in closed.values()), closed  # never both settled and released
    settled = sum(costs[n] // 2 for n, h in enumerate(ids) if closed.get(h) == {"settled"})

    # Every hold not closed is either still held (an extend landed before its end) or gone: release them all now,
    # and what each release frees is exactly what was still held.
    now = T0 + 1500
    still_held = 0
    before = await balances(stores[0], root, now)
    for n, hold_id in enumerate(ids):
        try:
            state = await stores[0].release(hold_id, now)
        except (NotFound, Conflict):
            continue
        if hold_id not in closed:
            still_held += costs[n]
            assert state.state == "released"
    assert before == [(settled, still_held)] * 2
    assert await balances(stores[0], root, T0 + 10**7) == [(settled, 0)] * 2


async def test_an_extend_from_a_clock_that_is_behind_cannot_bring_back_a_hold_that_ended(stores: list[Store]) -> None:
    """The hold ended (released by a caller whose clock passed its end); a caller whose clock is behind then
    extends, settles or releases it: all 404, and it is not counted again, nor released twice."""
    root = tid()
    first, second = [await hold(stores[0], root, 3 * USD, 1000) for _ in range(2)]
    assert await balances(stores[1], root, T0 + 1000) == [(0, 0)] * 2  # both ended: released by time
    for s in stores:
        for call in (
            s.extend(first, 60_000, T0 + 500),
            s.settle(first, None, T0 + 500),
            s.release(second, T0 + 999),
            s.extend(second, 1, T0),
        ):
            with pytest.raises(NotFound):
                await call
    assert await balances(stores[2], root, T0 + 500) == [(0, 0)] * 2
    # The budget is whole again, and only once: 1000 USD at the root, not 1006.
    over = await stores[0].decide(decision(root, 1000 * USD + 1, budgets=LEVELS, now=T0 + 500))
    assert over.status == "budget_exceeded"


async def test_a_hold_extended_into_the_past_by_a_clock_that_is_behind_ends_there_for_every_caller(
    stores: list[Store],
) -> None:
    """`extend` sets the end to the caller's now + ttl, even when that is before the hold began: the hold is then
    over for every caller whose clock is past it, released exactly once, never counted again."""
    root = tid()
    hold_id = await hold(stores[0], root, 7 * USD, 60_000, now=T0)
    assert (await stores[1].extend(hold_id, 1000, T0 - 10_000)).expires_ms == T0 - 9000
    results = await asyncio.gather(
        *(s.release(hold_id, T0 + i) for i, s in enumerate(stores)),
        *(s.extend(hold_id, 60_000, T0) for s in stores),
        return_exceptions=True,
    )
    assert all(isinstance(r, NotFound) for r in results), results
    assert await balances(stores[0], root, T0 - 9500) == [(0, 0)] * 2


# -- replays ------------------------------------------------------------------------------------------------------


async def test_fifty_concurrent_replays_of_a_hold_make_one_hold_and_settle_once(stores: list[Store]) -> None:
    root = tid()

    def same() -> Attempt:
        return decision(root, 4 * USD, budgets=LEVELS, mode="hold", request_id="h-1", fingerprint="f")

    outcomes = await asyncio.gather(*(stores[i % 3].decide(same()) for i in range(50)))
    firsts = [o for o in outcomes if not o.replayed]
    assert len(firsts) == 1
    first = firsts[0]
    assert first.status == "allowed" and first.hold_id is not None
    for o in outcomes:  # every other answer is the first one, marked replayed, and nothing else differs
        assert (o.status, o.index, o.retry_after_ms, o.balances, o.hold_id) == (
            first.status,
            first.index,
            first.retry_after_ms,
            first.balances,
            first.hold_id,
        )
    assert await balances(stores[0], root, T0) == [(0, 4 * USD)] * 2
    hold_id = first.hold_id
    states = await asyncio.gather(*(stores[i % 3].settle(hold_id, 3 * USD, T0 + i) for i in range(20)))
    assert {(s.state, s.amount) for s in states} == {("settled", 3 * USD)}
    assert await balances(stores[0], root, T0 + 20) == [(3 * USD, 0)] * 2
    # Replayed after the hold was settled, after its ttl, and much later (within 24 h): the same answer, no new hold.
    for now in (T0 + 21, T0 + 300_000, T0 + 23 * 3600 * 1000):
        again = await stores[1].decide(again_at(same(), now))
        assert (again.replayed, again.hold_id, again.balances) == (True, hold_id, first.balances)
    assert await balances(stores[0], root, T0 + 23 * 3600 * 1000) == [(3 * USD, 0)] * 2
    with pytest.raises(Conflict):
        await stores[2].release(hold_id, T0 + 30)
    different = await stores[0].decide(
        decision(root, 4 * USD + 1, budgets=LEVELS, mode="hold", request_id="h-1", fingerprint="g")
    )
    assert different.status == "conflict"
    assert await balances(stores[0], root, T0 + 30) == [(3 * USD, 0)] * 2


async def test_a_replay_of_a_hold_that_expired_or_was_released_makes_no_new_hold(stores: list[Store]) -> None:
    root = tid()
    made = {}
    for rid, ttl in (("expires", 1000), ("released", 60_000)):
        d = decision(root, 2 * USD, budgets=LEVELS, mode="hold", hold_ttl_ms=ttl, request_id=rid, fingerprint=rid)
        made[rid] = (d, await stores[0].decide(d))
    await stores[1].release(made["released"][1].hold_id or "", T0 + 10)
    answers = await asyncio.gather(
        *(stores[i % 3].decide(again_at(made[rid][0], T0 + 2000)) for i in range(30) for rid in made)
    )
    assert all(a.replayed for a in answers)
    assert {a.hold_id for a in answers} == {o.hold_id for _, o in made.values()}
    assert await balances(stores[0], root, T0 + 2000) == [(0, 0)] * 2
    with pytest.raises(NotFound):
        await stores[0].settle(made["expires"][1].hold_id or "", None, T0 + 2000)


def again_at(d: Attempt, now: int) -> Attempt:
    """The same request (request id, fingerprint) asked again at `now`, as a new call."""
    return msgspec.structs.replace(d, now_ms=now, call_id=secrets.token_hex(16))


# -- the bound on open holds ------------------------------------------------------------------------------------


async def fill(store: Store, root: str, count: int, ttl_ms: int, now: int = T0) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, 1000):
        batch = [
            store.decide(decision(root, 0, mode="hold", hold_ttl_ms=ttl_ms, now=now))
            for _ in range(start, min(count, start + 1000))
        ]
        ids += [o.hold_id for o in await asyncio.gather(*batch) if o.hold_id]
    assert len(ids) == count
    return ids


async def test_concurrent_holds_at_the_bound_never_open_more_than_it(stores: list[Store]) -> None:
    """At the bound, 300 holds race 40 releases, 40 settles and 20 holds that end meanwhile: exactly as many are
    admitted as places were freed, never one more; another root is not affected at any point."""
    root, other = tid(), tid()
    await fill(stores[0], root, 20, 500)
    asked = decision(root, 0, mode="hold", hold_ttl_ms=60_000, request_id="before", fingerprint="f")
    made = await stores[2].decide(asked)
    ids = [made.hold_id or ""] + await fill(stores[1], root, MAX_OPEN_HOLDS - 21, 60_000)
    now = T0 + 500  # the 20 short ones have ended by now
    rng = random.Random(7)
    freeing = [stores[i % 3].release(h, now) for i, h in enumerate(ids[:40])]
    freeing += [stores[i % 3].settle(h, 0, now) for i, h in enumerate(ids[40:80])]
    attempts = [
        stores[i % 3].decide(decision(root, 1, budgets=LEVELS, mode="hold", now=now - rng.randint(0, 1)))
        for i in range(300)
    ]
    others = [stores[i % 3].decide(decision(other, 1, budgets=LEVELS, mode="hold", now=now)) for i in range(30)]
    calls: list[Awaitable[Any]] = [*freeing, *attempts, *others]
    order = list(range(len(calls)))
    rng.shuffle(order)
    shuffled = await asyncio.gather(*(calls[i] for i in order))
    results = [shuffled[order.index(i)] for i in range(len(calls))]
    admitted = [o for o in results[80:380] if o.status == "allowed"]
    refused = [o for o in results[80:380] if o.status != "allowed"]
    assert {(o.status, o.index) for o in refused} <= {("rate_limited", -1)}
    # The 20 that ended are freed only once a call at `now` or later releases them; a call whose clock is 1 ms
    # behind sees them open: at most 100 places, at least the 80 closed.
    assert 80 <= len(admitted) <= 100, len(admitted)
    assert all(o.status == "allowed" for o in results[380:])
    # Whatever the order: after a call at `now`, at most MAX_OPEN_HOLDS are open, and the rest are refused.
    more = await asyncio.gather(
        *(stores[i % 3].decide(decision(root, 1, budgets=LEVELS, mode="hold", now=now)) for i in range(150))
    )
    assert sum(o.status == "allowed" for o in more) == 100 - len(admitted)
    assert sum(o.status == "rate_limited" for o in more) == 50 + len(admitted)
    assert await balances(stores[0], root, now) == [(0, 100)] * 2  # each admitted hold holds 1 at both levels
    # At the bound, a replay of a hold made before it is still its first answer: no new hold, and no denial.
    # (Its hold was among the first 40 released: the replay names it all the same.)
    replay = await stores[0].decide(again_at(asked, now))
    assert (replay.status, replay.replayed, replay.hold_id) == ("allowed", True, made.hold_id)
    assert (await stores[1].decide(decision(root, 0, mode="hold", now=now))).index == -1


# -- clocks that disagree: every store against a model of the contract -------------------------------------------


class Model:
    """docs/api.md's holds, written plainly: every call at `now` first ends the holds whose end is at or before it
    (for good: a later call with an earlier clock does not bring them back), then does what it was asked."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0
        self.holds: dict[str, list[Any]] = {}  # hold id -> [amount, end, state, settled]

    def held(self) -> int:
        return sum(h[0] for h in self.holds.values() if h[2] == "held")

    def purge(self, now: int) -> None:
        for hold_id, h in list(self.holds.items()):
            if h[2] == "held" and h[1] <= now:
                del self.holds[hold_id]

    def decide(self, cost: int, now: int) -> str:
        self.purge(now)
        return "allowed" if self.spent + self.held() + cost <= self.limit else "budget_exceeded"

    def close(self, hold_id: str, action: str, amount: int | None, ttl: int, now: int) -> Any:
        self.purge(now)
        h = self.holds.get(hold_id)
        if h is None:
            return NotFound
        if action == "extend":
            if h[2] != "held":
                return Conflict
            h[1] = now + ttl
            return ("held", h[0], h[1])
        amount = h[0] if amount is None else amount
        target = "settled" if action == "settle" else "released"
        if h[2] != "held":
            if h[2] != target or (target == "settled" and amount != h[3]):
                return Conflict
            return (h[2], h[3], 0)
        if target == "released":
            amount = 0
        elif amount > h[0]:
            return BadRequest
        h[2], h[3] = target, amount
        self.spent += amount
        return (target, amount, 0)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_holds_agree_with_the_model_whatever_the_callers_clocks_say(stores: list[Store], seed: int) -> None:
    rng = random.Random(seed)
    root = tid()
    limit = 40 * USD
    levels = (budget("root", limit),)
    model = Model(limit)
    ids: list[str] = []
    base = T0
    for step in range(400):
        base += rng.randint(0, 150)
        now = base + rng.randint(-2000, 2000)  # callers' clocks: up to 2 s either way, so time runs backwards too
        s = rng.choice(stores)
        kind = rng.choice(["hold", "hold", "charge", "extend", "extend", "settle", "release", "inspect"])
        if kind in ("hold", "charge"):
            cost = rng.randint(0, 8 * USD)
            ttl = rng.randint(1, 20_000)
            mode = "hold" if kind == "hold" else "charge"
            out = await s.decide(decision(root, cost, budgets=levels, mode=mode, hold_ttl_ms=ttl, now=now))
            expected = model.decide(cost, now)
            assert out.status == expected, (step, kind, out, expected)
            if out.status == "allowed":
                if kind == "hold":
                    assert out.hold_id is not None
                    ids.append(out.hold_id)
                    model.holds[out.hold_id] = [cost, now + ttl, "held", 0]
                else:
                    model.spent += cost
            assert out.balances == ([(model.spent, model.held())] if out.status == "allowed" else out.balances)
        elif kind == "inspect":
            assert await balances_of(s, root, now) == [(model.spent, (model.purge(now), model.held())[1])], step
        elif ids:
            hold_id = rng.choice(ids[-12:])
            amount = rng.choice([None, 0, rng.randint(0, 8 * USD)])
            ttl = rng.randint(1, 20_000)
            expected = model.close(hold_id, kind, amount, ttl, now)
            call: Awaitable[HoldState]
            if kind == "extend":
                call = s.extend(hold_id, ttl, now)
            elif kind == "settle":
                call = s.settle(hold_id, amount, now)
            else:
                call = s.release(hold_id, now)
            try:
                state = await call
                got: Any = (state.state, state.amount, state.expires_ms)
            except (NotFound, Conflict, BadRequest) as e:
                got = type(e)
            assert got == expected, (step, kind, hold_id[-6:], amount, now - T0, got, expected)
    end = base + 10**6
    model.purge(end)
    assert await balances_of(stores[0], root, end) == [(model.spent, 0)]


async def balances_of(store: Store, root: str, now: int) -> list[tuple[int, int]]:
    return (await store.inspect(root, (), ("root",), now)).balances


# -- bounded release, clocks that disagree ------------------------------------------------------------------------


async def test_a_release_half_done_by_a_clock_ahead_is_neither_undone_nor_repeated_by_a_clock_behind(
    stores: list[Store],
) -> None:
    """One step of the bounded release (a settle's) has freed PURGE_STEP of the holds that ended; a caller whose
    clock is 1 ms behind their end then decides: the freed ones stay freed (no resurrection), the others still
    count (they have not ended by its clock), and a caller at their end frees each of those exactly once."""
    root = tid()
    n = 2 * PURGE_STEP + 10
    levels = (budget("b", n),)
    for start in range(0, n, 200):
        made = [
            stores[i % 3].decide(decision(root, 1, budgets=levels, mode="hold", hold_ttl_ms=1000))
            for i in range(start, min(n, start + 200))
        ]
        assert {o.status for o in await asyncio.gather(*made)} == {"allowed"}
    with pytest.raises(NotFound):  # an id never issued: the call still takes its one step of housekeeping
        await stores[0].release(f"{root}.{secrets.token_hex(16)}", T0 + 1000)
    assert (await stores[1].inspect(root, (), ("b",), T0 + 999)).balances == [(0, n - PURGE_STEP)]
    behind = [stores[i % 3].decide(decision(root, 1, budgets=levels, now=T0 + 999)) for i in range(PURGE_STEP + 5)]
    outcomes = await asyncio.gather(*behind)
    assert sum(o.status == "allowed" for o in outcomes) == PURGE_STEP  # exactly the room the step freed
    # At their end, callers and inspects at once: every inspect answers only once no ended hold counts.
    at_end = [stores[i % 3].inspect(root, (), ("b",), T0 + 1000) for i in range(6)]
    spend = stores[0].decide(decision(root, n - PURGE_STEP, budgets=levels, now=T0 + 1000))
    *views, out = await asyncio.gather(*at_end, spend)
    assert (out.status, out.balances) == ("allowed", [(n, 0)])
    assert {v.balances[0][1] for v in views} == {0}
    assert (await stores[2].inspect(root, (), ("b",), T0 + 999)).balances == [(n, 0)]


async def test_thirty_callers_at_the_instant_a_thousand_holds_end_each_decide_on_exact_balances(
    stores: list[Store],
) -> None:
    """Every hold ends at `now`; 30 calls at `now` share the bounded release between them (any of them may take
    any step), and each decides only once none of the ended holds counts: all 30 fit the budget exactly."""
    root = tid()
    n = 4 * PURGE_STEP
    levels = (budget("b", n),)
    for start in range(0, n, 256):
        made = [
            stores[i % 3].decide(decision(root, 1, budgets=levels, mode="hold", hold_ttl_ms=1000))
            for i in range(start, start + 256)
        ]
        assert {o.status for o in await asyncio.gather(*made)} == {"allowed"}
    cost = n // 30
    decided, viewed = await asyncio.gather(
        asyncio.gather(*(stores[i % 3].decide(decision(root, cost, budgets=levels, now=T0 + 1000)) for i in range(30))),
        asyncio.gather(*(stores[i % 3].inspect(root, (), ("b",), T0 + 1000) for i in range(5))),
    )
    assert [o.status for o in decided] == ["allowed"] * 30
    assert all(v.balances[0][1] == 0 for v in viewed)
    assert (await stores[0].inspect(root, (), ("b",), T0 + 1000)).balances == [(30 * cost, 0)]
