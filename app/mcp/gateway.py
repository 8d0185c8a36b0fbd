"""`agentcaps gateway`: an MCP proxy on stdio in front of a server you do not own (SPEC §7).

The gateway relays JSON-RPC messages between the agent and the upstream server as they are: the handshake (or
2026 discovery) and so the upstream's own capabilities and instructions, resources, prompts, completions,
progress, logging, change notifications, and the upstream's requests to the agent (sampling, elicitation,
roots), ids unchanged. It changes three things, with the same Guard as a guarded server:

- the token is taken out of `_meta` of everything the agent sends (a bearer credential never reaches a tool);
- `tools/list` answers are filtered to the tools the token allows;
- a `tools/call` is admitted (a hold) before it is forwarded, and never forwarded when denied; the upstream's
  answer concludes it (settle, or release on an error), and the agent's cancellation releases it.

The upstream is a command (split as a shell would, run without one, inheriting the environment but for the
gateway's own agentcaps credentials) or a streamable-HTTP URL (the relay stamps the per-message HTTP headers
the agent's MCP client would have sent).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import stat
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, cast

import anyio
from anyio.abc import TaskGroup
from mcp.client import Transport
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params
from mcp.shared.memory import create_client_server_memory_streams
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import (
    INTERNAL_ERROR,
    PROTOCOL_VERSION_META_KEY,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

if TYPE_CHECKING:  # the SDK's own alias of a transport's streams, from a private module: for the types only,
    from mcp.client._transport import TransportStreams  # so an SDK update that moves it cannot stop the gateway

from app.mcp.costs import CostTable
from app.mcp.guard import Admitted, Guard
from app.sdk.client import AsyncClient

log = logging.getLogger("agentcaps.mcp.gateway")
# The gateway's own credentials: the upstream inherits the environment, but not these.
_OWN_SECRETS = ("AGENTCAPS_TOKEN", "AGENTCAPS_VERIFIER_KEY")
_SEVERED = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream)


@dataclass
class _Call:
    """A tools/call between the agent and the upstream: admitted once its hold is taken."""

    admitted: Admitted | None = None
    cancelled: bool = False


@dataclass
class _HttpStamp:
    """The HTTP headers the agent's MCP client attaches to each message on streamable HTTP (not on stdio), for
    the upstream to route and check: protocol version, and at 2026 the method, name and `Mcp-Param-*` mirrors."""

    version: str | None = None  # the handshake-era version, once `initialize` is answered
    initialize_ids: set[RequestId] = field(default_factory=set)
    param_headers: dict[str, dict[tuple[str, ...], str]] = field(default_factory=dict)

    def headers(self, message: JSONRPCMessage) -> ClientMessageMetadata | None:
        if not isinstance(message, JSONRPCRequest | JSONRPCNotification):
            return None  # answers to the upstream's requests ride the transport's own headers
        if isinstance(message, JSONRPCRequest) and message.method == "initialize":
            self.initialize_ids.add(message.id)
            return None
        params = message.params or {}
        meta = params.get("_meta")
        modern = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, Mapping) else None
        if modern not in MODERN_PROTOCOL_VERSIONS:
            return ClientMessageMetadata(headers={MCP_PROTOCOL_VERSION_HEADER: self.version}) if self.version else None
        headers = {MCP_PROTOCOL_VERSION_HEADER: str(modern), MCP_METHOD_HEADER: message.method}
        name = params.get(NAME_BEARING_METHODS.get(message.method, ""))
        if isinstance(name, str):
            headers[MCP_NAME_HEADER] = encode_header_value(name)
        arguments = params.get("arguments")
        if message.method == "tools/call" and isinstance(name, str) and isinstance(arguments, Mapping):
            headers.update(mcp_param_headers(self.param_headers.get(name, {}), arguments))
        return ClientMessageMetadata(headers=headers)

    def learn(self, message: JSONRPCMessage, listing: bool) -> None:
        """The negotiated version from `initialize`; the `Mcp-Param-*` maps from a full (unfiltered) listing."""
        if not isinstance(message, JSONRPCResponse):
            return
        if message.id in self.initialize_ids:
            self.initialize_ids.discard(message.id)
            version = message.result.get("protocolVersion")
            self.version = version if isinstance(version, str) else None
        if listing:
            for tool in message.result.get("tools") or []:
                schema = tool.get("inputSchema") if isinstance(tool, Mapping) else None
                if isinstance(tool, Mapping) and find_invalid_x_mcp_header(schema) is None:
                    self.param_headers[str(tool.get("name"))] = x_mcp_header_map(schema)


class _Relay:
    def __init__(self, guard: Guard, agent: TransportStreams, upstream: TransportStreams, http: bool) -> None:
        self.guard = guard
        self.agent_read, self.agent_write = agent
        self.upstream_read, self.upstream_write = upstream
        self.stamp = _HttpStamp() if http else None
        self.calls: dict[RequestId, _Call] = {}
        self.listings: dict[RequestId, str | None] = {}  # tools/list id -> the token it was asked with
        self.upstream_gone = False

    async def run(self) -> bool:
        """Relay until either side hangs up; True if the upstream did."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._from_upstream, tg)
                await self._from_agent(tg)
                tg.cancel_scope.cancel()  # the agent is gone: so is the gateway
            return self.upstream_gone
        finally:
            for call in self.calls.values():  # calls in flight when either side went away: nothing charged
                if call.admitted is not None:
                    await self.guard.abandon(call.admitted)

    # -- agent -> upstream -----------------------------------------------------------------------------
    async def _from_agent(self, tg: TaskGroup) -> None:
        async for item in self.agent_read:
            if isinstance(item, Exception):
                log.warning("the agent sent something that is not JSON-RPC (%s)", type(item).__name__)
                continue
            message = item.message
            if isinstance(message, JSONRPCRequest | JSONRPCNotification) and message.params:
                token, params = self.guard.take_token(message.params)
                message = message.model_copy(update={"params": params})
            else:
                token, _ = self.guard.take_token(None)
            if isinstance(message, JSONRPCRequest) and message.method == "tools/call":
                self.calls[message.id] = _Call()
                tg.start_soon(self._call, message, token, self.calls[message.id])
                continue
            if isinstance(message, JSONRPCRequest) and message.method == "tools/list":
                self.listings[message.id] = token
            elif isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
                cancelled = cancelled_request_id_from_params(message.params)
                pending = self.calls.pop(cancelled, None) if cancelled is not None else None
                if pending is not None:
                    pending.cancelled = True
                    if pending.admitted is not None:
                        tg.start_soon(self.guard.abandon, pending.admitted)
            await self._to_upstream(message)

    async def _call(self, message: JSONRPCRequest, token: str | None, call: _Call) -> None:
        params = message.params or {}
        try:
            admitted = await self.guard.admit(token, params.get("name"), params.get("arguments") or {})
        except MCPError as e:
            self.calls.pop(message.id, None)
            await self._to_agent(JSONRPCError(jsonrpc="2.0", id=message.id, error=e.error))
            return
        if not isinstance(admitted, Admitted):  # denied: the upstream never hears of it
            self.calls.pop(message.id, None)
            if not call.cancelled:
                result = admitted.model_dump(by_alias=True, mode="json", exclude_none=True)
                await self._to_agent(JSONRPCResponse(jsonrpc="2.0", id=message.id, result=result))
            return
        call.admitted = admitted
        if call.cancelled:
            await self.guard.abandon(admitted)
            return
        try:
            await self._to_upstream(message)
        except _SEVERED:
            self.calls.pop(message.id, None)
            await self.guard.abandon(admitted)
            error = ErrorData(code=INTERNAL_ERROR, message="the upstream MCP server is gone")
            await self._to_agent(JSONRPCError(jsonrpc="2.0", id=message.id, error=error))

    # -- upstream -> agent -----------------------------------------------------------------------------
    async def _from_upstream(self, tg: TaskGroup) -> None:
        async for item in self.upstream_read:
            if isinstance(item, Exception):
                log.warning("the upstream sent something that is not JSON-RPC (%s)", type(item).__name__)
                continue
            message = item.message
            call: _Call | None = None
            listing, token = False, None
            if isinstance(message, JSONRPCResponse | JSONRPCError) and message.id is not None:
                call = self.calls.pop(message.id, None)
                listing = message.id in self.listings
                token = self.listings.pop(message.id, None)
            if self.stamp is not None:
                self.stamp.learn(message, listing)
            if call is not None and call.admitted is not None:
                tg.start_soon(self._conclude, call.admitted, message)
                continue
            if listing and isinstance(message, JSONRPCResponse):
                message = message.model_copy(update={"result": self.guard.filter_listing(message.result, token)})
            await self._to_agent(message)
        self.upstream_gone = True
        tg.cancel_scope.cancel()

    async def _conclude(self, admitted: Admitted, message: JSONRPCMessage) -> None:
        # Settled (or released) before the agent sees the answer, so its next call sees the new balance.
        if isinstance(message, JSONRPCResponse):
            await self.guard.conclude(admitted, message.result)
        else:
            await self.guard.abandon(admitted)
        await self._to_agent(message)

    # -- the two wires ---------------------------------------------------------------------------------
    async def _to_upstream(self, message: JSONRPCMessage) -> None:
        metadata = self.stamp.headers(message) if self.stamp is not None else None
        await self.upstream_write.send(SessionMessage(message, metadata))

    async def _to_agent(self, message: JSONRPCMessage) -> None:
        try:
            await self.agent_write.send(SessionMessage(message))
        except _SEVERED:
            log.debug("the agent is gone; dropped %s", type(message).__name__)


