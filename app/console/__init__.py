"""The operator's web console (docs/console.md): `GET /console` and its private JSON API under `/console/api/`.

The page is the package's own HTML, CSS and JS: no build step, no request to any other origin. Signing in trades
an admin key or a token for a session cookie (HttpOnly, SameSite=Strict, 8 h); the credential stays here, in this
process's memory, and is checked again on every request, so a revoked or expired token's session stops working.
Every change (approve, deny, revoke, inspect, sign out) also needs the session's CSRF token in X-CSRF-Token.
What a session sees is what its credential sees through the API: the same Credential, Approvals.list and
AuditLog.visible; the page is never trusted to filter.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.params import FromPath
from litestar.response import Stream
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.api.body import decode, decode_optional
from app.approvals import Approvals, Credential
from app.audit import AuditLog, Query
from app.authority import Authority
from app.errors import BadRequest, NotFound, Unauthorized
from app.schemas import DecideRequest, InspectRequest
from app.store.base import ChainSeen, RateSpec
from caveats.chain import analyse
from caveats.money import format_micros

SESSION_S = 8 * 3600
MAX_SESSIONS = 10_000  # sessions one process keeps; the oldest signed in goes first
MAX_ROOTS = 50  # roots the operator's Tokens page shows: those of the newest events
RECENT_EVENTS = 1000  # newest events the operator's roots are taken from
RECHECK_S = 5.0  # a live stream looks again this often whether its session's credential still holds
COOKIE = "agentcaps_console"
CSRF_HEADER = "x-csrf-token"
SIGNED_OUT = "sign in first: this console session is missing, ended, or its credential is no longer valid"
_STATIC = files(__name__) / "static"
# The only files served, by the name the page asks for: nothing else under the package is reachable.
ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
_encode = msgspec.json.Encoder().encode


class SignIn(msgspec.Struct, forbid_unknown_fields=True):
    credential: str


class RevokeChain(msgspec.Struct, forbid_unknown_fields=True):
    token_id: str
    chain: str


@dataclass
class Session:
    presented: str  # the admin key or token as signed in with: kept here only, never sent back
    csrf: str
    expires: float


class Sessions:
    """Session id -> Session, in this process's memory, bounded (oldest out) and ended after SESSION_S."""

    def __init__(self, clock: Callable[[], float], limit: int = MAX_SESSIONS) -> None:
        self.clock = clock
        self.limit = limit
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def open(self, presented: str) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(presented, secrets.token_urlsafe(32), self.clock() + SESSION_S)
        self._by_id[session_id] = session
        while len(self._by_id) > self.limit:
            self._by_id.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id) if session_id else None
        if session is not None and self.clock() >= session.expires:
            self.close(session_id)
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_id)


