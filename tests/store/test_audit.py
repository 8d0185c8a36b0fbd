"""The audit log in the store, on every backend: each decision leaves its event in the same store step, composed
byte for byte alike (app/store/base.py event_json and its members; app/store/lua/lib.lua on Redis), and the log
pages without gaps or repeats.

The Authority builds the heads and the chains (tests/api checks that end to end); here they are made up.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from app.errors import Conflict
from app.store.base import (
    MAX_CHAINS_SEEN,
    PURGE_STEP,
    ApprovalSpec,
    AuditPolicy,
    ChainSeen,
    Store,
    Trail,
    decision_members,
    event_json,
    hold_members,
    money_json,
)
from app.store.memory import MemoryStore
from app.store.redis import SETTLE_LAG_MS, RedisStore
from app.store.scripts import _CONSTANTS
from caveats.money import format_micros
from tests.store.conftest import BIG, T0, USD, Opener, budget, decision, tid

CENT = USD // 100
COST = '{"amount":"0.01","currency":"USD"}'  # the cost as the Authority passes it: JSON, kept as is
SAID = '"allowed":false,"code":"budget_exceeded","caveat":"budget 0.50 USD","hop":0'


def head(root: str, tool: str = "pay") -> str:
    return f'"root":"{root}","chain":"c1","tool":"{tool}"'


def chain(chain_id: str = "c1", caveat: str = "budget 0.50 USD") -> ChainSeen:
    return ChainSeen(("p0", chain_id), (caveat,), (0,), {"budget_exceeded:0": SAID, "revoked": '"allowed":false'})


def trail(root: str, sent: bool = True, charged: str = COST) -> Trail:
    """A call's trail; `sent`: with its chain, as the first call of a process through it sends it."""
    return Trail(head(root), charged, chain() if sent else None)


def call(root: str, cost: int = CENT, *, limit: int = 50 * CENT, sent: bool = True, **kw: Any) -> Any:
    return decision(root, cost, budgets=(budget("b", limit),), revocation=("p0", "c1"), trail=trail(root, sent), **kw)


async def events(store: Store, root: str | None) -> list[str]:
    """Every event of the root (None: all roots), oldest first."""
    return [e for _, _, e in reversed(await store.audit_events(root, None, None, 10_000))]


async def test_an_allowed_charge_writes_one_verify_event_with_what_it_charged(store: Store) -> None:
    root = tid()
    assert (await store.decide(call(root))).status == "allowed"
    assert await events(store, root) == [event_json("verify", head(root), '"allowed":true', f'"charged":{COST}')]
    [(event_id, at, _)] = await store.audit_events(root, None, None, 10)
    assert at == T0 and event_id


async def test_every_byte_of_a_head_and_a_cost_reaches_the_event_as_sent(store: Store) -> None:
    """The texts a call packs (decide.lua's one MessagePack argument) are data: newlines, commas, colons, NUL, Lua
    pattern characters and characters past ASCII shift no field and come back as they were."""
    root = tid()
    odd = "a\nb,c:d\x00\xc1\x93\xdc\xff%%[é🙂"
    cost = json.dumps({"amount": "0.01", "currency": odd})
    sent = Trail(head(root, tool=json.dumps(odd)[1:-1]), cost, chain())
    call = decision(root, CENT, budgets=(budget("b", CENT),), revocation=("p0", "c1"), trail=sent)
    assert (await store.decide(call)).status == "allowed"
    over = await store.decide(decision(root, 1, budgets=(budget("b", CENT),), revocation=("p0", "c1"), trail=sent))
    assert (over.status, over.balances) == ("budget_exceeded", [(CENT, 0)])
    first, second = await events(store, root)
    assert first == event_json("verify", sent.head, '"allowed":true', f'"charged":{cost}')
    assert json.loads(first)["tool"] == odd and json.loads(second)["code"] == "budget_exceeded"


