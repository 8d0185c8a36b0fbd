"""The gateway in front of a server it does not own: in-process through `Gateway`, and as `agentcaps gateway` over
stdio against a real service. The upstream knows nothing of agentcaps; everything but the checks passes as is."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, cast

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client import Transport
from mcp.client._memory import InMemoryTransport
from mcp.client.stdio import StdioServerParameters
from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp.types import CallToolResult, Completion, ElicitRequestParams, ElicitResult, PromptReference
from mcp_types import JSONRPCError, JSONRPCRequest, JSONRPCResponse
from pydantic import BaseModel

from app.mcp import COST_KEY, CostTable, Guard, LocalDecider
from app.mcp.example_server import COSTS
from app.mcp.relay import Gateway
from app.sdk import Token
from app.sdk.client import AsyncClient
from tests.keys import TOOLS_SRV_KEY
from tests.mcp.conftest import Agents, Live, delegate, meta, text
from tests.processes import free_port, start_service

MODES = ["auto", "legacy"]  # the 2026-07-28 era (server/discover, stateless) and the handshake era


class Confirm(BaseModel):
    ok: bool


def ask() -> Elicit[Confirm]:
    return Elicit("Buy it?", Confirm)


class Upstream:
    """A plain MCP server (no agentcaps) that records what reaches it."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, Any]] = []
        self.metas: list[dict[str, Any]] = []
        server = self.server = MCPServer("upstream-tools", instructions="Search before you pay.")

        @server.tool()
        async def search(query: str, ctx: Context) -> str:
            self.ran.append(("search", query))
            self.metas.append(dict(ctx.request_context.meta or {}))
            await ctx.report_progress(0.5, 1.0, "halfway")
            return f"3 results for {query!r}"

        @server.tool()
        def pay(amount: float, to: str) -> str:
            self.ran.append(("pay", amount))
            if to == "nobody":
                raise ValueError("the card was declined")
            return f"paid {amount} USD to {to}"

        @server.tool()
        def buy(item: str, confirm: Annotated[Confirm, Resolve(ask)]) -> str:
            self.ran.append(("buy", item))
            return f"bought {item}" if confirm.ok else "kept the money"

        @server.tool()
        async def wait(ctx: Context) -> str:
            self.ran.append(("wait", None))
            await anyio.sleep(30)
            return "never"

        @server.resource("docs://readme")
        def readme() -> str:
            return "the upstream's readme"

        @server.resource("files://{name}")
        def file(name: str) -> str:
            return f"contents of {name}"

        @server.prompt()
        def review(code: str) -> str:
            return f"Please review: {code}"

        @server.completion()
        async def complete(ref: Any, argument: Any, context: Any) -> Completion:
            return Completion(values=[f"{argument.value}_{n}" for n in range(2)])


async def yes(ctx: Any, params: ElicitRequestParams) -> ElicitResult:
    return ElicitResult(action="accept", content={"ok": True})


def gateway(guard: Guard, upstream: Upstream, mode: str) -> Client:
    return Client(Gateway(guard, InMemoryTransport(upstream.server)), mode=mode, elicitation_callback=yes)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
