"""`redis://`, `rediss://` and `redis+cluster://`: every decision is one Lua script call; any doubt is
StoreUnavailable. This module packs the arguments and reads the replies; app/store/runner.py sends the calls."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import msgspec
from redis.exceptions import RedisError

from app.errors import BadRequest, Conflict, NotFound, StoreUnavailable
from app.store.base import (
    APPROVAL_INDEX_READ,
    APPROVAL_STATES,
    KEEP_A_WEEK,
    Approval,
    ApprovalStateName,
    Attempt,
    AuditPolicy,
    ChainSeen,
    HoldState,
    Inspection,
    Outcome,
    RateSpec,
    Store,
    decision_members,
    hold_token_id,
    refuse_bad_ttl,
    refuse_negative,
    stepwise,
)
from app.store.runner import Runner, unavailable
from app.store.scripts import SCRIPTS
from app.store.wire import Arg

log = logging.getLogger("agentcaps")
DECISIONS = "agentcaps:approvals"  # the channel approve.lua publishes decided approval ids on
AUDIT_ROOTS = "audit"  # the pseudo-root of the index of roots that write audit events (index.lua)
INDEX_EVERY_S = 1.0  # a root is put in that index at most this often by one process
NOTED_MAX = 100_000  # roots whose last index write one process remembers
# A root's newest event is at most about INDEX_EVERY_S newer than its index entry (plus the clock skew between a
# cluster's nodes): reading across roots, a root whose entry is older than this margin before the events a page
# already has cannot add to it.
INDEX_MARGIN_MS = 5000
# Reading every root oldest first answers only events older than this (by Redis's clock): an event another root
# writes meanwhile gets an id that is not older than a cursor already handed out, so a reader resuming from its
# cursor misses none. It covers the skew between a cluster's nodes' clocks.
SETTLE_LAG_MS = 2000
ROOTS_PAGE = 200  # roots one read of the index returns
_EVENT_ID = re.compile(r"(\d{1,20})-(\d{1,20})\.([0-9a-f]{32})")
_encode_chain = msgspec.json.Encoder().encode
_decode_chain = msgspec.json.Decoder(ChainSeen).decode
_pack_fields = msgspec.msgpack.Encoder().encode  # decide.lua's argument, which cmsgpack unpacks

Position = tuple[int, int, str]  # an event's place among every root's: stream id (ms, seq), then its root


def _position(cursor: str) -> Position:
    """An event id as this store writes it, `<ms>-<seq>.<token id>`; any other text is no position (the start)."""
    m = _EVENT_ID.fullmatch(cursor)
    return (int(m[1]), int(m[2]), m[3]) if m else (0, 0, "")


def _stream_id(position: Position) -> str:
    return f"{position[0]}-{position[1]}"


@contextlib.contextmanager
def _expected_reply(script: str) -> Iterator[None]:
    """A reply of a shape the script never gives means something else answered: fail closed, as on any doubt."""
    try:
        yield
    except (ValueError, IndexError, AttributeError, TypeError) as e:
        raise StoreUnavailable(f"counter store gave an unexpected reply to {script}") from e


def _digest(text: str) -> str:
    """A caller's text (request id, fingerprint) as the scripts see it: a digest, so no byte of it (a newline, a
    comma) can shift the script's packed arguments, and an empty text is still a value."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _approval(id_: str, fields: list[str]) -> Approval:
    """An approval from a script's fields: state approvers details created expires by reason (lib.lua)."""
    state, approvers, details, created, expires, by, reason = fields
    if state not in APPROVAL_STATES:
        raise ValueError(state)
    when = (int(created), int(expires))
    return Approval(
        id_, typing.cast(ApprovalStateName, state), tuple(approvers.split(",")), details.encode(), *when, by, reason
    )


def _outcome(reply: str) -> Outcome:
    if reply.startswith("approval_"):
        status, new, _, id_, _, *fields = reply.split(",", 9)
        approval = _approval(id_, [fields[0], "", "", *fields[1:]])
        return Outcome(status, approval=approval, new_approval=new == "1")  # type: ignore[arg-type]
    status, index, retry, hold_id, replayed, *flat = reply.split(",")
    balances = [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]
    return Outcome(status, int(index), int(retry), balances, hold_id or None, replayed == "1")  # type: ignore[arg-type]


def _seen(chain: ChainSeen | None) -> tuple[str, ...]:
    """A chain to keep, as decide.lua and record.lua take it: its JSON, then its denials as field, members pairs."""
    if chain is None:
        return ()
    return (_encode_chain(chain).decode(), *(x for pair in chain.denials.items() for x in pair))


