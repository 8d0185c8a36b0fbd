"""MCP: agentcaps in front of MCP tools. `Guard` is the checks, as a server middleware for tool servers
you write; `Gateway`/`relay` put the same checks in front of servers you do not own (`agentcaps gateway`)."""

from app.errors import CostError
from app.mcp.costs import CostTable
from app.mcp.guard import COST_KEY, DENIAL_KEY, TOKEN_KEY, Admitted, Decider, Guard, LocalDecider, denial
from app.mcp.relay import Gateway, relay

# The names before Decider and LocalDecider (three different things were called Verifier): kept so that code
# written against them still imports, left out of __all__.
Verifier = Decider
LocalVerifier = LocalDecider

__all__ = [
    "COST_KEY",
    "DENIAL_KEY",
    "TOKEN_KEY",
    "Admitted",
    "CostError",
    "CostTable",
    "Decider",
    "Gateway",
    "Guard",
    "LocalDecider",
    "denial",
    "relay",
]
