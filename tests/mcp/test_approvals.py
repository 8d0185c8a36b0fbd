"""A call that needs a human's approval, through the guard: it waits `approval_wait` seconds for the decision,
runs if approved meanwhile, and is otherwise a normal MCP denial that names the approval and says what to do."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client

from app.approvals import Credential
from app.authority import Authority
from app.mcp import CostTable, Guard, LocalDecider
from app.mcp.example_server import COSTS, build
from app.mcp.gateway import main as gateway
from app.schemas import Allowed, Denied
from app.sdk import Token
from tests.mcp.conftest import Agents, meta, text

OPERATOR = Credential()  # the admin key's operator may decide any approval


def gated(agents: Agents) -> str:
    """The demo's buyer, whose payments over 1.00 USD need the orchestrator's approval."""
    return str(Token.parse(agents.buyer).attenuate(approval_above="1.00 USD"))


class Recording(LocalDecider):
    """LocalDecider that keeps the `wait` of every verify the guard makes."""

    def __init__(self, authority: Authority) -> None:
        super().__init__(authority)
        self.waits: list[float] = []

    async def verify(self, token: str, tool: str, **kw: Any) -> Allowed | Denied:
        self.waits.append(kw.get("wait", 0))
        return await super().verify(token, tool, **kw)


async def pending_ids(authority: Authority) -> list[str]:
    return [a.id for a in await authority.approvals.list(OPERATOR, "pending")]


async def test_a_call_still_pending_after_the_wait_is_denied_naming_the_approval(agents: Agents) -> None:
    decider = Recording(agents.authority)
    buyer = gated(agents)
    async with Client(build([Guard(decider, CostTable(COSTS), approval_wait=0.2)])) as client:
        result = await client.call_tool("pay", {"amount": 2, "to": "books"}, meta=meta(buyer))
        assert decider.waits == [0.2]  # the guard's approval_wait is the verify's wait
        [approval_id] = await pending_ids(agents.authority)
        said = text(result)
        assert result.is_error and said.startswith("agentcaps denied approval_required: "), said
        assert said.endswith(
            f"To run it: a delegator approves {approval_id}, then retry this same call with the same arguments."
        )
        assert result.meta is not None and result.meta["agentcaps/denial"]["approval"]["id"] == approval_id
        assert await agents.budgets(buyer) == [("10.00", "0.00", "0.00"), ("5.00", "0.00", "0.00")]  # nothing held
        await agents.authority.approvals.decide(OPERATOR, approval_id, True, None)
        retried = await client.call_tool("pay", {"amount": 2, "to": "books"}, meta=meta(buyer))
        assert not retried.is_error and text(retried) == "paid 2 USD to books"
        again = await client.call_tool("pay", {"amount": 2, "to": "books"}, meta=meta(buyer))
        assert text(again).startswith("agentcaps denied approval_required: ")  # one approval, one call
    assert await agents.budgets(buyer) == [("10.00", "2.00", "0.00"), ("5.00", "2.00", "0.00")]


async def test_a_call_approved_while_it_waits_runs_in_that_same_call(agents: Agents) -> None:
    buyer = gated(agents)
    ran: list[str] = []

    async def approve_when_asked() -> None:
        while not (found := await pending_ids(agents.authority)):
            await anyio.sleep(0.02)
        await agents.authority.approvals.decide(OPERATOR, found[0], True, None)

    async with Client(build([Guard(LocalDecider(agents.authority), CostTable(COSTS), approval_wait=10)])) as client:
        with anyio.fail_after(8):
            async with anyio.create_task_group() as tg:
                tg.start_soon(approve_when_asked)
                result = await client.call_tool("pay", {"amount": 2.5, "to": "books"}, meta=meta(buyer))
                ran.append(text(result))
    assert ran == ["paid 2.5 USD to books"]


async def test_a_denied_approval_gives_the_approvers_reason(agents: Agents) -> None:
    buyer = gated(agents)
    guard = Guard(LocalDecider(agents.authority), CostTable(COSTS), approval_wait=0)
    async with Client(build([guard])) as client:
        first = await client.call_tool("pay", {"amount": 2, "to": "casino"}, meta=meta(buyer))
        assert text(first).startswith("agentcaps denied approval_required: ")
        [approval_id] = await pending_ids(agents.authority)
        await agents.authority.approvals.decide(OPERATOR, approval_id, False, "casino is not a vendor")
        denied = await client.call_tool("pay", {"amount": 2, "to": "casino"}, meta=meta(buyer))
    said = text(denied)
    assert denied.is_error and said.startswith("agentcaps denied approval_denied: "), said
    assert "casino is not a vendor" in said
    assert approval_id in said and said.endswith("This same call, retried, is denied again.")


@pytest.mark.parametrize("wait", [-1, 61, float("nan"), float("inf")])
def test_a_guard_refuses_an_approval_wait_the_service_would_refuse(agents: Agents, wait: float) -> None:
    with pytest.raises(ValueError, match="approval_wait must be 0 to 60 seconds"):
        Guard(LocalDecider(agents.authority), approval_wait=wait)


@pytest.mark.parametrize("wait", ["61", "nan", "-0.5"])
def test_the_gateway_refuses_an_approval_wait_in_plain_words(capsys: pytest.CaptureFixture[str], wait: str) -> None:
    assert gateway(["--upstream", "true", "--approval-wait", wait]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"agentcaps gateway: --approval-wait must be 0 to 60 seconds, got {float(wait)}"
    )