async def test_a_denial_says_what_the_chain_kept_for_it_even_when_the_chain_is_not_sent_again(store: Store) -> None:
    root = tid()
    await store.decide(call(root, 50 * CENT))  # the first call sends the chain: its denials are kept
    denied = await store.decide(call(root, sent=False))  # later ones name it by their last prefix
    assert (denied.status, denied.index) == ("budget_exceeded", 0)
    revoked_root = tid()  # a denial the chain says nothing of: its code
    await store.revoke(revoked_root, "p0", 0)
    await store.decide(call(revoked_root, sent=False))
    assert (await events(store, root))[-1] == event_json("verify", head(root), SAID)
    assert await events(store, revoked_root) == [
        event_json("verify", head(revoked_root), '"allowed":false,"code":"revoked"')
    ]


async def test_a_replay_says_replayed_and_charges_nothing_and_a_conflict_writes_none(store: Store) -> None:
    root = tid()
    first = await store.decide(call(root, request_id="r1", fingerprint="f", mode="hold"))
    again = await store.decide(call(root, request_id="r1", fingerprint="f", mode="hold"))
    assert again.replayed and again.hold_id == first.hold_id
    other_chain = Trail(head(root), COST, chain("c9"))
    conflict = await store.decide(
        decision(root, CENT, revocation=("p0", "c9"), request_id="r1", fingerprint="other", trail=other_chain)
    )
    assert conflict.status == "conflict"
    assert [c.chain for c in await store.chains_seen(root)] == ["c1"]  # as it writes no event, it keeps no chain
    hold = f'"hold_id":"{first.hold_id}"'
    assert await events(store, root) == [
        event_json("verify", head(root), '"allowed":true', hold),  # a hold charges nothing yet
        event_json("verify", head(root), '"allowed":true', hold, '"replayed":true'),
    ]
    await store.decide(call(root, request_id="r2", fingerprint="f"))
    await store.decide(call(root, request_id="r2", fingerprint="f"))
    assert (await events(store, root))[-1] == event_json("verify", head(root), '"allowed":true', '"replayed":true')


async def test_holds_write_settle_release_extend_and_expire_with_their_verify_head(store: Store) -> None:
    root = tid()
    settled, released, expiring = [
        (await store.decide(call(root, 10 * CENT, mode="hold", hold_ttl_ms=ttl, sent=False))).hold_id
        for ttl in (60_000, 60_000, 1000)
    ]
    assert settled and released and expiring
    await store.extend(settled, 120_000, T0 + 10)
    await store.settle(settled, 3 * CENT, T0 + 20)
    await store.settle(settled, 3 * CENT, T0 + 30)  # a repeat changes nothing, and writes nothing
    await store.release(released, T0 + 40)
    await store.release(released, T0 + 50)
    with pytest.raises(Conflict):
        await store.settle(released, None, T0 + 60)
    await store.decide(call(root, 0, now=T0 + 2000, sent=False))  # past the third hold's end: released first
    h = head(root)
    assert (await events(store, root))[3:] == [
        event_json("extend", h, hold_members(settled)),
        event_json("settle", h, hold_members(settled, money_json(3 * CENT, "USD"))),
        event_json("release", h, hold_members(released)),
        event_json("expire", h, hold_members(expiring)),
        event_json("verify", h, '"allowed":true', '"charged":' + COST),
    ]
    at = [at for _, at, _ in await store.audit_events(root, None, None, 100)]
    assert at == [T0 + 2000, T0 + 2000, T0 + 40, T0 + 20, T0 + 10, T0, T0, T0]


@pytest.mark.parametrize("amount", [0, 1, 10, 100_000, 120_000, 123_456, USD, 12_500_000, 1_000_000_000_123, BIG])
async def test_a_settles_amount_reads_as_format_micros_writes_it(store: Store, amount: int) -> None:
    root = tid()
    hold_id = (await store.decide(call(root, BIG, limit=BIG, mode="hold"))).hold_id
    assert hold_id
    await store.settle(hold_id, amount, T0 + 1)
    charged = f'{{"amount":"{format_micros(amount)}","currency":"USD"}}'
    assert (await events(store, root))[-1] == event_json("settle", head(root), hold_members(hold_id, charged))