async def test_the_gateway_checks_every_call_and_the_upstream_never_sees_a_token(
    agents: Agents, guard: Guard, mode: str
) -> None:
    upstream = Upstream()
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with gateway(guard, upstream, mode) as agent:
        listed = await agent.list_tools(meta=meta(agents.researcher))
        allowed = await agent.call_tool(
            "search", {"query": "q"}, meta=meta(agents.researcher, trace="t1"), progress_callback=on_progress
        )
        denied = await agent.call_tool("pay", {"amount": 1, "to": "x"}, meta=meta(agents.researcher))
        over = await agent.call_tool("pay", {"amount": 3.5, "to": "x"}, meta=meta(agents.buyer))
        paid = await agent.call_tool("pay", {"amount": 2.5, "to": "x"}, meta=meta(agents.buyer))
        nothing = await agent.call_tool("search", {"query": "q"})
    assert [t.name for t in listed.tools] == ["search"]
    assert text(allowed) == "3 results for 'q'" and progress == [(0.5, 1.0, "halfway")]
    assert text(denied).startswith("agentcaps denied tool_not_allowed:") and denied.is_error
    assert denied.meta is not None and denied.meta["agentcaps/denial"]["tools"] == ["search"]
    assert text(over).startswith("agentcaps denied arg_mismatch: argument 'amount' is not <= 3")
    assert text(paid) == "paid 2.5 USD to x"
    assert text(nothing).startswith("agentcaps denied invalid_token:")
    assert upstream.ran == [("search", "q"), ("pay", 2.5)]  # denied calls never reached the upstream
    assert all("agentcaps/token" not in m for m in upstream.metas) and upstream.metas[0]["trace"] == "t1"
    assert await agents.budgets(agents.researcher) == [("10.00", "2.51", "0.00"), ("2.00", "0.01", "0.00")]
    assert await agents.budgets(agents.buyer) == [("10.00", "2.51", "0.00"), ("5.00", "2.50", "0.00")]


@pytest.mark.parametrize("mode", MODES)
async def test_the_gateway_forwards_everything_else_as_the_upstream_said_it(agents: Agents, mode: str) -> None:
    guard = Guard(LocalDecider(agents.authority), CostTable(COSTS), default_token=agents.root)  # no tools caveat
    async with gateway(guard, Upstream(), mode) as agent:
        assert agent.server_info is not None and agent.server_info.name == "upstream-tools"
        assert agent.instructions == "Search before you pay."
        assert agent.server_capabilities.resources is not None and agent.server_capabilities.prompts is not None
        resources = await agent.list_resources()
        templates = await agent.list_resource_templates()
        readme = await agent.read_resource("docs://readme")
        templated = await agent.read_resource("files://notes")
        prompts = await agent.list_prompts()
        prompt = await agent.get_prompt("review", {"code": "x = 1"})
        completion = await agent.complete(
            PromptReference(type="ref/prompt", name="review"), {"name": "code", "value": "x"}
        )
    assert [str(r.uri) for r in resources.resources] == ["docs://readme"]
    assert [t.uri_template for t in templates.resource_templates] == ["files://{name}"]
    assert getattr(readme.contents[0], "text", None) == "the upstream's readme"
    assert getattr(templated.contents[0], "text", None) == "contents of notes"
    assert [p.name for p in prompts.prompts] == ["review"]
    assert "Please review: x = 1" in str(prompt.messages[0].content)
    assert completion.completion.values == ["x_0", "x_1"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_tool_that_asks_the_user_is_charged_once_through_the_gateway(agents: Agents, mode: str) -> None:
    """Before 2026 the upstream's elicitation request crosses the gateway to the agent mid-call; from 2026 the
    upstream answers `input_required`, the gateway releases that hold, and the agent's retry is charged."""
    upstream = Upstream()
    guard = Guard(LocalDecider(agents.authority), CostTable({"buy": {"amount": "1", "currency": "USD"}}))
    async with gateway(guard, upstream, mode) as agent:
        result = await agent.call_tool("buy", {"item": "book"}, meta=meta(agents.root))
    assert text(result) == "bought book"
    assert await agents.budgets(agents.root) == [("10.00", "1.00", "0.00")]


async def test_an_upstream_error_releases_the_hold(agents: Agents) -> None:
    upstream = Upstream()
    guard = Guard(LocalDecider(agents.authority), CostTable(COSTS))
    async with gateway(guard, upstream, "auto") as agent:
        declined = await agent.call_tool("pay", {"amount": 4, "to": "nobody"}, meta=meta(agents.root))
        unknown = await agent.call_tool("no_such_tool", {}, meta=meta(agents.root))
    assert declined.is_error and text(declined) == "Error executing tool pay"
    assert unknown.is_error and "agentcaps denied" not in text(unknown)
    assert upstream.ran == [("pay", 4)]
    assert await agents.budgets(agents.root) == [("10.00", "0.00", "0.00")]


async def test_a_call_the_agent_cancels_while_it_runs_is_charged_its_held_cost(agents: Agents) -> None:
    """The tool may already have acted: cancelling must not make a paid call free (it did: spent 0.00)."""
    upstream = Upstream()
    guard = Guard(LocalDecider(agents.authority), CostTable({"wait": {"amount": "4", "currency": "USD"}}))
    async with gateway(guard, upstream, "auto") as agent:
        with anyio.move_on_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: agent.call_tool("wait", {}, meta=meta(agents.root)))
                with anyio.fail_after(5):
                    while not upstream.ran:
                        await anyio.sleep(0.01)
                assert await agents.budgets(agents.root) == [("10.00", "0.00", "4.00")]
                tg.cancel_scope.cancel()
        with anyio.fail_after(5):
            while (await agents.budgets(agents.root))[0][2] != "0.00":
                await anyio.sleep(0.01)
        still = await agent.call_tool("search", {"query": "q"}, meta=meta(agents.root))  # the gateway carries on
    assert not still.is_error
    assert await agents.budgets(agents.root) == [("10.00", "4.00", "0.00")]  # search is free in this cost file


