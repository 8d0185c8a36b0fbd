"""Approvals in the store, on every backend: a gated call asks once, is decided once, and allows exactly one call.

The store sees an approval as its binding (the digest of the call it allows), its approvers (chain prefix ids)
and its details; the Authority builds those (tests/api/test_approvals.py checks that end to end).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.errors import Conflict, NotFound
from app.store.base import APPROVAL_KEPT_MS, MAX_APPROVALS, ApprovalSpec, Store
from tests.store.conftest import REDIS_BACKENDS, T0, USD, Opener, budget, decision, tid

TTL = 900_000
LEVELS = (budget("b", 10 * USD),)


def gate(binding: str = "call-1", approvers: tuple[str, ...] = ("p0", "p1")) -> ApprovalSpec:
    return ApprovalSpec(binding, approvers, TTL, b'{"tool":"pay"}')


async def ask(store: Store, root: str, spec: ApprovalSpec | None = None, now: int = T0, **kw: Any) -> Any:
    """The gated call of these tests: 2 USD against a 10 USD budget. Any: the tests read fields they assert on."""
    return await store.decide(decision(root, 2 * USD, budgets=LEVELS, approval=spec or gate(), now=now, **kw))


async def test_a_gated_call_asks_once_and_charges_nothing(store: Store) -> None:
    root = tid()
    first = await ask(store, root)
    assert (first.status, first.new_approval) == ("approval_required", True)
    assert first.approval is not None and first.approval.state == "pending"
    assert first.approval.expires_ms == T0 + TTL and first.approval.id.startswith(root + ".")
    again = await ask(store, root, now=T0 + 1000)
    assert (again.status, again.new_approval, again.approval.id) == ("approval_required", False, first.approval.id)
    plain = await store.decide(decision(root, 1, budgets=LEVELS))
    assert plain.balances == [(1, 0)]  # nothing was charged for the gated calls
    listed = await store.approvals_of(root, T0 + 1000)
    assert [(a.id, a.state, a.details) for a in listed] == [(first.approval.id, "pending", b'{"tool":"pay"}')]


async def test_approved_allows_exactly_one_call_and_charges_it(store: Store) -> None:
    root = tid()
    pending = (await ask(store, root)).approval
    assert pending is not None
    decided = await store.decide_approval(pending.id, True, "p1", "orchestrator@0", "fine", T0 + 10, TTL)
    assert (decided.state, decided.decided_by, decided.reason, decided.expires_ms) == (
        "approved",
        "orchestrator@0",
        "fine",
        T0 + 10 + TTL,
    )
    allowed = await ask(store, root, now=T0 + 20)
    assert (allowed.status, allowed.balances) == ("allowed", [(2 * USD, 0)])
    assert (await store.approval(pending.id, T0 + 20)).state == "used"
    next_one = await ask(store, root, now=T0 + 30)  # the same call again needs a new approval
    assert next_one.status == "approval_required" and next_one.new_approval
    assert next_one.approval.id != pending.id


async def test_ten_parallel_retries_of_an_approved_call_run_it_once(store: Store) -> None:
    root = tid()
    pending = (await ask(store, root)).approval
    assert pending is not None
    await store.decide_approval(pending.id, True, None, "operator", "", T0 + 10, TTL)
    outcomes = await asyncio.gather(*(ask(store, root, now=T0 + 20) for _ in range(10)))
    assert sorted(o.status for o in outcomes).count("allowed") == 1
    assert {o.status for o in outcomes} == {"allowed", "approval_required"}
    assert (await store.decide(decision(root, 0, budgets=LEVELS))).balances == [(2 * USD, 0)]


@pytest.mark.parametrize("mode", ["charge", "hold"])
async def test_an_approval_allows_only_the_call_it_binds(store: Store, mode: str) -> None:
    root = tid()
    pending = (await ask(store, root, mode=mode)).approval
    assert pending is not None
    await store.decide_approval(pending.id, True, "p0", "o@0", "", T0, TTL)
    other = await ask(store, root, gate("call-2"), mode=mode)  # another tool, args, cost, audience or chain
    assert other.status == "approval_required" and other.approval.id != pending.id
    assert (await ask(store, root, mode=mode)).status == "allowed"


async def test_denied_answers_with_the_reason_until_it_ends_then_the_call_asks_anew(store: Store) -> None:
    root = tid()
    pending = (await ask(store, root)).approval
    assert pending is not None
    denied = await store.decide_approval(pending.id, False, "p0", "operator", "not today", T0 + 5, TTL)
    assert (denied.state, denied.reason) == ("denied", "not today")
    for now in (T0 + 6, T0 + 5 + TTL - 1):
        out = await ask(store, root, now=now)
        assert (out.status, out.approval.id, out.approval.reason) == ("approval_denied", pending.id, "not today")
    anew = await ask(store, root, now=T0 + 5 + TTL)
    assert anew.status == "approval_required" and anew.new_approval


async def test_who_may_decide_and_how_often(store: Store) -> None:
    root = tid()
    pending = (await ask(store, root)).approval
    assert pending is not None
    for stranger in ("p2", "", "p0,p1", "p"):
        with pytest.raises(NotFound):
            await store.decide_approval(pending.id, True, stranger, "x@2", "", T0, TTL)
    with pytest.raises(NotFound):
        await store.decide_approval(tid() + "." + "0" * 32, True, None, "operator", "", T0, TTL)
    with pytest.raises(NotFound):
        await store.decide_approval("not-an-id", True, None, "operator", "", T0, TTL)
    assert (await store.approval(pending.id, T0)).state == "pending"
    first = await store.decide_approval(pending.id, True, "p1", "a@1", "first", T0 + 1, TTL)
    again = await store.decide_approval(pending.id, True, None, "operator", "second", T0 + 2, TTL)
    assert (again.state, again.decided_by, again.reason, again.expires_ms) == (
        "approved",
        "a@1",
        "first",
        first.expires_ms,
    )
    with pytest.raises(Conflict):
        await store.decide_approval(pending.id, False, None, "operator", "", T0 + 3, TTL)


async def test_pending_and_approved_approvals_expire(store: Store) -> None:
    root = tid()
    pending = (await ask(store, root)).approval
    assert pending is not None
    with pytest.raises(NotFound):
        await store.decide_approval(pending.id, True, None, "operator", "", T0 + TTL, TTL)
    assert (await store.approval(pending.id, T0 + TTL)).state == "expired"
    second = (await ask(store, root, now=T0 + TTL)).approval  # expired: the call asks anew
    assert second is not None and second.id != pending.id
    await store.decide_approval(second.id, True, None, "operator", "", T0 + TTL + 1, TTL)
    late = await ask(store, root, now=T0 + 2 * TTL + 1)  # approved but not used in time
    assert late.status == "approval_required" and late.approval.id not in (pending.id, second.id)
    states = {a.id: a.state for a in await store.approvals_of(root, T0 + 2 * TTL + 1)}
    assert states == {pending.id: "expired", second.id: "expired", late.approval.id: "pending"}
    assert await store.approval(pending.id, T0 + TTL + APPROVAL_KEPT_MS) is None  # no longer listed


async def test_budget_rate_and_revocation_are_decided_before_an_approval_is_asked(store: Store) -> None:
    root = tid()
    over = await store.decide(decision(root, 11 * USD, budgets=LEVELS, approval=gate()))
    assert over.status == "budget_exceeded" and over.approval is None
    await store.revoke(root, "p0", 0)
    assert (await ask(store, root)).status == "revoked"
    assert await store.approvals_of(root, T0) == []


async def test_a_request_id_never_replays_an_approval_answer(store: Store) -> None:
    root = tid()
    first = await ask(store, root, request_id="r1", fingerprint="f")
    assert first.status == "approval_required" and first.approval is not None
    await store.decide_approval(first.approval.id, True, None, "operator", "", T0 + 1, TTL)
    allowed = await ask(store, root, now=T0 + 2, request_id="r1", fingerprint="f")
    assert (allowed.status, allowed.replayed) == ("allowed", False)
    replay = await ask(store, root, now=T0 + 3, request_id="r1", fingerprint="f")
    assert (replay.status, replay.replayed) == ("allowed", True)  # the allowed answer is kept: no second charge
    assert replay.balances == [(2 * USD, 0)]


async def test_the_operator_lists_every_roots_approvals(store: Store) -> None:
    """Asked later than the other tests' approvals (which a shared Redis's index keeps): the newest it lists."""
    later = T0 + 10**9
    roots = [tid(), tid()]
    ids = {(await ask(store, root, now=later + i)).approval.id for i, root in enumerate(roots)}
    every = [a.id for a in await store.approvals_of(None, later + 5)]
    assert ids <= set(every)
    mine = [a for a in every if a in ids]
    assert mine == sorted(ids, key=lambda i: i.startswith(roots[0]))  # newest first


async def test_a_root_keeps_at_most_max_approvals(store: Store) -> None:
    root = tid()
    for i in range(MAX_APPROVALS):
        assert (await ask(store, root, gate(f"c{i}"))).status == "approval_required"
    over = await ask(store, root, gate("one-more"))
    assert (over.status, over.index, over.retry_after_ms) == ("rate_limited", -2, TTL + APPROVAL_KEPT_MS)
    later = await ask(store, root, gate("one-more"), now=T0 + TTL + APPROVAL_KEPT_MS)  # the first ones are gone
    assert later.status == "approval_required"


@pytest.mark.parametrize("backend", REDIS_BACKENDS, indirect=True)
async def test_every_process_hears_a_decision_made_in_another(open_backend: Opener) -> None:
    """Two clients of one Redis (or cluster) play two service processes: the one that waits hears the other's
    decision through approve.lua's PUBLISH, in well under a poll."""
    waiter, decider = open_backend(), open_backend()
    try:
        root = tid()
        pending = (await ask(waiter, root)).approval
        heard: asyncio.Queue[str] = asyncio.Queue()

        async def listen() -> None:
            async for approval_id in waiter.decisions():
                await heard.put(approval_id)

        listening = asyncio.create_task(listen())
        await asyncio.sleep(0.3)  # subscribed
        await decider.decide_approval(pending.id, True, None, "operator", "", T0 + 1, TTL)
        assert await asyncio.wait_for(heard.get(), 2) == pending.id
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
    finally:
        await waiter.close()
        await decider.close()


@pytest.mark.parametrize("backend", ["memory", "local"], indirect=True)
async def test_a_store_of_one_process_yields_no_decisions(store: Store) -> None:
    """Its decisions are all made in the process, which wakes its waiters itself (app/approvals.py)."""
    assert [approval_id async for approval_id in store.decisions()] == []