async def test_an_approval_is_asked_decided_and_used_each_with_its_event(store: Store) -> None:
    root = tid()
    at = '"caveat":"approval by p0","hop":1'
    spec = ApprovalSpec("call-1", ("p0",), 900_000, b'{"tool":"pay"}', at)
    asked = await store.decide(call(root, approval=spec))
    assert asked.status == "approval_required" and asked.approval is not None
    approval_id = asked.approval.id
    reason = 'fine "really" \\ ok, é ✓ \u2028 <tag>'  # quotes, a backslash, non-ASCII: encoded as Python does
    await store.decide_approval(approval_id, True, "p0", "orchestrator@0", reason, T0 + 10, 900_000)
    await store.decide_approval(approval_id, True, "p0", "orchestrator@0", reason, T0 + 11, 900_000)  # no event
    used = await store.decide(call(root, approval=spec, now=T0 + 20, request_id="r", fingerprint="f"))
    assert used.status == "allowed"
    await store.decide(call(root, approval=spec, now=T0 + 30, request_id="r", fingerprint="f"))  # its replay
    h = head(root)
    ref = f'"approval_id":"{approval_id}"'
    assert await events(store, root) == [
        event_json("verify", h, '"allowed":false,"code":"approval_required"', at, ref),
        event_json("approval", h, decision_members(approval_id, True, "orchestrator@0", reason)),
        event_json("verify", h, '"allowed":true', f'"charged":{COST}', ref),
        event_json("verify", h, '"allowed":true', ref, '"replayed":true'),
    ]


async def test_revoke_and_record_write_the_event_they_are_given(store: Store) -> None:
    root = tid()
    revocation = event_json("revoke", '"root":"' + root + '"', '"prefix":"p0"')
    await store.revoke(root, "p0", 0, T0 + 5, revocation)
    await store.revoke(root, "p1", 0)  # without an event: none
    mint = event_json("mint", '"root":"' + root + '"')
    await store.record(root, T0 + 6, mint, chain())
    found = await store.audit_events(root, None, None, 10)
    assert [(at, e) for _, at, e in found] == [(T0 + 6, mint), (T0 + 5, revocation)]
    assert await store.chains_seen(root) == [chain()]


async def test_chains_seen_keeps_the_first_of_each_chain(store: Store) -> None:
    root = tid()
    await store.record(root, T0, "{}", chain("c1", "first"))
    await store.record(root, T0, "{}", chain("c1", "second"))  # the same chain again: the first stays
    await store.decide(decision(root, revocation=("p0", "c2"), trail=Trail(head(root), "", chain("c2"))))
    seen = sorted(await store.chains_seen(root), key=lambda c: c.chain)
    assert [(c.chain, c.caveats) for c in seen] == [("c1", ("first",)), ("c2", ("budget 0.50 USD",))]
    assert await store.chains_seen(tid()) == []


async def test_chains_seen_stop_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cap itself on memory (MAX_CHAINS_SEEN chains are many calls); Redis's scripts get the same constant."""
    monkeypatch.setattr("app.store.memory.MAX_CHAINS_SEEN", 3)
    store, root = MemoryStore(), tid()
    for n in range(5):
        await store.record(root, T0, "{}", chain(f"c{n}"))
    assert [c.chain for c in await store.chains_seen(root)] == ["c0", "c1", "c2"]
    assert _CONSTANTS["MAX_CHAINS_SEEN"] == MAX_CHAINS_SEEN


async def test_paging_either_way_loses_and_repeats_nothing_while_others_write(store: Store) -> None:
    root, other = tid(), tid()
    for n in range(25):
        await store.record(root, T0 + n, f'{{"n":{n}}}')
    newest_first, cursor = [], None
    while page := await store.audit_events(root, cursor, None, 7):
        newest_first += [e for _, _, e in page]
        cursor = page[-1][0]
        await store.record(root, T0 + 100, '{"later":true}')  # newer than every page: not in this reading
        await store.record(other, T0, '{"other":true}')
    assert newest_first == [f'{{"n":{n}}}' for n in reversed(range(25))]
    oldest_first, cursor = [], ""  # no position: from the first
    while page := await store.audit_events(root, None, cursor, 7):
        oldest_first += [e for _, _, e in page]
        cursor = page[-1][0]
        if len(oldest_first) < 40:
            await store.record(root, T0 + 200, '{"latest":true}')  # newer: read by a later page
    assert oldest_first[:25] == [f'{{"n":{n}}}' for n in range(25)]
    assert oldest_first[25:] == ['{"later":true}'] * 4 + ['{"latest":true}'] * (len(oldest_first) - 29)
    ids = [i for i, _, _ in await store.audit_events(root, None, None, 1000)]
    assert len(set(ids)) == len(ids) == len(oldest_first)
    assert await store.audit_events(root, "not an id", None, 10) == []  # no position: nothing before it
    assert len(await store.audit_events(root, None, "not an id", 1000)) == len(ids)  # everything after it


