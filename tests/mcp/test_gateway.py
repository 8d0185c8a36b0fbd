"""The gateway in front of a server it does not own: in-process, and as `agentcaps gateway` over stdio."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.types import TextContent

from app.mcp import Guard
from app.mcp.example_server import COSTS, build
from app.mcp.gateway import build as build_gateway
from app.sdk import Token
from tests.mcp.conftest import Agents
from tests.processes import ADMIN_KEY, Service


async def test_the_gateway_guards_an_unguarded_server_in_process(agents: Agents, guard: Guard) -> None:
    async with Client(build()) as upstream, Client(build_gateway(upstream, guard)) as agent:
        listed = await agent.list_tools(meta={"agentcaps/token": agents.researcher})
        allowed = await agent.call_tool("search", {"query": "q"}, meta={"agentcaps/token": agents.researcher})
        denied = await agent.call_tool("pay", {"amount": 1, "to": "x"}, meta={"agentcaps/token": agents.researcher})
    assert [t.name for t in listed.tools] == ["search"]
    assert not allowed.is_error and isinstance(allowed.content[0], TextContent)
    assert "3 results" in allowed.content[0].text
    assert denied.is_error and isinstance(denied.content[0], TextContent)
    assert denied.content[0].text.startswith("agentcaps denied tool_not_allowed:")
    assert await agents.budgets(agents.researcher) == [("10.00", "0.01", "0.00"), ("2.00", "0.01", "0.00")]


async def test_agentcaps_gateway_over_stdio_with_a_real_service(service_factory: object, tmp_path: Path) -> None:
    service: Service = service_factory("memory://")  # type: ignore[operator]
    minted = httpx.post(
        service.url + "/v1/tokens",
        headers=service.admin(),
        timeout=5,
        json={"subject": "orchestrator", "budget": {"amount": "10.00", "currency": "USD"}},
    ).json()
    buyer = Token.parse(minted["token"]).attenuate(
        to="buyer", budget="5.00 USD", tools=["pay"], args={"amount": "<= 3"}
    )
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps(COSTS))
    gateway = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "app.cli",
            "gateway",
            "--upstream",
            f"{sys.executable} -m app.mcp.example_server",
            "--costs",
            str(costs),
            "--verifier",
            service.url,
            "--token",
            str(buyer),
        ],
    )
    async with Client(gateway) as agent:
        listed = await agent.list_tools()
        paid = await agent.call_tool("pay", {"amount": 2.5, "to": "shop"})
        refused = await agent.call_tool("pay", {"amount": 3.5, "to": "shop"})
    assert [t.name for t in listed.tools] == ["pay"]
    assert not paid.is_error, paid
    assert refused.is_error and isinstance(refused.content[0], TextContent)
    assert refused.content[0].text.startswith("agentcaps denied arg_mismatch:")
    inspected = httpx.post(service.url + "/v1/inspect", json={"token": str(buyer)}, timeout=5).json()
    assert [b["spent"] for b in inspected["budgets"]] == ["2.50", "2.50"]
    assert ADMIN_KEY  # the service's admin key minted the root above


async def test_the_gateway_forwards_resources_and_prompts_untouched(guard: Guard) -> None:
    upstream_server = build()

    @upstream_server.resource("docs://readme")
    def readme() -> str:
        return "the upstream's readme"

    @upstream_server.prompt()
    def review(code: str) -> str:
        return f"Please review: {code}"

    async with Client(upstream_server) as upstream, Client(build_gateway(upstream, guard)) as agent:
        resources = await agent.list_resources()
        content = await agent.read_resource("docs://readme")
        prompts = await agent.list_prompts()
        prompt = await agent.get_prompt("review", {"code": "x = 1"})
    assert [str(r.uri) for r in resources.resources] == ["docs://readme"]
    assert getattr(content.contents[0], "text", None) == "the upstream's readme"
    assert [p.name for p in prompts.prompts] == ["review"]
    assert "Please review: x = 1" in str(prompt.messages[0].content)
