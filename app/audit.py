"""The audit log (docs/audit.md): what every decision says about itself, and who may read it.

The store writes each event in the same atomic step as the decision it records (app/store: the verify's event by
the decide that charges, a settle's by the settle, ...). What the store cannot know is built here, once per call:
the event's `head` (the root, the caller's chain and delegation path, the call) and, once per chain, how each
denial the store may decide reads (ChainSeen.denials). Reading: the operator sees every event; a token sees the
events of its own chain and of every chain derived from it — the chains seen under its root whose prefixes hold
its chain id, the same prefix semantics as revocation.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from app.approvals import Credential
from app.errors import BadRequest, StoreUnavailable, TooMany
from app.schemas import VerifyRequest
from app.store.base import ChainSeen, Store
from app.token.verifier import VerifiedChain
from caveats.cache import ByteLRU
from caveats.denial import Denial
from caveats.expires import format_instant, parse_instant
from caveats.grammar import CaveatSyntaxError

ARGS_LIMIT = 4096  # bytes of JSON an event keeps of a call's args; past it, whole top-level entries are left out
CAVEAT_KEPT = 256  # characters of each caveat a chain seen keeps: what the store holds per chain stays small
MAX_LIMIT = 1000  # events one page answers at most
MAX_STREAMS = 100  # live streams one process serves: each looks at the store twice a second
STREAM_POLL = 0.5  # seconds between two looks of a live stream for new events
KEEP_ALIVE = 15.0  # seconds of quiet after which a stream sends a comment (proxies close silent connections)
SCAN_BUDGET = 100_000  # events one query reads at most before it answers with what it found and a `next`
KINDS = ("verify", "settle", "release", "expire", "extend", "approval", "revoke", "mint")
_encode = msgspec.json.Encoder().encode
_event = msgspec.json.Decoder(dict[str, Any])


def members(value: dict[str, Any]) -> str:
    """A JSON object's members without the braces: what event_json joins."""
    return _encode(value).decode()[1:-1]


def denial_members(denial: Denial) -> str:
    out: dict[str, Any] = {"allowed": False, "code": str(denial.code), "reason": denial.reason}
    if denial.caveat is not None:
        out["caveat"], out["hop"] = denial.caveat, denial.hop
    return members(out)


def chain_members(chain: VerifiedChain) -> dict[str, Any]:
    analysis = chain.analysis
    return {
        "token_id": chain.token_id,
        "chain": chain.chain_id,
        "delegation": list(analysis.delegation),
        "holder": analysis.holder,
    }


class Trails:
    """Builds what the store writes: each call's head, each chain's ChainSeen (sent once per process and chain)."""

    def __init__(self, args: str = "full") -> None:
        self.keep_args = args != "none"
        self._sent: ByteLRU[str, bool] = ByteLRU("chains sent")

    def head(self, chain: VerifiedChain, req: VerifyRequest, audience: str | None, verifier: str | None) -> str:
        out = chain_members(chain)
        out["tool"] = req.tool
        if req.args and self.keep_args:
            out.update(_cut_args(req.args))
        if audience is not None:
            out["audience"] = audience
        if req.cost is not None:
            out["cost"] = req.cost
        if req.request_id is not None:
            out["request_id"] = req.request_id
        if verifier is not None:
            out["verifier"] = verifier
        return members(out)

    def unsent(self, chain: VerifiedChain, denials: Callable[[], dict[str, str]]) -> ChainSeen | None:
        """The chain for the store to keep, until a store call that carried it succeeded (`sent`); None after.
        `denials` is worked out only then: most calls come through a chain the store already has."""
        if self._sent.get(chain.chain_id):
            return None
        analysis = chain.analysis
        texts = tuple(t if len(t) <= CAVEAT_KEPT else t[: CAVEAT_KEPT - 1] + "…" for t in analysis.texts)
        return ChainSeen(chain.prefixes, texts, analysis.hops, denials())

    def sent(self, seen: ChainSeen | None) -> None:
        if seen is not None:
            self._sent.put(seen.chain, True, 256)


