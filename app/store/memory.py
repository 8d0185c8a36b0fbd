"""`memory://`: the embedded single-process store. Each call runs without an await, so it is atomic by itself."""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from dataclasses import dataclass

import msgspec

from app.errors import BadRequest, Conflict, NotFound
from app.store.base import (
    APPROVAL_KEPT_MS,
    IDEMPOTENCY_TTL_MS,
    KEEP_A_WEEK,
    MAX_APPROVALS,
    MAX_CHAINS_SEEN,
    MAX_OPEN_HOLDS,
    PURGE_STEP,
    ROOT,
    SETTLED_HOLD_TTL_MS,
    TRIM_STEP,
    Approval,
    ApprovalSpec,
    Attempt,
    AuditPolicy,
    ChainSeen,
    HoldState,
    Inspection,
    Outcome,
    RateSpec,
    Store,
    Trail,
    approval_state,
    decision_members,
    event_json,
    hold_members,
    hold_token_id,
    money_json,
    outcome_members,
    refuse_bad_ttl,
    refuse_negative,
    stepwise,
)
from caveats.rate import MAX_WINDOW

SWEEP_EVERY = 4096
UNKEPT = frozenset({"conflict", "approval_required", "approval_denied"})  # answers a request_id does not keep
MAX_WINDOW_MS = MAX_WINDOW * 1000


@dataclass(slots=True)
class _Hold:
    token_id: str
    prefixes: tuple[str, ...]
    amount: int
    currency: str
    expires_ms: int
    verifier: str = ""
    state: str = "held"
    settled: int = 0
    head: str = ""  # its verify's audit event head: the settle, release, extend or expire event says the same


@dataclass(slots=True)
class _Approval:
    """An approval and what binds it: the caller's call (`binding`) within its root (`token_id`)."""

    token_id: str
    binding: str
    approval: Approval
    ends_ms: int = 0  # once ended (used, denied, expired): when it is no longer listed
    head: str = ""  # the asking call's audit event head: the decision's event says the same


class _State(msgspec.Struct, array_like=True):
    """Everything a MemoryStore holds, as LocalStore snapshots it. A new field of MemoryStore goes here too
    (tests/store/test_local.py checks that the two agree)."""

    revoked: dict[tuple[str, str], int]
    budgets: dict[tuple[str, str], list[int]]
    rates: dict[tuple[str, str], list[int]]
    holds: dict[str, _Hold]
    active: dict[str, dict[str, int]]
    ends: dict[str, list[tuple[int, str]]]
    answers: dict[tuple[str, str], tuple[str, bytes, int]]
    calls: int
    approvals: dict[str, dict[str, _Approval]] = {}
    bindings: dict[tuple[str, str], str] = {}
    events: list[tuple[int, int, str, str]] = []
    event_seq: int = 0
    chains: dict[str, dict[str, ChainSeen]] = {}


_decode_state = msgspec.msgpack.Decoder(_State).decode


def _view(kept: _Approval, now: int) -> Approval:
    """A copy as of `now`: a caller's copy cannot change the store's."""
    return msgspec.structs.replace(kept.approval, state=approval_state(kept.approval, now))


def _seq(cursor: str) -> int:
    """An event id as this store wrote it; any other text is no position (the start)."""
    return int(cursor) if cursor.isdigit() and len(cursor) <= 20 else 0


def _first(event: tuple[int, int, str, str]) -> int:
    return event[0]


def _listed_until(kept: _Approval) -> int:
    """APPROVAL_KEPT_MS after it ended: used or denied (`ends_ms`), or expired."""
    return kept.ends_ms or kept.approval.expires_ms + APPROVAL_KEPT_MS


def _listed(kept: _Approval, now: int) -> bool:
    return now < _listed_until(kept)


def _alive(expires_ms: int, now_ms: int) -> bool:
    return expires_ms == 0 or now_ms < expires_ms


