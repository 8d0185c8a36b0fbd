"""The counter store: one interface, one semantics, for every backend (memory, Redis, Redis Cluster).

A decision is ONE atomic store call: idempotency claim, revocation of every chain prefix, rate windows,
then every budget level with `spent + held + cost <= limit`, and all writes or none. Amounts are integer
micro-units. Time (`now_ms`) comes from the caller so that every backend decides the same instant.
"""

from __future__ import annotations

import asyncio
import typing
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal, TypeVar

import msgspec

from app.errors import BadRequest, StoreUnavailable

IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
# A call that came without a request_id gets one the service makes up, claimed in the same store call that charges,
# so that a 503 after the store decided can be resent and replayed. Every such call stores an answer, so it is kept
# minutes, not a day: long enough for the SDK's resends and a caller's own.
MADE_UP_ID_TTL_MS = 5 * 60 * 1000
SETTLED_HOLD_TTL_MS = 24 * 3600 * 1000
ROOT = "*"  # the revocation marker that kills a whole root token id
MAX_HOLD_TTL_MS = 24 * 3600 * 1000  # the longest a hold is made or extended for at once (docs/api.md: 86400 s)
MAX_OPEN_HOLDS = 10_000  # per root token id: what one root can make the store keep and scan
PURGE_STEP = 256  # expired holds one store call releases at most: no call does unbounded work
MAX_APPROVALS = 1000  # per root token id: approvals kept (alive, or ended and still listed); more is rate_limited
APPROVAL_KEPT_MS = 3600 * 1000  # how long an ended approval (used, denied, expired) stays listed
APPROVAL_INDEX_SIZE = 100_000  # Redis: the newest approvals of every root that the operator's index keeps
APPROVAL_INDEX_READ = 10_000  # and the newest of those that one operator's list reads
# Per root: chains kept for the audit log's views and the console's tree (each at most 128 caveats of 256 characters
# and their prefix ids: ~40 KiB at worst); past it, new ones are not kept, and their events are the operator's only.
MAX_CHAINS_SEEN = 1000
TRIM_STEP = 16  # audit events one append lets out at most: trimming never pauses a call
# Steps one decide or inspect may take: enough for MAX_OPEN_HOLDS ending at once, with room for holds that
# other calls make meanwhile (each lives at least a second).
MAX_STEPS = 4 * (MAX_OPEN_HOLDS // PURGE_STEP + 1)


class BudgetSpec(msgspec.Struct, frozen=True, array_like=True):
    prefix: str
    limit: int  # micros
    charge: bool  # in the cost's currency: charged; else only reported
    expires_at_ms: int  # 0: never


class RateSpec(msgspec.Struct, frozen=True, array_like=True):
    prefix: str
    count: int
    window_ms: int


class ChainSeen(msgspec.Struct, frozen=True, array_like=True):
    """A chain as the service verified it, kept per root (the audit log's subtree views, the console's tree): its
    prefix ids (`prefixes[i]`: the chain through caveat i-1; the last is the chain's id), its caveat texts and their
    hops, and `denials`: what each denial the store decides says of this chain, as JSON members (`"allowed":false,
    "code":...`), by `status` or `status:index` (index into the Attempt's rates or budgets)."""

    prefixes: tuple[str, ...]
    caveats: tuple[str, ...]
    hops: tuple[int, ...]
    denials: dict[str, str]

    @property
    def chain(self) -> str:
        return self.prefixes[-1]


class Trail(msgspec.Struct, frozen=True, array_like=True):
    """The audit event a store step writes with what it decides (docs/audit.md). `head`: the JSON members every
    outcome shares (kind, root, chain, delegation, the call); `charged`: the cost as JSON, for an allowed charge;
    `chain`: the caller's chain, to be kept if the store does not have it yet."""

    head: str
    charged: str = ""
    chain: ChainSeen | None = None


class AuditPolicy(msgspec.Struct, frozen=True):
    """What the audit log keeps: events younger than `retention_ms`, at most `max_events` (oldest out first)."""

    retention_ms: int = 7 * 86400 * 1000
    max_events: int = 1_000_000


KEEP_A_WEEK = AuditPolicy()  # the defaults of docs/configuration.md


class ApprovalSpec(msgspec.Struct, frozen=True, array_like=True):
    """A call that an `approval` caveat gates, as the store keeps it until someone decides (docs/approvals.md).

    `binding` is the digest of what one approval allows: chain, tool, args, audience, cost and mode; the same
    call again finds the same approval by it. `approvers` are the chain prefix ids whose holders may decide: the
    caller's prefixes that end before the caveat. `details` is the approval's public view (tool, args, cost,
    audience, delegation, holder, caveat, hop) as JSON, kept as is."""

    binding: str
    approvers: tuple[str, ...]
    ttl_ms: int
    details: bytes
    at: str = ""  # the gating caveat as JSON members (`"caveat":...,"hop":n`), for the audit events


ApprovalStateName = Literal["pending", "approved", "denied", "used", "expired"]
APPROVAL_STATES: tuple[str, ...] = typing.get_args(ApprovalStateName)


class Approval(msgspec.Struct):
    """One approval as the store keeps it. `state` as of the `now_ms` it was read at: a pending or approved one
    past `expires_ms` reads as expired. `decided_by`: "operator", or the approver's holder name and hop."""

    id: str
    state: ApprovalStateName
    approvers: tuple[str, ...]
    details: bytes
    created_ms: int
    expires_ms: int
    decided_by: str = ""
    reason: str = ""


class Attempt(msgspec.Struct, frozen=True):
    """What one call asks the store to decide: its root and chain, its counters, its cost and mode (the answer is an
    Outcome). Named for what it is, the store's input: the decision is what comes back."""

    token_id: str
    now_ms: int
    call_id: str  # unique per request: the rate-log member and the hold id's suffix
    revocation: tuple[str, ...]  # every prefix id of the chain, in order
    rates: tuple[RateSpec, ...] = ()
    budgets: tuple[BudgetSpec, ...] = ()
    cost: int = 0
    currency: str = ""
    mode: Literal["charge", "hold"] = "charge"
    hold_ttl_ms: int = 300_000
    request_id: str | None = None
    fingerprint: str = ""
    # The service made request_id up for this call: new, so nothing is looked up under it; its answer is kept
    # MADE_UP_ID_TTL_MS, for the resend of a 503, which carries it as the caller's own id.
    made_up_id: bool = False
    verifier: str = ""  # the verifier key's name that asked ("" without verifier keys): only it closes the hold
    approval: ApprovalSpec | None = None  # an `approval` caveat gates this call: decided last, with the rest
    trail: Trail | None = None  # the audit event this decision writes (None: none, as in the store's own tests)


Status = Literal[
    "allowed",
    "revoked",
    "rate_limited",
    "budget_exceeded",
    "approval_required",
    "approval_denied",
    "conflict",
    "purging",
]


class Outcome(msgspec.Struct):
    """What the store decided. `index` points into revocation, rates or budgets for a denial; -1 is the whole
    root: revoked as a whole, or rate_limited for holding MAX_OPEN_HOLDS open holds already; -2, rate_limited
    for keeping MAX_APPROVALS approvals already. `purging` (never returned by Store.decide) is one bounded step
    that released expired holds and decided nothing.

    `approval`: the approval an approval_required or approval_denied names, or that an allowed call used up;
    `new_approval`: this call created it (it is announced once)."""

    status: Status
    index: int = 0
    retry_after_ms: int = 0
    balances: list[tuple[int, int]] = msgspec.field(default_factory=list)  # (spent, held) per budget
    hold_id: str | None = None
    replayed: bool = False
    approval: Approval | None = None
    new_approval: bool = False


class HoldState(msgspec.Struct):
    hold_id: str
    state: Literal["held", "settled", "released"]
    amount: int  # micros: held (while held), charged (settled), 0 (released)
    currency: str
    expires_ms: int = 0  # while held: when it is released by itself


class Inspection(msgspec.Struct):
    revoked_index: int | None  # the first revoked prefix, -1 for the whole root, None if not revoked
    balances: list[tuple[int, int]]
    full_rates: list[int] = msgspec.field(default_factory=list)  # the rates asked about whose window is full now
    rate_use: list[int] = msgspec.field(default_factory=list)  # of each rate asked about: the calls in its window now


T = TypeVar("T")
_json = msgspec.json.Encoder().encode


# -- audit events: how every store writes one (app/store/lua/lib.lua does the same in Lua) -------------------------
def event_json(kind: str, head: str, *members: str) -> str:
    """One event's JSON: its kind, the head its call shares, then what this step adds (empty members skipped)."""
    return "{" + ",".join((f'"kind":"{kind}"', head, *(m for m in members if m))) + "}"


def money_json(micros: int, currency: str) -> str:
    from caveats.money import format_micros  # the store's only use of the caveat language: the event's amounts

    return f'{{"amount":"{format_micros(micros)}","currency":"{currency}"}}'


def hold_members(hold_id: str, charged: str = "") -> str:
    return f'"hold_id":"{hold_id}"' + (f',"charged":{charged}' if charged else "")


def decision_members(approval_id: str, approve: bool, decided_by: str, reason: str) -> str:
    said = f"{'approved' if approve else 'denied'} by {decided_by}" + (f": {reason}" if reason else "")
    return f'"approval_id":"{approval_id}","allowed":{"true" if approve else "false"},"reason":{_json(said).decode()}'


def outcome_members(d: Attempt, trail: Trail, outcome: Outcome, denials: dict[str, str]) -> str:
    """What a verify's event adds for its outcome: allowed (charged, hold, approval used, replayed), or the denial
    as the chain's `denials` say it (ChainSeen), or approval_required/approval_denied with the gating caveat."""
    status = outcome.status
    out: list[str] = []
    if status == "allowed":
        out.append('"allowed":true')
        if d.mode == "charge" and trail.charged and not outcome.replayed:
            out.append(f'"charged":{trail.charged}')
        if outcome.hold_id:
            out.append(f'"hold_id":"{outcome.hold_id}"')
    elif status in ("approval_required", "approval_denied"):
        out.append(f'"allowed":false,"code":"{status}"')
        if d.approval is not None and d.approval.at:
            out.append(d.approval.at)
    else:
        said = denials.get(f"{status}:{outcome.index}") or denials.get(status)
        out.append(said or f'"allowed":false,"code":"{status}"')
    if outcome.approval is not None:
        out.append(f'"approval_id":"{outcome.approval.id}"')
    if outcome.replayed:
        out.append('"replayed":true')
    return ",".join(out)


def approval_state(approval: Approval, now_ms: int) -> ApprovalStateName:
    """Its state at `now_ms`: pending or approved past its end is expired (denied stays denied while listed)."""
    if approval.state in ("pending", "approved") and now_ms >= approval.expires_ms:
        return "expired"
    return approval.state


async def stepwise(step: Callable[[], Awaitable[T | None]]) -> T:
    """Call `step` until it answers: None means it released PURGE_STEP expired holds, more remain, and it decided
    nothing (an expired hold still counted). Each step is one bounded store call; between two, other calls run."""
    for _ in range(MAX_STEPS):
        answer = await step()
        if answer is not None:
            return answer
        await asyncio.sleep(0)
    raise StoreUnavailable("expired holds of this root are still being released; retry")


def hold_token_id(hold_id: str) -> str | None:
    """Holds are named `<token id>.<call id>` so that every store finds the root's keys from the id alone."""
    token_id, dot, rest = hold_id.partition(".")
    ok = dot and len(token_id) == 32 and len(rest) == 32
    return token_id if ok and all(c in "0123456789abcdef" for c in token_id + rest) else None


def refuse_negative(amount: int | None) -> None:
    """A settle charges: a negative amount would credit the budget. Refused before the store reads or writes."""
    if amount is not None and amount < 0:
        raise BadRequest("amount must not be negative", "amount")


def refuse_bad_ttl(ttl_ms: int) -> None:
    """An extend to now or before would release the hold under the name of keeping it, and one past MAX_HOLD_TTL_MS
    (the API's bound) is an end Redis cannot keep (past 2^63 it formats as -2^63: over at once, where memory:// keeps
    it): both refused, nothing changes."""
    if not 0 < ttl_ms <= MAX_HOLD_TTL_MS:
        raise BadRequest("hold_ttl must be positive and at most 24 h", "hold_ttl")


class Store(ABC):
    """Every method either answers for sure or raises StoreUnavailable; none leaves a partial write."""

    @abstractmethod
    async def decide(self, d: Attempt) -> Outcome: ...

    @abstractmethod
    async def lookup(
        self, token_id: str, request_id: str, fingerprint: str, now_ms: int | None = None
    ) -> Outcome | None:
        """A stored answer for this request id (status `conflict` if the request differs), without deciding."""

    @abstractmethod
    async def settle(self, hold_id: str, amount: int | None, now_ms: int, verifier: str = "") -> HoldState:
        """Charge `amount` (None: all held), release the rest. NotFound, Conflict, or BadRequest (< 0, > held).
        A hold made for a named verifier is NotFound to any other: one verifier cannot close another's."""

    @abstractmethod
    async def release(self, hold_id: str, now_ms: int, verifier: str = "") -> HoldState: ...

    @abstractmethod
    async def extend(self, hold_id: str, ttl_ms: int, now_ms: int, verifier: str = "") -> HoldState:
        """A hold still held now expires `ttl_ms` after `now_ms` (sooner or later than before). NotFound as for
        settle; Conflict for a settled or released hold, which has nothing left to keep."""

    @abstractmethod
    async def revoke(self, token_id: str, prefix: str, expires_at_ms: int, now_ms: int = 0, event: str = "") -> None:
        """Mark `prefix` (ROOT: the whole root) revoked until expires_at_ms (0: forever); `event`, if given, is the
        audit event (event_json) written with it."""

    @abstractmethod
    async def record(self, token_id: str, now_ms: int, event: str, chain: ChainSeen | None = None) -> None:
        """Write one audit event (event_json) that no other step writes: a mint, a denial decided without the
        store; and keep `chain` among the root's chains seen if it is not yet."""

    @abstractmethod
    async def audit_events(
        self, token_id: str | None, before: str | None, after: str | None, limit: int
    ) -> list[tuple[str, int, str]]:
        """Audit events (id, at ms, JSON) of one root, or of all: newest first older than the id `before`, or oldest
        first newer than `after`, at most `limit`. Ids are the store's own, ordered as the events were written."""

    @abstractmethod
    async def chains_seen(self, token_id: str) -> list[ChainSeen]:
        """The chains of this root the service has seen (at most MAX_CHAINS_SEEN)."""

    @abstractmethod
    async def inspect(
        self,
        token_id: str,
        revocation: tuple[str, ...],
        budgets: tuple[str, ...],
        now_ms: int,
        rates: tuple[RateSpec, ...] = (),
    ) -> Inspection:
        """What decide would find, changing nothing a call would see: revocation, balances, full rate windows."""

    @abstractmethod
    async def approvals_of(self, token_id: str | None, now_ms: int) -> list[Approval]:
        """The approvals still listed for this root (None: every root), newest first, states as of now_ms."""

    @abstractmethod
    async def approval(self, approval_id: str, now_ms: int) -> Approval | None:
        """One approval while it is listed, else None."""

    @abstractmethod
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
        """Approve or deny a pending approval; the same decision again answers as the first did. `approver` is the
        deciding token's chain id (None: the operator). NotFound when it is unknown or expired, or `approver` is not
        one of its approvers; Conflict when it was decided the other way. An approved one must be used within
        `ttl_ms`; a denied one answers its call's retries that long."""

    async def decisions(self) -> AsyncIterator[str]:
        """The ids of approvals decided by any process sharing this store, as they are decided; raises
        StoreUnavailable when it stops hearing them. A store of one process yields none: all are decided there."""
        return
        yield

    @abstractmethod
    async def ready(self) -> str | None:
        """None when ready, else why not in plain words."""

    async def close(self) -> None:
        return None
