"""MCP (SPEC §7): one middleware that guards tools/list and tools/call, used by tool servers and the gateway."""

from app.mcp.costs import CostTable
from app.mcp.guard import Guard, LocalVerifier

__all__ = ["CostTable", "Guard", "LocalVerifier"]
