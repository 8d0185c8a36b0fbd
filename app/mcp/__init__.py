"""MCP (SPEC §7): agentcaps in front of MCP tools. `Guard` is the checks, as a server middleware for tool servers
you write; `Gateway`/`relay` put the same checks in front of servers you do not own (`agentcaps gateway`)."""

from app.errors import CostError
from app.mcp.costs import CostTable
from app.mcp.guard import COST_KEY, DENIAL_KEY, TOKEN_KEY, Admitted, Guard, LocalVerifier, Verifier, denial
from app.mcp.relay import Gateway, relay

__all__ = [
    "COST_KEY",
    "DENIAL_KEY",
    "TOKEN_KEY",
    "Admitted",
    "CostError",
    "CostTable",
    "Gateway",
    "Guard",
    "LocalVerifier",
    "Verifier",
    "denial",
    "relay",
]
