"""An Authority on the memory store, tokens for the demo's agents, and a guarded example server."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from app.api.schemas import MintRequest, Money
from app.authority import Authority
from app.mcp import CostTable, Guard, LocalVerifier
from app.mcp.example_server import COSTS
from app.sdk import Token
from app.store.memory import MemoryStore
from app.token.keys import KeyRing, new_key_entry


@dataclass
class Agents:
    authority: Authority
    root: str
    researcher: str  # 2.00 USD, search only, no further delegation
    buyer: str  # 5.00 USD, pay with arg.amount <= 3

    async def budgets(self, token: str) -> list[tuple[str, str, str]]:
        views = (await self.authority.inspect(token)).budgets or []
        return [(b.limit, b.spent, b.held) for b in views]


@pytest.fixture
def agents() -> Agents:
    authority = Authority(KeyRing(new_key_entry()), MemoryStore(), "http://agentcaps.test")
    root = authority.mint(MintRequest("orchestrator", budget=Money("10.00", "USD"), max_depth=2)).token
    researcher = Token.parse(root).attenuate(to="researcher", budget="2.00 USD", tools=["search"], max_depth=0)
    buyer = Token.parse(root).attenuate(to="buyer", budget="5.00 USD", tools=["pay"], args={"amount": "<= 3"})
    return Agents(authority, root, str(researcher), str(buyer))


@pytest.fixture
def guard(agents: Agents) -> Guard:
    return Guard(LocalVerifier(agents.authority), CostTable(COSTS))