async def test_an_unreachable_verifier_denies_and_nothing_reaches_the_upstream(agents: Agents) -> None:
    upstream = Upstream()
    nobody = AsyncClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    async with nobody, gateway(Guard(nobody, CostTable(COSTS)), upstream, "auto") as agent:
        result = await agent.call_tool("search", {"query": "q"}, meta=meta(agents.root))
    assert text(result).startswith("agentcaps denied store_unavailable:")
    assert upstream.ran == []


# -- `agentcaps gateway` as a process ----------------------------------------------------------------------


def gateway_process(live: Live, costs_file: Path, *extra: str, upstream: str | None = None) -> StdioServerParameters:
    upstream = upstream or f"{sys.executable} -m app.mcp.example_server"
    args = ["-m", "app.cli", "gateway", "--upstream", upstream, "--costs", str(costs_file), "--verifier", live.url]
    return StdioServerParameters(command=sys.executable, args=[*args, *extra], env=dict(os.environ))


async def test_agentcaps_gateway_over_stdio_with_a_real_service(minted: Live, costs_file: Path) -> None:
    async with Client(gateway_process(minted, costs_file, "--token", minted.buyer)) as agent:
        listed = await agent.list_tools()  # no token of its own: the gateway's --token
        paid = await agent.call_tool("pay", {"amount": 2.5, "to": "shop"})
        refused = await agent.call_tool("pay", {"amount": 3.5, "to": "shop"})
        own = await agent.call_tool("search", {"query": "q"}, meta=meta(minted.researcher))
    assert [t.name for t in listed.tools] == ["pay"]
    assert not paid.is_error, paid
    assert text(refused).startswith("agentcaps denied arg_mismatch:")
    assert not own.is_error
    assert minted.spent(minted.buyer) == ["2.51", "2.50"]


async def test_the_upstream_inherits_the_environment_but_not_the_gateways_credentials(
    minted: Live, costs_file: Path, tmp_path: Path
) -> None:
    server = tmp_path / "env_server.py"
    server.write_text(
        "import os\n"
        "from mcp.server.mcpserver import MCPServer\n"
        "server = MCPServer('env')\n"
        "@server.tool()\n"
        "def env(name: str) -> str:\n"
        "    return os.environ.get(name, '(unset)')\n"
        "server.run('stdio')\n"
    )
    params = gateway_process(minted, costs_file, upstream=f"{sys.executable} {server}")
    params.env = {
        **os.environ,
        "AGENTCAPS_TOKEN": minted.root,
        "AGENTCAPS_VERIFIER_KEY": TOOLS_SRV_KEY,
        "DEMO_SETTING": "on",
    }
    async with Client(params) as agent:
        token = await agent.call_tool("env", {"name": "AGENTCAPS_TOKEN"})
        key = await agent.call_tool("env", {"name": "AGENTCAPS_VERIFIER_KEY"})
        setting = await agent.call_tool("env", {"name": "DEMO_SETTING"})
    assert (text(token), text(key), text(setting)) == ("(unset)", "(unset)", "on")


