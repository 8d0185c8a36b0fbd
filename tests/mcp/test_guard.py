"""A real MCP client against a guarded tool server, in-process and over stdio: every outcome of docs/mcp.md's guard."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult
from pydantic import BaseModel

from app.authority import Authority
from app.errors import StoreUnavailable
from app.mcp import Admitted, CostTable, Guard, LocalDecider
from app.mcp.example_server import COSTS, build
from app.schemas import MintRequest, Money, VerifyRequest
from app.sdk import Token
from app.sdk.client import AsyncClient
from app.store.local import run_now
from app.store.memory import MemoryStore
from app.token.keys import KeyRing, new_key_entry
from app.token.mint import attenuate
from tests.mcp.conftest import Agents, Live, meta, text
from tests.processes import free_port


@dataclass
class Tools:
    """An MCP server with a guard in front and tools that record every run."""

    server: MCPServer
    ran: list[tuple[str, Any]] = field(default_factory=list)


def tools(guard: Guard) -> Tools:
    server = MCPServer("counted", middleware=[guard])
    t = Tools(server)

    @server.tool()
    def search(query: str) -> str:
        t.ran.append(("search", query))
        return f"3 results for {query!r}"

    @server.tool()
    def pay(amount: Decimal, to: str) -> str:
        t.ran.append(("pay", amount))
        return f"paid {amount} USD to {to}"

    return t


async def test_tools_list_shows_only_what_the_token_allows(agents: Agents, guard: Guard) -> None:
    async with Client(build([guard])) as client:
        assert [t.name for t in (await client.list_tools(meta=meta(agents.root))).tools] == ["search", "pay"]
        assert [t.name for t in (await client.list_tools(meta=meta(agents.researcher))).tools] == ["search"]
        assert [t.name for t in (await client.list_tools(meta=meta(agents.buyer))).tools] == ["pay"]
        assert (await client.list_tools(meta=meta("garbage"))).tools == []  # does not decode: nothing
        assert (await client.list_tools()).tools == []  # no token: nothing


async def test_an_allowed_call_runs_and_is_charged_at_every_level(agents: Agents, guard: Guard) -> None:
    t = tools(guard)
    async with Client(t.server) as client:
        result = await client.call_tool("search", {"query": "agents"}, meta=meta(agents.researcher))
        paid = await client.call_tool("pay", {"amount": "2.5", "to": "x"}, meta=meta(agents.buyer))
    assert not result.is_error and text(result) == "3 results for 'agents'"
    assert not paid.is_error and t.ran == [("search", "agents"), ("pay", Decimal("2.5"))]
    assert await agents.budgets(agents.researcher) == [("10.00", "2.51", "0.00"), ("2.00", "0.01", "0.00")]
    assert await agents.budgets(agents.buyer) == [("10.00", "2.51", "0.00"), ("5.00", "2.50", "0.00")]


def _clocked() -> tuple[Authority, list[float]]:
    now = [1_800_000_000.0]
    return Authority(KeyRing(new_key_entry()), MemoryStore(), "http://agentcaps.test", clock=lambda: now[0]), now


def _mint(authority: Authority, **kw: Any) -> str:
    """Minted at once: over a MemoryStore, minting (its audit event included) never waits for anything."""
    return str(run_now(authority.mint(MintRequest("orchestrator", **kw))).token)


class FailingStore(MemoryStore):
    async def decide(self, d: Any) -> Any:
        raise StoreUnavailable("redis: connection refused")


async def _setup(code: str) -> tuple[Guard, str, str, dict[str, Any]]:
    """A guard, a token, and a call that the guard must deny with `code`."""
    authority, now = _clocked()
    local = LocalDecider(authority)
    costs = CostTable(COSTS)
    usd10 = Money("10.00", "USD")
    if code == "tool_not_allowed":
        return Guard(local, costs), _mint(authority, budget=usd10, tools=["search"]), "pay", {"amount": 1, "to": "x"}
    if code == "arg_mismatch":
        token = str(Token.parse(_mint(authority, budget=usd10)).attenuate(to="buyer", args={"amount": "<= 3"}))
        return Guard(local, costs), token, "pay", {"amount": "3.01", "to": "x"}
    if code == "budget_exceeded":
        return Guard(local, costs), _mint(authority, budget=Money("1.00", "USD")), "pay", {"amount": 1.5, "to": "x"}
    if code == "cost_cap_exceeded":
        token = _mint(authority, budget=usd10, cost_cap=Money("0.005", "USD"))
        return Guard(local, costs), token, "search", {"query": "q"}
    if code == "currency_mismatch":
        euros = CostTable({"search": {"amount": "0.01", "currency": "EUR"}})
        return Guard(local, euros), _mint(authority, budget=usd10), "search", {"query": "q"}
    if code == "audience_mismatch":
        token = _mint(authority, budget=usd10, audience=["payments-srv"])
        return Guard(local, costs, audience="search-srv"), token, "search", {"query": "q"}
    if code == "expired":
        token = _mint(authority, budget=usd10, expires_in=60)
        now[0] += 61
        return Guard(local, costs), token, "search", {"query": "q"}
    if code == "revoked":
        token = _mint(authority, budget=usd10)
        await authority.revoke(token)
        return Guard(local, costs), token, "search", {"query": "q"}
    if code == "rate_limited":
        token = _mint(authority, budget=usd10, rate="1/1h")
        await authority.verify(VerifyRequest(token, "search"), None)  # the one call this hour
        return Guard(local, costs), token, "search", {"query": "q"}
    if code == "depth_exceeded":
        researcher = Token.parse(_mint(authority, budget=usd10)).attenuate(to="researcher", max_depth=0)
        return Guard(local, costs), attenuate(str(researcher), ["delegate = intern"]), "search", {"query": "q"}
    if code == "unknown_caveat":
        return Guard(local, costs), attenuate(_mint(authority), ["colour = blue"]), "search", {"query": "q"}
    if code == "invalid_token":
        token = _mint(authority, budget=usd10)
        return Guard(local, costs), token[:-2] + ("AA" if token[-2:] != "AA" else "BA"), "search", {"query": "q"}
    if code == "store_unavailable":
        broken = Authority(authority.ring, FailingStore(), "http://agentcaps.test")
        return Guard(LocalDecider(broken), costs), _mint(authority, budget=usd10), "search", {"query": "q"}
    raise AssertionError(code)


DENIALS = [
    "tool_not_allowed",
    "arg_mismatch",
    "budget_exceeded",
    "cost_cap_exceeded",
    "currency_mismatch",
    "audience_mismatch",
    "expired",
    "revoked",
    "rate_limited",
    "depth_exceeded",
    "unknown_caveat",
    "invalid_token",
    "store_unavailable",
]


@pytest.mark.parametrize("code", DENIALS)
async def test_each_denial_is_an_error_result_and_the_tool_never_runs(code: str) -> None:
    guard, token, tool, args = await _setup(code)
    t = tools(guard)
    async with Client(t.server) as client:
        result = await client.call_tool(tool, args, meta=meta(token))
    assert result.is_error and text(result).startswith(f"agentcaps denied {code}: "), text(result)
    assert t.ran == []
    assert result.structured_content is None  # the denial body is in _meta, not checked against an output schema
    assert result.meta is not None and result.meta["agentcaps/denial"]["code"] == code
    assert result.meta["agentcaps/denial"]["allowed"] is False


async def test_a_denial_says_what_the_holder_can_still_do(agents: Agents, guard: Guard) -> None:
    async with Client(build([guard])) as client:
        await client.call_tool("pay", {"amount": 2, "to": "x"}, meta=meta(agents.buyer))
        wrong_tool = await client.call_tool("search", {"query": "q"}, meta=meta(agents.buyer))
        over = await client.call_tool("pay", {"amount": "3.01", "to": "x"}, meta=meta(agents.buyer))
        broke = await client.call_tool("pay", {"amount": 3, "to": "x"}, meta=meta(agents.buyer))
    left = "Budget remaining: hop 0 (orchestrator) 8.00 of 10.00 USD; hop 1 (buyer) 3.00 of 5.00 USD."
    assert text(wrong_tool) == (
        "agentcaps denied tool_not_allowed: tool 'search' is not among the allowed tools: pay "
        "(caveat 'tools in pay' at hop 1). "
        f"{left} Allowed tools: pay."
    )
    assert wrong_tool.meta is not None
    denial = wrong_tool.meta["agentcaps/denial"]
    assert (denial["caveat"], denial["hop"], denial["tools"]) == ("tools in pay", 1, ["pay"])
    assert [b["remaining"] for b in denial["budgets"]] == ["8.00", "3.00"]
    assert text(over).startswith("agentcaps denied arg_mismatch: argument 'amount' is not <= 3")
    assert left in text(over)
    assert not broke.is_error


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ({"to": "x"}, "argument 'amount' is missing"),
        ({"amount": -1, "to": "x"}, "argument 'amount' must be a non-negative amount"),
        ({"amount": "lots", "to": "x"}, "argument 'amount' must be a non-negative amount"),
        ({"amount": [2], "to": "x"}, "argument 'amount' must be a decimal amount"),
    ],
)
async def test_a_cost_argument_that_is_missing_or_malformed_denies_without_asking(
    agents: Agents, args: dict[str, Any], why: str
) -> None:
    asked: list[str] = []

    class Counting(LocalDecider):
        async def verify(self, token: str, tool: str, **kw: Any) -> Any:
            asked.append(tool)
            return await super().verify(token, tool, **kw)

    t = tools(Guard(Counting(agents.authority), CostTable(COSTS)))
    async with Client(t.server) as client:
        result = await client.call_tool("pay", args, meta=meta(agents.buyer))
    assert text(result).startswith(f"agentcaps denied arg_mismatch: {why}")
    assert "Allowed tools: pay." in text(result)  # read from the token offline: the service was not asked
    assert t.ran == [] and asked == []


async def test_no_token_denies(agents: Agents, guard: Guard) -> None:
    t = tools(guard)
    async with Client(t.server) as client:
        result = await client.call_tool("search", {"query": "q"})
    assert text(result).startswith("agentcaps denied invalid_token: no agentcaps token")
    assert t.ran == []


async def test_a_default_token_serves_requests_that_carry_none(agents: Agents) -> None:
    t = tools(Guard(LocalDecider(agents.authority), CostTable(COSTS), default_token=agents.researcher))
    async with Client(t.server) as client:
        listed = await client.list_tools()
        result = await client.call_tool("search", {"query": "q"})
        other = await client.call_tool("search", {"query": "q"}, meta=meta(agents.buyer))  # its own token wins
    assert [tool.name for tool in listed.tools] == ["search"] and not result.is_error
    assert text(other).startswith("agentcaps denied tool_not_allowed:")


async def test_budget_exceeded_across_calls(agents: Agents, guard: Guard) -> None:
    async with Client(build([guard])) as client:
        for _ in range(2):
            ok = await client.call_tool("pay", {"amount": 2.5, "to": "x"}, meta=meta(agents.buyer))
            assert not ok.is_error
        over = await client.call_tool("pay", {"amount": 0.01, "to": "x"}, meta=meta(agents.buyer))
    assert text(over).startswith("agentcaps denied budget_exceeded:")
    assert "hop 1 (buyer) 0.00 of 5.00 USD" in text(over)


async def test_a_tool_that_raises_releases_its_hold(agents: Agents) -> None:
    costs = CostTable({"flaky": {"amount": "4", "currency": "USD"}})
    server = MCPServer("flaky", middleware=[Guard(LocalDecider(agents.authority), costs)])

    @server.tool()
    def flaky() -> str:
        raise RuntimeError("upstream timed out")

    async with Client(server) as client:
        for _ in range(3):  # 4 of 10 held each time: were a hold kept, the third call would be over budget
            failed = await client.call_tool("flaky", {}, meta=meta(agents.root))
            assert failed.is_error and "agentcaps denied" not in text(failed)
    assert await agents.budgets(agents.root) == [("10.00", "0.00", "0.00")]


async def test_a_call_cancelled_while_the_tool_runs_is_charged_its_held_cost(agents: Agents) -> None:
    costs = CostTable({"slow": {"amount": "4", "currency": "USD"}})
    server = MCPServer("slow", middleware=[Guard(LocalDecider(agents.authority), costs)])
    started = anyio.Event()

    @server.tool()
    async def slow() -> str:
        started.set()
        await anyio.sleep(30)
        return "never"

    async with Client(server) as client:
        with anyio.move_on_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: client.call_tool("slow", {}, meta=meta(agents.root)))
                await started.wait()
                assert await agents.budgets(agents.root) == [("10.00", "0.00", "4.00")]
                tg.cancel_scope.cancel()
        with anyio.fail_after(5):
            while (await agents.budgets(agents.root))[0][2] != "0.00":
                await anyio.sleep(0.01)
    assert await agents.budgets(agents.root) == [("10.00", "4.00", "0.00")]  # the tool may have acted: charged


async def test_the_tool_reports_its_actual_cost_and_never_sees_the_token(agents: Agents) -> None:
    costs = CostTable({"fetch": {"amount": "0.01", "currency": "USD"}})
    server = MCPServer("metered", middleware=[Guard(LocalDecider(agents.authority), costs)])
    seen: dict[str, Any] = {}

    @server.tool()
    def fetch(url: str, reported: Any, ctx: Context) -> CallToolResult:
        seen["params"] = dict(ctx.request_context.params or {})
        seen["meta"] = dict(ctx.request_context.meta or {})
        return CallToolResult.model_validate(
            {"content": [{"type": "text", "text": "fetched"}], "_meta": {"agentcaps/cost": reported}}
        )

    async with Client(server) as client:
        for reported in (
            {"amount": "0.004", "currency": "USD"},  # settled as reported
            {"amount": "0.02", "currency": "USD"},  # more than the hold: the held cost
            {"amount": "0.004", "currency": "EUR"},  # another currency: the held cost
            "cheap",  # not an amount: the held cost
        ):
            result = await client.call_tool(
                "fetch", {"url": "u", "reported": reported}, meta=meta(agents.root, trace="t1")
            )
            assert not result.is_error
    assert await agents.budgets(agents.root) == [("10.00", "0.034", "0.00")]
    assert "agentcaps/token" not in seen["params"].get("_meta", {}) and "agentcaps/token" not in seen["meta"]
    assert seen["meta"].get("trace") == "t1"


async def test_an_unreachable_verifier_denies_and_the_tool_never_runs(agents: Agents) -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", timeout=2) as nobody:
        t = tools(Guard(nobody, CostTable(COSTS)))
        async with Client(t.server) as client:
            result = await client.call_tool("search", {"query": "q"}, meta=meta(agents.root))
            listed = await client.list_tools(meta=meta(agents.researcher))
    assert text(result).startswith("agentcaps denied store_unavailable: agentcaps is unreachable")
    assert t.ran == []
    assert [tool.name for tool in listed.tools] == ["search"]  # listing is offline: no service needed


async def test_a_hold_that_expires_while_the_tool_runs_is_charged_directly_once() -> None:
    authority, now = _clocked()
    root = _mint(authority, budget=Money("10.00", "USD"))
    costs = CostTable({"slow": {"amount": "3", "currency": "USD"}})
    server = MCPServer("slow", middleware=[Guard(LocalDecider(authority), costs, hold_ttl=1)])

    @server.tool()
    def slow() -> str:
        now[0] += 5  # the hold (1 s) expires while the tool works
        return "done"

    async with Client(server) as client:
        result = await client.call_tool("slow", {}, meta=meta(root))
    assert not result.is_error
    budgets = (await authority.inspect(root)).budgets or []
    assert [(b.spent, b.held) for b in budgets] == [("3.00", "0.00")]


class Confirm(BaseModel):
    ok: bool


def ask() -> Elicit[Confirm]:
    return Elicit("Buy it?", Confirm)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_tool_that_asks_the_user_first_is_charged_once(agents: Agents, mode: str) -> None:
    """2026-07-28 answers `input_required` first and the client calls again: the first hold is released. Before
    2026 the server asks mid-call and the hold simply lasts longer."""
    costs = CostTable({"buy": {"amount": "1", "currency": "USD"}})
    server = MCPServer("asking", middleware=[Guard(LocalDecider(agents.authority), costs)])

    @server.tool()
    def buy(item: str, confirm: Annotated[Confirm, Resolve(ask)]) -> str:
        return f"bought {item}" if confirm.ok else "kept the money"

    async def yes(ctx: Any, params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="accept", content={"ok": True})

    async with Client(server, mode=mode, elicitation_callback=yes) as client:  # type: ignore[arg-type]
        result = await client.call_tool("buy", {"item": "book"}, meta=meta(agents.root))
    assert text(result) == "bought book"
    assert await agents.budgets(agents.root) == [("10.00", "1.00", "0.00")]


async def test_a_guarded_server_over_stdio_asks_the_real_service(minted: Live) -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "app.mcp.example_server", "--guard"],
        env={**os.environ, "AGENTCAPS_URL": minted.url},
    )
    async with Client(server) as client:
        listed = await client.list_tools(meta=meta(minted.researcher))
        allowed = await client.call_tool("search", {"query": "q"}, meta=meta(minted.researcher))
        denied = await client.call_tool("pay", {"amount": 1, "to": "x"}, meta=meta(minted.researcher))
    assert [t.name for t in listed.tools] == ["search"]
    assert not allowed.is_error and text(denied).startswith("agentcaps denied tool_not_allowed:")
    assert minted.spent(minted.researcher) == ["0.01", "0.01"]


def test_a_guard_refuses_a_hold_ttl_the_service_would_refuse(agents: Agents) -> None:
    for ttl in (0, 86401):
        with pytest.raises(ValueError, match="hold_ttl"):
            Guard(LocalDecider(agents.authority), hold_ttl=ttl)


async def test_a_tool_that_outlives_its_hold_keeps_it_and_is_charged(agents: Agents) -> None:
    """Before: a hold of 1 s ran out under a tool that took longer; the guard now extends it while the tool runs."""
    costs = CostTable({"slow": {"amount": "4", "currency": "USD"}})
    server = MCPServer("slow", middleware=[Guard(LocalDecider(agents.authority), costs, hold_ttl=1)])
    held: list[tuple[str, str, str]] = []

    @server.tool()
    async def slow() -> str:
        await anyio.sleep(1.6)
        held.extend(await agents.budgets(agents.root))  # past the hold's first second
        return "done"

    async with Client(server) as client:
        result = await client.call_tool("slow", {}, meta=meta(agents.root))
    assert text(result) == "done"
    assert held == [("10.00", "0.00", "4.00")]
    assert await agents.budgets(agents.root) == [("10.00", "4.00", "0.00")]


async def test_logs_tell_the_holds_of_one_root_apart(
    agents: Agents, guard: Guard, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a hold was logged by its first 12 characters, the root token's id, the same for all its holds."""
    calls = [await guard.admit(agents.root, "search", {"query": str(n)}) for n in range(2)]
    for call in calls:
        assert isinstance(call, Admitted) and call.hold_id is not None
        await agents.authority.release(call.hold_id)
        await guard.conclude(call, {})  # settling a released hold is refused: logged
    logged = [r.getMessage() for r in caplog.records if "could not settle" in r.getMessage()]
    token_id = Token.parse(agents.root).token_id
    assert len(logged) == 2 and logged[0] != logged[1]
    assert all(token_id not in line for line in logged)


async def test_a_guarded_server_checks_resources_and_prompts_as_tools(agents: Agents, guard: Guard) -> None:
    """Before: the middleware checked tools/* only; resources and prompts answered anyone."""
    server = MCPServer("docs", middleware=[guard])

    @server.resource("docs://readme")
    def readme() -> str:
        return "the readme"

    @server.prompt()
    def review(code: str) -> str:
        return f"Please review: {code}"

    reader = str(Token.parse(agents.root).attenuate(to="reader", tools=["resources/read"]))
    async with Client(server) as client:
        with pytest.raises(MCPError, match=r"^agentcaps denied invalid_token:"):
            await client.read_resource("docs://readme")
        with pytest.raises(MCPError, match=r"^agentcaps denied tool_not_allowed:"):
            await client.get_prompt("review", {"code": "x"}, meta=meta(reader))
        hidden = await client.list_resources(meta=meta(agents.researcher))  # tools in search
        shown = await client.list_resources(meta=meta(reader))
        read = await client.read_resource("docs://readme", meta=meta(reader))
    assert hidden.resources == [] and [str(r.uri) for r in shown.resources] == ["docs://readme"]
    assert getattr(read.contents[0], "text", None) == "the readme"
