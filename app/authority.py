"""The service's decisions, independent of HTTP: mint, verify (the hot path), holds, revoke, inspect.

verify: token -> Verifier (decode, limits, HMAC, cached) -> stateless caveats in chain order -> ONE store
call for revocation, rates, budgets and, last, an approval when an `approval` caveat gates the call (app/approvals.py).
A denial before the store call never touches the counters.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import msgspec

from app.approvals import Approvals, Credential, spec_for
from app.audit import Trails, chain_members, denial_members, members
from app.errors import BadRequest, Conflict, InvalidToken, NotFound, StoreUnavailable
from app.schemas import (
    Allowed,
    ApprovalRef,
    BudgetView,
    CaveatView,
    Denied,
    HoldResponse,
    HopView,
    InspectResponse,
    MintRequest,
    MintResponse,
    Money,
    VerifyRequest,
)
from app.store.base import (
    MAX_APPROVALS,
    MAX_OPEN_HOLDS,
    Approval,
    Attempt,
    BudgetSpec,
    Inspection,
    Outcome,
    RateSpec,
    Store,
    Trail,
    event_json,
)
from app.token.keys import KeyRing
from app.token.mint import mint
from app.token.verifier import VerifiedChain, Verifier
from caveats.base import Context, Counter, Role
from caveats.budget import Budget
from caveats.build import restriction_caveats
from caveats.chain import Step
from caveats.denial import Code, Denial
from caveats.expires import format_instant, parse_instant
from caveats.grammar import CaveatSyntaxError
from caveats.money import Amount, format_micros, parse_micros
from caveats.rate import Rate

# Decimals as JSON numbers: as strings, the argument 7.0 and the argument "7.0" would be one request.
log = logging.getLogger("agentcaps")
_fingerprint_encoder = msgspec.json.Encoder(order="sorted", decimal_format="number")
_encode = msgspec.json.Encoder().encode
T = TypeVar("T")


Kind = Literal["allowed", "denied", "rate_limited", "unavailable"]


@dataclass
class Verdict:
    """A verify's decision as a value: its kind, the body that says it, and what the caller needs beside it."""

    kind: Kind
    body: Allowed | Denied
    retry_after: int | None = None  # rate_limited: seconds until a window has room
    charged: Amount | None = None  # what this call newly spent: not a hold, not a request_id replay
    cause: StoreUnavailable | None = None  # unavailable: what the store said, for the log, never for the caller
    pending: str | None = None  # approval_required: the approval a `wait` waits for


def amount_from_wire(m: Money) -> Amount:
    return Amount(m.currency, parse_micros(m.amount))


def amount_to_wire(a: Amount) -> Money:
    """An amount as every answer writes it: at least two decimals."""
    return Money(format_micros(a.micros), a.currency)


