"""create_app(): the Litestar application of docs/api.md. Handlers are thin: decode strictly, call the Authority,
encode. Every failure maps to one JSON error shape; no stack trace reaches a client, and a crash while
verifying is a 500, never an allow.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.response import Stream

from app import console
from app.api import openapi
from app.api.asgi_route import Answer, Headers, header, json_post
from app.api.body import decode, decode_optional
from app.api.metrics import Metrics
from app.approvals import Approvals, Credential
from app.audit import AuditLog, Query, Trails
from app.authority import Authority, Kind
from app.config import Settings
from app.errors import BadRequest, Conflict, InvalidToken, NotFound, StoreUnavailable, TooMany, Unauthorized
from app.schemas import (
    ApprovalList,
    DecideRequest,
    Denied,
    ErrorBody,
    ExtendRequest,
    InspectRequest,
    MintRequest,
    ReleaseRequest,
    RevokeRequest,
    RevokeResponse,
    SettleRequest,
    VerifyRequest,
)
from app.store import open_store
from app.store.base import Store
from caveats import cache
from caveats.denial import Code

MAX_BODY = 64 * 1024
_NO_CACHE = {"cache-control": "no-cache", "x-accel-buffering": "no"}  # a proxy must pass events on as they come
NOT_A_CREDENTIAL = "the credential presented is neither an admin key nor a live token of this service"
NO_SUCH_APPROVAL = "no such approval that this credential may decide: unknown, expired, or not its to decide"
RETRY_AFTER = "1"
log = logging.getLogger("agentcaps")
decisions_log = logging.getLogger("agentcaps.decisions")
_encode = msgspec.json.Encoder().encode
# What each kind of verify decision answers.
STATUS: dict[Kind, int] = {"allowed": 200, "denied": 403, "rate_limited": 429, "unavailable": 503}
# What each error the service raises answers, by its type (a subclass answers as its base): status, ErrorBody code.
ANSWERS: dict[type[Exception], tuple[int, str]] = {
    BadRequest: (400, "bad_request"),
    Unauthorized: (401, "unauthorized"),
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    TooMany: (429, "too_many"),
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(_encode(body), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, code: str, reason: str, field: str | None = None) -> Response[bytes]:
    return _json(ErrorBody(code, reason, field), status)


def _bearer(request: Request[Any, Any, Any]) -> str | None:
    return _bearer_of(request.headers.get("authorization"))


def _bearer_of(authorization: str | None) -> str | None:
    scheme, _, credential = (authorization or "").partition(" ")
    return credential if scheme.lower() == "bearer" and credential else None


def _match(presented: str | None, keys: Any) -> str | None:
    """The configured key equal to `presented`, compared in constant time against every key."""
    found = None
    for key in keys:
        if presented is not None and hmac.compare_digest(presented.encode(), key.encode()):
            found = key
    return found


def _refusal(presented: str | None, what: str) -> str:
    """A caller who sent a key learns it was wrong, not that it is missing (the key itself is never echoed)."""
    if presented is None:
        return f"this needs Authorization: Bearer <{what}>"
    return f"the {what} presented was rejected: it is not one of this service's {what}s"


def create_app(settings: Settings, store: Store | None = None, clock: Callable[[], float] = time.time) -> Litestar:
    store = store or open_store(
        settings.store, settings.store_timeout, settings.redis_wait, settings.data_dir, settings.fsync, settings.audit
    )
    cache.configure(settings.cache_mb * cache.MIB)  # one total for the process's caches, whatever app set it last
    approvals = Approvals(
        store, settings.approval_ttl, settings.approval_webhook, settings.public_location.rstrip("/"), clock
    )
    authority = Authority(settings.ring, store, settings.public_location, clock, approvals, Trails(settings.audit_args))
    audit_log = AuditLog(store)
    metrics = Metrics()

    def require_admin(request: Request[Any, Any, Any]) -> None:
        presented = _bearer(request)
        if _match(presented, settings.admin_keys) is None:
            raise Unauthorized(_refusal(presented, "admin key"))

    def verifier_name(authorization: str | None) -> str | None:
        """With AGENTCAPS_VERIFIER_KEYS, the name of the key presented (401 without a valid one); else None.
        Checked before the body is decoded: a caller without a key learns nothing about what a body needs."""
        if not settings.verifier_keys:
            return None
        presented = _bearer_of(authorization)
        key = _match(presented, settings.verifier_keys)
        if key is None:
            raise Unauthorized(_refusal(presented, "verifier key"))
        return settings.verifier_keys[key]

    def audience_of(name: str | None, claimed: str | None) -> str | None:
        """The verifier key's name is the audience; without verifier keys, the body's audience is."""
        if name is None:
            return claimed
        if claimed is not None and claimed != name:
            raise Unauthorized(f"the body names audience {claimed!r} but the verifier key is {name!r}'s")
        return name

    @post("/v1/tokens", status_code=201)
    async def mint_token(request: Request[Any, Any, Any]) -> Response[bytes]:
        require_admin(request)
        return _json(await authority.mint(decode(await request.body(), MintRequest)), 201)

    async def verify(headers: Headers, content: bytes) -> Answer:
        """POST /v1/verify, on a plain ASGI route (app/api/asgi_route.py): the hot path."""
        started = time.perf_counter()
        name = verifier_name(header(headers, b"authorization"))
        req = decode(content, VerifyRequest)
        audience = audience_of(name, req.audience)
        verdict = await authority.verify(req, audience, name)
        if verdict.cause is not None:
            store_down(verdict.cause)
        body = verdict.body
        metrics.decided("allowed" if body.allowed else getattr(body, "code", ""))
        if verdict.charged is not None:
            metrics.charged(verdict.charged.currency, verdict.charged.micros)
        metrics.latency.observe(time.perf_counter() - started)
        if decisions_log.isEnabledFor(logging.DEBUG):  # an audit trail when asked for; never the token itself
            decisions_log.debug(
                "decision",
                extra={
                    "fields": {
                        "request_id": secrets.token_hex(8),
                        "token_id": getattr(body, "token_id", None),
                        "tool": req.tool,
                        "audience": audience,
                        "status": STATUS[verdict.kind],
                        "code": getattr(body, "code", "allowed"),
                        "cost": f"{req.cost.amount} {req.cost.currency}" if req.cost else None,
                    }
                },
            )
        retry_after = RETRY_AFTER if verdict.kind == "unavailable" else verdict.retry_after
        extra = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else []
        return STATUS[verdict.kind], _encode(body), extra

    @post("/v1/holds/{hold_id:str}/settle", status_code=200)
    async def settle(request: Request[Any, Any, Any], hold_id: FromPath[str]) -> Response[bytes]:
        name = verifier_name(request.headers.get("authorization"))
        req = decode_optional(await request.body(), SettleRequest)
        return _json(await authority.settle(hold_id, req.amount, name))

    @post("/v1/holds/{hold_id:str}/release", status_code=200)
    async def release(request: Request[Any, Any, Any], hold_id: FromPath[str]) -> Response[bytes]:
        name = verifier_name(request.headers.get("authorization"))
        decode_optional(await request.body(), ReleaseRequest)  # none at all, or `{}`
        return _json(await authority.release(hold_id, name))

    @post("/v1/holds/{hold_id:str}/extend", status_code=200)
    async def extend(request: Request[Any, Any, Any], hold_id: FromPath[str]) -> Response[bytes]:
        name = verifier_name(request.headers.get("authorization"))
        body = await request.body()
        if not body.strip():
            raise BadRequest("the body must give hold_ttl: seconds from now, 1 to 86400", "hold_ttl")
        return _json(await authority.extend(hold_id, decode(body, ExtendRequest).hold_ttl, name))

    async def credential_of(presented: str) -> Credential | None:
        """The admin key's operator, the holder of a live token, else None: the API's and the console's rule."""
        if _match(presented, settings.admin_keys) is not None:
            return Credential()
        return await authority.credential(presented)

    async def approver(request: Request[Any, Any, Any], unknown: type[Exception]) -> Credential:
        """The admin key's operator, or the holder of a live token. Anything else presented raises `unknown`:
        NotFound where one approval is asked for (a forged token learns no more than one that may not decide)."""
        presented = _bearer(request)
        if presented is None:
            raise Unauthorized("this needs Authorization: Bearer <admin key or token>")
        found = await credential_of(presented)
        if found is None:
            raise unknown(NOT_A_CREDENTIAL if unknown is Unauthorized else NO_SUCH_APPROVAL)
        return found

    @get("/v1/approvals")
    async def list_approvals(request: Request[Any, Any, Any]) -> Response[bytes]:
        who = await approver(request, Unauthorized)
        # `state` is Litestar's own name for a handler argument: read from the query itself
        return _json(ApprovalList(await approvals.list(who, request.query_params.get("state"))))

    @get("/v1/approvals/{approval_id:str}")
    async def get_approval(request: Request[Any, Any, Any], approval_id: FromPath[str]) -> Response[bytes]:
        return _json(await approvals.get(await approver(request, NotFound), approval_id))

    async def decide(request: Request[Any, Any, Any], approval_id: str, approve: bool) -> Response[bytes]:
        who = await approver(request, NotFound)
        reason = decode_optional(await request.body(), DecideRequest).reason
        return _json(await approvals.decide(who, approval_id, approve, reason))

    @post("/v1/approvals/{approval_id:str}/approve", status_code=200)
    async def approve(request: Request[Any, Any, Any], approval_id: FromPath[str]) -> Response[bytes]:
        return await decide(request, approval_id, True)

    @post("/v1/approvals/{approval_id:str}/deny", status_code=200)
    async def deny(request: Request[Any, Any, Any], approval_id: FromPath[str]) -> Response[bytes]:
        return await decide(request, approval_id, False)

    @get("/v1/audit")
    async def audit(request: Request[Any, Any, Any]) -> Response[bytes]:
        who = await approver(request, Unauthorized)
        return _json(await audit_log.page_body(who, Query.parse(request.query_params)))

    @get("/v1/audit/stream")
    async def audit_stream(request: Request[Any, Any, Any]) -> Stream:
        who = await approver(request, Unauthorized)
        events = audit_log.open_stream(who, request.query_params, request.headers.get("last-event-id"))
        return Stream(events, media_type="text/event-stream", headers=_NO_CACHE)

    @post("/v1/revoke", status_code=200)
    async def revoke(request: Request[Any, Any, Any]) -> Response[bytes]:
        req = decode(await request.body(), RevokeRequest)
        if (req.token is None) == (req.token_id is None):
            raise BadRequest("give exactly one of token or token_id", "token")
        if req.chain is not None and req.token_id is None:
            raise BadRequest("a chain is revoked with the token_id of its root", "token_id")
        if req.token_id is not None:
            require_admin(request)
            await authority.revoke_root(req.token_id, req.chain)
            return _json(RevokeResponse(True, req.token_id))
        assert req.token is not None
        try:
            token_id = await authority.revoke(req.token)
        except InvalidToken as e:
            return _json(Denied(False, Code.INVALID_TOKEN, str(e)), 403)
        return _json(RevokeResponse(True, token_id))

    @post("/v1/inspect", status_code=200)
    async def inspect(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _json(await authority.inspect(decode(await request.body(), InspectRequest).token))

    @get("/healthz")
    async def healthz() -> Response[bytes]:
        return _json({"status": "ok"})

    @get("/readyz")
    async def readyz() -> Response[bytes]:
        reason = await store.ready()
        if reason is None:
            return _json({"status": "ready"})
        return _json({"status": "not ready", "reason": reason}, 503, {"retry-after": RETRY_AFTER})

    @get("/metrics")
    async def metrics_endpoint() -> Response[bytes]:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @get("/schema")
    async def schema() -> Response[bytes]:
        return _json(openapi.document())

    def store_down(exc: StoreUnavailable) -> None:
        """Every 503 of the store, a verify's decision or another call's error, is counted and logged here."""
        metrics.store_errors.inc()
        log.warning("store unavailable: %s", exc, extra={"fields": {"request_id": secrets.token_hex(8)}})

    def on_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        answer = next((ANSWERS[kind] for kind in type(exc).__mro__ if kind in ANSWERS), None)
        if answer is not None:
            return _error(*answer, str(exc), exc.field if isinstance(exc, BadRequest) else None)
        if isinstance(exc, StoreUnavailable):  # not a verify's: that one is a decision, with its request_id
            store_down(exc)
            body = ErrorBody(Code.STORE_UNAVAILABLE, StoreUnavailable.REASON)
            return _json(body, 503, {"retry-after": RETRY_AFTER})
        if isinstance(exc, HTTPException):
            if exc.status_code == 413:
                return _error(413, "too_large", f"the body is over {MAX_BODY // 1024} KiB")
            refused = _error(exc.status_code, "http_error", str(exc.detail))
            refused.headers.update(exc.headers or {})  # a 405's Allow
            return refused
        request_id = secrets.token_hex(8)
        log.exception("internal error", extra={"fields": {"request_id": request_id, "path": request.url.path}})
        return _json(ErrorBody("internal_error", "internal error", request_id=request_id), 500)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> Any:
        try:
            yield
        finally:
            await approvals.close()
            await store.close()

    app = Litestar(
        route_handlers=[
            mint_token,
            json_post("/v1/verify", verify, MAX_BODY),
            settle,
            release,
            extend,
            revoke,
            inspect,
            list_approvals,
            audit,
            audit_stream,
            get_approval,
            approve,
            deny,
            healthz,
            readyz,
            metrics_endpoint,
            schema,
            console.router(authority, approvals, audit_log, credential_of, settings.public_location),
        ],
        exception_handlers={Exception: on_error},
        request_max_body_size=MAX_BODY,
        openapi_config=None,
        logging_config=None,  # logging is configured once by the runner (JSON lines), not replaced per app
        lifespan=[lifespan],
        debug=False,
    )
    app.state.authority = authority
    app.state.metrics = metrics
    return app
