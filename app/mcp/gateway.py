"""`agentcaps gateway`: an MCP proxy on stdio in front of a server you do not own (SPEC §7).

Every tools/call and tools/list passes through the same Guard as a guarded server; tools, resources and
prompts are otherwise forwarded to the upstream server as they are. The upstream is a command (run without a
shell, inheriting the environment) or a streamable-HTTP URL.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any, cast

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server
from mcp_types import RequestParamsMeta

from app.mcp.costs import CostTable
from app.mcp.guard import Guard
from app.sdk.client import AsyncClient

_RESERVED = "io.modelcontextprotocol/"  # protocol keys the upstream client sets itself


def _caller_meta(meta: Any) -> RequestParamsMeta | None:
    """The caller's own `_meta` keys, to pass on (the guard has already taken the token out)."""
    items = dict(meta or {}) if isinstance(meta, Mapping) else {}
    kept = {k: v for k, v in items.items() if not k.startswith(_RESERVED)}
    return cast(RequestParamsMeta, kept) if kept else None


def build(upstream: Client, guard: Guard, name: str = "agentcaps-gateway") -> Server[Any]:
    """A server that forwards to `upstream`, guarded by `guard`."""

    async def list_tools(ctx: Any, params: Any) -> Any:
        return await upstream.list_tools(cursor=getattr(params, "cursor", None))

    async def call_tool(ctx: Any, params: Any) -> Any:
        return await upstream.call_tool(params.name, params.arguments, meta=_caller_meta(params.meta))

    async def list_resources(ctx: Any, params: Any) -> Any:
        return await upstream.list_resources(cursor=getattr(params, "cursor", None))

    async def read_resource(ctx: Any, params: Any) -> Any:
        return await upstream.read_resource(str(params.uri))

    async def list_prompts(ctx: Any, params: Any) -> Any:
        return await upstream.list_prompts(cursor=getattr(params, "cursor", None))

    async def get_prompt(ctx: Any, params: Any) -> Any:
        return await upstream.get_prompt(params.name, params.arguments)

    server: Server[Any] = Server(
        name,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )
    server.middleware.append(guard)
    return server


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentcaps gateway", description=__doc__.splitlines()[0] if __doc__ else None)
    upstream = p.add_mutually_exclusive_group(required=True)
    upstream.add_argument("--upstream", metavar="CMD ARGS", help="the MCP server to run, split as a shell would")
    upstream.add_argument("--upstream-url", metavar="URL", help="a streamable-HTTP MCP server")
    p.add_argument("--costs", metavar="FILE", help="JSON: tool -> {amount|from_arg, currency}")
    p.add_argument("--verifier", default=os.environ.get("AGENTCAPS_URL", "http://127.0.0.1:8470"))
    p.add_argument("--verifier-key", default=os.environ.get("AGENTCAPS_VERIFIER_KEY"))
    p.add_argument("--audience", default=os.environ.get("AGENTCAPS_AUDIENCE"))
    p.add_argument("--token", default=os.environ.get("AGENTCAPS_TOKEN"), help="for requests that carry none")
    p.add_argument("--hold-ttl", type=int, default=300, metavar="SECONDS")
    return p


async def serve(args: argparse.Namespace) -> None:
    target: StdioServerParameters | str
    if args.upstream:
        command = shlex.split(args.upstream)
        if not command:
            raise ValueError("--upstream is empty")
        target = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    else:
        target = args.upstream_url
    costs = CostTable.load(args.costs)
    async with AsyncClient(args.verifier, verifier_key=args.verifier_key) as verifier, Client(target) as upstream:
        guard = Guard(verifier, costs, args.audience, args.token, args.hold_ttl)
        server = build(upstream, guard)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not 1 <= args.hold_ttl <= 86400:
        print("agentcaps gateway: --hold-ttl must be 1 to 86400 seconds", file=sys.stderr)
        return 2
    try:
        anyio.run(serve, args)
    except (ValueError, OSError) as e:
        print(f"agentcaps gateway: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