def security_headers(app: ASGIApp) -> ASGIApp:
    """Every console response, errors included, forbids framing, sniffing, referrers and other origins."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await app(scope, receive, with_headers)

    return middleware


def _json(body: Any, status: int = 200) -> Response[bytes]:
    return Response(_encode(body), status_code=status, media_type="application/json")


def router(
    authority: Authority,
    approvals: Approvals,
    audit_log: AuditLog,
    credential_of: Callable[[str], Awaitable[Credential | None]],
    location: str,
) -> Router:
    """The console's routes. `credential_of` is the API's own rule for a bearer credential (admin key or live token);
    `location` is where users reach the service: over https the cookie is Secure."""
    secure_cookie = location.startswith("https:")
    sessions = Sessions(authority.clock)

    async def signed_in(request: Request[Any, Any, Any], changes: bool = False) -> tuple[Credential, Session]:
        """The session's credential, checked again now; a change also needs the session's CSRF token."""
        session_id = request.cookies.get(COOKIE)
        session = sessions.get(session_id)
        if session is None:
            raise Unauthorized(SIGNED_OUT)
        if changes and not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), session.csrf.encode()):
            raise Unauthorized("this change needs the session's CSRF token in X-CSRF-Token")
        who = await credential_of(session.presented)
        if who is None:
            sessions.close(session_id)
            raise Unauthorized(SIGNED_OUT)
        return who, session

    def describe(who: Credential, session: Session) -> dict[str, Any]:
        out: dict[str, Any] = {"csrf": session.csrf, "operator": who.operator, "who": who.decided_by}
        if who.chain is not None:
            out |= {"token_id": who.chain.token_id, "chain": who.chain.chain_id}
        return out

    def cookie(value: str, max_age: int) -> str:
        secure = "; Secure" if secure_cookie else ""
        return f"{COOKIE}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"

    @get("/", sync_to_thread=False)
    def page() -> Response[bytes]:
        return Response((_STATIC / "index.html").read_bytes(), media_type="text/html")

    @get("/static/{name:str}", sync_to_thread=False)
    def asset(name: FromPath[str]) -> Response[bytes]:
        if name not in ASSETS:
            raise NotFound("no such console file")
        return Response((_STATIC / name).read_bytes(), media_type=ASSETS[name])

    @post("/api/session", status_code=200)
    async def sign_in(request: Request[Any, Any, Any]) -> Response[bytes]:
        # JSON only: a cross-site form cannot send it without a CORS preflight, which this service never grants.
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise BadRequest("send the credential as JSON", "credential")
        presented = decode(await request.body(), SignIn).credential.strip()
        who = await credential_of(presented) if presented else None
        if who is None:
            raise Unauthorized("that is neither an admin key nor a live token of this service")
        session_id, session = sessions.open(presented)
        response = _json(describe(who, session))
        response.headers["set-cookie"] = cookie(session_id, SESSION_S)
        return response

    @get("/api/session")
    async def current(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _json(describe(*await signed_in(request)))

    @delete("/api/session", status_code=200)
    async def sign_out(request: Request[Any, Any, Any]) -> Response[bytes]:
        await signed_in(request, changes=True)
        sessions.close(request.cookies.get(COOKIE))
        response = _json({"signed_out": True})
        response.headers["set-cookie"] = cookie("", 0)
        return response

    @get("/api/approvals")
    async def pending(request: Request[Any, Any, Any]) -> Response[bytes]:
        who, _ = await signed_in(request)
        return _json({"approvals": await approvals.list(who, "pending")})

    async def decide(request: Request[Any, Any, Any], approval_id: str, approve: bool) -> Response[bytes]:
        who, _ = await signed_in(request, changes=True)
        reason = decode_optional(await request.body(), DecideRequest).reason
        return _json(await approvals.decide(who, approval_id, approve, reason))

    @post("/api/approvals/{approval_id:str}/approve", status_code=200)
    async def approve(request: Request[Any, Any, Any], approval_id: FromPath[str]) -> Response[bytes]:
        return await decide(request, approval_id, True)

    @post("/api/approvals/{approval_id:str}/deny", status_code=200)
    async def deny(request: Request[Any, Any, Any], approval_id: FromPath[str]) -> Response[bytes]:
        return await decide(request, approval_id, False)

    @get("/api/audit")
    async def audit(request: Request[Any, Any, Any]) -> Response[bytes]:
        who, _ = await signed_in(request)
        return _json(await audit_log.page_body(who, Query.parse(request.query_params)))

    @get("/api/audit/stream")
    async def audit_stream(request: Request[Any, Any, Any]) -> Stream:
        who, session = await signed_in(request)
        events = audit_log.open_stream(who, request.query_params, request.headers.get("last-event-id"))
        headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
        return Stream(while_valid(events, session), media_type="text/event-stream", headers=headers)

    async def while_valid(events: AsyncIterator[bytes], session: Session) -> AsyncIterator[bytes]:
        """The stream, until its session ends or its credential stops holding (looked at every RECHECK_S)."""
        checked = time.monotonic()
        try:
            async for chunk in events:
                if time.monotonic() - checked > RECHECK_S:
                    if authority.clock() >= session.expires or await credential_of(session.presented) is None:
                        return
                    checked = time.monotonic()
                yield chunk
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    @get("/api/tokens")
    async def tokens(request: Request[Any, Any, Any]) -> Response[bytes]:
        who, _ = await signed_in(request)
        if who.chain is None:
            recent = await authority.store.audit_events(None, None, None, RECENT_EVENTS)
            roots = [r for r in dict.fromkeys(_root_of(raw) for _, _, raw in recent) if r is not None][:MAX_ROOTS]
        else:
            roots = [who.chain.token_id]
        return _json({"roots": [await tree(who, root) for root in roots]})

    async def tree(who: Credential, token_id: str) -> dict[str, Any]:
        """A root's chains as seen at verify time (those the credential may see), each with its parent,
        caveats, budgets and whether it is revoked."""
        seen = await authority.store.chains_seen(token_id)
        _, visible = await audit_log.visible(who, Query(token_id=token_id))
        if who.chain is not None and who.chain.chain_id not in {s.chain for s in seen}:
            mine = who.chain
            seen.append(ChainSeen(mine.prefixes, mine.analysis.texts, mine.analysis.hops, {}))
        ids = {s.chain for s in seen}
        now_ms = int(authority.clock() * 1000)
        chains = []
        for s in seen:
            if visible is not None and s.chain not in visible:
                continue
            parents = [p for p in s.prefixes[:-1] if p in ids]
            chains.append(await _chain_view(s, parents[-1] if parents else None, token_id, now_ms))
        return {"token_id": token_id, "chains": chains}

    async def _chain_view(seen: ChainSeen, parent: str | None, token_id: str, now_ms: int) -> dict[str, Any]:
        analysis = analyse(seen.caveats)
        budget_prefixes = tuple(seen.prefixes[b.index + 1] for b in analysis.budgets)
        rate_specs = tuple(
            RateSpec(seen.prefixes[r.index + 1], r.parsed.count, r.parsed.window * 1000) for r in analysis.rates
        )
        found = await authority.store.inspect(token_id, seen.prefixes, budget_prefixes, now_ms, rate_specs)
        budgets = [
            {
                "caveat": b.caveat,
                "index": b.index,
                "hop": b.hop,
                "limit": format_micros(b.parsed.limit.micros),
                "spent": format_micros(spent),
                "held": format_micros(held),
                "currency": b.parsed.limit.currency,
                "limit_micros": b.parsed.limit.micros,
                "used_micros": spent + held,
                "spent_micros": spent,
            }
            for b, (spent, held) in zip(analysis.budgets, found.balances, strict=True)
        ]
        return {
            "chain": seen.chain,
            "parent": parent,
            "delegation": list(analysis.delegation),
            "caveats": [{"caveat": c, "hop": h} for c, h in zip(seen.caveats, seen.hops, strict=True)],
            "budgets": budgets,
            "rates": [
                {
                    "caveat": r.caveat,
                    "index": r.index,
                    "hop": r.hop,
                    "used": used,
                    "count": r.parsed.count,
                    "window": r.caveat.rsplit("/", 1)[-1],
                }
                for r, used in zip(analysis.rates, found.rate_use, strict=True)
            ],
            "revoked": found.revoked_index is not None,
        }

    @post("/api/revoke", status_code=200)
    async def revoke(request: Request[Any, Any, Any]) -> Response[bytes]:
        who, _ = await signed_in(request, changes=True)
        req = decode(await request.body(), RevokeChain)
        if who.chain is None:
            await authority.revoke_root(req.token_id, req.chain)
            return _json({"revoked": True, "token_id": req.token_id, "chain": req.chain})
        # A holder revokes its own chain or one derived from it: the chains its audit view holds, never others.
        _, visible = await audit_log.visible(who, Query(token_id=req.token_id))
        if visible is None or req.chain not in visible:
            raise NotFound("no chain with that id in this credential's own subtree")
        await authority.revoke_root(req.token_id, req.chain, f"revoked from the console by {who.decided_by}")
        return _json({"revoked": True, "token_id": req.token_id, "chain": req.chain})

    @post("/api/inspect", status_code=200)
    async def inspect(request: Request[Any, Any, Any]) -> Response[bytes]:
        await signed_in(request, changes=True)
        return _json(await authority.inspect(decode(await request.body(), InspectRequest).token))

    return Router(
        "/console",
        route_handlers=[
            page,
            asset,
            sign_in,
            current,
            sign_out,
            pending,
            approve,
            deny,
            audit,
            audit_stream,
            tokens,
            revoke,
            inspect,
        ],
        middleware=[security_headers],
    )


def _root_of(raw: str) -> str | None:
    token_id = msgspec.json.decode(raw, type=dict[str, Any]).get("token_id")
    return token_id if isinstance(token_id, str) else None