async def relay(guard: Guard, agent: TransportStreams, upstream: TransportStreams, *, http: bool = False) -> bool:
    """Relay between an agent's streams and an upstream's until either side closes; True if the upstream did.
    `http`: the upstream is on streamable HTTP, whose messages carry headers that stdio does not."""
    return await _Relay(guard, agent, upstream, http).run()


class Gateway:
    """The gateway as an MCP client transport, in-process: `Client(Gateway(guard, upstream))` talks to the
    upstream transport (`stdio_client(...)`, `streamable_http_client(...)`) through the guard."""

    def __init__(self, guard: Guard, upstream: Transport, *, http: bool = False) -> None:
        self.guard, self.upstream, self.http = guard, upstream, http
        self._cm: AbstractAsyncContextManager[TransportStreams] | None = None

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[TransportStreams]:
        async with (
            self.upstream as upstream,
            create_client_server_memory_streams() as (agent_side, gateway_side),
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(_Relay(self.guard, gateway_side, upstream, self.http).run)
            try:
                yield agent_side
            finally:
                tg.cancel_scope.cancel()

    async def __aenter__(self) -> TransportStreams:
        self._cm = self._connect()
        return await self._cm.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._cm is not None:
            await self._cm.__aexit__(exc_type, exc, tb)
            self._cm = None


def upstream_transport(args: argparse.Namespace) -> tuple[Transport, bool]:
    """The upstream named on the command line, and whether it is on streamable HTTP."""
    if args.upstream_url:
        return streamable_http_client(args.upstream_url), True
    command = shlex.split(args.upstream)
    env = {k: v for k, v in os.environ.items() if k not in _OWN_SECRETS}
    return stdio_client(StdioServerParameters(command=command[0], args=command[1:], env=env)), False


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentcaps gateway",
        description="An MCP proxy on stdio that checks every tools/call with agentcaps before the upstream runs it.",
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
            await anyio.wait_readable(self.fd)
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
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
    fd = sys.stdin.fileno()
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


async def serve(args: argparse.Namespace, costs: CostTable) -> bool:
    """Serve the agent on stdio until it hangs up (False) or the upstream does (True)."""
    upstream, http = upstream_transport(args)
    async with AsyncClient(args.verifier, verifier_key=args.verifier_key) as verifier:
        guard = Guard(verifier, costs, args.audience, args.token, args.hold_ttl)
        async with upstream as upstream_streams, _agent_stdio() as agent_streams:
            return await relay(guard, agent_streams, upstream_streams, http=http)


def main(argv: Sequence[str] | None = None) -> int:
    """`agentcaps gateway ...`: 0 when the agent hangs up, 1 when the upstream does, 2 for a usage error."""
    args = parser().parse_args(argv)
    try:
        if not 1 <= args.hold_ttl <= 86400:
            raise ValueError("--hold-ttl must be 1 to 86400 seconds")
        if args.upstream is not None and not shlex.split(args.upstream):
            raise ValueError("--upstream is empty")
        costs = CostTable.load(args.costs)
    except ValueError as e:
        print(f"agentcaps gateway: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="agentcaps gateway: %(message)s", stream=sys.stderr)
    try:
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
