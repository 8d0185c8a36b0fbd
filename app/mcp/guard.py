"""The guard: an MCP server middleware that puts agentcaps in front of every tool (SPEC §7).

- `tools/list` answers only the tools the presented token allows, read offline (no token: nothing).
- `tools/call` verifies a hold of the tool's cost, runs the tool, then settles the actual cost (the result's
  `_meta["agentcaps/cost"]`, at most the hold) or releases the hold if the tool failed or was cancelled. A
  denial is a normal tool result with `isError` whose text starts `agentcaps denied <code>:` and says what
  the holder can still do; the tool never runs then. The token is removed from `_meta` before the tool runs.

The same middleware serves tool servers written with the mcp SDK (`MCPServer(..., middleware=[guard])`) and the
gateway in front of servers you do not own. It asks the service over HTTP (`AsyncClient`) or, configured with
the keys, decides in-process (`LocalVerifier`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

import httpx
import msgspec
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import CallToolResult, TextContent

from app.api.schemas import Allowed, Denied, HoldResponse, Money, VerifyRequest
from app.authority import Authority
from app.errors import Conflict, NotFound, StoreUnavailable
from app.mcp.costs import CostError, CostTable
from app.sdk.client import ApiError
from app.sdk.token import Token, TokenError
from caveats.grammar import CaveatSyntaxError
from caveats.money import format_micros, parse_micros
from caveats.tools import tool_matches

TOKEN_KEY = "agentcaps/token"
COST_KEY = "agentcaps/cost"
DENIAL_KEY = "agentcaps/denial"
log = logging.getLogger("agentcaps.mcp")
_as_over_http = msgspec.json.Decoder(VerifyRequest, float_hook=Decimal)


class Verifier(Protocol):
    """What the guard needs of agentcaps: AsyncClient has exactly these methods; LocalVerifier too."""

    async def verify(self, token: str, tool: str, **kw: Any) -> Allowed | Denied: ...

    async def settle(self, hold_id: str, amount: str | None = None) -> HoldResponse: ...

    async def release(self, hold_id: str) -> HoldResponse: ...


class LocalVerifier:
    """Decide in-process with an Authority (the service's keys and store), answering like AsyncClient."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority

    async def verify(self, token: str, tool: str, **kw: Any) -> Allowed | Denied:
        audience = kw.pop("audience", None)
        # The request as the HTTP API would decode it: JSON fractions as exact Decimals, never floats.
        request = _as_over_http.decode(msgspec.json.encode({"token": token, "tool": tool, **kw}))
        return (await self.authority.verify(request, audience)).body

    async def settle(self, hold_id: str, amount: str | None = None) -> HoldResponse:
        try:
            return await self.authority.settle(hold_id, amount)
        except NotFound as e:
            raise ApiError(404, "not_found", str(e)) from None
        except Conflict as e:
            raise ApiError(409, "conflict", str(e)) from None

    async def release(self, hold_id: str) -> HoldResponse:
        try:
            return await self.authority.release(hold_id)
        except NotFound as e:
            raise ApiError(404, "not_found", str(e)) from None
        except Conflict as e:
            raise ApiError(409, "conflict", str(e)) from None


@dataclasses.dataclass
class Guard:
    verifier: Verifier
    costs: CostTable = dataclasses.field(default_factory=CostTable)
    audience: str | None = None
    default_token: str | None = None  # for requests that carry none (the gateway's --token)
    hold_ttl: int = 300

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/list":
            return await self._list(ctx, call_next)
        if ctx.method == "tools/call":
            return await self._call(ctx, call_next)
        return await call_next(ctx)

    # -- the token ------------------------------------------------------------------------------------
    def _token(self, ctx: ServerRequestContext[Any, Any]) -> tuple[str | None, ServerRequestContext[Any, Any]]:
        """The presented token, and the context with the token taken out of `_meta` (it never reaches a tool)."""
        params = dict(ctx.params or {})
        meta = dict(params.get("_meta") or {})
        token = meta.pop(TOKEN_KEY, None)
        if token is not None:
            params["_meta"] = meta
            parsed_meta = {k: v for k, v in (ctx.meta or {}).items() if k != TOKEN_KEY}
            ctx = dataclasses.replace(ctx, params=params, meta=parsed_meta)  # type: ignore[arg-type]
        if token is None:  # on streamable HTTP, `request` is the HTTP request and may carry a bearer token
            headers = getattr(ctx.request, "headers", None) or {}
            scheme, _, credential = str(headers.get("authorization", "")).partition(" ")
            token = credential if scheme.lower() == "bearer" and credential else None
        return (str(token) if token is not None else self.default_token), ctx

    # -- tools/list -----------------------------------------------------------------------------------
    async def _list(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        token, ctx = self._token(ctx)
        result = await call_next(ctx)
        try:
            allowed = Token.parse(token).analysis.tools if token else ()
        except TokenError:
            allowed = ()  # a token that does not decode lists nothing
        if allowed is None:
            return result
        keep = _tools_filter(allowed)
        if isinstance(result, dict):
            return {**result, "tools": [t for t in result.get("tools", []) if keep(t.get("name", ""))]}
        if result is not None and hasattr(result, "tools"):
            return result.model_copy(update={"tools": [t for t in result.tools if keep(t.name)]})
        return result

    # -- tools/call -----------------------------------------------------------------------------------
    async def _call(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        token, ctx = self._token(ctx)
        params = ctx.params or {}
        tool = str(params.get("name", ""))
        args = params.get("arguments") or {}
        if not token:
            return denial("invalid_token", f"no agentcaps token: send _meta['{TOKEN_KEY}'] or Authorization: Bearer")
        try:
            cost = self.costs.cost_of(tool, args)
        except CostError as e:
            return denial("arg_mismatch", str(e))
        decision = await self._ask(token, tool, args=args, cost=cost, mode="hold", hold_ttl=self.hold_ttl)
        if isinstance(decision, Denied):
            return denial(decision.code, decision.reason, decision)
        hold_id = decision.hold_id
        assert hold_id is not None
        try:
            result = await call_next(ctx)
        except BaseException:
            await asyncio.shield(self._release(hold_id))  # an error or a cancellation: nothing is charged
            raise
        if _is_error(result):
            await self._release(hold_id)
            return result
        await self._settle(token, tool, args, hold_id, cost, _reported_cost(result, cost))
        return result

    async def _ask(self, token: str, tool: str, **kw: Any) -> Allowed | Denied:
        try:
            return await self.verifier.verify(token, tool, audience=self.audience, **kw)
        except ApiError as e:
            if e.status >= 500:
                return Denied(False, "store_unavailable", f"agentcaps could not decide: {e.reason}")
            return Denied(False, e.code, e.reason)
        except (httpx.HTTPError, OSError, StoreUnavailable) as e:
            return Denied(False, "store_unavailable", f"agentcaps is unreachable ({type(e).__name__}); not running")

    async def _release(self, hold_id: str) -> None:
        try:
            await self.verifier.release(hold_id)
        except (ApiError, httpx.HTTPError, OSError, StoreUnavailable) as e:
            log.warning("could not release hold %s (it expires by itself): %s", hold_id, e)

    async def _settle(
        self, token: str, tool: str, args: Any, hold_id: str, held: Money | None, actual: Money | None
    ) -> None:
        amount = actual.amount if actual is not None else None
        try:
            await self.verifier.settle(hold_id, amount)
        except ApiError as e:
            if e.status != 404 or actual is None:
                log.warning("could not settle hold %s: %s", hold_id, e)
                return
            # The hold expired while the tool ran: charge the cost directly, once (the hold id is the request id).
            charged = await self._ask(token, tool, args=args, cost=actual, mode="charge", request_id=hold_id)
            if isinstance(charged, Denied):
                log.warning("hold %s expired and the direct charge was denied: %s", hold_id, charged.reason)
        except (httpx.HTTPError, OSError, StoreUnavailable) as e:
            log.warning("could not settle hold %s (it expires by itself): %s", hold_id, e)


def _tools_filter(allowed: tuple[str, ...]) -> Any:
    return lambda name: any(tool_matches(pattern, name) for pattern in allowed)


def _is_error(result: HandlerResult) -> bool:
    if isinstance(result, dict):
        return bool(result.get("isError"))
    return bool(getattr(result, "is_error", False))


def _reported_cost(result: HandlerResult, held: Money | None) -> Money | None:
    """What the tool reports the call cost (`_meta["agentcaps/cost"]`), if it is a valid amount in the held
    currency and at most the hold; else the held cost."""
    meta = result.get("_meta") if isinstance(result, dict) else getattr(result, "meta", None)
    reported = meta.get(COST_KEY) if isinstance(meta, Mapping) else None
    if held is None or not isinstance(reported, Mapping) or reported.get("currency") != held.currency:
        return held
    try:
        micros = parse_micros(str(reported.get("amount")))
    except CaveatSyntaxError:
        return held
    return Money(format_micros(micros), held.currency) if micros <= parse_micros(held.amount) else held


def denial(code: str, reason: str, body: Denied | None = None) -> CallToolResult:
    """A refused call as the agent sees it: an error result that says why and what it can still do."""
    lines = [f"agentcaps denied {code}: {reason}"]
    if body is not None and body.budgets:
        left = "; ".join(f"hop {b.hop} {b.remaining} {b.currency} of {b.limit}" for b in body.budgets)
        lines.append(f"Budget remaining: {left}.")
    if body is not None and body.tools is not None:
        lines.append(f"Allowed tools: {', '.join(body.tools)}.")
    return CallToolResult.model_validate(
        {
            "content": [TextContent(type="text", text=" ".join(lines))],
            "isError": True,
            "_meta": {DENIAL_KEY: msgspec.to_builtins(body or Denied(False, code, reason))},
        }
    )
