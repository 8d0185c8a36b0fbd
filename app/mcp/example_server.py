"""An example MCP tool server for the demo and the tests: `search` (0.01 USD a call) and `pay` (its `amount`).

Run it bare on stdio (`python -m app.mcp.example_server`) behind `agentcaps gateway`, or guarded by itself with
`--guard` (it then asks the service at AGENTCAPS_URL, with the costs below).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from decimal import Decimal

from app.mcp.costs import CostTable
from app.mcp.guard import Guard
from app.mcp.sdk import MCPServer
from app.sdk.client import AsyncClient

COSTS = {"search": {"amount": "0.01", "currency": "USD"}, "pay": {"from_arg": "amount", "currency": "USD"}}


def build(middleware: Sequence[Guard] = ()) -> MCPServer:
    # WARNING: on stdio, stderr is the agent's console; the guard's every HTTP request at INFO would flood it.
    server = MCPServer("example-tools", middleware=list(middleware), log_level="WARNING")

    @server.tool()
    def search(query: str) -> str:
        """Search the web (pretend)."""
        return f"3 results for {query!r}"

    @server.tool()
    def pay(amount: Decimal, to: str) -> str:
        """Pay someone (pretend). Refuses amounts over 1000."""
        if amount > 1000:
            raise ValueError("the card was declined")
        return f"paid {amount} USD to {to}"

    return server


def main() -> None:
    guards: list[Guard] = []
    if "--guard" in sys.argv:
        verifier = AsyncClient(os.environ.get("AGENTCAPS_URL", "http://127.0.0.1:8470"))
        guards.append(Guard(verifier, CostTable(COSTS), os.environ.get("AGENTCAPS_AUDIENCE")))
    build(guards).run("stdio")


if __name__ == "__main__":
    main()
