"""GET /schema: the OpenAPI 3.1 document, generated from the same msgspec Structs the handlers decode."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import msgspec

from app.schemas import (
    Allowed,
    ApprovalList,
    ApprovalView,
    DecideRequest,
    Denied,
    ErrorBody,
    ExtendRequest,
    HoldResponse,
    InspectRequest,
    InspectResponse,
    MintRequest,
    MintResponse,
    ReleaseRequest,
    RevokeRequest,
    RevokeResponse,
    SettleRequest,
    VerifyRequest,
)

_REF = "#/components/schemas/{name}"
_OPTIONAL_BODIES = (SettleRequest, ReleaseRequest, DecideRequest)  # an empty body means "all held" / nothing to say


def _ref(kind: type[Any]) -> dict[str, str]:
    return {"$ref": _REF.format(name=kind.__name__)}


def _content(*kinds: type[Any]) -> dict[str, Any]:
    schema = _ref(kinds[0]) if len(kinds) == 1 else {"oneOf": [_ref(k) for k in kinds]}
    return {"application/json": {"schema": schema}}


def _op(
    summary: str,
    body: type[Any] | None,
    responses: Mapping[int, tuple[str, tuple[Any, ...]]],
    auth: bool = False,
    path_param: str | None = None,
    query: tuple[str, ...] = (),
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    if body is not None:
        op["requestBody"] = {"required": body not in _OPTIONAL_BODIES, "content": _content(body)}
    params = [{"name": path_param, "in": "path", "required": True, "schema": {"type": "string"}}] if path_param else []
    params += [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}} for name in query]
    if params:
        op["parameters"] = params
    if auth:
        op["security"] = [{"bearer": []}]
    errors = {400: "malformed request", 413: "body over 64 KiB", 503: "counter store unavailable"}
    for status, (text, kinds) in responses.items():
        op["responses"][str(status)] = (
            {"description": text, "content": _content(*kinds)} if kinds else {"description": text}
        )
    for status, text in errors.items():
        op["responses"].setdefault(str(status), {"description": text, "content": _content(ErrorBody)})
    return op


@functools.cache
def document() -> dict[str, Any]:
    kinds = (
        MintRequest,
        MintResponse,
        VerifyRequest,
        Allowed,
        Denied,
        SettleRequest,
        ReleaseRequest,
        ExtendRequest,
        HoldResponse,
        RevokeRequest,
        RevokeResponse,
        InspectRequest,
        InspectResponse,
        ApprovalList,
        ApprovalView,
        DecideRequest,
        ErrorBody,
    )
    _, components = msgspec.json.schema_components(kinds, ref_template=_REF)
    err = (ErrorBody,)
    hold = {
        200: ("hold state", (HoldResponse,)),
        401: ("bad verifier key", err),
        404: ("unknown or expired", err),
        409: ("settled/released the other way", err),
    }
    extend = {**hold, 409: ("already settled or released: nothing left to extend", err)}
    approval = {
        200: ("the approval", (ApprovalView,)),
        401: ("no credential", err),
        404: ("unknown, expired, or not this credential's to decide", err),
    }
    decided = {**approval, 409: ("already decided the other way", err)}
    paths = {
        "/v1/tokens": {
            "post": _op(
                "Mint a root token",
                MintRequest,
                {201: ("minted", (MintResponse,)), 401: ("bad admin key", err)},
                auth=True,
            )
        },
        "/v1/verify": {
            "post": _op(
                "Decide one tool call",
                VerifyRequest,
                {
                    200: ("allowed", (Allowed,)),
                    403: ("denied", (Denied,)),
                    429: ("rate limited", (Denied,)),
                    401: ("bad verifier key", err),
                    409: ("request_id reused for another request", err),
                    503: ("counter store unavailable: a store_unavailable denial", (Denied,)),
                },
            )
        },
        "/v1/holds/{hold_id}/settle": {"post": _op("Charge a hold", SettleRequest, hold, path_param="hold_id")},
        "/v1/holds/{hold_id}/release": {"post": _op("Release a hold", ReleaseRequest, hold, path_param="hold_id")},
        "/v1/holds/{hold_id}/extend": {
            "post": _op("Keep a hold for hold_ttl more seconds from now", ExtendRequest, extend, path_param="hold_id")
        },
        "/v1/revoke": {
            "post": _op(
                "Revoke a token and its descendants",
                RevokeRequest,
                {
                    200: ("revoked", (RevokeResponse,)),
                    401: ("token_id needs the admin key", err),
                    403: ("invalid token", (Denied,)),
                },
            )
        },
        "/v1/inspect": {"post": _op("Explain a token", InspectRequest, {200: ("explained", (InspectResponse,))})},
        "/v1/approvals": {
            "get": _op(
                "The approvals this credential may decide, newest first",
                None,
                {200: ("approvals", (ApprovalList,)), 401: ("neither an admin key nor a live token", err)},
                auth=True,
                query=("state",),
            )
        },
        "/v1/approvals/{approval_id}": {
            "get": _op("One approval", None, approval, auth=True, path_param="approval_id")
        },
        "/v1/approvals/{approval_id}/approve": {
            "post": _op("Approve a pending approval", DecideRequest, decided, auth=True, path_param="approval_id")
        },
        "/v1/approvals/{approval_id}/deny": {
            "post": _op("Deny a pending approval", DecideRequest, decided, auth=True, path_param="approval_id")
        },
        "/healthz": {"get": {"summary": "Process alive", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {
            "get": {
                "summary": "Counter store answers",
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "metrics"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "agentcaps", "version": "0.1.0"},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