class Authority:
    def __init__(
        self,
        ring: KeyRing,
        store: Store,
        location: str,
        clock: Callable[[], float] = time.time,
        approvals: Approvals | None = None,
        trails: Trails | None = None,
    ) -> None:
        self.ring = ring
        self.verifier = Verifier(ring)
        self.store = store
        self.location = location
        self.clock = clock
        self.approvals = approvals or Approvals(store, 900, "", location, clock)
        self.trails = trails or Trails()

    # -- mint -----------------------------------------------------------------------------------------
    async def mint(self, req: MintRequest) -> MintResponse:
        now = int(self.clock())
        if req.expires_in is not None and req.expires_at is not None:
            raise BadRequest("give expires_in or expires_at, not both", "expires_at")
        expires_at = now + req.expires_in if req.expires_in is not None else None
        if req.expires_at is not None:
            try:
                expires_at = parse_instant(req.expires_at)
            except CaveatSyntaxError as e:
                raise BadRequest(str(e), "expires_at") from None
            if expires_at <= now:
                raise BadRequest("is not in the future", "expires_at")
        try:
            texts = restriction_caveats(
                to=req.subject,
                budget=amount_from_wire(req.budget) if req.budget else None,
                cost_cap=amount_from_wire(req.cost_cap) if req.cost_cap else None,
                tools=req.tools,
                audience=req.audience,
                expires_at=expires_at,
                max_depth=req.max_depth,
                rate=req.rate,
                caveats=req.caveats,
            )
        except ValueError as e:
            field, _, reason = str(e).partition(": ")
            raise BadRequest(reason, field) from None
        try:
            token, token_id = mint(self.ring, self.location, texts)
        except ValueError as e:  # over the token limits (docs/caveats.md), which the verifier would refuse
            raise BadRequest(str(e), "caveats") from None
        chain = self.verifier.verify(token)
        seen = self.trails.unsent(chain, lambda: self._denials(chain))
        event = event_json("mint", members(chain_members(chain)))
        try:  # the token is minted whatever the store says: without it, only the event is lost, and said
            await self.store.record(token_id, int(self.clock() * 1000), event, seen)
            self.trails.sent(seen)
        except StoreUnavailable as e:
            log.warning("audit event of the mint of %s not written: %s", token_id, e)
        exp = chain.analysis.expires_at
        return MintResponse(token, token_id, format_instant(exp) if exp is not None else None, texts)

    # -- verify ---------------------------------------------------------------------------------------
    async def verify(self, req: VerifyRequest, audience: str | None, verifier: str | None = None) -> Verdict:
        """`verifier`: the name of the verifier key that asked (None without verifier keys); a hold is its own.
        A store that cannot decide is a decision too, `unavailable`: never an allow on doubt. With `wait`, an
        approval_required answer waits up to that long for the decision, and the call is decided again after it."""
        try:
            verdict = await self._decide(req, audience, verifier)
            if verdict.pending is not None and req.wait > 0:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + req.wait
                while verdict.pending is not None and (left := deadline - loop.time()) > 0:
                    await self.approvals.wait(verdict.pending, left)
                    verdict = await self._decide(req, audience, verifier)
            return verdict
        except StoreUnavailable as e:
            return Verdict("unavailable", _unavailable(e.request_id), cause=e)

    async def _decide(self, req: VerifyRequest, audience: str | None, verifier: str | None) -> Verdict:
        now = self.clock()
        try:
            chain = self.verifier.verify(req.token)
        except InvalidToken as e:
            return Verdict("denied", Denied(False, Code.INVALID_TOKEN, str(e)))
        analysis = chain.analysis
        cost = amount_from_wire(req.cost) if req.cost is not None else None
        args = req.args or {}
        ctx = Context(int(now), req.tool, audience, cost, args, len(analysis.delegation))
        denial = analysis.evaluate(ctx)
        if denial is not None:
            if req.request_id is not None:
                fingerprint = self._fingerprint(chain, req, audience)
                lookup = self.store.lookup(chain.token_id, req.request_id, fingerprint, int(now * 1000))
                stored = await _for_request(req.request_id, lookup)
                if stored is not None:
                    return await self._verdict(chain, req, cost, stored, now)
            # A denial the store did not decide is an event all the same: written, then answered.
            head = self.trails.head(chain, req, audience, verifier)
            event = event_json("verify", head, denial_members(denial))
            seen = self.trails.unsent(chain, lambda: self._denials(chain))
            try:
                await self.store.record(chain.token_id, int(now * 1000), event, seen)
                self.trails.sent(seen)
            except StoreUnavailable as e:  # the denial stands without the store; only its event is lost, and said
                log.warning("audit event of a denial not written (%s): %s", e, denial.code)
            return Verdict("denied", await self._denied(chain, denial, now))
        # Every decision is stored under a request_id, the caller's or one made up here, in the same store call
        # that charges: a 503 that came after the store decided is then resent with it and replayed, never charged
        # twice (a 503 before the store decided has nothing stored, and the resend decides afresh).
        request_id = req.request_id or _made_up_request_id()
        charged = cost is not None
        gate = analysis.approval(ctx)
        approval = spec_for(chain, gate, req, audience, self.approvals.ttl_s) if gate is not None else None
        head = self.trails.head(chain, req, audience, verifier)
        cost_json = _encode(req.cost).decode() if req.cost is not None else ""
        trail = Trail(head, cost_json, self.trails.unsent(chain, lambda: self._denials(chain)))
        decision = Attempt(
            token_id=chain.token_id,
            now_ms=int(now * 1000),
            call_id=secrets.token_hex(16),
            revocation=chain.prefixes,
            rates=_rate_specs(chain),
            budgets=tuple(
                BudgetSpec(
                    chain.counter_prefix(b.index),
                    b.parsed.limit.micros,
                    charged,  # every budget is in the cost's currency, or evaluate() denied the call
                    (b.expires_at + 3600) * 1000 if b.expires_at is not None else 0,
                )
                for b in analysis.budgets
            ),
            cost=cost.micros if cost is not None else 0,
            currency=cost.currency if cost is not None else "",
            mode=req.mode,
            hold_ttl_ms=req.hold_ttl * 1000,
            request_id=request_id,
            fingerprint=self._fingerprint(chain, req, audience),
            verifier=verifier or "",
            made_up_id=req.request_id is None,
            approval=approval,
            trail=trail,
        )
        outcome = await _for_request(request_id, self.store.decide(decision))
        self.trails.sent(trail.chain)
        return await self._verdict(chain, req, cost, outcome, now, gate)

    async def _verdict(
        self,
        chain: VerifiedChain,
        req: VerifyRequest,
        cost: Amount | None,
        outcome: Outcome,
        now: float,
        gate: Step | None = None,
    ) -> Verdict:
        analysis = chain.analysis
        if outcome.status == "conflict":
            raise Conflict("request_id was already used for a different request")
        if outcome.status == "allowed":
            exp = analysis.expires_at
            return Verdict(
                "allowed",
                Allowed(
                    True,
                    chain.token_id,
                    analysis.holder,
                    list(analysis.delegation),
                    self._budget_views(chain, outcome.balances),
                    charged=amount_to_wire(cost) if cost is not None and req.mode == "charge" else None,
                    hold_id=outcome.hold_id,
                    expires_at=format_instant(exp) if exp is not None else None,
                    replayed=outcome.replayed,
                ),
                charged=cost if req.mode == "charge" and not outcome.replayed else None,
            )
        replayed = outcome.replayed
        if outcome.status in ("approval_required", "approval_denied") and outcome.approval and gate:
            return await self._approval_verdict(chain, gate, outcome.approval, outcome.new_approval, now)
        if outcome.status == "revoked":
            denial = _revoked(chain, outcome.index)
            return Verdict("denied", await self._denied(chain, denial, now, outcome.balances, replayed))
        if outcome.status == "rate_limited":
            if outcome.index == -2:
                denial = _too_many_approvals()
            elif outcome.index == -1:
                denial = _too_many_holds()
            else:
                denial = _rate_limited(analysis.rates[outcome.index])
            retry = max(1, math.ceil(outcome.retry_after_ms / 1000))
            return Verdict("rate_limited", await self._denied(chain, denial, now, outcome.balances, replayed), retry)
        spec = analysis.budgets[outcome.index]
        views = self._budget_views(chain, outcome.balances)
        left = views[outcome.index].remaining if views else "?"
        denial = Denial(
            Code.BUDGET_EXCEEDED, f"the call costs {cost}, only {left} {spec.parsed.limit.currency} remain"
        ).at(spec.caveat, spec.hop)
        return Verdict("denied", await self._denied(chain, denial, now, outcome.balances, replayed))

    def _denials(self, chain: VerifiedChain) -> dict[str, str]:
        """How each denial the store may decide reads for this chain, for its audit events (ChainSeen.denials)."""
        analysis = chain.analysis
        out = {
            "revoked": denial_members(Denial(Code.REVOKED, "this token, or one it derives from, was revoked")),
            "rate_limited:-1": denial_members(_too_many_holds()),
            "rate_limited:-2": denial_members(_too_many_approvals()),
        }
        for i, rate in enumerate(analysis.rates):
            out[f"rate_limited:{i}"] = denial_members(_rate_limited(rate))
        for i, b in enumerate(analysis.budgets):
            limit = b.parsed.limit
            said = f"the call costs more than remains of its {format_micros(limit.micros)} {limit.currency}"
            out[f"budget_exceeded:{i}"] = denial_members(Denial(Code.BUDGET_EXCEEDED, said).at(b.caveat, b.hop))
        return out

    async def _approval_verdict(
        self, chain: VerifiedChain, gate: Step, approval: Approval, new: bool, now: float
    ) -> Verdict:
        """approval_required (pending: announced when new) or approval_denied, naming the caveat that gates the
        call, at its hop, and the approval."""
        if new:
            self.approvals.announce(approval)
        ref = ApprovalRef(
            approval.id,
            "pending" if approval.state == "pending" else "denied",
            format_instant(approval.expires_ms // 1000),
        )
        if approval.state == "pending":
            reason = (
                f"the call needs an approval ({approval.id}), pending until {ref.expires_at}: once it is approved, "
                "the same call, retried, runs"
            )
            denial = Denial(Code.APPROVAL_REQUIRED, reason)
        else:
            said = f": {approval.reason}" if approval.reason else ""
            denial = Denial(
                Code.APPROVAL_DENIED, f"the approval {approval.id} was denied by {approval.decided_by}{said}"
            )
        denial = denial.at(gate.caveat, gate.hop)
        body = await self._denied(chain, denial, now)
        body.approval = ref
        pending = approval.id if approval.state == "pending" else None
        return Verdict("denied", body, pending=pending)

    async def _denied(
        self,
        chain: VerifiedChain,
        denial: Denial,
        now: float,
        balances: list[tuple[int, int]] | None = None,
        replayed: bool = False,
    ) -> Denied:
        """A denial after the signature verified also says what the holder can still do."""
        analysis = chain.analysis
        if analysis.budgets and not balances:
            try:
                balances = (await self._inspect(chain, now)).balances
            except StoreUnavailable:
                balances = None  # the denial stands; only the courtesy of balances is lost
        return Denied(
            False,
            denial.code,
            denial.reason,
            denial.caveat,
            denial.hop,
            self._budget_views(chain, balances) if balances else None,
            list(analysis.tools) if analysis.tools is not None else None,
            replayed,
        )

    def _budget_views(self, chain: VerifiedChain, balances: list[tuple[int, int]]) -> list[BudgetView]:
        return [
            BudgetView(
                b.hop,
                b.caveat,
                format_micros(b.parsed.limit.micros),
                format_micros(spent),
                format_micros(held),
                format_micros(b.parsed.limit.micros - spent - held),
                b.parsed.limit.currency,
            )
            for b, (spent, held) in zip(chain.analysis.budgets, balances, strict=True)
        ]

    def _fingerprint(self, chain: VerifiedChain, req: VerifyRequest, audience: str | None) -> str:
        """What makes two requests the same: the chain (not its encoding), tool, args (none and {} alike, as they
        are evaluated alike), audience, cost, mode, ttl."""
        parts: list[Any] = [chain.chain_id, req.tool, req.args or {}, audience, req.cost, req.mode, req.hold_ttl]
        return hashlib.sha256(_fingerprint_encoder.encode(parts)).hexdigest()

    async def _inspect(self, chain: VerifiedChain, now: float, rates: tuple[RateSpec, ...] = ()) -> Inspection:
        """Revocation and balances; the windows of `rates` only when asked (a denial needs only the balances)."""
        prefixes = tuple(chain.counter_prefix(b.index) for b in chain.analysis.budgets)
        return await self.store.inspect(chain.token_id, chain.prefixes, prefixes, int(now * 1000), rates)

    # -- holds, revoke, inspect -----------------------------------------------------------------------
    async def settle(self, hold_id: str, amount: str | None, verifier: str | None = None) -> HoldResponse:
        micros = parse_micros(amount) if amount is not None else None
        state = await self.store.settle(hold_id, micros, int(self.clock() * 1000), verifier or "")
        return HoldResponse(state.hold_id, state.state, state.currency, format_micros(state.amount))

    async def release(self, hold_id: str, verifier: str | None = None) -> HoldResponse:
        state = await self.store.release(hold_id, int(self.clock() * 1000), verifier or "")
        return HoldResponse(state.hold_id, state.state, state.currency)

    async def extend(self, hold_id: str, hold_ttl: int, verifier: str | None = None) -> HoldResponse:
        now_ms = int(self.clock() * 1000)
        state = await self.store.extend(hold_id, hold_ttl * 1000, now_ms, verifier or "")
        # Rounded down: a client that trusts expires_at never counts on a hold that is already gone.
        expires = format_instant(state.expires_ms // 1000)
        return HoldResponse(state.hold_id, state.state, state.currency, format_micros(state.amount), expires)

    async def revoke(self, token: str) -> str:
        """Revoke this exact chain and all its descendants (raises InvalidToken for a bad signature)."""
        chain = self.verifier.verify(token)
        exp = chain.analysis.expires_at
        said = members({**chain_members(chain), "reason": "revoked by the holder of this token"})
        now_ms = int(self.clock() * 1000)
        ends = (exp + 3600) * 1000 if exp is not None else 0
        await self.store.revoke(chain.token_id, chain.chain_id, ends, now_ms, event_json("revoke", said))
        return chain.token_id

    async def credential(self, token: str) -> Credential | None:
        """The holder of `token` as an approver, if the token verifies, has not expired and is not revoked."""
        try:
            chain = self.verifier.verify(token)
        except InvalidToken:
            return None
        now = self.clock()
        expires = chain.analysis.expires_at
        if (expires is not None and now >= expires) or chain.analysis.static_denial is not None:
            return None
        found = await self.store.inspect(chain.token_id, chain.prefixes, (), int(now * 1000))
        return None if found.revoked_index is not None else Credential(chain)

    async def revoke_root(self, token_id: str, chain: str | None = None, reason: str | None = None) -> None:
        """The operator's revocation: the whole root, or one chain seen under it (NotFound for a chain never seen).
        `reason`, the event's: who revoked it, when it is not the operator (a holder in the console)."""
        now_ms = int(self.clock() * 1000)
        if chain is None:
            said = members({"token_id": token_id, "chain": "*", "reason": "the operator revoked the whole root"})
            await self.store.revoke(token_id, "*", 0, now_ms, event_json("revoke", said))
            return
        seen = next((c for c in await self.store.chains_seen(token_id) if c.chain == chain), None)
        if seen is None:
            raise NotFound("no chain with that id was seen under this root token id")
        said = members({"token_id": token_id, "chain": chain, "reason": reason or "the operator revoked this chain"})
        await self.store.revoke(token_id, chain, 0, now_ms, event_json("revoke", said))

    async def inspect(self, token: str) -> InspectResponse:
        try:
            chain = self.verifier.verify(token)
        except InvalidToken as e:
            return InspectResponse(valid=False, reason=str(e))
        analysis = chain.analysis
        now = self.clock()
        found = await self._inspect(chain, now, _rate_specs(chain))
        ctx = Context(int(now), "", None, None, {}, len(analysis.delegation))
        # What the counters deny now, in verify's order after the stateless caveats: revocation, full rate
        # windows, then budgets with nothing left (a call that costs anything is denied; a free one is not).
        counted = [_revoked(chain, found.revoked_index)] if found.revoked_index is not None else []
        counted += [_rate_limited(analysis.rates[i]) for i in found.full_rates]
        counted += [
            _spent(b)
            for b, (spent, held) in zip(analysis.budgets, found.balances, strict=True)
            if spent + held >= b.parsed.limit.micros
        ]
        by_caveat = {(d.caveat, d.hop): d.code for d in counted if d.caveat is not None}
        hops: list[HopView] = []
        denials: list[Denied] = []
        for index, (text, hop) in enumerate(zip(analysis.texts, analysis.hops, strict=True)):
            if not hops or hops[-1].hop != hop:
                hops.append(HopView(hop, analysis.delegation[hop] if hop < len(analysis.delegation) else None, []))
            denial = _denies_now(analysis.parsed[index], ctx, hop)
            if denial is not None:
                denial = denial.at(text, hop)
                denials.append(Denied(False, denial.code, denial.reason, denial.caveat, denial.hop))
            hops[-1].caveats.append(CaveatView(text, denial.code if denial else by_caveat.get((text, hop))))
        denials += [Denied(False, d.code, d.reason, d.caveat, d.hop) for d in counted]
        exp = analysis.expires_at
        return InspectResponse(
            valid=True,
            token_id=chain.token_id,
            key_id=chain.key_id,
            holder=analysis.holder,
            delegation=list(analysis.delegation),
            hops=hops,
            budgets=self._budget_views(chain, found.balances),
            tools=list(analysis.tools) if analysis.tools is not None else None,
            expires_at=format_instant(exp) if exp is not None else None,
            revoked=found.revoked_index is not None,
            denials=denials,
        )


def _made_up_request_id() -> str:
    return "agentcaps-" + secrets.token_hex(16)


async def _for_request(request_id: str, call: Awaitable[T]) -> T:
    """A store call made for this request: if it fails, the 503 names the request_id whose resend replays it."""
    try:
        return await call
    except StoreUnavailable as e:
        e.request_id = request_id
        raise


def _unavailable(request_id: str | None) -> Denied:
    """The store may have decided and charged all the same, so the denial names the request_id to resend."""
    if request_id is None:
        return Denied(False, Code.STORE_UNAVAILABLE, StoreUnavailable.REASON)
    reason = (
        f"{StoreUnavailable.REASON}. It may have charged this call all the same: resend the same request with "
        f"request_id {request_id!r}, which replays the decision instead of charging again"
    )
    return Denied(False, Code.STORE_UNAVAILABLE, reason, request_id=request_id)


def _rate_specs(chain: VerifiedChain) -> tuple[RateSpec, ...]:
    """The chain's rate caveats as the store counts them: by the prefix each ends, windows in ms."""
    return tuple(
        RateSpec(chain.counter_prefix(r.index), r.parsed.count, r.parsed.window * 1000) for r in chain.analysis.rates
    )


def _revoked(chain: VerifiedChain, index: int) -> Denial:
    """The revocation that covers this chain, named by who held the revoked token: prefix `index` ends after
    caveat index-1 (this token's last, or an ancestor's); -1 and 0 mean the whole root. No caveat caused it, so
    the denial names none (its last caveat would read as the reason)."""
    if index <= 0:
        return Denial(Code.REVOKED, "the root token was revoked")
    analysis = chain.analysis
    hop = analysis.hops[index - 1]
    holder = f"held by {analysis.delegation[hop]} at hop {hop}" if hop < len(analysis.delegation) else f"hop {hop}"
    whose = "this token" if index == len(chain.prefixes) - 1 else "the token it derives from"
    return Denial(Code.REVOKED, f"{whose} ({holder}) was revoked")


def _rate_limited(rate: Counter[Rate]) -> Denial:
    count, window = rate.parsed.count, rate.parsed.window
    return Denial(Code.RATE_LIMITED, f"the {count} calls allowed per {window}s are used up").at(rate.caveat, rate.hop)


def _too_many_holds() -> Denial:
    """The root's own bound, not a caveat's: no caveat or hop is named."""
    reason = (
        f"the root token already has {MAX_OPEN_HOLDS:,} open holds, the most it may have: settle or release one, "
        "or retry when the first ends by itself (Retry-After)"
    )
    return Denial(Code.RATE_LIMITED, reason)


def _too_many_approvals() -> Denial:
    reason = (
        f"the root token already keeps {MAX_APPROVALS:,} approvals, the most it may: a new one can be asked when "
        "the first ends (Retry-After)"
    )
    return Denial(Code.RATE_LIMITED, reason)


def _spent(budget: Counter[Budget]) -> Denial:
    limit = budget.parsed.limit
    reason = f"nothing of its {format_micros(limit.micros)} {limit.currency} remains: a call with a cost is denied"
    return Denial(Code.BUDGET_EXCEEDED, reason).at(budget.caveat, budget.hop)


def _denies_now(parsed: Any, ctx: Context, hop: int) -> Denial | None:
    """Caveats that deny whatever the call: unparseable, unknown, expired, or a STATIC one (depth) that fails."""
    if isinstance(parsed, Denial):
        return parsed
    if parsed.ROLE is Role.EXPIRY or parsed.ROLE is Role.STATIC:
        result: Denial | None = parsed.check(ctx, hop)
        return result
    return None
