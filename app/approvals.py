"""Approvals (docs/approvals.md): a call that an `approval` caveat gates waits until someone says yes.

The store decides (app/store: ask, approve or deny, and use up in the decide that charges). This module is what
surrounds it: what binds an approval to one call, who may decide (the operator, or a token whose chain is a prefix
of the caller's that ends before the caveat), how a verify waits for the decision without a thread or a busy loop
each (an asyncio.Event per approval someone waits for, woken by the decision here or, on Redis, by its PUBLISH),
and the webhook that announces each new pending approval.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from app.errors import BadRequest, NotFound, StoreUnavailable
from app.schemas import ApprovalView, Money, VerifyRequest
from app.store.base import APPROVAL_STATES, Approval, ApprovalSpec, Store
from app.token.verifier import VerifiedChain
from caveats.chain import Step
from caveats.expires import format_instant

log = logging.getLogger("agentcaps")
WEBHOOK_TIMEOUT = 2.0  # seconds: a webhook that hangs longer is given up on (and logged), never waited for by a call
POLL_S = 5.0  # a waiting call looks again this often even without a signal: a lost PUBLISH costs seconds, not the wait
OPERATOR = "operator"
LIST_LIMIT = 1000  # approvals one list answers, the newest
_encode = msgspec.json.Encoder(order="sorted", decimal_format="number")


class Details(msgspec.Struct, omit_defaults=True):
    """What an approver sees of the call, kept with the approval as JSON."""

    tool: str
    args: dict[str, Any]
    delegation: list[str]
    holder: str | None
    caveat: str
    hop: int
    cost: Money | None = None
    audience: str | None = None


_details = msgspec.json.Decoder(Details)


class Credential(msgspec.Struct, frozen=True):
    """Who asks: the operator (an admin key), or the holder of a verified, live token (`chain`)."""

    chain: VerifiedChain | None = None

    @property
    def operator(self) -> bool:
        return self.chain is None

    @property
    def decided_by(self) -> str:
        if self.chain is None:
            return OPERATOR
        delegation = self.chain.analysis.delegation
        return f"{delegation[-1]} (hop {len(delegation) - 1})" if delegation else "a token without a holder"


def spec_for(chain: VerifiedChain, gate: Step, req: VerifyRequest, audience: str | None, ttl_s: int) -> ApprovalSpec:
    """The approval this call needs: bound to its chain, tool, args, audience, cost and mode (not hold_ttl, wait
    or request_id: a retry may change those and is still the same call), decidable by the chain's prefixes that end
    before the gating caveat (prefix i ends after caveat i-1)."""
    args = req.args or {}
    binding = [chain.chain_id, req.tool, args, audience, req.cost, req.mode]
    analysis = chain.analysis
    details = Details(
        req.tool, args, list(analysis.delegation), analysis.holder, gate.caveat, gate.hop, req.cost, audience
    )
    return ApprovalSpec(
        hashlib.sha256(_encode.encode(binding)).hexdigest(),
        chain.prefixes[: gate.index + 1],
        ttl_s * 1000,
        _encode.encode(details),
        _encode.encode({"caveat": gate.caveat, "hop": gate.hop}).decode()[1:-1],
    )


def view(approval: Approval) -> ApprovalView:
    d = _details.decode(approval.details)
    return ApprovalView(
        id=approval.id,
        state=approval.state,
        tool=d.tool,
        args=d.args,
        delegation=d.delegation,
        holder=d.holder,
        caveat=d.caveat,
        hop=d.hop,
        created_at=format_instant(approval.created_ms // 1000),
        expires_at=format_instant(approval.expires_ms // 1000),
        cost=d.cost,
        audience=d.audience,
        decided_by=approval.decided_by or None,
        reason=approval.reason or None,
    )


class Approvals:
    def __init__(
        self, store: Store, ttl_s: int, webhook: str, location: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.webhook = webhook
        self.location = location
        self.clock = clock
        self._events: dict[str, tuple[asyncio.Event, int]] = {}  # approval id -> (its event, how many wait)
        self._listener: asyncio.Task[None] | None = None
        self._local_only = False  # the store said all its decisions are made in this process
        self._posts: set[asyncio.Task[None]] = set()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- what a credential sees and decides --------------------------------------------------------------
    async def list(self, who: Credential, state: str | None) -> list[ApprovalView]:
        if state is not None and state not in APPROVAL_STATES:
            raise BadRequest(f"must be one of {', '.join(APPROVAL_STATES)}", "state")
        token_id = None if who.chain is None else who.chain.token_id
        found = await self.store.approvals_of(token_id, self._now_ms())
        mine = [a for a in found if self._may_decide(who, a) and state in (None, a.state)]
        return [view(a) for a in mine[:LIST_LIMIT]]

    async def get(self, who: Credential, approval_id: str) -> ApprovalView:
        approval = await self.store.approval(approval_id, self._now_ms())
        if approval is None or approval.state == "expired" or not self._may_decide(who, approval):
            raise NotFound("no such approval that this credential may decide: unknown, expired, or not its to decide")
        return view(approval)

    async def decide(self, who: Credential, approval_id: str, approve: bool, reason: str | None) -> ApprovalView:
        approver = None if who.chain is None else who.chain.chain_id
        now = self._now_ms()
        approval = await self.store.decide_approval(
            approval_id, approve, approver, who.decided_by, reason or "", now, self.ttl_s * 1000
        )
        self._wake(approval_id)
        return view(approval)

    @staticmethod
    def _may_decide(who: Credential, approval: Approval) -> bool:
        return who.chain is None or (
            who.chain.token_id == approval.id.partition(".")[0] and who.chain.chain_id in approval.approvers
        )

    # -- waiting for a decision ------------------------------------------------------------------------
    async def wait(self, approval_id: str, seconds: float) -> None:
        """Until the approval is decided (here, or on Redis anywhere) or `seconds` pass, at most POLL_S: the
        caller decides the call again after, so a missed signal costs a poll, never a wrong answer."""
        event, waiting = self._events.get(approval_id, (asyncio.Event(), 0))
        self._events[approval_id] = (event, waiting + 1)
        try:
            self._listen()
            # Decided between the answer and this wait: no signal will come for it.
            current = await self.store.approval(approval_id, self._now_ms())
            if current is None or current.state != "pending":
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(seconds, POLL_S))
        finally:
            event, waiting = self._events[approval_id]
            if waiting == 1:
                del self._events[approval_id]
            else:
                self._events[approval_id] = (event, waiting - 1)

    def _wake(self, approval_id: str) -> None:
        entry = self._events.get(approval_id)
        if entry is not None:
            entry[0].set()

    def _listen(self) -> None:
        """Start following the store's decisions (Redis: its PUBLISHes), once, on the first wait."""
        if self._local_only:
            return
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            try:
                async for approval_id in self.store.decisions():
                    self._wake(approval_id)
                self._local_only = True  # a store whose decisions are all made here: _wake hears them
                return
            except StoreUnavailable as e:
                log.warning("not hearing approval decisions from the store (waiting calls poll): %s", e)
                await asyncio.sleep(1.0)

    # -- the webhook -------------------------------------------------------------------------------------
    def announce(self, approval: Approval) -> None:
        """POST a new pending approval to AGENTCAPS_APPROVAL_WEBHOOK in the background: never awaited by the call."""
        if not self.webhook:
            return
        task = asyncio.get_running_loop().create_task(self._post(approval.id))
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

    async def _post(self, approval_id: str) -> None:
        try:
            # Read whole from the store (a decide's answer carries no details), in the background like the POST.
            approval = await self.store.approval(approval_id, self._now_ms())
            if approval is None:
                return
            body = {k: v for k, v in msgspec.structs.asdict(view(approval)).items() if v is not None}
            body["url"] = f"{self.location}/console#approval-{approval.id}"
            async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as client:
                response = await client.post(self.webhook, content=msgspec.json.encode(body), headers=_JSON)
            if response.status_code >= 300:
                log.warning("approval webhook answered %d for %s", response.status_code, approval_id)
        except (httpx.HTTPError, OSError, StoreUnavailable) as e:
            log.warning("approval webhook failed for %s: %s", approval_id, type(e).__name__)

    async def close(self) -> None:
        tasks = [*self._posts, *([self._listener] if self._listener else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


_JSON = {"content-type": "application/json"}