async def test_every_roots_events_merge_in_the_order_they_were_written(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.store.redis.ROOTS_PAGE", 2)  # Redis reads the index of roots in pages: several here
    roots = [tid() for _ in range(3)]
    start = await store.audit_events(None, None, None, 1)
    mine = []
    for n in range(12):
        root = roots[n % 3]
        mine.append(f'{{"n":{n}}}')
        await store.record(root, T0 + n, mine[-1])
        if isinstance(store, RedisStore):
            await asyncio.sleep(0.002)  # one Redis ms apart: the ids of different roots order by their stream ids
    assert await events(store, roots[1]) == mine[1::3]  # one root: its own only
    newest: list[str] = []
    cursor = None
    while len(newest) < 12 and (page := await store.audit_events(None, cursor, None, 5)):
        newest += [e for _, _, e in page if e in mine]
        cursor = page[-1][0]
    assert newest == mine[::-1]
    if isinstance(store, RedisStore):
        await asyncio.sleep(SETTLE_LAG_MS / 1000 + 0.1)  # oldest first answers only what no write can precede
    oldest, cursor = [], start[0][0] if start else ""
    while page := await store.audit_events(None, None, cursor, 5):
        oldest += [e for _, _, e in page if e in mine]
        cursor = page[-1][0]
    assert oldest == mine


async def test_retention_and_the_cap_let_the_oldest_out(open_backend: Opener) -> None:
    """Memory lets out TRIM_STEP per append, exactly; Redis trims whole stream nodes (`~`): a node's worth more
    may stay (stream-node-max-entries, 100 by default). Retention is judged on the caller's clock in memory, on
    Redis's for Redis (its stream ids): the test waits past it on both."""
    store = open_backend(audit=AuditPolicy(retention_ms=300, max_events=1_000_000))
    root = tid()
    try:
        for n in range(300):
            await store.record(root, T0, f'{{"old":{n}}}')
        await asyncio.sleep(0.4)
        for n in range(40):
            await store.record(root, T0 + 10_000, f'{{"new":{n}}}')
        kept = await events(store, root)
        assert kept[-40:] == [f'{{"new":{n}}}' for n in range(40)]
        assert len(kept) - 40 < 100
    finally:
        await store.close()
    capped = open_backend(audit=AuditPolicy(max_events=50))
    root = tid()
    try:
        for n in range(300):
            await capped.record(root, T0, f'{{"n":{n}}}')
        kept = await events(capped, root)
        assert 50 <= len(kept) <= 150 and kept[-1] == '{"n":299}'
    finally:
        await capped.close()


async def test_200_concurrent_calls_write_200_events_and_50_allow(store: Store) -> None:
    root = tid()
    await store.decide(call(root, 0))  # sends the chain once
    outcomes = await asyncio.gather(*(store.decide(call(root, sent=False)) for _ in range(200)))
    assert sum(o.status == "allowed" for o in outcomes) == 50
    found = [json.loads(e) for e in (await events(store, root))[1:]]
    assert len(found) == 200 and all(e["kind"] == "verify" for e in found)
    assert sum(e["allowed"] is True for e in found) == 50
    assert sum(e.get("code") == "budget_exceeded" for e in found) == 150


async def test_holds_past_a_purge_step_each_leave_their_expire_event(store: Store) -> None:
    root = tid()
    holds = await asyncio.gather(
        *(store.decide(call(root, 0, mode="hold", hold_ttl_ms=1000, sent=False)) for _ in range(PURGE_STEP + 44))
    )
    await store.decide(call(root, 0, now=T0 + 2000, sent=False))  # two purge steps, then the call
    expired = [json.loads(e) for e in await events(store, root) if '"kind":"expire"' in e]
    assert sorted(e["hold_id"] for e in expired) == sorted(h.hold_id for h in holds if h.hold_id)
    assert len(expired) == PURGE_STEP + 44
