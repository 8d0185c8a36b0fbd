"""The guard: agentcaps in front of every MCP tool (docs/mcp.md), for tool servers you write and for the gateway.

- `tools/list` answers only the tools the presented token allows, read offline (no token: nothing); the
  resource and prompt listings are empty unless the token allows their read method.
- `tools/call` is admitted by verifying a hold of the tool's cost; any other request but the handshake,
  discovery and ping is admitted the same way as a tool named by its method (`resources/read`), with its params
  as args; `tasks/*` need a token that verifies. The tool runs with the token taken out of `_meta`, its hold
  extended while it runs; the call is then concluded: the actual cost is settled (the result's
  `_meta["agentcaps/cost"]`, at most the hold), the hold released if the tool failed or asked for input first,
  or the held cost charged if the call was cancelled while the tool ran (it may have acted). A denial is a normal
  tool result with `isError` whose text starts `agentcaps denied <code>:` and says what the holder can still do
  (a JSON-RPC error with the same text for other methods); the tool never runs then.
- A call that needs a human's approval waits up to `approval_wait` seconds for the decision (the verify's
  `wait`): approved meanwhile, it runs; still pending, it is denied `approval_required` naming the approval, and
  the same call retried once it is approved runs.

`Guard` is both an mcp SDK server middleware (`MCPServer(..., middleware=[guard])`) and, through `admit`, `keep`,
`conclude`, `abandon`, `verifies` and `filter_listing`, the checks the gateway applies to raw JSON-RPC messages.
Its `Decider` is the service over HTTP (`AsyncClient`) or, configured with the keys, in-process (`LocalDecider`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal, Protocol, cast

import anyio
import httpx
import msgspec
from pydantic import BaseModel
from starlette.requests import Request

from app.authority import Authority
from app.errors import ApiError, BadRequest, Conflict, CostError, NotFound, StoreUnavailable, TokenError
from app.mcp.costs import CostTable
from app.mcp.sdk import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    CallNext,
    CallToolResult,
    HandlerResult,
    MCPError,
    RequestParamsMeta,
    ServerRequestContext,
    TextContent,
)
from app.schemas import Allowed, Denied, HoldResponse, InspectResponse, Money, VerifyRequest
from app.sdk.token import Token
from caveats.grammar import CaveatSyntaxError
from caveats.money import format_micros, parse_micros
from caveats.tools import tool_matches

TOKEN_KEY = "agentcaps/token"
COST_KEY = "agentcaps/cost"
DENIAL_KEY = "agentcaps/denial"
# Requests that carry no authority of their own: the handshake, discovery and liveness.
UNCHECKED = frozenset({"initialize", "server/discover", "ping"})
# Listings, and the method whose permission shows what is listed (tools/list: each tool by its own name).
LISTINGS = {"tools/list": None, "resources/list": "resources/read", "resources/templates/list": "resources/read"}
LISTINGS |= {"prompts/list": "prompts/get"}
_LISTED = {"tools/list": "tools", "resources/list": "resources", "resources/templates/list": "resourceTemplates"}
_LISTED |= {"prompts/list": "prompts"}
_NO_TOKEN = f"no agentcaps token: send _meta['{TOKEN_KEY}'] or Authorization: Bearer"
log = logging.getLogger("agentcaps.mcp")
_as_over_http = msgspec.json.Decoder(VerifyRequest, float_hook=Decimal)
# What the service may fail with when it cannot be asked: the call is denied, never run on doubt.
_UNREACHABLE = (httpx.HTTPError, OSError, StoreUnavailable)


class Decider(Protocol):
    """What decides the guard's calls: verify (a hold), settle, release, extend, inspect. AsyncClient asks the
    service over HTTP; LocalDecider decides in-process. (Not app.token.verifier.Verifier, which only checks a
    token's chain.)"""

    async def verify(
        self,
        token: str,
        tool: str,
        *,
        cost: Money | None = None,
        args: Mapping[str, Any] | None = None,
        audience: str | None = None,
        request_id: str | None = None,
        mode: Literal["charge", "hold"] = "charge",
        hold_ttl: int = 300,
        wait: float = 0,
    ) -> Allowed | Denied: ...

    async def settle(self, hold_id: str, amount: str | None = None) -> HoldResponse: ...

    async def release(self, hold_id: str) -> HoldResponse: ...

    async def extend(self, hold_id: str, hold_ttl: int) -> HoldResponse: ...

    async def inspect(self, token: str) -> InspectResponse: ...


class LocalDecider:
    """Decide in-process with an Authority (the service's keys and store), answering like AsyncClient."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority

    async def verify(self, token: str, tool: str, **kw: Any) -> Allowed | Denied:
        audience = kw.pop("audience", None)
        try:
            # The request as the HTTP API would decode it: JSON fractions as exact Decimals, never floats.
            request = _as_over_http.decode(msgspec.json.encode({"token": token, "tool": tool, **kw}))
            verdict = await self.authority.verify(request, audience)
        except (msgspec.ValidationError, BadRequest) as e:
            raise ApiError(400, "bad_request", str(e)) from None
        if verdict.cause is not None:  # as AsyncClient fails on a 503: the call is denied, naming the cause
            raise verdict.cause
        return verdict.body

    async def settle(self, hold_id: str, amount: str | None = None) -> HoldResponse:
        return await self._hold(self.authority.settle(hold_id, amount))

    async def release(self, hold_id: str) -> HoldResponse:
        return await self._hold(self.authority.release(hold_id))

    async def extend(self, hold_id: str, hold_ttl: int) -> HoldResponse:
        return await self._hold(self.authority.extend(hold_id, hold_ttl))

    async def inspect(self, token: str) -> InspectResponse:
        return await self.authority.inspect(token)

    @staticmethod
    async def _hold(change: Any) -> HoldResponse:
        try:
            result: HoldResponse = await change
        except NotFound as e:
            raise ApiError(404, "not_found", str(e)) from None
        except Conflict as e:
            raise ApiError(409, "conflict", str(e)) from None
        return result


@dataclasses.dataclass(frozen=True)
class Admitted:
    """A call the service allowed, its cost held: conclude it with the tool's result, or abandon it."""

    token: str
    tool: str
    args: Mapping[str, Any]
    cost: Money | None
    hold_id: str | None


@dataclasses.dataclass
class Guard:
    decider: Decider
    costs: CostTable = dataclasses.field(default_factory=CostTable)
    audience: str | None = None
    default_token: str | None = None  # for requests that carry none (the gateway's --token)
    hold_ttl: int = 300
    approval_wait: float = 20  # seconds a call that needs approval waits for it before it is denied pending

    def __post_init__(self) -> None:
        if not 1 <= self.hold_ttl <= 86400:
            raise ValueError("hold_ttl must be 1 to 86400 seconds")
        if not (math.isfinite(self.approval_wait) and 0 <= self.approval_wait <= 60):
            raise ValueError("approval_wait must be 0 to 60 seconds")

    # -- the checks, on wire-shaped (JSON) params and results ------------------------------------------
    def take_token(self, params: Mapping[str, Any] | None, authorization: str | None = None) -> tuple[str | None, Any]:
        """The presented token (`_meta`, else a bearer header, else the default) and the params without it."""
        token, params = _from_meta(params)
        return token or _bearer(authorization) or self.default_token, params

    def visible(self, token: str | None) -> Callable[[str], bool]:
        """Which tool names this token may call, read offline (no key): the caveats' allowlist."""
        try:
            allowed = Token.parse(token).analysis.tools if token else ()
        except TokenError:
            allowed = ()  # a token that does not decode lists nothing
        if allowed is None:
            return lambda name: True
        return lambda name: any(tool_matches(pattern, name) for pattern in allowed)

    def filter_listing(self, method: str, result: Mapping[str, Any], token: str | None) -> dict[str, Any]:
        """A listing (LISTINGS) with only what `token` allows: tools by name; resources, templates and prompts
        all or nothing, as their read method is allowed. The listing now depends on the caller's token, so a
        2026-era cache hint may no longer share it across callers (`cacheScope: private`)."""
        allowed = self.visible(token)
        read = LISTINGS.get(method)
        key = _LISTED.get(method, "tools")
        items = result.get(key)
        filtered = dict(result)
        if isinstance(items, list):
            if read is not None:
                filtered[key] = items if allowed(read) else []
            else:
                filtered[key] = [t for t in items if isinstance(t, Mapping) and allowed(str(t.get("name", "")))]
        if filtered.get("cacheScope") == "public":
            filtered["cacheScope"] = "private"
        return filtered

    async def admit(self, token: str | None, tool: Any, args: Any) -> Admitted | CallToolResult:
        """Verify a hold of the call's cost: the admitted call, or the denial to answer instead of running it."""
        if not isinstance(tool, str) or not tool:
            raise MCPError(INVALID_PARAMS, "tools/call needs a tool name")
        if not token:
            return denial("invalid_token", _NO_TOKEN)
        if not isinstance(args, Mapping):
            return denial("arg_mismatch", "the call's arguments must be a JSON object", token=token)
        if (where := _non_finite(args, "")) is not None:  # no caveat can compare it, nor JSON carry it on
            return denial("arg_mismatch", f"argument '{where}' is not a finite number", token=token)
        try:
            cost = self.costs.cost_of(tool, args)
        except CostError as e:
            return denial("arg_mismatch", str(e), token=token)
        decision = await self._ask(
            token, tool, args=args, cost=cost, mode="hold", hold_ttl=self.hold_ttl, wait=self.approval_wait
        )
        if isinstance(decision, Denied):
            return denial(decision.code, decision.reason, decision, token)
        return Admitted(token, tool, args, cost, decision.hold_id)

    async def verifies(self, token: str | None) -> Denied | None:
        """Whether the token verifies now (signature, key, revocation, expiry), without naming a tool or
        counting a call: what a request about work already admitted (`tasks/*`) needs. None: it does."""
        if not token:
            return Denied(False, "invalid_token", _NO_TOKEN)
        try:
            found = await self.decider.inspect(token)
        except ApiError as e:
            return Denied(False, "store_unavailable" if e.status >= 500 else e.code, e.reason)
        except _UNREACHABLE as e:
            return Denied(False, "store_unavailable", f"agentcaps is unreachable ({type(e).__name__})")
        if not found.valid:
            return Denied(False, "invalid_token", found.reason or "the token does not verify")
        for refused in found.denials or []:
            if refused.code in ("revoked", "expired"):
                return refused
        return None

    async def keep(self, call: Admitted) -> None:
        """Extend the call's hold before it ends, for as long as this runs (cancel it when the tool is done): a
        tool that runs long keeps its reservation, and a hold runs out only when the guard itself is gone."""
        if call.hold_id is None:
            return
        while True:
            await anyio.sleep(self.hold_ttl / 3)
            try:
                await self.decider.extend(call.hold_id, self.hold_ttl)
            except ApiError as e:
                log.warning("could not extend the hold %s: %s %s", _short(call.hold_id), e.status, e.code)
                if e.status in (404, 409):
                    return  # gone or concluded: nothing left to keep
            except Exception as e:  # unreachable for now: try again before the hold ends
                log.warning("could not extend the hold %s (%s)", _short(call.hold_id), type(e).__name__)

    async def conclude(self, call: Admitted, result: Mapping[str, Any] | BaseModel | None) -> None:
        """The tool answered: settle what it cost, or release the hold if it failed or only asked for input
        (its retry is a new call, verified and charged on its own). `None` is no answer at all (the call was
        cancelled, or its answer will never be seen): the held cost, since the tool may have acted. Runs to the
        end even if the caller is cancelled meanwhile: a tool that ran is charged."""
        wire = _wire(result)
        if wire.get("isError") or wire.get("resultType") == "input_required":
            await self.abandon(call)
            return
        if call.hold_id is None:
            return
        actual = _reported_cost(wire, call.cost, call.tool)
        with anyio.CancelScope(shield=True):
            try:
                await self.decider.settle(call.hold_id, actual.amount if actual is not None else None)
            except ApiError as e:
                if e.status != 404 or actual is None:
                    log.warning("could not settle the hold %s: %s %s", _short(call.hold_id), e.status, e.code)
                    return
                # The hold expired while the tool ran: charge the cost directly, once (the hold id is the request
                # id, so a retry of this charge is the same request).
                kw = {"args": call.args, "cost": actual, "mode": "charge", "request_id": call.hold_id}
                charged = await self._ask(call.token, call.tool, **kw)
                if isinstance(charged, Denied):
                    log.warning(
                        "the hold %s expired; charging directly was denied: %s", _short(call.hold_id), charged.code
                    )
            except _UNREACHABLE as e:
                log.warning(
                    "could not settle the hold %s (%s): it expires uncharged", _short(call.hold_id), type(e).__name__
                )

    async def abandon(self, call: Admitted) -> None:
        """Release the hold: nothing is charged. Runs to the end even while the caller is being cancelled."""
        if call.hold_id is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.decider.release(call.hold_id)
            except ApiError as e:
                log.warning("could not release the hold %s: %s %s", _short(call.hold_id), e.status, e.code)
            except _UNREACHABLE as e:
                log.warning(
                    "could not release the hold %s (%s): it expires by itself", _short(call.hold_id), type(e).__name__
                )

    async def _ask(self, token: str, tool: str, **kw: Any) -> Allowed | Denied:
        try:
            return await self.decider.verify(token, tool, audience=self.audience, **kw)
        except ApiError as e:
            if e.status >= 500:
                return Denied(False, "store_unavailable", f"agentcaps could not decide: {e.reason}")
            return Denied(False, e.code, e.reason)
        except StoreUnavailable as e:
            return Denied(False, "store_unavailable", f"agentcaps could not decide: {e}")
        except _UNREACHABLE as e:
            return Denied(False, "store_unavailable", f"agentcaps is unreachable ({type(e).__name__}); not running")

    # -- the mcp SDK server middleware -----------------------------------------------------------------
    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method in UNCHECKED:  # (middleware sees requests only: notifications do not come here)
            return await call_next(ctx)
        token, ctx = self._strip(ctx)
        if ctx.method in LISTINGS:
            return self.filter_listing(ctx.method, _wire(await call_next(ctx)), token)
        if ctx.method.startswith("tasks/"):
            if (refused := await self.verifies(token)) is not None:
                raise refusal(denial(refused.code, refused.reason, refused, token))
            return await call_next(ctx)
        tool, args = checked_as(ctx.method, ctx.params)
        admitted = await self.admit(token, tool, args)
        if not isinstance(admitted, Admitted):
            if ctx.method == "tools/call":
                return admitted
            raise refusal(admitted)
        failed: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.keep, admitted)
                try:
                    result = await call_next(ctx)
                except Exception as e:  # raised outside the task group, so it is not wrapped in a group
                    failed = e
                tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            await self.conclude(admitted, None)  # cancelled while the tool ran: it may have acted, so it is charged
            raise
        if failed is not None:
            await self.abandon(admitted)  # the tool failed: nothing is charged
            raise failed
        await self.conclude(admitted, result)
        return result

    def _strip(self, ctx: ServerRequestContext[Any, Any]) -> tuple[str | None, ServerRequestContext[Any, Any]]:
        """The presented token, and the context with it gone from `_meta`, and from the HTTP request's
        Authorization header if it came from there: a bearer credential never reaches a tool."""
        token, params = _from_meta(ctx.params)
        meta = cast(RequestParamsMeta, {k: v for k, v in ctx.meta.items() if k != TOKEN_KEY}) if ctx.meta else None
        request = ctx.request
        if token is None and isinstance(request, Request) and (token := _bearer(request.headers.get("authorization"))):
            scope = dict(request.scope)
            scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"authorization"]
            request = Request(scope, request.receive)
        return token or self.default_token, dataclasses.replace(ctx, params=params, meta=meta, request=request)


