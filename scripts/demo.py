#!/usr/bin/env python3
"""The delegation demo (run it with scripts/demo): an orchestrator hands a researcher and a buyer smaller tokens,
offline, and their tool calls go through real MCP clients to an example tool server, through `agentcaps gateway`
and through a server guarded by itself. The buyer's payments over 1.00 USD wait in the gateway for the
orchestrator's approval, which it gives (or refuses, with a reason) with its own token while the call waits.
Prints each call with its delegation path, what it cost or why it was denied, then the budget tree; exits 1 if
any expected allow or deny does not happen.
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
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.types import TextContent

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.mcp.example_server import COSTS  # noqa: E402
from app.sdk import AsyncClient as AsyncAgentcaps  # noqa: E402
from app.sdk import Client as Agentcaps  # noqa: E402
from app.sdk import Token, TokenError  # noqa: E402

ADMIN = "demo-admin-key-0123456789abcdef0123"
EXPECTED_SPENT = {"orchestrator": "4.52", "researcher": "0.01", "buyer": "4.50"}


@dataclass
class Agent:
    name: str
    token: Token


@dataclass
class Decision:
    """What `approver` decides about the approval a call waits for, while it waits."""

    approver: Agent
    approve: bool
    reason: str | None = None


@dataclass
class Demo:
    url: str
    failures: list[str]

    def spent(self, agent: Agent) -> str:
        """What this agent's own budget (its last hop's) has spent so far."""
        with Agentcaps(self.url) as service:
            budgets = service.inspect(str(agent.token)).budgets or []
        return budgets[-1].spent if budgets else "0"  # a forged token has no budget to show

    async def call(
        self,
        client: Client,
        agent: Agent,
        tool: str,
        args: dict[str, Any],
        expect: str,
        decision: Decision | None = None,
    ) -> None:
        before = self.spent(agent)
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
        print(f"  {agent.name:<12} {' > '.join(agent.token.delegation):<26} {tool}({shown})")
        calling = client.call_tool(tool, args, meta={"agentcaps/token": str(agent.token)})
        if decision is None:
            result = await calling
        else:  # the call waits in the gateway while the approver decides
            result, _ = await asyncio.gather(calling, self.decide(decision))
        first = result.content[0] if result.content else None
        said = first.text if isinstance(first, TextContent) else str(first)
        denial = (result.meta or {}).get("agentcaps/denial")
        outcome = denial["code"] if denial else ("error" if result.is_error else "allowed")
        if outcome == "allowed":
            charged = Decimal(self.spent(agent)) - Decimal(before)
            print(f"  {'':<12} allowed, charged {charged} USD at every hop: {said}")
        else:
            print(f"  {'':<12} {said}")
        if outcome != expect:
            self.failures.append(f"{agent.name} {tool}({shown}): expected {expect}, got {outcome}: {said[:160]}")

    async def decide(self, decision: Decision) -> None:
        """As the approver, with its own token: wait for the call's approval to be asked for, then decide it."""
        async with AsyncAgentcaps(self.url, token=str(decision.approver.token)) as approver:
            deadline = time.monotonic() + 15
            while not (pending := await approver.approvals(state="pending")):
                if time.monotonic() > deadline:
                    self.failures.append(f"{decision.approver.name} was never asked for an approval")
                    return
                await asyncio.sleep(0.05)
            asked = pending[0]
            decide = approver.approve if decision.approve else approver.deny
            decided = await decide(asked.id, decision.reason)
        cost = f"{asked.cost.amount} {asked.cost.currency}" if asked.cost else "no cost"
        why = f": {decided.reason!r}" if decided.reason else ""
        print(
            f"  {'':<12} waits for approval ...{asked.id[-8:]} ({asked.tool} {cost} by {asked.holder}); "
            f"{decision.approver.name} {decided.state} it{why}"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    """agentcaps on the memory store, on a free port, with its own data dir and a known admin key."""
    port = free_port()
    env = {
        **os.environ,
        "AGENTCAPS_STORE": "memory://",
        "AGENTCAPS_PORT": str(port),
        "AGENTCAPS_DATA_DIR": data_dir,
        "AGENTCAPS_ADMIN_KEYS": ADMIN,
        "AGENTCAPS_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the agentcaps service did not start")


async def run(demo: Demo, costs_file: str) -> None:
    with Agentcaps(demo.url, admin_key=ADMIN) as service:
        minted = service.mint("orchestrator", budget="10.00 USD", max_depth=2, expires_in=3600)
    root = Agent("orchestrator", Token.parse(minted.token))
    researcher = Agent(
        "researcher", root.token.attenuate(to="researcher", budget="2.00 USD", tools=["search"], max_depth=0)
    )
    buyer = Agent(
        "buyer",
        root.token.attenuate(
            to="buyer", budget="5.00 USD", tools=["pay"], args={"amount": "<= 3"}, approval_above="1.00 USD"
        ),
    )
    print("orchestrator mints a root token over HTTP: 10.00 USD, at most 2 further delegations")
    print("orchestrator -> researcher, offline: 2.00 USD, search only, no further delegation")
    print("orchestrator -> buyer, offline:      5.00 USD, pay only, arg.amount <= 3, over 1.00 USD with approval")
    try:
        researcher.token.attenuate(to="intern")
        demo.failures.append("the researcher could delegate to an intern")
    except TokenError as e:
        print(f"researcher -> intern, offline: refused ({e})")

    example = f"{sys.executable} -m app.mcp.example_server"
    gateway = StdioServerParameters(
        command=sys.executable,
        args=["-m", "app.cli", "gateway", "--upstream", example, "--costs", costs_file, "--verifier", demo.url],
        cwd=str(ROOT),
    )
    print(f"\nMCP calls through `agentcaps gateway` to the example tool server (costs: {json.dumps(COSTS)}):")
    async with Client(gateway) as client:
        for agent in (researcher, buyer, root):
            listed = await client.list_tools(meta={"agentcaps/token": str(agent.token)})
            print(f"  {agent.name:<12} tools/list: {', '.join(t.name for t in listed.tools)}")
        await demo.call(client, researcher, "search", {"query": "agent frameworks"}, "allowed")
        await demo.call(client, researcher, "pay", {"amount": 1, "to": "shop"}, "tool_not_allowed")
        approve, refuse = Decision(root, True), Decision(root, False, "casino is not one of our vendors")
        await demo.call(client, buyer, "pay", {"amount": 2.5, "to": "books"}, "allowed", approve)
        await demo.call(client, buyer, "pay", {"amount": 3.5, "to": "books"}, "arg_mismatch")
        await demo.call(client, buyer, "pay", {"amount": 2, "to": "casino"}, "approval_denied", refuse)
        await demo.call(client, buyer, "pay", {"amount": 2, "to": "maps"}, "allowed", approve)
        await demo.call(client, buyer, "pay", {"amount": 1, "to": "maps"}, "budget_exceeded")
        await demo.call(client, buyer, "pay", {"to": "maps"}, "arg_mismatch")
        await demo.call(client, buyer, "search", {"query": "prices"}, "tool_not_allowed")

    guarded = StdioServerParameters(
        command=sys.executable,
        args=["-m", "app.mcp.example_server", "--guard"],
        env={**os.environ, "AGENTCAPS_URL": demo.url},
        cwd=str(ROOT),
    )
    print("\nMCP calls to the example tool server guarded by itself (app.mcp.Guard middleware, no gateway):")
    async with Client(guarded) as client:
        listed = await client.list_tools(meta={"agentcaps/token": str(root.token)})
        print(f"  {root.name:<12} tools/list: {', '.join(t.name for t in listed.tools)}")
        await demo.call(client, root, "search", {"query": "budgets"}, "allowed")
        text = str(root.token)
        forged = Agent("(forged)", Token.parse(text[:-6] + ("AAAAAA" if not text.endswith("AAAAAA") else "BBBBBB")))
        await demo.call(client, forged, "search", {"query": "budgets"}, "invalid_token")

    print("\nbudget tree (spent / limit, each hop's own budget):")
    with Agentcaps(demo.url) as service:
        for agent in (root, researcher, buyer):
            own = (service.inspect(str(agent.token)).budgets or [])[-1]
            print(
                f"  {'  ' * (len(agent.token.delegation) - 1)}{agent.name:<14} {own.spent} / {own.limit} {own.currency}"
            )
            if own.spent != EXPECTED_SPENT[agent.name]:
                demo.failures.append(f"{agent.name} spent {own.spent}, expected {EXPECTED_SPENT[agent.name]}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="agentcaps-demo-") as tmp:
        costs = Path(tmp) / "costs.json"
        costs.write_text(json.dumps(COSTS))
        process, url = start_service(str(Path(tmp) / "data"))
        demo = Demo(url, [])
        try:
            asyncio.run(run(demo, str(costs)))
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    if demo.failures:
        print("\nUNEXPECTED:\n  " + "\n  ".join(demo.failures))
        return 1
    print("\nevery call was allowed or denied as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
