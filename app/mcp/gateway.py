"""`agentcaps gateway`: an MCP proxy in front of a server you do not own (docs/mcp.md), the command line around
`app.mcp.relay`: the agent on stdio (or many agents on streamable HTTP with `--listen`), the upstream a command
(split as a shell would, run without one, inheriting the environment but for every `AGENTCAPS_*` variable) or a
streamable-HTTP URL (the relay stamps the per-message HTTP headers the agent's MCP client would have sent).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import math
import os
import shlex
import stat
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import cast

import anyio

from app.mcp.costs import CostTable
from app.mcp.guard import Guard
from app.mcp.listen import MAX_CONNECTIONS, Sessions, address, listen
from app.mcp.relay import relay
from app.mcp.sdk import (
    Client,
    StdioServerParameters,
    Transport,
    TransportStreams,
    stdio_client,
    stdio_server,
    streamable_http_client,
)
from app.sdk.client import AsyncClient

log = logging.getLogger("agentcaps.mcp.gateway")


def upstream_transport(args: argparse.Namespace) -> tuple[Transport, bool]:
    """The upstream named on the command line, and whether it is on streamable HTTP."""
    if args.upstream_url:
        return streamable_http_client(args.upstream_url), True
    command = shlex.split(args.upstream)
    # Nothing of agentcaps' configuration reaches the upstream: the gateway's token and verifier key, and a
    # service's admin or master keys that happen to be set where the gateway runs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCAPS_")}
    return stdio_client(StdioServerParameters(command=command[0], args=command[1:], env=env)), False


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentcaps gateway",
        description="An MCP proxy (on stdio, or over HTTP with --listen) that checks every request with agentcaps"
        " before the upstream sees it.",
    )
    upstream = p.add_mutually_exclusive_group(required=True)
    upstream.add_argument("--upstream", metavar="CMD ARGS", help="the MCP server to run (split as a shell would)")
    upstream.add_argument("--upstream-url", metavar="URL", help="a streamable-HTTP MCP server")
    p.add_argument("--costs", metavar="FILE", help='JSON: {"tool": {"amount" | "from_arg": ..., "currency": ...}}')
    p.add_argument(
        "--verifier",
        metavar="URL",
        default=os.environ.get("AGENTCAPS_URL") or "http://127.0.0.1:8470",
        help="the agentcaps service (default: $AGENTCAPS_URL, else http://127.0.0.1:8470)",
    )
    p.add_argument(
        "--verifier-key",
        metavar="KEY",
        default=os.environ.get("AGENTCAPS_VERIFIER_KEY"),
        help="this gateway's verifier key, if the service requires one (default: $AGENTCAPS_VERIFIER_KEY)",
    )
    p.add_argument(
        "--audience",
        metavar="NAME",
        default=os.environ.get("AGENTCAPS_AUDIENCE"),
        help="this gateway's audience name (default: $AGENTCAPS_AUDIENCE)",
    )
    p.add_argument(
        "--token",
        metavar="TOKEN",
        default=os.environ.get("AGENTCAPS_TOKEN"),
        help="the token for requests that carry none (default: $AGENTCAPS_TOKEN)",
    )
    p.add_argument("--hold-ttl", metavar="SECONDS", type=int, default=300, help="how long a call's cost is held")
    p.add_argument(
        "--approval-wait",
        metavar="SECONDS",
        type=float,
        default=20,
        help="0 to 60: how long a call that needs a human's approval waits for it before it is denied "
        "approval_required (retried once approved, it runs) (default 20)",
    )
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="serve many agents over streamable HTTP at http://HOST:PORT/mcp instead of one on stdio",
    )
    p.add_argument(
        "--list-tools",
        action="store_true",
        help="list the upstream's tools and print a cost file with each at 0.00 USD to fill in "
        "(--list-tools > costs.json), then exit",
    )
    p.add_argument(
        "--max-agents",
        metavar="N",
        type=int,
        default=MAX_CONNECTIONS,
        help=f"with --listen: agent connections served at once, each with its own upstream (default {MAX_CONNECTIONS})",
    )
    return p


class _StdinLines:
    """The agent's lines on stdin, read without a worker thread: a thread blocked in read() cannot be cancelled,
    and the gateway must stop when the upstream exits even though the agent keeps its end open."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer = fd, b""

    def __aiter__(self) -> _StdinLines:
        return self

    async def __anext__(self) -> str:
        while b"\n" not in self.buffer:
            try:
                await anyio.wait_readable(self.fd)
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            except OSError:  # closed, or unreadable (/dev/null cannot be polled): the agent hung up
                chunk = b""
            if not chunk:
                if not self.buffer:
                    raise StopAsyncIteration
                self.buffer += b"\n"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode("utf-8", errors="replace") + "\n"


