"""MCP over streamable HTTP: the bearer token on a guarded server, and the gateway before an HTTP upstream, in both
protocol eras (2026-07-28 stamps per-message headers the upstream checks; the handshake era has a session)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from app.mcp import CostTable, Guard, LocalDecider
from app.mcp.relay import Gateway
from tests.mcp.conftest import Agents, Live, meta, serve_http, text
from tests.processes import free_port, wait_until

MODES = ["auto", "legacy"]


class Recording:
    """A tool server that records the headers and `_meta` each call reached it with."""

    def __init__(self, guard: Guard | None = None) -> None:
        self.seen: list[dict[str, Any]] = []
        self.server = MCPServer("recording", middleware=[guard] if guard else [])

        @self.server.tool()
        def search(query: str, ctx: Context) -> str:
            self.seen.append({"headers": dict(ctx.headers or {}), "meta": dict(ctx.request_context.meta or {})})
            return f"3 results for {query!r}"

        @self.server.tool()
        def pay(amount: float, to: str) -> str:
            return f"paid {amount} USD to {to}"

        @self.server.tool()
        def weather(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
            return f"sunny in {region}"  # at 2026-07-28 the server checks the Mcp-Param-Region header against this


@pytest.fixture
def guarded(guard: Guard) -> Iterator[tuple[Recording, str]]:
    recording = Recording(guard)
    with serve_http(recording.server.streamable_http_app()) as url:
        yield recording, url


@pytest.fixture
def plain() -> Iterator[tuple[Recording, str]]:
    recording = Recording()
    with serve_http(recording.server.streamable_http_app()) as url:
        yield recording, url


@pytest.mark.parametrize("mode", MODES)
async def test_the_bearer_header_carries_the_token_and_never_reaches_the_tool(
    agents: Agents, guarded: tuple[Recording, str], mode: str
) -> None:
    recording, url = guarded
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {agents.researcher}", "X-Trace": "t1"})
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:  # type: ignore[arg-type]
        listed = await client.list_tools()
        allowed = await client.call_tool("search", {"query": "q"})
        denied = await client.call_tool("pay", {"amount": 1, "to": "x"})
        by_meta = await client.call_tool("pay", {"amount": 1, "to": "x"}, meta=meta(agents.buyer))  # _meta wins
    assert [t.name for t in listed.tools] == ["search"]
    assert text(allowed) == "3 results for 'q'"
    assert text(denied).startswith("agentcaps denied tool_not_allowed:")
    assert text(by_meta) == "paid 1.0 USD to x"
    headers = recording.seen[0]["headers"]
    assert "authorization" not in headers and headers["x-trace"] == "t1"
    assert "agentcaps/token" not in recording.seen[0]["meta"]
    assert await agents.budgets(agents.researcher) == [("10.00", "1.01", "0.00"), ("2.00", "0.01", "0.00")]


@pytest.mark.parametrize("mode", MODES)
async def test_the_gateway_before_an_http_upstream(agents: Agents, plain: tuple[Recording, str], mode: str) -> None:
    recording, url = plain
    costs = CostTable(
        {"search": {"amount": "0.01", "currency": "USD"}, "weather": {"amount": "0.02", "currency": "USD"}}
    )
    guard = Guard(LocalDecider(agents.authority), costs)
    async with Client(Gateway(guard, streamable_http_client(url), http=True), mode=mode) as agent:  # type: ignore[arg-type]
        listed = await agent.list_tools(meta=meta(agents.root))
        found = await agent.call_tool("search", {"query": "q"}, meta=meta(agents.root, trace="t1"))
        weather = await agent.call_tool("weather", {"region": "eu-west"}, meta=meta(agents.root))
        denied = await agent.call_tool("search", {"query": "q"}, meta=meta(agents.buyer))
    assert [t.name for t in listed.tools] == ["search", "pay", "weather"]
    assert text(found) == "3 results for 'q'" and text(weather) == "sunny in eu-west"
    assert text(denied).startswith("agentcaps denied tool_not_allowed:")
    assert "agentcaps/token" not in recording.seen[0]["meta"] and recording.seen[0]["meta"]["trace"] == "t1"
    assert await agents.budgets(agents.root) == [("10.00", "0.03", "0.00")]


async def test_agentcaps_gateway_with_upstream_url(
    minted: Live, plain: tuple[Recording, str], costs_file: Path
) -> None:
    _, url = plain
    args = ["-m", "app.cli", "gateway", "--upstream-url", url, "--costs", str(costs_file), "--verifier", minted.url]
    async with Client(StdioServerParameters(command=sys.executable, args=args)) as agent:
        listed = await agent.list_tools(meta=meta(minted.researcher))
        result = await agent.call_tool("search", {"query": "q"}, meta=meta(minted.researcher))
    assert [t.name for t in listed.tools] == ["search"] and not result.is_error
    assert minted.spent(minted.researcher) == ["0.01", "0.01"]


@contextmanager
def listening_gateway(live: Live, costs_file: Path, tmp_path: Path, *extra: str) -> Iterator[str]:
    """`agentcaps gateway --listen` as a process, in front of the example server; yields its MCP URL."""
    port = free_port()
    upstream = f"{sys.executable} -m app.mcp.example_server"
    args = ["-m", "app.cli", "gateway", "--upstream", upstream, "--costs", str(costs_file), "--verifier", live.url]
    with (tmp_path / "gateway.err").open("wb") as err:
        process = subprocess.Popen([sys.executable, *args, "--listen", f"127.0.0.1:{port}", *extra], stderr=err)
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close() or True, what="listen")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(20)


@asynccontextmanager
async def as_agent(url: str, token: str, mode: str) -> AsyncIterator[Client]:
    """An MCP client that sends its token as a bearer header."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as agent:  # type: ignore[arg-type]
        yield agent


