"""`redis://`, `rediss://` and `redis+cluster://`: every decision is one Lua script call; any doubt is
StoreUnavailable. This module packs the arguments and reads the replies; app/store/runner.py sends the calls."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import typing
from collections.abc import AsyncIterator, Iterator
from typing import Any

from redis.exceptions import RedisError

from app.errors import BadRequest, Conflict, NotFound, StoreUnavailable
from app.store.base import (
    APPROVAL_INDEX_READ,
    APPROVAL_STATES,
    Approval,
    ApprovalStateName,
    Attempt,
    HoldState,
    Inspection,
    Outcome,
    RateSpec,
    Store,
    hold_token_id,
    refuse_bad_ttl,
    refuse_negative,
    stepwise,
)
from app.store.runner import Runner, unavailable
from app.store.scripts import SCRIPTS

log = logging.getLogger("agentcaps")
DECISIONS = "agentcaps:approvals"  # the channel approve.lua publishes decided approval ids on


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


class RedisStore(Store):
    """The counters in Redis: each decision is one script call, which `runner` takes to one Redis or a cluster."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def _run(self, name: str, token_id: str, *args: str | int) -> Any:
        return await self.runner.run(SCRIPTS[name], token_id, args)

    async def decide(self, d: Attempt) -> Outcome:
        args: tuple[str, ...] = (
            str(d.now_ms),
            d.call_id,
            "" if d.request_id is None else _digest(d.request_id),
            _digest(d.fingerprint),
            d.mode,
            str(d.hold_ttl_ms),
            str(d.cost),
            d.currency,
            ",".join(d.revocation),
            ",".join(f"{r.prefix}:{r.count}:{r.window_ms}" for r in d.rates),
            ",".join(f"{b.prefix}:{b.limit}:{1 if b.charge else 0}:{b.expires_at_ms}" for b in d.budgets),
            d.verifier,
            "1" if d.made_up_id else "",
        )
        details = ""
        if d.approval is not None:
            args += (d.approval.binding, ",".join(d.approval.approvers), str(d.approval.ttl_ms))
            details = d.approval.details.decode()
        outcome = await stepwise(lambda: self._decide_step(d.token_id, "\n".join(args), details))
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

    async def _decide_step(self, token_id: str, packed: str, details: str) -> Outcome | None:
        reply = await (
            self._run("decide", token_id, packed, details) if details else self._run("decide", token_id, packed)
        )
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
        reply = await self._run("hold", token_id, hold_id, action, held, now_ms, verifier, ttl_ms)
        with _expected_reply("hold"):
            first, second, third, fourth = [*list(reply), "", ""][:4]
            if first not in ("error", "held", "settled", "released"):
                raise ValueError(first)
            state = None if first == "error" else HoldState(hold_id, first, int(second), third, int(fourth or 0))
        if state is not None:
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

    async def revoke(self, token_id: str, prefix: str, expires_at_ms: int) -> None:
        await self._run("revoke", token_id, prefix, expires_at_ms)

    async def inspect(
        self,
        token_id: str,
        revocation: tuple[str, ...],
        budgets: tuple[str, ...],
        now_ms: int,
        rates: tuple[RateSpec, ...] = (),
    ) -> Inspection:
        windows = [x for r in rates for x in (r.prefix, r.count, r.window_ms)]
        args = (now_ms, len(revocation), *revocation, len(budgets), *budgets, len(rates), *windows)
        return await stepwise(lambda: self._inspect_step(token_id, args))

    async def _inspect_step(self, token_id: str, args: tuple[str | int, ...]) -> Inspection | None:
        reply = await self._run("inspect", token_id, *args)
        with _expected_reply("inspect"):
            if reply == ["purging"]:
                return None
            revoked, full, flat = reply[0], reply[1], reply[2:]
            balances = [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]
            return Inspection(None if revoked == "" else int(revoked), balances, [int(i) for i in full.split(",") if i])

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
        )
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
