"""MCP over streamable HTTP: the bearer token on a guarded server, and the gateway in front of an HTTP upstream."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from app.mcp import Guard
from app.mcp.example_server import COSTS, build
from app.sdk import Token
from tests.mcp.conftest import Agents
from tests.processes import Service, free_port


def serve_http(server: Any) -> Iterator[str]:
    port = free_port()
    runner = uvicorn.Server(
        uvicorn.Config(server.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    runner.should_exit = True
    thread.join(10)


@pytest.fixture
def guarded_url(guard: Guard) -> Iterator[str]:
    yield from serve_http(build([guard]))


@pytest.fixture
def plain_url() -> Iterator[str]:
    yield from serve_http(build())


async def test_the_bearer_header_carries_the_token_over_streamable_http(agents: Agents, guarded_url: str) -> None:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {agents.researcher}"})
    async with http, Client(streamable_http_client(guarded_url, http_client=http)) as client:
        listed = await client.list_tools()
        allowed = await client.call_tool("search", {"query": "q"})
        denied = await client.call_tool("pay", {"amount": 1, "to": "x"})
    assert [t.name for t in listed.tools] == ["search"]
    assert not allowed.is_error
    assert denied.is_error and isinstance(denied.content[0], TextContent)
    assert denied.content[0].text.startswith("agentcaps denied tool_not_allowed:")
    assert await agents.budgets(agents.researcher) == [("10.00", "0.01", "0.00"), ("2.00", "0.01", "0.00")]


async def test_the_gateway_in_front_of_an_http_upstream(service_factory: Any, plain_url: str, tmp_path: Path) -> None:
    service: Service = service_factory("memory://")
    minted = httpx.post(
        service.url + "/v1/tokens",
        headers=service.admin(),
        timeout=5,
        json={"subject": "orchestrator", "budget": {"amount": "1.00", "currency": "USD"}},
    ).json()
    researcher = Token.parse(minted["token"]).attenuate(to="researcher", tools=["search"])
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps(COSTS))
    gateway = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "app.cli",
            "gateway",
            "--upstream-url",
            plain_url,
            "--costs",
            str(costs),
            "--verifier",
            service.url,
        ],
    )
    async with Client(gateway) as agent:
        listed = await agent.list_tools(meta={"agentcaps/token": str(researcher)})
        result = await agent.call_tool("search", {"query": "q"}, meta={"agentcaps/token": str(researcher)})
    assert [t.name for t in listed.tools] == ["search"] and not result.is_error
    spent = httpx.post(service.url + "/v1/inspect", json={"token": str(researcher)}, timeout=5).json()["budgets"]
    assert spent[0]["spent"] == "0.01"