@pytest.mark.parametrize("mode", MODES)
async def test_one_listening_gateway_serves_many_agents_each_with_its_own_grants(
    minted: Live, costs_file: Path, tmp_path: Path, mode: str
) -> None:
    results: dict[str, tuple[list[str], CallToolResult, CallToolResult]] = {}

    async def run(url: str, name: str, token: str) -> None:
        async with as_agent(url, token, mode) as agent:
            listed = [t.name for t in (await agent.list_tools()).tools]
            search = await agent.call_tool("search", {"query": "q"})
            pay = await agent.call_tool("pay", {"amount": "2.5", "to": "shop"})
        results[name] = listed, search, pay

    with listening_gateway(minted, costs_file, tmp_path) as url:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, url, "researcher", minted.researcher)
            tg.start_soon(run, url, "buyer", minted.buyer)
    listed, search, pay = results["researcher"]
    assert listed == ["search"] and not search.is_error
    assert text(pay).startswith("agentcaps denied tool_not_allowed:")
    listed, search, pay = results["buyer"]
    assert listed == ["pay"] and text(pay) == "paid 2.5 USD to shop"
    assert text(search).startswith("agentcaps denied tool_not_allowed:")
    assert minted.spent(minted.researcher) == ["2.51", "0.01"]
    assert minted.spent(minted.buyer) == ["2.51", "2.50"]


async def test_a_listening_gateway_serves_at_most_max_agents_at_once(
    minted: Live, costs_file: Path, tmp_path: Path
) -> None:
    """Each agent costs an upstream process: a port anyone can reach must not let them start without end."""
    with listening_gateway(minted, costs_file, tmp_path, "--max-agents", "1") as url:
        async with as_agent(url, minted.researcher, "legacy") as first:
            hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "b", "version": "0"}}
            second = httpx.post(
                url,
                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello},
                headers={"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {minted.buyer}"},
                timeout=10,
            )
            assert second.status_code == 503 and second.headers["retry-after"] == "5"
            assert second.json()["error"]["message"] == "too many agents at once: retry later"
            assert not (await first.call_tool("search", {"query": "q"})).is_error
        with anyio.fail_after(10):  # the first agent is gone: its place frees
            while True:
                try:
                    async with as_agent(url, minted.buyer, "legacy") as third:
                        paid = await third.call_tool("pay", {"amount": "1", "to": "shop"})
                    break
                except Exception:
                    await anyio.sleep(0.1)
    assert text(paid) == "paid 1 USD to shop"