class RedisStore(Store):
    """The counters in Redis: each decision is one script call, which `runner` takes to one Redis or a cluster."""

    def __init__(self, runner: Runner, audit: AuditPolicy = KEEP_A_WEEK) -> None:
        self.runner = runner
        self.audit = audit
        self.policy = f"{audit.retention_ms}:{audit.max_events}"  # as lib.lua audit_policy reads it
        self._noted: dict[str, float] = {}  # root -> when this process last put it in the audit index

    def _run(self, name: str, token_id: str, *args: Arg) -> Awaitable[Any]:
        return self.runner.run(SCRIPTS[name], token_id, args)  # the runner's coroutine, not one more around it

    async def decide(self, d: Attempt) -> Outcome:
        gate: tuple[str, ...] = ("", "", "")
        details = ""
        if d.approval is not None:
            gate = (d.approval.binding, ",".join(d.approval.approvers), str(d.approval.ttl_ms))
            details = d.approval.details.decode()
        trail: tuple[str, ...] = ("", "", "", "")
        seen: tuple[str, ...] = ()
        if d.trail is not None:
            gate_at = d.approval.at if d.approval is not None else ""
            chain_id = d.revocation[-1] if d.revocation else ""  # the last prefix is the chain's id
            trail = (d.trail.head, d.trail.charged, gate_at, chain_id)
            seen = _seen(d.trail.chain)
        # One argument for all that is small, as decide.lua reads it (strings: a Lua number would round an amount).
        packed = _pack_fields(
            (
                str(d.now_ms),
                d.call_id,
                "" if d.request_id is None else _digest(d.request_id),
                _digest(d.fingerprint),
                d.mode,
                str(d.hold_ttl_ms),
                str(d.cost),
                d.currency,
                d.revocation,
                [(r.prefix, str(r.count), str(r.window_ms)) for r in d.rates],
                [(b.prefix, str(b.limit), "1" if b.charge else "0", str(b.expires_at_ms)) for b in d.budgets],
                d.verifier,
                "1" if d.made_up_id else "",
                *gate,
                self.policy,
                *trail,
            )
        )
        extra = (details, *seen) if seen else ((details,) if details else ())
        outcome = await stepwise(lambda: self._decide_step(d.token_id, packed, extra))
        if d.trail is not None:  # its verify event (and any expired hold's: holds have heads from trails)
            await self._note(d.token_id)
        if outcome.status == "approval_required" and outcome.approval is not None:
            await self._index(outcome.approval)
        return outcome

    async def _index(self, approval: Approval) -> None:
        """Into the operator's index, at each pending answer (ZADD again changes nothing): one that a failure left
        out is added when the call asks again. The approval itself is decided without it."""
        try:
            await self._run("index", "approvals", "add", approval.created_ms, approval.id)
        except StoreUnavailable as e:
            log.warning("approval %s is not in the operator's index yet: %s", approval.id, e)

    async def _decide_step(self, token_id: str, packed: bytes, extra: tuple[str, ...]) -> Outcome | None:
        reply = await self._run("decide", token_id, packed, *extra)
        with _expected_reply("decide"):
            outcome = _outcome(reply)
        return None if outcome.status == "purging" else outcome

    async def lookup(
        self, token_id: str, request_id: str, fingerprint: str, now_ms: int | None = None
    ) -> Outcome | None:
        when = "" if now_ms is None else now_ms  # None: not judged by time, as in MemoryStore
        reply = await self._run("lookup", token_id, _digest(request_id), _digest(fingerprint), when)
        with _expected_reply("lookup"):
            return None if reply is None else _outcome(reply)

    async def _hold(
        self, hold_id: str, action: str, amount: int | None, now_ms: int, verifier: str, ttl_ms: int = 0
    ) -> HoldState:
        token_id = hold_token_id(hold_id)
        if token_id is None:
            raise NotFound("no such hold")
        held = "" if amount is None else amount
        reply = await self._run("hold", token_id, hold_id, action, held, now_ms, verifier, ttl_ms, self.policy)
        with _expected_reply("hold"):
            first, second, third, fourth = [*list(reply), "", ""][:4]
            if first not in ("error", "held", "settled", "released"):
                raise ValueError(first)
            state = None if first == "error" else HoldState(hold_id, first, int(second), third, int(fourth or 0))
        if state is not None:
            # Only a hold that exists puts its root in the index: made-up hold ids must not fill it with roots.
            await self._note(token_id)
            return state
        if second == "not_found":
            raise NotFound("the hold is unknown or expired")
        if second == "too_much":
            raise BadRequest("amount is more than the hold", "amount")
        raise Conflict(third)

    async def settle(self, hold_id: str, amount: int | None, now_ms: int, verifier: str = "") -> HoldState:
        refuse_negative(amount)
        return await self._hold(hold_id, "settle", amount, now_ms, verifier)

    async def release(self, hold_id: str, now_ms: int, verifier: str = "") -> HoldState:
        return await self._hold(hold_id, "release", None, now_ms, verifier)

    async def extend(self, hold_id: str, ttl_ms: int, now_ms: int, verifier: str = "") -> HoldState:
        refuse_bad_ttl(ttl_ms)
        return await self._hold(hold_id, "extend", None, now_ms, verifier, ttl_ms)

    async def revoke(self, token_id: str, prefix: str, expires_at_ms: int, now_ms: int = 0, event: str = "") -> None:
        if not event:
            await self._run("revoke", token_id, prefix, expires_at_ms)
            return
        await self._run("revoke", token_id, prefix, expires_at_ms, now_ms, event, self.policy)
        await self._note(token_id)

    # -- the audit log ----------------------------------------------------------------------------------------
    async def record(self, token_id: str, now_ms: int, event: str, chain: ChainSeen | None = None) -> None:
        seen = (chain.chain, *_seen(chain)) if chain is not None else ()
        await self._run("record", token_id, now_ms, event, self.policy, *seen)
        await self._note(token_id)

    async def _note(self, token_id: str) -> None:
        """Put the root in the index of roots with events, at most once a second per process: the hot path pays
        one small call a second per busy root. A failure only delays it to the root's next event."""
        now = time.monotonic()
        if now - self._noted.get(token_id, -INDEX_EVERY_S) < INDEX_EVERY_S:
            return
        if len(self._noted) >= NOTED_MAX:
            self._noted.clear()
        self._noted[token_id] = now
        try:
            await self._run("index", AUDIT_ROOTS, "root", token_id, self.audit.retention_ms)
        except StoreUnavailable as e:
            self._noted.pop(token_id, None)
            log.warning("root %s is not in the audit index yet: %s", token_id, e)

    async def audit_events(
        self, token_id: str | None, before: str | None, after: str | None, limit: int
    ) -> list[tuple[str, int, str]]:
        """Ids are `<stream id>.<token id>`: ordered by stream id (Redis's clock, per root), then root."""
        if limit <= 0:
            return []
        newer = after is not None
        position = _position(after) if after is not None else None if before is None else _position(before)
        if token_id is not None:
            found = await self._root_events(token_id, newer, position, limit, None)
        else:
            found = await self._all_events(newer, position, limit)
        return [(f"{ms}-{seq}.{root}", at, event) for (ms, seq, root), at, event in found]

    async def _root_events(
        self, root: str, newer: bool, position: Position | None, limit: int, until_ms: int | None
    ) -> list[tuple[Position, int, str]]:
        """One root's events after (`newer`) or before `position` in the order of every root's, stream ids
        older than `until_ms` only (if given)."""
        if newer:
            start = "-"
            if position is not None:  # an event of an earlier root at the same stream id comes after it
                start = _stream_id(position) if root > position[2] else "(" + _stream_id(position)
            end = "+" if until_ms is None else str(until_ms - 1)
            reply = await self._run("audit", root, "newer", start, end, limit)
        else:
            end = "+"
            if position is not None:
                if position[:2] == (0, 0) and root >= position[2]:
                    return []  # nothing is before the first id (Redis refuses the exclusive bound "(0-0")
                end = _stream_id(position) if root < position[2] else "(" + _stream_id(position)
            reply = await self._run("audit", root, "older", end, "-", limit)
        with _expected_reply("audit"):
            found = []
            for i in range(0, len(reply), 3):
                ms, _, seq = reply[i].partition("-")
                found.append(((int(ms), int(seq), root), int(reply[i + 2]), reply[i + 1]))
            return found

    async def _all_events(self, newer: bool, position: Position | None, limit: int) -> list[tuple[Position, int, str]]:
        """Every root's, merged: the roots of the index, newest entry first (older: reading stops once a root's
        entry is older than the page's oldest by INDEX_MARGIN_MS), or, oldest first, every root whose entry is
        no older than the cursor by that margin, and only events SETTLE_LAG_MS older than Redis's now."""
        found: list[tuple[Position, int, str]] = []
        since = "-inf" if not newer or position is None else str(position[0] - INDEX_MARGIN_MS)
        offset, until = 0, None
        read: set[str] = set()
        while True:
            reply = await self._run(
                "index", AUDIT_ROOTS, "roots", "asc" if newer else "desc", since, offset, ROOTS_PAGE
            )
            with _expected_reply("index"):
                if newer and until is None:  # one bound for every root read: none is read further than another
                    until = int(reply[0]) - SETTLE_LAG_MS
                roots = [(reply[i], float(reply[i + 1])) for i in range(1, len(reply), 2)]
            # A root whose entry moved while the pages are read may come twice: read once.
            roots = [(r, ms) for r, ms in roots if r not in read]
            read.update(r for r, _ in roots)
            if not newer and len(found) >= limit:
                roots = [(r, ms) for r, ms in roots if ms + INDEX_MARGIN_MS >= found[-1][0][0]]
            batches = await asyncio.gather(*(self._root_events(r, newer, position, limit, until) for r, _ in roots))
            found = sorted((e for batch in [found, *batches] for e in batch), reverse=not newer)[:limit]
            if len(reply) - 1 < 2 * ROOTS_PAGE:
                return found
            last_ms = float(reply[-1])
            if not newer and len(found) >= limit and last_ms + INDEX_MARGIN_MS < found[-1][0][0]:
                return found
            offset += ROOTS_PAGE

    async def chains_seen(self, token_id: str) -> list[ChainSeen]:
        reply = await self._run("audit", token_id, "chains")
        with _expected_reply("audit"):
            return [_decode_chain(text) for text in reply]

    async def inspect(
        self,
        token_id: str,
        revocation: tuple[str, ...],
        budgets: tuple[str, ...],
        now_ms: int,
        rates: tuple[RateSpec, ...] = (),
    ) -> Inspection:
        windows = [x for r in rates for x in (r.prefix, r.count, r.window_ms)]
        args = (now_ms, len(revocation), *revocation, len(budgets), *budgets, len(rates), *windows, self.policy)
        return await stepwise(lambda: self._inspect_step(token_id, args, rates))

    async def _inspect_step(
        self, token_id: str, args: tuple[Arg, ...], rates: tuple[RateSpec, ...]
    ) -> Inspection | None:
        reply = await self._run("inspect", token_id, *args)
        await self._note(token_id)  # an expired hold's event
        with _expected_reply("inspect"):
            if reply == ["purging"]:
                return None
            revoked, counts, flat = reply[0], reply[1], reply[2:]
            balances = [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]
            use = [int(c) for c in counts.split(",") if c]
            full = [i for i, (rate, used) in enumerate(zip(rates, use, strict=True)) if used >= rate.count]
            return Inspection(None if revoked == "" else int(revoked), balances, full, use)

    async def approvals_of(self, token_id: str | None, now_ms: int) -> list[Approval]:
        if token_id is not None:
            found = await self._approvals(token_id, now_ms, ())
        else:  # every root's: the newest of the operator's index, read root by root
            ids = await self._run("index", "approvals", "read", APPROVAL_INDEX_READ)
            by_root: dict[str, list[str]] = {}
            for id_ in ids:
                by_root.setdefault(hold_token_id(id_) or "", []).append(id_)
            found = [a for root, some in by_root.items() if root for a in await self._approvals(root, now_ms, some)]
        return sorted(found, key=lambda a: (a.created_ms, a.id), reverse=True)

    async def _approvals(self, token_id: str, now_ms: int, ids: tuple[str, ...] | list[str]) -> list[Approval]:
        reply = await self._run("approvals", token_id, now_ms, *ids)
        with _expected_reply("approvals"):
            return [_approval(reply[i], reply[i + 1 : i + 8]) for i in range(0, len(reply), 8)]

    async def approval(self, approval_id: str, now_ms: int) -> Approval | None:
        token_id = hold_token_id(approval_id)
        if token_id is None:
            return None
        found = await self._approvals(token_id, now_ms, (approval_id,))
        return found[0] if found else None

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
        token_id = hold_token_id(approval_id)
        if token_id is None:
            raise NotFound("no such approval that this credential may decide: unknown, expired, or not its to decide")
        action = "approve" if approve else "deny"
        reply = await self._run(
            "approve",
            token_id,
            approval_id,
            action,
            "*" if approver is None else approver,
            decided_by,
            reason,
            now_ms,
            ttl_ms,
            decision_members(approval_id, approve, decided_by, reason),
            self.policy,
        )
        await self._note(token_id)
        with _expected_reply("approve"):
            if reply[0] != "error":
                return _approval(reply[0], reply[1:8])
            kind = reply[1]
        if kind == "not_found":
            raise NotFound("no such approval that this credential may decide: unknown, expired, or not its to decide")
        raise Conflict(reply[2])

    async def decisions(self) -> AsyncIterator[str]:
        """approve.lua PUBLISHes each decision on DECISIONS; a cluster carries a PUBLISH to every node."""
        try:
            async with await self.runner.listener() as client, client.pubsub() as pubsub:
                await pubsub.subscribe(DECISIONS)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        yield str(message["data"])
        except (RedisError, OSError) as e:
            raise unavailable(e) from e

    async def ready(self) -> str | None:
        return await self.runner.ready()

    async def close(self) -> None:
        await self.runner.close()