async def test_a_gateway_with_its_verifier_key_verifies_as_its_audience(costs_file: Path, tmp_path: Path) -> None:
    """A service with AGENTCAPS_VERIFIER_KEYS: the key, not the gateway's word, names the audience."""
    key = TOOLS_SRV_KEY
    service = start_service("memory://", tmp_path, env={"AGENTCAPS_VERIFIER_KEYS": f"tools-srv:{key}"})
    try:

        def minted_for(audience: str) -> Live:
            body = {"subject": "orchestrator", "budget": {"amount": "10.00", "currency": "USD"}, "audience": [audience]}
            root = httpx.post(service.url + "/v1/tokens", headers=service.admin(), json=body, timeout=5).json()["token"]
            return Live(service, root, *delegate(root))

        ours, theirs = minted_for("tools-srv"), minted_for("payments-srv")

        async def search(live: Live, *extra: str, env: dict[str, str] | None = None) -> CallToolResult:
            params = gateway_process(live, costs_file, "--token", live.researcher, *extra)
            params.env = {**os.environ, **(env or {})}
            async with Client(params) as agent:
                return await agent.call_tool("search", {"query": "q"})

        allowed = await search(ours, "--verifier-key", key)
        from_env = await search(ours, env={"AGENTCAPS_VERIFIER_KEY": key})
        other_audience = await search(theirs, "--verifier-key", key)
        wrong_key = await search(ours, "--verifier-key", "x" * 34)
        no_key = await search(ours)
        spent = ours.spent(ours.researcher)
    finally:
        service.process.terminate()
        service.process.wait(10)
    assert not allowed.is_error and not from_env.is_error, (allowed, from_env)
    assert text(other_audience).startswith("agentcaps denied audience_mismatch:"), text(other_audience)
    for refused in (wrong_key, no_key):
        assert refused.is_error and text(refused).startswith("agentcaps denied unauthorized:"), text(refused)
    assert spent == ["0.02", "0.02"]  # the two allowed searches, at the demo's 0.01 each, and nothing else


def test_the_gateway_exits_when_the_upstream_does(minted: Live, costs_file: Path) -> None:
    params = gateway_process(minted, costs_file, upstream=f"{sys.executable} -c 'import time; time.sleep(0.5)'")
    started = time.monotonic()
    with subprocess.Popen([params.command, *params.args], stdin=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        try:
            process.wait(timeout=20)  # stdin stays open: the agent is still there
        finally:
            process.kill()
        assert process.stderr is not None
        err = process.stderr.read()
    assert process.returncode == 1 and b"the upstream MCP server exited" in err
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--upstream", "x", "--hold-ttl", "0"], "--hold-ttl must be 1 to 86400 seconds"),
        (["--upstream", ""], "--upstream is empty"),
        (["--upstream", "'unclosed"], "No closing quotation"),
        (["--upstream", "x", "--costs", "/nonexistent/costs.json"], "cost file"),
    ],
)
def test_gateway_usage_errors_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from app.mcp.gateway import main

    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_gateway_needs_exactly_one_upstream(capsys: pytest.CaptureFixture[str]) -> None:
    from app.mcp.gateway import main

    for args in ([], ["--upstream", "x", "--upstream-url", "http://h/mcp"]):
        with pytest.raises(SystemExit) as exit:
            main(args)
        assert exit.value.code == 2


def test_gateway_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.mcp.gateway import parser

    args = parser().parse_args(["--upstream", "x"])
    assert (args.verifier, args.audience, args.token, args.hold_ttl) == ("http://127.0.0.1:8470", None, None, 300)
    monkeypatch.setenv("AGENTCAPS_URL", "http://agentcaps:9000")
    monkeypatch.setenv("AGENTCAPS_AUDIENCE", "tools-srv")
    monkeypatch.setenv("AGENTCAPS_TOKEN", "tok")
    args = parser().parse_args(["--upstream", "x"])
    assert (args.verifier, args.audience, args.token) == ("http://agentcaps:9000", "tools-srv", "tok")