def _cut_args(args: dict[str, Any]) -> dict[str, Any]:
    """The args as sent, or as many of their top-level entries as fit in ARGS_LIMIT bytes of JSON."""
    whole = _encode(args)
    if len(whole) <= ARGS_LIMIT:
        return {"args": msgspec.Raw(whole)}
    kept: dict[str, Any] = {}
    size = 2
    for key, value in args.items():
        entry = len(_encode({key: value})) - 1
        if size + entry > ARGS_LIMIT:
            break
        kept[key], size = value, size + entry
    return {"args": kept, "args_truncated": True}


class Query(msgspec.Struct, frozen=True):
    """GET /v1/audit's filters, checked: each refusal names its field."""

    token_id: str | None = None
    chain: str | None = None
    tool: str | None = None
    allowed: bool | None = None
    kind: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int = 100
    after: str | None = None

    @classmethod
    def parse(cls, params: Any) -> Query:
        known = {"token_id", "chain", "tool", "allowed", "kind", "since", "until", "limit", "after"}
        for name in params:
            if name not in known:
                raise BadRequest(f"is not a filter: use {', '.join(sorted(known))}", name)
        allowed = params.get("allowed")
        if allowed not in (None, "true", "false"):
            raise BadRequest("must be true or false", "allowed")
        kind = params.get("kind")
        if kind is not None and kind not in KINDS:
            raise BadRequest(f"must be one of {', '.join(KINDS)}", "kind")
        limit_text = params.get("limit", "100")
        if not re.fullmatch(r"[0-9]{1,4}", limit_text) or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise BadRequest(f"must be a whole number from 1 to {MAX_LIMIT}", "limit")
        for name, pattern in (
            ("token_id", r"[0-9a-f]{32}"),
            ("chain", r"[0-9a-f]{32}"),
            ("after", r"[0-9A-Za-z.:-]{1,128}"),
        ):
            value = params.get(name)
            if value is not None and not re.fullmatch(pattern, value):
                raise BadRequest("is not one this service gives out", name)
        return cls(
            params.get("token_id"),
            params.get("chain"),
            params.get("tool"),
            None if allowed is None else allowed == "true",
            kind,
            _instant(params.get("since"), "since"),
            _instant(params.get("until"), "until"),
            int(limit_text),
            params.get("after"),
        )

    def for_stream(self, params: Any) -> Query:
        """A stream has no pages and no end: limit, since and until are refused rather than ignored."""
        for name in ("limit", "since", "until"):
            if name in params:
                raise BadRequest("a stream takes no limit, since or until: it starts after `after` (or now)", name)
        return self

    def matches(self, event: dict[str, Any]) -> bool:
        return (
            (self.chain is None or event.get("chain") == self.chain)
            and (self.tool is None or event.get("tool") == self.tool)
            and (self.allowed is None or event.get("allowed") is self.allowed)
            and (self.kind is None or event.get("kind") == self.kind)
        )


