"""An upstream for the attack tests, run as `python -m tests.mcp.slow_server`: `slowpay` takes `seconds` to pay
`amount` (its cost, from the argument), `env` tells what of the environment it inherited;
a resource and a prompt."""

from __future__ import annotations

import os

import anyio
from mcp.server.mcpserver import MCPServer

COSTS = {"slowpay": {"from_arg": "amount", "currency": "USD"}}

server = MCPServer("slow-tools", log_level="WARNING")


@server.tool()
async def slowpay(amount: float, seconds: float = 0) -> str:
    await anyio.sleep(seconds)
    return f"paid {amount}"


@server.tool()
def env(name: str) -> str:
    return os.environ.get(name, "(unset)")


@server.resource("secrets://plan")
def plan() -> str:
    return "the plan"


@server.prompt()
def review(code: str) -> str:
    return f"Please review: {code}"


if __name__ == "__main__":
    server.run("stdio")
