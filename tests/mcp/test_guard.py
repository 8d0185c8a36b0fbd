"""A real MCP client against a guarded tool server, in-process: every outcome of SPEC §7's guard."""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent

from app.api.schemas import MintRequest, Money
from app.authority import Authority
from app.mcp import CostTable, Guard, LocalVerifier
from app.mcp.example_server import COSTS, build
from app.sdk.client import AsyncClient
from app.store.memory import MemoryStore
from app.token.keys import KeyRing, new_key_entry
from tests.mcp.conftest import Agents
from tests.processes import Service


def token_meta(token: str) -> dict[str, Any]:
    return {"agentcaps/token": token}


def text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text


async def test_tools_list_shows_only_what_the_token_allows(agents: Agents, guard: Guard) -> None:
    async with Client(build([guard])) as client:
        assert [t.name for t in (await client.list_tools(meta=token_meta(agents.root))).tools] == ["search", "pay"]
        assert [t.name for t in (await client.list_tools(meta=token_meta(agents.researcher))).tools] == ["search"]
        assert (await client.list_tools(meta=token_meta("garbage"))).tools == []
        assert (await client.list_tools()).tools == []  # no token, no tools


async def test_an_allowed_call_runs_and_is_charged_at_every_level(agents: Agents, guard: Guard) -> None:
    async with Client(build([guard])) as client:
        result = await client.call_tool("search", {"query": "agents"}, meta=token_meta(agents.researcher))
    assert not result.is_error and "3 results" in text(result)
    assert await agents.budgets(agents.researcher) == [("10.00", "0.01", "0.00"), ("2.00", "0.01", "0.00")]


async def test_each_denial_is_an_error_result_that_says_what_is_left(agents: Agents, guard: Guard) -> None:
    async with Client(build([guard])) as client:
        wrong_tool = await client.call_tool("pay", {"amount": 1, "to": "x"}, meta=token_meta(agents.researcher))
        too_much = await client.call_tool("pay", {"amount": 3.01, "to": "x"}, meta=token_meta(agents.buyer))
        no_amount = await client.call_tool("pay", {"to": "x"}, meta=token_meta(agents.buyer))
        forged = await client.call_tool("search", {"query": "q"}, meta=token_meta(agents.researcher[:-2] + "AA"))
        nothing = await client.call_tool("search", {"query": "q"})
    assert wrong_tool.is_error and text(wrong_tool).startswith("agentcaps denied tool_not_allowed:")
    assert "Allowed tools: search." in text(wrong_tool) and "hop 1 2.00 USD of 2.00" in text(wrong_tool)
    assert wrong_tool.meta is not None and wrong_tool.meta["agentcaps/denial"]["caveat"] == "tools in search"
    assert wrong_tool.structured_content is None
    assert text(too_much).startswith("agentcaps denied arg_mismatch:") and "arg.amount <= 3" in text(too_much)
    assert text(no_amount).startswith("agentcaps denied arg_mismatch: argument 'amount' is missing")
    assert text(forged).startswith("agentcaps denied invalid_token:")
    assert text(nothing).startswith("agentcaps denied invalid_token: no agentcaps token")
    assert await agents.budgets(agents.buyer) == [("10.00", "0.00", "0.00"), ("5.00", "0.00", "0.00")]


async def test_budget_exceeded_across_calls(agents: Agents, guard: Guard) -> None:
    async with Client(build([guard])) as client:
        for _ in range(2):
            ok = await client.call_tool("pay", {"amount": 2.5, "to": "x"}, meta=token_meta(agents.buyer))
            assert not ok.is_error
        over = await client.call_tool("pay", {"amount": 0.01, "to": "x"}, meta=token_meta(agents.buyer))
    assert text(over).startswith("agentcaps denied budget_exceeded:") and "hop 1 0.00 USD of 5.00" in text(over)


async def test_a_tool_that_raises_releases_its_hold(agents: Agents) -> None:
    costs = CostTable({"flaky": {"amount": "4", "currency": "USD"}})
    server = MCPServer("flaky", middleware=[Guard(LocalVerifier(agents.authority), costs)])

    @server.tool()
    def flaky() -> str:
        raise RuntimeError("upstream timed out")

    async with Client(server) as client:
        for _ in range(3):  # held 4 of 10 each time: were a hold kept, the third call would be over budget
            failed = await client.call_tool("flaky", {}, meta=token_meta(agents.root))
            assert failed.is_error and "agentcaps denied" not in text(failed)
    assert await agents.budgets(agents.root) == [("10.00", "0.00", "0.00")]