class MemoryStore(Store):
    def __init__(self, audit: AuditPolicy = KEEP_A_WEEK) -> None:
        self.audit = audit
        self.revoked: dict[tuple[str, str], int] = {}
        self.budgets: dict[tuple[str, str], list[int]] = {}  # [spent, held]
        self.rates: dict[tuple[str, str], deque[int]] = {}
        self.holds: dict[str, _Hold] = {}
        self.active: dict[str, dict[str, int]] = {}  # token id -> hold id -> expiry, of its open holds
        # token id -> (expiry, hold id) heap of its open holds, to find the expired ones without a scan. An entry
        # whose hold has closed or moved its end since is stale: skipped when it comes up, or compacted away.
        self.ends: dict[str, list[tuple[int, str]]] = {}
        self.answers: dict[tuple[str, str], tuple[str, bytes, int]] = {}  # fingerprint, outcome, expiry
        self.calls = 0
        self.approvals: dict[str, dict[str, _Approval]] = {}  # token id -> approval id -> one still listed
        self.bindings: dict[tuple[str, str], str] = {}  # (token id, binding) -> the approval that call has
        # The audit log: (seq, at ms, token id, the event's JSON), oldest first; and the chains seen.
        self.events: deque[tuple[int, int, str, str]] = deque()
        self.event_seq = 0
        self.chains: dict[str, dict[str, ChainSeen]] = {}  # token id -> chain id -> the chain

    async def decide(self, d: Attempt) -> Outcome:
        return await stepwise(lambda: self._decide_step(d))

    async def _decide_step(self, d: Attempt) -> Outcome | None:
        tid, now = d.token_id, d.now_ms
        self.calls += 1
        if self.calls % SWEEP_EVERY == 0:
            self._sweep(now)
        if not self._purge(tid, now):
            return None
        if d.request_id is not None:
            stored = self._answer(tid, d.request_id, d.fingerprint, now)
            if stored is not None:
                if d.trail is not None and stored.status != "conflict":
                    self._verify_event(d, d.trail, stored)
                return stored
        outcome = self._decide(d)
        if d.trail is not None and outcome.status != "conflict":
            self._verify_event(d, d.trail, outcome)
        # An id the service made up is only ever resent after a 503 that followed the decision, and here the call
        # that decides is the one that answers: keeping one answer per call would cost memory for nothing.
        # An approval's answer is never replayed: the same request again must see the approval's decision.
        if d.request_id is not None and outcome.status not in UNKEPT and not d.made_up_id:
            self.answers[(tid, d.request_id)] = (
                d.fingerprint,
                msgspec.msgpack.encode(outcome),
                now + IDEMPOTENCY_TTL_MS,
            )
        return outcome

    def _decide(self, d: Attempt) -> Outcome:
        tid, now = d.token_id, d.now_ms
        revoked = self._revoked_index(tid, d.revocation, now)
        if revoked is not None:
            return Outcome("revoked", revoked)
        for i, rate in enumerate(d.rates):
            log = self.rates.get((tid, rate.prefix), deque())
            while log and log[0] <= now - rate.window_ms:
                log.popleft()
            if len(log) >= rate.count:
                retry = log[len(log) - rate.count] + rate.window_ms - now if rate.count else rate.window_ms
                return Outcome("rate_limited", i, retry_after_ms=retry)
        open_holds = self.active.get(tid, {})
        if d.mode == "hold" and len(open_holds) >= MAX_OPEN_HOLDS:  # all live: purge is done
            return Outcome("rate_limited", -1, retry_after_ms=min(open_holds.values()) - now)
        balances = [self._balance(tid, b.prefix) for b in d.budgets]
        for i, (b, (spent, held)) in enumerate(zip(d.budgets, balances, strict=True)):
            if b.charge and spent + held + d.cost > b.limit:
                return Outcome("budget_exceeded", i, balances=balances)
        used = None
        if d.approval is not None:
            gate = self._gate(tid, d.approval, d.call_id, now, d.trail.head if d.trail else "")
            if gate.approval is None or gate.approval.state != "approved":
                return gate
            used = gate.approval
        # Everything holds: write it all.
        for rate in d.rates:
            self.rates.setdefault((tid, rate.prefix), deque()).append(now)
        hold_id = None
        charged = tuple(b.prefix for b in d.budgets if b.charge)
        if d.mode == "hold":
            hold_id = f"{tid}.{d.call_id}"
            expires = now + d.hold_ttl_ms
            head = d.trail.head if d.trail is not None else ""
            self.holds[hold_id] = _Hold(tid, charged, d.cost, d.currency, expires, d.verifier, head=head)
            self._open(tid, hold_id, expires)
        slot = 1 if d.mode == "hold" else 0
        for b in d.budgets:
            if b.charge:
                self.budgets.setdefault((tid, b.prefix), [0, 0])[slot] += d.cost
        if used is not None:  # one approval, one call: it ends with the call it allowed
            used.state = "used"
            self.approvals[tid][used.id].ends_ms = now + APPROVAL_KEPT_MS
            del self.bindings[(tid, d.approval.binding)]  # type: ignore[union-attr]
        balances = [self._balance(tid, b.prefix) for b in d.budgets]
        approval = msgspec.structs.replace(used) if used is not None else None
        return Outcome("allowed", balances=balances, hold_id=hold_id, approval=approval)

    # -- approvals ------------------------------------------------------------------------------------------
    def _gate(self, tid: str, spec: ApprovalSpec, call_id: str, now: int, head: str) -> Outcome:
        """The approval this call has: approved (the caller goes on and uses it up), pending or denied (the
        answer), or none alive, when a new pending one is made (rate_limited -2 past MAX_APPROVALS)."""
        kept = self.approvals.get(tid, {}).get(self.bindings.get((tid, spec.binding), ""))
        if kept is not None:
            state = approval_state(kept.approval, now)
            if state == "approved":
                return Outcome("allowed", approval=kept.approval)
            if state == "pending":
                return Outcome("approval_required", approval=_view(kept, now))
            if state == "denied" and now < kept.approval.expires_ms:
                return Outcome("approval_denied", approval=_view(kept, now))
        of_root = self._kept_approvals(tid, now)
        if len(of_root) >= MAX_APPROVALS:
            first_end = min(_listed_until(kept) for kept in of_root.values())
            return Outcome("rate_limited", -2, retry_after_ms=first_end - now)
        approval = Approval(f"{tid}.{call_id}", "pending", spec.approvers, spec.details, now, now + spec.ttl_ms)
        of_root[approval.id] = _Approval(tid, spec.binding, approval, head=head)
        self.bindings[(tid, spec.binding)] = approval.id
        return Outcome("approval_required", approval=_view(of_root[approval.id], now), new_approval=True)

    def _kept_approvals(self, tid: str, now: int) -> dict[str, _Approval]:
        """The root's approvals, less those no longer listed (ended more than APPROVAL_KEPT_MS ago)."""
        of_root = self.approvals.setdefault(tid, {})
        for approval_id, kept in list(of_root.items()):
            if not _listed(kept, now):
                del of_root[approval_id]
                if self.bindings.get((tid, kept.binding)) == approval_id:
                    del self.bindings[(tid, kept.binding)]
        return of_root

    def _find_approval(self, approval_id: str, now: int) -> _Approval | None:
        tid = hold_token_id(approval_id)  # named like holds: `<token id>.<call id>`
        kept = self.approvals.get(tid or "", {}).get(approval_id)
        return kept if kept is not None and _listed(kept, now) else None

    async def approvals_of(self, token_id: str | None, now_ms: int) -> list[Approval]:
        """Reads only (local:// journals no read): what is no longer listed is skipped here, dropped by a step."""
        roots = list(self.approvals) if token_id is None else [token_id]
        found = [
            _view(kept, now_ms)
            for tid in roots
            for kept in self.approvals.get(tid, {}).values()
            if _listed(kept, now_ms)
        ]
        return sorted(found, key=lambda a: (a.created_ms, a.id), reverse=True)

    async def approval(self, approval_id: str, now_ms: int) -> Approval | None:
        kept = self._find_approval(approval_id, now_ms)
        return None if kept is None else _view(kept, now_ms)

    async def decide_approval(
        self,
        approval_id: str,
        approve: bool,
        approver: str | None,
        decided_by: str,
        reason: str,
        now_ms: int,
        ttl_ms: int,
    ) -> Approval:
        kept = self._find_approval(approval_id, now_ms)
        state = "expired" if kept is None else approval_state(kept.approval, now_ms)
        if kept is None or state == "expired" or (approver is not None and approver not in kept.approval.approvers):
            raise NotFound("no such approval that this credential may decide: unknown, expired, or not its to decide")
        wanted = "approved" if approve else "denied"
        if state == "pending":
            approval = kept.approval
            approval.state, approval.decided_by, approval.reason = wanted, decided_by, reason  # type: ignore[assignment]
            approval.expires_ms = now_ms + ttl_ms  # approved: to be used within; denied: answers its retries
            if not approve:
                kept.ends_ms = approval.expires_ms + APPROVAL_KEPT_MS
            if kept.head:
                said = decision_members(approval_id, approve, decided_by, reason)
                self._event(kept.token_id, now_ms, event_json("approval", kept.head, said))
        elif state != wanted and not (approve and state == "used"):
            raise Conflict(f"the approval was already {state}")
        return _view(kept, now_ms)

    async def lookup(
        self, token_id: str, request_id: str, fingerprint: str, now_ms: int | None = None
    ) -> Outcome | None:
        return self._answer(token_id, request_id, fingerprint, now_ms)

    def _answer(self, tid: str, request_id: str, fingerprint: str, now: int | None) -> Outcome | None:
        entry = self.answers.get((tid, request_id))
        if entry is None or (now is not None and not _alive(entry[2], now)):
            return None
        if entry[0] != fingerprint:
            return Outcome("conflict")
        outcome = msgspec.msgpack.decode(entry[1], type=Outcome)
        outcome.replayed = True
        return outcome

    def _balance(self, tid: str, prefix: str) -> tuple[int, int]:
        spent, held = self.budgets.get((tid, prefix), (0, 0))
        return spent, held

    def _revoked_index(self, tid: str, prefixes: tuple[str, ...], now: int) -> int | None:
        if _alive(self.revoked.get((tid, ROOT), -1), now):
            return -1
        for i, prefix in enumerate(prefixes):
            if _alive(self.revoked.get((tid, prefix), -1), now):
                return i
        return None

    def _sweep(self, now: int) -> None:
        """Forget what Redis would have expired by now: old answers, closed holds, revocation marks, rate logs."""
        self.answers = {k: v for k, v in self.answers.items() if _alive(v[2], now)}
        self.holds = {k: h for k, h in self.holds.items() if h.state == "held" or _alive(h.expires_ms, now)}
        self.revoked = {k: exp for k, exp in self.revoked.items() if _alive(exp, now)}
        self.rates = {k: log for k, log in self.rates.items() if log and log[-1] > now - MAX_WINDOW_MS}
        self.active = {tid: open_holds for tid, open_holds in self.active.items() if open_holds}
        self.ends = {tid: heap for tid, heap in self.ends.items() if tid in self.active}
        self.approvals = {tid: kept for tid in list(self.approvals) if (kept := self._kept_approvals(tid, now))}

    def _open(self, tid: str, hold_id: str, expires: int) -> None:
        """Record an open hold's (new) end. The heap is rebuilt when stale entries outnumber the open holds, so
        repeated extends cannot grow it beyond twice what is open."""
        open_holds = self.active.setdefault(tid, {})
        open_holds[hold_id] = expires
        heap = self.ends.setdefault(tid, [])
        heapq.heappush(heap, (expires, hold_id))
        if len(heap) > 2 * len(open_holds) + PURGE_STEP:
            heap[:] = [(end, h) for h, end in open_holds.items()]
            heapq.heapify(heap)

    def _purge(self, tid: str, now: int) -> bool:
        """Release expired holds of this root, at most PURGE_STEP heap entries per call (see lib.lua purge): True
        when none is left, False when the caller must call again before it decides on balances."""
        heap, open_holds = self.ends.get(tid), self.active.get(tid, {})
        for _ in range(PURGE_STEP):
            if not heap or heap[0][0] > now:
                return True
            end, hold_id = heapq.heappop(heap)
            if open_holds.get(hold_id) == end:  # else stale: closed, or extended to another end
                self._drop(tid, hold_id, now)
        return not heap or heap[0][0] > now

    def _drop(self, tid: str, hold_id: str, now: int) -> None:
        """An open hold that ended: its amount stops counting, and it is forgotten."""
        hold = self.holds.pop(hold_id)
        if hold.head:
            self._event(tid, now, event_json("expire", hold.head, hold_members(hold_id)))
        del self.active[tid][hold_id]
        for prefix in hold.prefixes:
            self.budgets[(tid, prefix)][1] -= hold.amount

    def _hold(self, hold_id: str, now: int, verifier: str) -> _Hold:
        tid = hold_token_id(hold_id)
        if tid is None:
            raise NotFound("no such hold")
        self._purge(tid, now)  # one bounded step; this hold's own end is checked here
        hold = self.holds.get(hold_id)
        if hold is not None and hold.state == "held" and not _alive(hold.expires_ms, now):
            self._drop(tid, hold_id, now)
            hold = None
        if hold is None or (hold.state != "held" and not _alive(hold.expires_ms, now)):
            raise NotFound("the hold is unknown or expired")
        if hold.verifier and hold.verifier != verifier:  # as unknown: another verifier learns nothing of it
            raise NotFound("the hold is unknown or expired")
        return hold

    def _close(self, hold_id: str, hold: _Hold, state: str, amount: int, now: int) -> None:
        for prefix in hold.prefixes:
            balance = self.budgets[(hold.token_id, prefix)]
            balance[0] += amount
            balance[1] -= hold.amount
        hold.state, hold.settled, hold.expires_ms = state, amount, now + SETTLED_HOLD_TTL_MS
        hold.prefixes = ()  # kept 24 h to answer repeats: small, whatever the chain's budgets
        if hold.head:
            kind = "settle" if state == "settled" else "release"
            charged = money_json(amount, hold.currency) if state == "settled" else ""
            self._event(hold.token_id, now, event_json(kind, hold.head, hold_members(hold_id, charged)))
            hold.head = ""
        del self.active[hold.token_id][hold_id]

    async def settle(self, hold_id: str, amount: int | None, now_ms: int, verifier: str = "") -> HoldState:
        refuse_negative(amount)
        hold = self._hold(hold_id, now_ms, verifier)
        amount = hold.amount if amount is None else amount
        if hold.state == "released":
            raise Conflict("the hold was already released")
        if hold.state == "settled":
            if amount != hold.settled:
                raise Conflict("the hold was settled with another amount")
        elif amount > hold.amount:
            raise BadRequest("amount is more than the hold", "amount")
        else:
            self._close(hold_id, hold, "settled", amount, now_ms)
        return HoldState(hold_id, "settled", hold.settled, hold.currency)

    async def release(self, hold_id: str, now_ms: int, verifier: str = "") -> HoldState:
        hold = self._hold(hold_id, now_ms, verifier)
        if hold.state == "settled":
            raise Conflict("the hold was already settled")
        if hold.state == "held":
            self._close(hold_id, hold, "released", 0, now_ms)
        return HoldState(hold_id, "released", 0, hold.currency)

    async def extend(self, hold_id: str, ttl_ms: int, now_ms: int, verifier: str = "") -> HoldState:
        refuse_bad_ttl(ttl_ms)
        hold = self._hold(hold_id, now_ms, verifier)
        if hold.state != "held":
            raise Conflict(f"the hold was already {hold.state}: it has nothing left to extend")
        hold.expires_ms = now_ms + ttl_ms
        self._open(hold.token_id, hold_id, hold.expires_ms)
        if hold.head:
            self._event(hold.token_id, now_ms, event_json("extend", hold.head, hold_members(hold_id)))
        return HoldState(hold_id, "held", hold.amount, hold.currency, hold.expires_ms)

    async def revoke(self, token_id: str, prefix: str, expires_at_ms: int, now_ms: int = 0, event: str = "") -> None:
        current = self.revoked.get((token_id, prefix))
        if current != 0 and (current is None or expires_at_ms == 0 or expires_at_ms > current):
            self.revoked[(token_id, prefix)] = expires_at_ms
        if event:
            self._event(token_id, now_ms, event)

    # -- the audit log ----------------------------------------------------------------------------------------
    async def record(self, token_id: str, now_ms: int, event: str, chain: ChainSeen | None = None) -> None:
        if chain is not None:
            self._see(token_id, chain)
        self._event(token_id, now_ms, event)

    def _verify_event(self, d: Attempt, trail: Trail, outcome: Outcome) -> None:
        if trail.chain is not None:
            self._see(d.token_id, trail.chain)
        chain_id = d.revocation[-1] if d.revocation else ""  # the last prefix is the chain's id
        seen = self.chains.get(d.token_id, {}).get(chain_id)
        members = outcome_members(d, trail, outcome, seen.denials if seen is not None else {})
        self._event(d.token_id, d.now_ms, event_json("verify", trail.head, members))

    def _see(self, tid: str, chain: ChainSeen) -> None:
        of_root = self.chains.setdefault(tid, {})
        if chain.chain not in of_root and len(of_root) < MAX_CHAINS_SEEN:
            of_root[chain.chain] = chain

    def _event(self, tid: str, now: int, event: str) -> None:
        """Append one event, and let out the oldest past AuditPolicy (a few per append: never a long pause)."""
        self.event_seq += 1
        self.events.append((self.event_seq, now, tid, event))
        events, oldest = self.events, now - self.audit.retention_ms
        for _ in range(TRIM_STEP):
            if not events or (len(events) <= self.audit.max_events and events[0][1] > oldest):
                break
            events.popleft()

    async def audit_events(
        self, token_id: str | None, before: str | None, after: str | None, limit: int
    ) -> list[tuple[str, int, str]]:
        """Reads only. An event's id is its sequence number, in 20 digits: ids sort as the events were written."""
        events, found = self.events, []
        if after is not None:
            indexes: range = range(bisect.bisect_right(events, _seq(after), key=_first), len(events))
        else:
            end = len(events) if before is None else bisect.bisect_left(events, _seq(before), key=_first)
            indexes = range(end - 1, -1, -1)
        for i in indexes:
            seq, at, tid, event = events[i]
            if token_id in (None, tid):
                found.append((f"{seq:020d}", at, event))
                if len(found) >= limit:
                    break
        return found

    async def chains_seen(self, token_id: str) -> list[ChainSeen]:
        return list(self.chains.get(token_id, {}).values())

    async def inspect(
        self,
        token_id: str,
        revocation: tuple[str, ...],
        budgets: tuple[str, ...],
        now_ms: int,
        rates: tuple[RateSpec, ...] = (),
    ) -> Inspection:
        return await stepwise(lambda: self._inspect_step(token_id, revocation, budgets, now_ms, rates))

    async def _inspect_step(
        self,
        token_id: str,
        revocation: tuple[str, ...],
        budgets: tuple[str, ...],
        now_ms: int,
        rates: tuple[RateSpec, ...],
    ) -> Inspection | None:
        if not self._purge(token_id, now_ms):
            return None
        use = [sum(t > now_ms - rate.window_ms for t in self.rates.get((token_id, rate.prefix), ())) for rate in rates]
        full = [i for i, (rate, used) in enumerate(zip(rates, use, strict=True)) if used >= rate.count]
        balances = [self._balance(token_id, p) for p in budgets]
        return Inspection(self._revoked_index(token_id, revocation, now_ms), balances, full, use)

    async def ready(self) -> str | None:
        return None

    def dump(self) -> bytes:
        """The whole state as bytes, exact: `load` of it gives a store that decides every later call alike."""
        rates = {key: list(log) for key, log in self.rates.items()}
        state = _State(
            self.revoked,
            self.budgets,
            rates,
            self.holds,
            self.active,
            self.ends,
            self.answers,
            self.calls,
            self.approvals,
            self.bindings,
            list(self.events),
            self.event_seq,
            self.chains,
        )
        return msgspec.msgpack.encode(state)

    def load(self, data: bytes) -> None:
        state = _decode_state(data)
        self.revoked, self.budgets, self.holds = state.revoked, state.budgets, state.holds
        self.rates = {key: deque(log) for key, log in state.rates.items()}
        self.active, self.ends, self.answers, self.calls = state.active, state.ends, state.answers, state.calls
        self.approvals, self.bindings = state.approvals, state.bindings
        self.events, self.event_seq, self.chains = deque(state.events), state.event_seq, state.chains