def _instant(text: str | None, field: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_instant(text) * 1000
    except CaveatSyntaxError as e:
        raise BadRequest(str(e), field) from None


class AuditLog:
    """Reads the log for a credential: the operator's every event, a token's subtree."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.streams = 0  # live streams now: the API bounds them

    async def visible(self, who: Credential, query: Query) -> tuple[str | None, set[str] | None]:
        """The root to read (None: every root) and the chains the credential may see (None: all)."""
        if who.chain is None:
            return query.token_id, None
        root = who.chain.token_id
        if query.token_id not in (None, root):
            return root, set()
        mine = who.chain.chain_id
        chains = {seen.chain for seen in await self.store.chains_seen(root) if mine in seen.prefixes}
        return root, chains | {mine}

    async def page_body(self, who: Credential, query: Query) -> dict[str, Any]:
        """A page as GET /v1/audit answers it (and the console's Activity): `events`, and `next` when there is more."""
        events, after = await self.page(who, query)
        return {"events": events, "next": after} if after else {"events": events}

    async def page(self, who: Credential, query: Query) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first, older than `query.after`: up to `limit` events, and the id to page on from (None: no more)."""
        root, chains = await self.visible(who, query)
        found: list[dict[str, Any]] = []
        cursor, scanned = query.after, 0
        while chains != set():
            batch = await self.store.audit_events(root, cursor, None, MAX_LIMIT)
            for event_id, at, raw in batch:
                cursor, scanned = event_id, scanned + 1
                if query.until_ms is not None and at > query.until_ms:
                    continue
                if query.since_ms is not None and at < query.since_ms:
                    return found, None
                event = read(event_id, at, raw)
                if (chains is None or event.get("chain") in chains) and query.matches(event):
                    found.append(event)
                    if len(found) >= query.limit:
                        return found, event_id
            if len(batch) < MAX_LIMIT:
                return found, None
            if scanned >= SCAN_BUDGET:
                return found, cursor  # a short page: the caller pages on from where the reading stopped
        return found, None

    async def since(
        self, query: Query, cursor: str | None, chains: set[str] | None, root: str | None
    ) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
        """Oldest first, newer than `cursor`: what a stream sends next, and the cursor after it."""
        out = []
        batch = await self.store.audit_events(root, None, cursor, MAX_LIMIT)
        for event_id, at, raw in batch:
            cursor = event_id
            event = read(event_id, at, raw)
            if (chains is None or event.get("chain") in chains) and query.matches(event):
                out.append((event_id, event))
        return out, cursor

    def open_stream(self, who: Credential, params: Any, last_event_id: str | None) -> AsyncIterator[bytes]:
        """A stream as a request asks for it (the API's and the console's): its filters checked, resumed after the
        Last-Event-ID header or `after`; TooMany past MAX_STREAMS live ones."""
        query = Query.parse(params).for_stream(params)
        if self.streams >= MAX_STREAMS:
            raise TooMany(f"this service process already serves {MAX_STREAMS} audit streams; retry later")
        return self.stream(who, query, last_event_id or query.after)

    async def stream(self, who: Credential, query: Query, resume: str | None) -> AsyncIterator[bytes]:
        """Server-Sent Events: from `resume` (an event id: every event kept after it), else from now; live after.
        A `: caught up` comment marks each time the backlog is sent (a shipper without --follow stops there); a
        token's view takes in chains derived from it as they are seen."""
        self.streams += 1
        try:
            async for chunk in self._stream(who, query, resume):
                yield chunk
        finally:
            self.streams -= 1

    async def _stream(self, who: Credential, query: Query, resume: str | None) -> AsyncIterator[bytes]:
        root, chains = await self.visible(who, query)
        cursor = resume
        if cursor is None:
            newest = await self.store.audit_events(root, None, None, 1)
            cursor = newest[0][0] if newest else None
        quiet, looked = 0.0, asyncio.get_running_loop().time()
        try:
            while True:
                events, cursor = await self.since(query, cursor, chains, root)
                for event_id, event in events:
                    yield f"id: {event_id}\ndata: {_encode(event).decode()}\n\n".encode()
                if events:
                    quiet = 0.0
                    continue
                if quiet == 0.0:
                    yield b": caught up\n\n"
                await asyncio.sleep(STREAM_POLL)
                quiet += STREAM_POLL
                if quiet >= KEEP_ALIVE:
                    yield b": keep-alive\n\n"
                    quiet = STREAM_POLL
                if chains is not None and asyncio.get_running_loop().time() - looked > KEEP_ALIVE:
                    root, chains = await self.visible(who, query)
                    looked = asyncio.get_running_loop().time()
        except StoreUnavailable as e:
            yield f": the store is unavailable ({e}); reconnect with Last-Event-ID\n\n".encode()


def read(event_id: str, at_ms: int, raw: str) -> dict[str, Any]:
    """A stored event as the API shows it: its id and instant (RFC 3339 with milliseconds) first."""
    event = _event.decode(raw)
    return {"id": event_id, "at": f"{format_instant(at_ms // 1000)[:-1]}.{at_ms % 1000:03d}Z", **event}
