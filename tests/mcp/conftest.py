"""MCP test set-up: an in-process Authority with the demo's three agents, a real service process shared by the
module's subprocess tests, streamable-HTTP servers on free ports, and small helpers for results."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from mcp.types import CallToolResult, TextContent
from starlette.types import ASGIApp

from app.authority import Authority
from app.mcp import CostTable, Guard, LocalDecider
from app.mcp.example_server import COSTS
from app.schemas import MintRequest, Money
from app.sdk import Token
from app.store.local import run_now
from app.store.memory import MemoryStore
from app.token.keys import KeyRing, new_key_entry
from tests.processes import Service, free_port, start_service


@dataclass
class Agents:
    authority: Authority
    root: str  # orchestrator: 10.00 USD, 2 more hops
    researcher: str  # 2.00 USD, search only, no further delegation
    buyer: str  # 5.00 USD, pay with arg.amount <= 3

    async def budgets(self, token: str) -> list[tuple[str, str, str]]:
        """(limit, spent, held) per budget, root first."""
        views = (await self.authority.inspect(token)).budgets or []
        return [(b.limit, b.spent, b.held) for b in views]


def delegate(root: str) -> tuple[str, str]:
    """The demo's researcher and buyer, attenuated offline from `root`."""
    researcher = Token.parse(root).attenuate(to="researcher", budget="2.00 USD", tools=["search"], max_depth=0)
    buyer = Token.parse(root).attenuate(to="buyer", budget="5.00 USD", tools=["pay"], args={"amount": "<= 3"})
    return str(researcher), str(buyer)


@pytest.fixture
def agents() -> Agents:
    authority = Authority(KeyRing(new_key_entry()), MemoryStore(), "http://agentcaps.test")
    # Minted at once: over a MemoryStore, minting (its audit event included) never waits for anything.
    root = run_now(authority.mint(MintRequest("orchestrator", budget=Money("10.00", "USD"), max_depth=2))).token
    return Agents(authority, root, *delegate(root))


@pytest.fixture
def guard(agents: Agents) -> Guard:
    return Guard(LocalDecider(agents.authority), CostTable(COSTS))


@dataclass
class Live:
    """A real agentcaps service process and the demo's tokens minted by it."""

    service: Service
    root: str
    researcher: str
    buyer: str

    @property
    def url(self) -> str:
        return self.service.url

    def spent(self, token: str) -> list[str]:
        inspected = httpx.post(self.url + "/v1/inspect", json={"token": token}, timeout=5).json()
        return [b["spent"] for b in inspected["budgets"]]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One service for a module's subprocess tests; each test mints its own root, so budgets never mix."""
    service = start_service("memory://", tmp_path_factory.mktemp("agentcaps"))
    yield Live(service, "", "", "")
    service.process.terminate()
    service.process.wait(10)


@pytest.fixture
def minted(live: Live) -> Live:
    body = {"subject": "orchestrator", "budget": {"amount": "10.00", "currency": "USD"}, "max_depth": 2}
    root = httpx.post(live.url + "/v1/tokens", headers=live.service.admin(), json=body, timeout=5).json()["token"]
    return Live(live.service, root, *delegate(root))


@pytest.fixture
def costs_file(tmp_path: Path) -> Path:
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(COSTS))
    return path


@contextmanager
def serve_http(app: ASGIApp) -> Iterator[str]:
    """Serve an ASGI app (an MCP server's streamable_http_app()) on a free port, in a thread; yields its /mcp URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(10)


def meta(token: str, **more: Any) -> dict[str, Any]:
    return {"agentcaps/token": token, **more}


def text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text