def _from_meta(params: Mapping[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    """`_meta["agentcaps/token"]` and the params without it (and without an `_meta` left empty)."""
    params = dict(params or {})
    meta = params.get("_meta")
    if not isinstance(meta, Mapping) or TOKEN_KEY not in meta:
        return None, params
    token = meta[TOKEN_KEY]
    rest = {k: v for k, v in meta.items() if k != TOKEN_KEY}
    if rest:
        params["_meta"] = rest
    else:
        del params["_meta"]
    return (token if isinstance(token, str) else None), params


def _bearer(authorization: str | None) -> str | None:
    scheme, _, credential = (authorization or "").partition(" ")
    return credential.strip() or None if scheme.lower() == "bearer" else None


def checked_as(method: str, params: Mapping[str, Any] | None) -> tuple[Any, Any]:
    """The tool a request is checked as, and its args: a tools/call names its tool; any other method is a tool
    named by the method (`resources/read`), whose args are the request's params less `_meta`."""
    params = params or {}
    if method == "tools/call":
        arguments = params.get("arguments")
        return params.get("name"), {} if arguments is None else arguments
    return method, {k: v for k, v in params.items() if k != "_meta"}


def refusal(result: CallToolResult) -> MCPError:
    """A denial as a JSON-RPC error, for requests whose answer cannot be a tool result: the same text, and the
    denial body as the error's data."""
    meta = result.meta or {}
    first = result.content[0]
    text = first.text if isinstance(first, TextContent) else "agentcaps denied"
    return MCPError(INVALID_REQUEST, text, meta.get(DENIAL_KEY))


def _non_finite(value: Any, path: str) -> str | None:
    """The dot-path of the first NaN or infinite number in `value` (JSON has neither; 1e400 parses as one)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "."
    if isinstance(value, Mapping):
        for k, v in value.items():
            if (found := _non_finite(v, f"{path}.{k}" if path else str(k))) is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if (found := _non_finite(v, f"{path}[{i}]")) is not None:
                return found
    return None


def _short(hold_id: str) -> str:
    """The part of a hold id that tells it from the root's other holds (what follows the root token id), cut
    short: enough to find it in the service's logs; the whole id would let a reader settle or release it."""
    return "..." + hold_id.rpartition(".")[2][:12]


def _wire(result: Mapping[str, Any] | BaseModel | None) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dict(result or {})


def _reported_cost(result: Mapping[str, Any], held: Money | None, tool: str) -> Money | None:
    """What the tool reports the call cost (`_meta["agentcaps/cost"]`), if it is a valid amount in the held
    currency and at most the hold; else the held cost."""
    meta = result.get("_meta")
    reported = meta.get(COST_KEY) if isinstance(meta, Mapping) else None
    if held is None or reported is None:
        return held
    try:
        if not isinstance(reported, Mapping) or reported.get("currency") != held.currency:
            raise CaveatSyntaxError(f"not an amount in {held.currency}")
        micros = parse_micros(str(reported.get("amount")))
        if micros > parse_micros(held.amount):
            raise CaveatSyntaxError(f"more than the {held.amount} held")
    except CaveatSyntaxError as e:
        log.warning("tool %r reported its cost as %r (%s): settling the held cost", tool, reported, e)
        return held
    return Money(format_micros(micros), held.currency)


def denial(code: str, reason: str, body: Denied | None = None, token: str | None = None) -> CallToolResult:
    """A refused call as the agent sees it: an error result that says why and what the holder can still do.
    The service's denial body (or one made here, for a call refused before asking) travels in `_meta`."""
    body = body or Denied(False, code, reason)
    names: list[str] = []
    tools = body.tools
    try:
        offline = Token.parse(token).analysis if token else None
    except TokenError:
        offline = None
    if offline is not None:
        names = list(offline.delegation)
        if tools is None and body.budgets is None and offline.tools is not None:
            tools = list(offline.tools)  # refused before asking the service: the token's own allowlist
    lines = [f"agentcaps denied {code}: {reason.rstrip('.')}."]
    if body.budgets:

        def hop(n: int) -> str:
            return f"hop {n} ({names[n]})" if n < len(names) else f"hop {n}"

        left = "; ".join(f"{hop(b.hop)} {b.remaining} of {b.limit} {b.currency}" for b in body.budgets)
        lines.append(f"Budget remaining: {left}.")
    if tools is not None:
        lines.append(f"Allowed tools: {', '.join(tools) or 'none'}.")
    elif body.budgets is not None:  # the service read the verified token: no tools caveat
        lines.append("Allowed tools: any.")
    # An agent reads the text, not _meta: say what an approval means for its next step in words of the guard's own.
    if code == "approval_required" and body.approval is not None:
        lines.append(
            f"To run it: a delegator approves {body.approval.id}, then retry this same call with the same arguments."
        )
    elif code == "approval_denied" and body.approval is not None:
        lines.append("This same call, retried, is denied again.")  # the reason names the approval already
    return CallToolResult.model_validate(
        {
            "content": [TextContent(type="text", text=" ".join(lines))],
            "isError": True,
            "_meta": {DENIAL_KEY: msgspec.to_builtins(body)},
        }
    )