@asynccontextmanager
async def _agent_stdio() -> AsyncIterator[TransportStreams]:
    """The agent's side: MCP on this process's stdin and stdout, stopped (not drained) when the relay ends."""
    fd = sys.stdin.fileno()  # main() made sure there is one
    lines = None
    blocking = os.get_blocking(fd)
    if sys.platform != "win32" and not stat.S_ISREG(os.fstat(fd).st_mode):  # a file has no readiness; it ends
        lines = cast("anyio.AsyncFile[str]", _StdinLines(fd))
        os.set_blocking(fd, False)
    try:
        with anyio.CancelScope() as stop:
            async with stdio_server(stdin=lines) as streams:
                try:
                    yield streams
                finally:
                    stop.cancel()  # stdio_server would otherwise wait for the agent to close stdin
    finally:
        os.set_blocking(fd, blocking)


def _stdin_open() -> bool:
    try:
        os.fstat(sys.stdin.fileno())
    except (AttributeError, ValueError, OSError):  # closed before the gateway started: sys.stdin is None
        return False
    return True


def _not_dumpable() -> None:
    """Keep other processes of this user (an upstream among them) from reading this one's memory and environment
    (ptrace, /proc/PID/mem, /proc/PID/environ), where the token and verifier key are. Linux only; a no-op else."""
    if sys.platform.startswith("linux"):
        PR_SET_DUMPABLE = 4
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


async def serve(args: argparse.Namespace, costs: CostTable) -> bool:
    """Serve the agent on stdio until it hangs up (False) or the upstream does (True); with --listen, serve
    agents over HTTP until interrupted (False)."""
    if args.listen is None and not _stdin_open():
        return False  # no agent at all: it has hung up already
    async with AsyncClient(args.verifier, verifier_key=args.verifier_key) as verifier:
        guard = Guard(verifier, costs, args.audience, args.token, args.hold_ttl, args.approval_wait)
        if args.listen is not None:
            await listen(Sessions(guard, lambda: upstream_transport(args), args.max_agents), args.listen)
            return False
        upstream, http = upstream_transport(args)
        async with upstream as upstream_streams, _agent_stdio() as agent_streams:
            return await relay(guard, agent_streams, upstream_streams, http=http)


async def upstream_tools(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Every tool the upstream lists, as (name, first line of its description), asked directly: through the
    gateway, a listing without a token is empty."""
    transport, _ = upstream_transport(args)
    tools: list[tuple[str, str]] = []
    async with Client(transport) as upstream:
        cursor: str | None = None
        while True:
            page = await upstream.list_tools(cursor=cursor)
            tools += [(tool.name, (tool.description or "").strip().partition("\n")[0]) for tool in page.tools]
            cursor = page.next_cursor
            if cursor is None:
                return tools


def cost_file_skeleton(names: Sequence[str]) -> str:
    """A cost file with every tool free, one per line, for the operator to put prices in (or delete lines)."""
    lines = [f'  {json.dumps(name)}: {{"amount": "0.00", "currency": "USD"}}' for name in names]
    return "{\n" + ",\n".join(lines) + "\n}" if lines else "{}"


def list_tools(args: argparse.Namespace) -> int:
    """`--list-tools`: the names and descriptions on stderr, for the operator to read; the cost file on stdout, so
    that `> costs.json` writes just the file."""
    try:
        tools = anyio.run(upstream_tools, args)
    except Exception as e:  # the upstream hung up or is not an MCP server: one line, not a task group's traceback
        while isinstance(e, ExceptionGroup) and e.exceptions:
            e = e.exceptions[0]
        if isinstance(e, OSError):
            raise e from None  # the command could not start: a usage error, as for the gateway itself
        print(f"agentcaps gateway: could not list the upstream's tools: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    width = max((len(name) for name, _ in tools), default=0)
    for name, description in tools:
        print(f"{name:<{width}}  {description}".rstrip(), file=sys.stderr)
    print(cost_file_skeleton([name for name, _ in tools]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`agentcaps gateway ...`: 0 when the agent hangs up, 1 when the upstream does, 2 for a usage error.
    With --list-tools: 0 once listed, 1 when the upstream would not list its tools."""
    _not_dumpable()
    args = parser().parse_args(argv)
    try:
        if not 1 <= args.hold_ttl <= 86400:
            raise ValueError("--hold-ttl must be 1 to 86400 seconds")
        if not (math.isfinite(args.approval_wait) and 0 <= args.approval_wait <= 60):
            raise ValueError(f"--approval-wait must be 0 to 60 seconds, got {args.approval_wait}")
        if args.upstream is not None and not shlex.split(args.upstream):
            raise ValueError("--upstream is empty")
        costs = CostTable.load(args.costs)
        if args.listen is not None:
            address(args.listen)
        if args.max_agents < 1:
            raise ValueError("--max-agents must be at least 1")
    except ValueError as e:
        print(f"agentcaps gateway: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="agentcaps gateway: %(message)s", stream=sys.stderr)
    try:
        if args.list_tools:
            return list_tools(args)
        upstream_gone = anyio.run(serve, args, costs)
    except OSError as e:  # the upstream command could not be started
        print(f"agentcaps gateway: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if upstream_gone:
        print("agentcaps gateway: the upstream MCP server exited", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
