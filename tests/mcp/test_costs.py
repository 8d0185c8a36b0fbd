"""Cost rules, and the guard's edges that a client cannot easily provoke: cancellation, the bearer header."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from mcp.server.context import ServerRequestContext

from app.api.schemas import Allowed, Denied, HoldResponse, Money
from app.mcp import CostTable, Guard
from app.mcp.costs import CostError


def test_fixed_and_argument_costs_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "costs.json"
    path.write_text(
        json.dumps(
            {"search": {"amount": "0.01", "currency": "USD"}, "pay": {"from_arg": "order.total", "currency": "EUR"}}
        )
    )
    table = CostTable.load(path)
    assert table.cost_of("search", {}) == Money("0.01", "USD")
    assert table.cost_of("pay", {"order": {"total": 2.5}}) == Money("2.50", "EUR")
    assert table.cost_of("pay", {"order": {"total": "0.000001"}}) == Money("0.000001", "EUR")
    assert table.cost_of("other", {}) is None


@pytest.mark.parametrize("total", [-1, "-1", "1e3", "NaN", True, None, [1], "0.0000001", 10**13, "１"])
def test_an_argument_cost_that_is_not_an_amount_denies(total: object) -> None:
    table = CostTable({"pay": {"from_arg": "total", "currency": "USD"}})
    with pytest.raises(CostError, match="argument 'total'"):
        table.cost_of("pay", {"total": total})
    with pytest.raises(CostError, match="missing"):
        table.cost_of("pay", {})


@pytest.mark.parametrize(
    "rules",
    [
        {"t": {"currency": "USD"}},
        {"t": {"amount": "1", "from_arg": "a", "currency": "USD"}},
        {"t": {"amount": "1", "currency": "usd"}},
        {"t": {"amount": "x", "currency": "USD"}},
        {"t": {"amount": "1", "currency": "USD", "extra": 1}},
    ],
)
def test_a_bad_cost_file_is_refused_at_start(rules: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CostTable(rules)


def test_computed_costs() -> None:
    table = CostTable(
        computed={
            "summarize": lambda args: f"{len(args['text']) / 1000:.3f} USD",
            "free": lambda args: None,
            "broken": lambda args: 1 / 0,
            "odd": lambda args: "lots",
        }
    )
    assert table.cost_of("summarize", {"text": "x" * 2500}) == Money("2.50", "USD")
    assert table.cost_of("free", {}) is None
    with pytest.raises(CostError, match="could not be computed"):
        table.cost_of("broken", {})
    with pytest.raises(CostError, match="not an amount"):
        table.cost_of("odd", {})


class FakeVerifier:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def verify(self, token: str, tool: str, **kw: Any) -> Allowed | Denied:
        self.calls.append(("verify", token))
        return Allowed(True, "t" * 32, "agent", ["agent"], [], hold_id="h1")

    async def settle(self, hold_id: str, amount: str | None = None) -> HoldResponse:
        self.calls.append(("settle", amount))
        return HoldResponse(hold_id, "settled", "USD", amount)

    async def release(self, hold_id: str) -> HoldResponse:
        self.calls.append(("release", hold_id))
        return HoldResponse(hold_id, "released", "USD")


class FakeRequest:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


def context(params: dict[str, Any], headers: dict[str, str] | None = None) -> ServerRequestContext[Any, Any]:
    return ServerRequestContext(
        session=None,
        lifespan_context=None,
        protocol_version="2026-07-28",  # type: ignore[arg-type]
        method="tools/call",
        params=params,
        request=FakeRequest(headers) if headers is not None else None,
    )


async def test_a_cancelled_tool_releases_its_hold() -> None:
    verifier = FakeVerifier()
    guard = Guard(verifier, CostTable({"slow": {"amount": "1", "currency": "USD"}}))

    async def cancelled(ctx: Any) -> Any:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await guard(context({"name": "slow", "arguments": {}, "_meta": {"agentcaps/token": "tok"}}), cancelled)
    assert verifier.calls == [("verify", "tok"), ("release", "h1")]


async def test_the_bearer_header_carries_the_token_on_http() -> None:
    verifier = FakeVerifier()
    guard = Guard(verifier)
    seen: list[Any] = []

    async def tool(ctx: Any) -> Any:
        seen.append(ctx.params)
        return {"content": [], "isError": False}

    await guard(context({"name": "t", "arguments": {}}, {"authorization": "Bearer from-header"}), tool)
    assert verifier.calls[0] == ("verify", "from-header")
    assert verifier.calls[1] == ("settle", None)  # a free tool: the (empty) hold is settled as it is
    await guard(
        context(
            {"name": "t", "arguments": {}, "_meta": {"agentcaps/token": "from-meta"}},
            {"authorization": "Bearer from-header"},
        ),
        tool,
    )
    assert verifier.calls[2] == ("verify", "from-meta")  # _meta wins, and is stripped before the tool
    assert "agentcaps/token" not in seen[-1]["_meta"]