def test_the_public_names_of_app_mcp() -> None:
    import app.mcp

    assert sorted(app.mcp.__all__) == [
        "Admitted",
        "COST_KEY",
        "CostError",
        "CostTable",
        "DENIAL_KEY",
        "Decider",
        "Gateway",
        "Guard",
        "LocalDecider",
        "TOKEN_KEY",
        "denial",
        "relay",
    ]
    # The names before the rename still import.
    assert (app.mcp.Verifier, app.mcp.LocalVerifier) == (app.mcp.Decider, app.mcp.LocalDecider)
    assert (app.mcp.TOKEN_KEY, app.mcp.COST_KEY, app.mcp.DENIAL_KEY) == (
        "agentcaps/token",
        "agentcaps/cost",
        "agentcaps/denial",
    )


async def test_every_method_beyond_tools_is_checked_as_a_tool_named_by_the_method(agents: Agents) -> None:
    """Before: resources, prompts and completions passed through the gateway with no token at all."""
    upstream = Upstream()
    reader = str(Token.parse(agents.root).attenuate(to="reader", tools=["search", "resources/read"]))
    costs = CostTable({"resources/read": {"amount": "0.25", "currency": "USD"}})
    prompt = PromptReference(type="ref/prompt", name="review")

    def through(token: str | None) -> Client:
        return gateway(Guard(LocalDecider(agents.authority), costs, default_token=token), upstream, "auto")

    async def refused(code: str, attempt: Callable[[], Awaitable[object]]) -> None:
        with pytest.raises(MCPError, match=f"^agentcaps denied {code}:"):
            await attempt()

    async with through(None) as anonymous:
        await refused("invalid_token", lambda: anonymous.read_resource("docs://readme"))
        await refused("invalid_token", lambda: anonymous.get_prompt("review", {"code": "x"}))
        await refused("invalid_token", lambda: anonymous.complete(prompt, {"name": "code", "value": "x"}))
        assert (await anonymous.list_resources()).resources == []
    async with through(agents.researcher) as researcher:  # tools in search
        assert (await researcher.list_resources()).resources == []
        assert (await researcher.list_resource_templates()).resource_templates == []
        assert (await researcher.list_prompts()).prompts == []
        await refused("tool_not_allowed", lambda: researcher.read_resource("docs://readme"))
        await refused("tool_not_allowed", lambda: researcher.get_prompt("review", {"code": "x"}))
    async with through(reader) as allowed:  # tools in search,resources/read
        listed = await allowed.list_resources()
        readme = await allowed.read_resource("docs://readme")
        assert (await allowed.list_prompts()).prompts == []
        await refused("tool_not_allowed", lambda: allowed.get_prompt("review", {"code": "x"}))
    assert [str(r.uri) for r in listed.resources] == ["docs://readme"]
    assert getattr(readme.contents[0], "text", None) == "the upstream's readme"
    assert await agents.budgets(reader) == [("10.00", "0.25", "0.00")]  # the one read, at its price


@asynccontextmanager
async def task_upstream(finish: anyio.Event, cost: str) -> AsyncIterator[Any]:
    """A raw upstream that runs each tools/call as an MCP task (2025-11-25): created at once, and its result,
    which reports what the work cost, answered to tasks/result once `finish` is set."""
    to_upstream, upstream_reads = anyio.create_memory_object_stream[SessionMessage](16)
    upstream_says, from_upstream = anyio.create_memory_object_stream[SessionMessage | Exception](16)

    async def answer(id: Any, result: dict[str, Any], wait: anyio.Event | None = None) -> None:
        if wait is not None:
            await wait.wait()
        await upstream_says.send(SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=id, result=result)))

    async def serve() -> None:
        async for item in upstream_reads:
            message = item.message
            if isinstance(message, JSONRPCRequest) and message.method == "tools/call":
                now = "2026-01-01T00:00:00Z"
                task = {"taskId": "t1", "status": "working", "createdAt": now, "lastUpdatedAt": now, "ttl": 60000}
                tg.start_soon(answer, message.id, {"task": task})
            elif isinstance(message, JSONRPCRequest) and message.method == "tasks/result":
                done = {"content": [{"type": "text", "text": "done"}]}
                tg.start_soon(
                    answer, message.id, done | {"_meta": {COST_KEY: {"amount": cost, "currency": "USD"}}}, finish
                )

    async with to_upstream, upstream_reads, upstream_says, from_upstream, anyio.create_task_group() as tg:
        tg.start_soon(serve)
        yield from_upstream, to_upstream
        tg.cancel_scope.cancel()


