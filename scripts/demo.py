#!/usr/bin/env python3
"""The delegation demo: an orchestrator hands a researcher and a buyer smaller tokens, and their MCP tool calls
go through `agentcaps gateway` to an example tool server. Prints a trace and the budget tree; exits 1 if any
expected allow or deny does not happen.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.types import TextContent

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.mcp.example_server import COSTS  # noqa: E402
from app.sdk import Client as Agentcaps  # noqa: E402
from app.sdk import Token, TokenError  # noqa: E402

ADMIN = "demo-admin-key-0123456789"
failures: list[str] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "AGENTCAPS_PORT": str(port),
        "AGENTCAPS_DATA_DIR": data_dir,
        "AGENTCAPS_ADMIN_KEYS": ADMIN,
        "AGENTCAPS_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("the agentcaps service did not start")


async def call(agent: Client, who: str, token: Token, tool: str, args: dict[str, object], expect: str) -> None:
    result = await agent.call_tool(tool, args, meta={"agentcaps/token": str(token)})
    first = result.content[0]
    text = first.text if isinstance(first, TextContent) else str(first)
    denied = text.startswith("agentcaps denied ")
    outcome = text.split(" ")[2].rstrip(":") if denied else ("error" if result.is_error else "allowed")
    path = " -> ".join(token.delegation)
    shown = ", ".join(f"{k}={v}" for k, v in args.items())
    cost = COSTS[tool].get("amount") or args.get(COSTS[tool].get("from_arg", ""), "?")
    print(f"  {who:<10} via {path:<26} {tool}({shown})")
    print(f"  {'':<10} " + (f"ALLOWED, cost {cost} USD: {text}" if outcome == "allowed" else text))
    if outcome != expect:
        failures.append(f"{who} {tool}({shown}): expected {expect}, got {outcome}: {text[:120]}")


async def run(url: str, costs_file: str) -> None:
    with Agentcaps(url, admin_key=ADMIN) as service:
        root = Token.parse(service.mint("orchestrator", budget="10.00 USD", max_depth=2, expires_in=3600).token)
    researcher = root.attenuate(to="researcher", budget="2.00 USD", tools=["search"], max_depth=0)
    buyer = root.attenuate(to="buyer", budget="5.00 USD", tools=["pay"], args={"amount": "<= 3"})
    print("orchestrator minted a root: 10.00 USD, 2 more hops")
    print("  offline -> researcher: 2.00 USD, search only, no further delegation")
    print("  offline -> buyer:      5.00 USD, pay with arg.amount <= 3\n")
    try:
        researcher.attenuate(to="intern")
        failures.append("the researcher could delegate further")
    except TokenError as e:
        print(f"researcher tries to delegate to an intern, offline: refused ({e})\n")

    gateway = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "app.cli",
            "gateway",
            "--upstream",
            f"{sys.executable} -m app.mcp.example_server",
            "--costs",
            costs_file,
            "--verifier",
            url,
        ],
        cwd=str(ROOT),
    )
    print("calls through `agentcaps gateway` to the example tool server:")
    async with Client(gateway) as agent:
        # The orchestrator lists last: the MCP client remembers the last listing when it checks results.
        for name, token in (("researcher", researcher), ("buyer", buyer), ("orchestrator", root)):
            listed = await agent.list_tools(meta={"agentcaps/token": str(token)})
            print(f"  {name} sees the tools: {', '.join(t.name for t in listed.tools)}")
        await call(agent, "researcher", researcher, "search", {"query": "agent frameworks"}, "allowed")
        await call(agent, "researcher", researcher, "pay", {"amount": 1, "to": "shop"}, "tool_not_allowed")
        await call(agent, "buyer", buyer, "pay", {"amount": 2.5, "to": "books"}, "allowed")
        await call(agent, "buyer", buyer, "pay", {"amount": 3.5, "to": "books"}, "arg_mismatch")
        await call(agent, "buyer", buyer, "pay", {"amount": 2, "to": "maps"}, "allowed")
        await call(agent, "buyer", buyer, "pay", {"amount": 1, "to": "maps"}, "budget_exceeded")
        await call(agent, "buyer", buyer, "search", {"query": "prices"}, "tool_not_allowed")

    print("\nbudget tree (spent / limit):")
    with Agentcaps(url) as service:
        for name, token in (("orchestrator", root), ("researcher", researcher), ("buyer", buyer)):
            budgets = service.inspect(str(token)).budgets or []
            own = budgets[-1]
            print(f"  {'  ' * (len(token.delegation) - 1)}{name:<12} {own.spent} / {own.limit} {own.currency}")
    expected = {"orchestrator": "4.51", "researcher": "0.01", "buyer": "4.50"}
    with Agentcaps(url) as service:
        for name, token in (("orchestrator", root), ("researcher", researcher), ("buyer", buyer)):
            spent = (service.inspect(str(token)).budgets or [])[-1].spent
            if spent != expected[name]:
                failures.append(f"{name} spent {spent}, expected {expected[name]}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="agentcaps-demo-") as tmp:
        costs = Path(tmp) / "costs.json"
        costs.write_text(json.dumps(COSTS))
        process, url = start_service(tmp)
        try:
            asyncio.run(run(url, str(costs)))
        finally:
            process.terminate()
            process.wait(10)
    if failures:
        print("\nUNEXPECTED:\n  " + "\n  ".join(failures))
        return 1
    print("\nevery call was allowed or denied as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