async def test_the_tool_reports_its_actual_cost_and_never_sees_the_token(agents: Agents) -> None:
    server = MCPServer(
        "metered", middleware=[Guard(LocalVerifier(agents.authority), CostTable({"fetch": COSTS["search"]}))]
    )
    seen: dict[str, Any] = {}

    @server.tool()
    def fetch(url: str, ctx: Context) -> CallToolResult:
        seen["params"] = dict(ctx.request_context.params or {})
        seen["meta"] = dict(ctx.request_context.meta or {})
        return CallToolResult.model_validate(
            {
                "content": [{"type": "text", "text": "fetched"}],
                "_meta": {"agentcaps/cost": {"amount": "0.004", "currency": "USD"}},
            }
        )

    async with Client(server) as client:
        result = await client.call_tool("fetch", {"url": "u"}, meta={**token_meta(agents.root), "trace": "t1"})
    assert not result.is_error
    assert await agents.budgets(agents.root) == [("10.00", "0.004", "0.00")]
    assert "agentcaps/token" not in seen["params"].get("_meta", {}) and "agentcaps/token" not in seen["meta"]
    assert seen["meta"].get("trace") == "t1"


async def test_an_unreachable_verifier_denies_and_the_tool_never_runs(agents: Agents) -> None:
    ran = []
    server = MCPServer("lonely", middleware=[Guard(AsyncClient("http://127.0.0.1:9"), CostTable(COSTS))])

    @server.tool()
    def search(query: str) -> str:
        ran.append(query)
        return "ran"

    async with Client(server) as client:
        result = await client.call_tool("search", {"query": "q"}, meta=token_meta(agents.root))
    assert text(result).startswith("agentcaps denied store_unavailable:") and ran == []


async def test_a_guarded_server_over_stdio_asks_the_real_service(service_factory: object) -> None:
    service: Service = service_factory("memory://")  # type: ignore[operator]
    minted = httpx.post(
        service.url + "/v1/tokens",
        headers=service.admin(),
        timeout=5,
        json={"subject": "orchestrator", "budget": {"amount": "1.00", "currency": "USD"}, "tools": ["search"]},
    ).json()
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "app.mcp.example_server", "--guard"],
        env={**os.environ, "AGENTCAPS_URL": service.url},
    )
    async with Client(server) as client:
        listed = await client.list_tools(meta=token_meta(minted["token"]))
        allowed = await client.call_tool("search", {"query": "q"}, meta=token_meta(minted["token"]))
        denied = await client.call_tool("pay", {"amount": 1, "to": "x"}, meta=token_meta(minted["token"]))
    assert [t.name for t in listed.tools] == ["search"]
    assert not allowed.is_error and text(denied).startswith("agentcaps denied tool_not_allowed:")
    inspected = httpx.post(service.url + "/v1/inspect", json={"token": minted["token"]}, timeout=5).json()
    assert inspected["budgets"][0]["spent"] == "0.01"


async def test_a_hold_that_expires_while_the_tool_runs_is_charged_directly_once() -> None:
    now = [1_800_000_000.0]
    authority = Authority(KeyRing(new_key_entry()), MemoryStore(), "http://agentcaps.test", clock=lambda: now[0])
    root = authority.mint(MintRequest("orchestrator", budget=Money("10.00", "USD"))).token
    costs = CostTable({"slow": {"amount": "3", "currency": "USD"}})
    server = MCPServer("slow", middleware=[Guard(LocalVerifier(authority), costs, hold_ttl=1)])

    @server.tool()
    def slow() -> str:
        now[0] += 5  # the hold (1 s) expires while the tool works
        return "done"

    async with Client(server) as client:
        result = await client.call_tool("slow", {}, meta=token_meta(root))
    assert not result.is_error
    budgets = (await authority.inspect(root)).budgets or []
    assert [(b.spent, b.held) for b in budgets] == [("3.00", "0.00")]