async def test_a_task_is_settled_on_its_final_result_not_when_it_is_created(agents: Agents) -> None:
    """Before: the call was settled at its full cost when the task was created, before any work, and the cost
    its final result reported was never read."""
    finish = anyio.Event()
    guard = Guard(LocalDecider(agents.authority), CostTable({"crunch": {"amount": "4", "currency": "USD"}}))

    def request(id: int, method: str, params: dict[str, Any]) -> SessionMessage:
        return SessionMessage(JSONRPCRequest(jsonrpc="2.0", id=id, method=method, params=params))

    with anyio.fail_after(10):
        async with Gateway(guard, cast(Transport, task_upstream(finish, "1.50"))) as (read, write):
            task = {"name": "crunch", "arguments": {}, "task": {"ttl": 60000}, "_meta": meta(agents.root)}
            await write.send(request(1, "tools/call", task))
            created = (await read.receive()).message
            held = await agents.budgets(agents.root)
            await write.send(request(2, "tasks/get", {"taskId": "t1"}))  # no token: refused
            anonymous = (await read.receive()).message
            await write.send(request(3, "tasks/result", {"taskId": "t1", "_meta": meta(agents.root)}))
            finish.set()
            final = (await read.receive()).message
    assert isinstance(created, JSONRPCResponse) and created.result["task"]["taskId"] == "t1"
    assert held == [("10.00", "0.00", "4.00")]
    assert isinstance(anonymous, JSONRPCError) and anonymous.error.message.startswith("agentcaps denied invalid_token")
    assert isinstance(final, JSONRPCResponse) and final.result["content"][0]["text"] == "done"
    assert await agents.budgets(agents.root) == [("10.00", "1.50", "0.00")]


@asynccontextmanager
async def answering_twice() -> AsyncIterator[Any]:
    """A raw upstream that answers each tools/call twice."""
    to_upstream, upstream_reads = anyio.create_memory_object_stream[SessionMessage](16)
    upstream_says, from_upstream = anyio.create_memory_object_stream[SessionMessage | Exception](16)

    async def serve() -> None:
        async for item in upstream_reads:
            if isinstance(item.message, JSONRPCRequest):
                for n in range(2):
                    result = {"content": [{"type": "text", "text": f"answer {n}"}]}
                    await upstream_says.send(
                        SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=item.message.id, result=result))
                    )

    async with to_upstream, upstream_reads, upstream_says, from_upstream, anyio.create_task_group() as tg:
        tg.start_soon(serve)
        yield from_upstream, to_upstream
        tg.cancel_scope.cancel()


async def test_a_second_answer_to_one_call_is_dropped(agents: Agents) -> None:
    """One call, one result: a second answer with the same id would be a result nobody paid for."""
    guard = Guard(LocalDecider(agents.authority), CostTable({"work": {"amount": "2", "currency": "USD"}}))
    with anyio.fail_after(10):
        async with Gateway(guard, cast(Transport, answering_twice())) as (read, write):
            params = {"name": "work", "arguments": {}, "_meta": meta(agents.root)}
            await write.send(SessionMessage(JSONRPCRequest(jsonrpc="2.0", id=1, method="tools/call", params=params)))
            first = (await read.receive()).message
            await write.send(SessionMessage(JSONRPCRequest(jsonrpc="2.0", id="after", method="ping")))
            second = (await read.receive()).message
    assert isinstance(first, JSONRPCResponse) and first.result["content"][0]["text"] == "answer 0"
    assert isinstance(second, JSONRPCResponse) and second.id == "after"  # the ping's answer; no "answer 1" before it
    assert await agents.budgets(agents.root) == [("10.00", "2.00", "0.00")]
