"""`agentcaps gateway --listen HOST:PORT`: one gateway for many agents, on MCP's streamable HTTP (docs/mcp.md).

Each agent's session gets its own relay to its own connection to the upstream (a process of its own for
`--upstream`), so ids, calls in flight and the upstream's state never mix between agents; each request carries
its agent's token (`Authorization: Bearer`, or `_meta`). A request at protocol 2026-07-28 has no session: it is
relayed on a connection of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from uuid import uuid4

import anyio
import uvicorn
from anyio.abc import TaskGroup, TaskStatus
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from app.mcp.guard import Guard
from app.mcp.relay import relay
from app.mcp.sdk import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    INTERNAL_ERROR,
    MCP_PROTOCOL_VERSION_HEADER,
    MCP_SESSION_ID_HEADER,
    ErrorData,
    JSONRPCError,
    StreamableHTTPServerTransport,
    Transport,
)

log = logging.getLogger("agentcaps.mcp.gateway")
IDLE_SECONDS = 3600  # a session no request has used for this long ends, and its upstream connection with it
MAX_CONNECTIONS = 100  # upstream connections at once (for --upstream, processes): more agents are told to retry


class Sessions:
    """The ASGI app: MCP at `/mcp`, a session per agent, each relayed to an upstream connection of its own. The
    relays run in the app's lifespan, so any ASGI server that runs the lifespan can serve it."""

    def __init__(
        self, guard: Guard, upstream: Callable[[], tuple[Transport, bool]], max_connections: int = MAX_CONNECTIONS
    ) -> None:
        self.guard, self.upstream, self.max_connections = guard, upstream, max_connections
        self.open: dict[str, StreamableHTTPServerTransport] = {}
        self.connections = 0
        self.tg: TaskGroup | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http" or scope["path"].rstrip("/") != "/mcp":
            await _error("not found: MCP is at /mcp", 404)(scope, receive, send)
            return
        request = Request(scope, receive)
        session_id = request.headers.get(MCP_SESSION_ID_HEADER)
        version = request.headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if session_id is not None:
            transport = self.open.get(session_id)
            if transport is None:
                await _error("session not found", 404)(scope, receive, send)
                return
            await transport.handle_request(scope, receive, send)
            return
        if self.tg is None or self.connections >= self.max_connections:  # each costs an upstream connection
            await _error("too many agents at once: retry later", 503)(scope, receive, send)
            return
        stateless = version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS
        transport = StreamableHTTPServerTransport(
            None if stateless else uuid4().hex, idle_timeout=None if stateless else IDLE_SECONDS
        )
        await self.tg.start(self._serve, transport)
        try:
            await transport.handle_request(scope, receive, send)
        finally:
            if stateless or transport.mcp_session_id not in self.open:
                with anyio.CancelScope(shield=True):
                    await transport.terminate()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The relays live as long as the app: at shutdown they stop, and their calls in flight are concluded."""
        async with anyio.create_task_group() as tg:
            self.tg = tg
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            self.tg = None
            tg.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})

    async def _serve(self, transport: StreamableHTTPServerTransport, *, task_status: TaskStatus[None]) -> None:
        """Relay one session until the agent ends it (or it idles out) or the upstream goes away."""
        session_id = transport.mcp_session_id
        self.connections += 1
        try:
            async with transport.connect() as streams:
                if session_id is not None:
                    self.open[session_id] = transport
                task_status.started()
                upstream, http = self.upstream()
                with transport.idle_scope or anyio.CancelScope():
                    async with upstream as upstream_streams:
                        await relay(self.guard, streams, upstream_streams, http=http)
        except Exception:  # one session's failure is not the others'
            log.exception("a session ended with an error")
        finally:
            self.connections -= 1
            if session_id is not None:
                self.open.pop(session_id, None)
            with anyio.CancelScope(shield=True):
                await transport.terminate()


def _error(message: str, status: int) -> JSONResponse:
    """A refusal as MCP servers answer one over HTTP: a JSON-RPC error (no request id) with an HTTP status."""
    body = JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=INTERNAL_ERROR, message=message))
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status, headers)


def address(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8471` for IPv6)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {listen!r}: give HOST:PORT")
    return host.strip("[]"), int(port)


async def listen(sessions: Sessions, where: str) -> None:
    """Serve agents over streamable HTTP until interrupted."""
    host, port = address(where)
    config = uvicorn.Config(sessions, host=host, port=port, log_level="warning", access_log=False)
    await uvicorn.Server(config).serve()
