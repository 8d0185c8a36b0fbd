"""The relay between an agent and an upstream MCP server, with the guard's checks in between (docs/mcp.md).

Messages pass as they are, ids unchanged: the handshake (or 2026 discovery) and so the upstream's own
capabilities and instructions, progress, logging, change notifications, and the upstream's requests to the
agent (sampling, elicitation, roots). What the relay changes, with the same Guard as a guarded server:

- the token is taken out of `_meta` of everything the agent sends (a bearer credential never reaches a tool);
- every request but the handshake, discovery and ping is authorized before it is forwarded, and never forwarded
  when refused: a `tools/call` is admitted as a hold of its cost, and so is any other method, checked as a tool
  named by the method (`resources/read`); listings are filtered; `tasks/*` need a token that verifies;
- each admitted call is concluded by its own answer (settle, or release on an error), by the final result of
  its task, or, cancelled or never answered, charged its held cost; its hold is extended while it runs;
- a request whose id is already in flight is refused, a request sent as a notification is dropped, and what
  is not JSON-RPC is answered with an error: nothing the agent sends ends the relay or escapes the check.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio

from app.mcp.guard import LISTINGS, UNCHECKED, Admitted, Guard, checked_as, denial, refusal
from app.mcp.sdk import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    MODERN_PROTOCOL_VERSIONS,
    NAME_BEARING_METHODS,
    PROTOCOL_VERSION_META_KEY,
    CallToolResult,
    ClientMessageMetadata,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    MCPError,
    RequestId,
    ServerMessageMetadata,
    SessionMessage,
    Transport,
    TransportStreams,
    cancelled_request_id_from_params,
    create_client_server_memory_streams,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    x_mcp_header_map,
)

log = logging.getLogger("agentcaps.mcp.gateway")
_SEVERED = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream)


@dataclass
class _Pending:
    """A request forwarded (or being admitted) whose answer has not come back: its id is busy until then."""

    method: str
    token: str | None = None
    admitted: Admitted | None = None  # a call admitted: its hold is concluded by this request's answer or task
    task_id: str | None = None  # of a tasks/result request: the task its answer concludes
    forwarded: bool = False
    cancelled: bool = False  # the agent cancelled it: charged if it ran, and its late answer is dropped
    answered: bool = False  # the upstream answered it: being concluded
    keeper: anyio.CancelScope = field(default_factory=anyio.CancelScope)  # extends the hold while it runs


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
        self.pending: dict[RequestId, _Pending] = {}
        self.tasks: dict[str, _Pending] = {}  # task id -> the task-augmented call it concludes
        self.upstream_gone = False

    async def run(self) -> bool:
        """Relay until either side hangs up; True if the upstream did."""
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                tg.start_soon(self._from_upstream)
                await self._from_agent()
                tg.cancel_scope.cancel()  # the agent is gone: so is the gateway
            return self.upstream_gone
        finally:
            # Calls forwarded and never answered, and tasks never finished: the tool may have acted, so each is
            # charged its held cost. A call not yet forwarded never ran: released.
            for call in [*self.pending.values(), *self.tasks.values()]:
                if call.admitted is not None and not call.cancelled:
                    if call.forwarded:
                        await self.guard.conclude(call.admitted, None)
                    else:
                        await self.guard.abandon(call.admitted)

    # -- agent -> upstream -----------------------------------------------------------------------------
    async def _from_agent(self) -> None:
        async for item in self.agent_read:
            if isinstance(item, Exception):  # not JSON-RPC (a batch, a broken line): say so, never in silence
                log.warning("the agent sent something that is not JSON-RPC (%s)", type(item).__name__)
                error = ErrorData(code=INVALID_REQUEST, message="not a JSON-RPC request (batches are not supported)")
                await self._to_agent(JSONRPCError(jsonrpc="2.0", id=None, error=error))
                continue
            try:
                await self._agent_said(item)
            except _SEVERED:  # the upstream's end closed under a write: it is gone
                self.upstream_gone = True
                return
            except Exception:  # a bug must not end the gateway and, with it, charge the calls in flight
                log.exception("could not handle a message from the agent")
                if isinstance(item.message, JSONRPCRequest):
                    await self._refuse(item.message.id, INTERNAL_ERROR, "the gateway could not handle this request")

    async def _agent_said(self, item: SessionMessage) -> None:
        message = item.message
        token, params = self.guard.take_token(getattr(message, "params", None), _authorization(item))
        if isinstance(message, JSONRPCRequest | JSONRPCNotification) and message.params:
            message = message.model_copy(update={"params": params})
        if isinstance(message, JSONRPCNotification):
            if message.method == "notifications/cancelled":
                if not self._cancel(message):
                    return
            elif not message.method.startswith("notifications/"):
                # A request sent without an id (`tools/call` as a notification): it would run with no answer to
                # conclude it, so it never runs.
                log.warning("dropped a %s sent as a notification", message.method)
                return
            await self._to_upstream(message)
            return
        if not isinstance(message, JSONRPCRequest):  # the agent's answers to the upstream's requests
            await self._to_upstream(message)
            return
        if message.id in self.pending:  # the answer to it would conclude the other's hold
            await self._refuse(message.id, INVALID_REQUEST, f"request id {message.id!r} is already in flight")
            return
        call = self.pending[message.id] = _Pending(message.method, token)
        if message.method == "tasks/result" and isinstance(task_id := (message.params or {}).get("taskId"), str):
            call.task_id = task_id
        if message.method in UNCHECKED or message.method in LISTINGS:
            call.forwarded = True
            await self._to_upstream(message)
        else:
            self._spawn(self._admit, message, call)

    async def _admit(self, message: JSONRPCRequest, call: _Pending) -> None:
        """Authorize a request, then forward it; refused, the upstream never hears of it."""
        result: Admitted | CallToolResult | None
        try:
            if message.method.startswith("tasks/"):
                refused = await self.guard.verifies(call.token)
                result = None if refused is None else denial(refused.code, refused.reason, refused, call.token)
            else:
                result = await self.guard.admit(call.token, *checked_as(message.method, message.params))
        except MCPError as e:
            self.pending.pop(message.id, None)
            await self._to_agent(JSONRPCError(jsonrpc="2.0", id=message.id, error=e.error))
            return
        except Exception:  # not decided: never forwarded
            log.exception("could not authorize a %s request", message.method)
            self.pending.pop(message.id, None)
            await self._refuse(message.id, INTERNAL_ERROR, "the gateway could not authorize this request")
            return
        if isinstance(result, Admitted):
            call.admitted = result
        elif result is not None:
            self.pending.pop(message.id, None)
            if call.cancelled:
                return
            if message.method == "tools/call":
                answer = result.model_dump(by_alias=True, mode="json", exclude_none=True)
                await self._to_agent(JSONRPCResponse(jsonrpc="2.0", id=message.id, result=answer))
            else:
                await self._to_agent(JSONRPCError(jsonrpc="2.0", id=message.id, error=refusal(result).error))
            return
        if call.cancelled:  # cancelled before it ran: nothing is charged
            self.pending.pop(message.id, None)
            if call.admitted is not None:
                await self.guard.abandon(call.admitted)
            return
        call.forwarded = True
        if call.admitted is not None:
            self._spawn(self._keep, call)
        try:
            await self._to_upstream(message)
        except _SEVERED:
            self.pending.pop(message.id, None)
            call.keeper.cancel()
            if call.admitted is not None:
                await self.guard.abandon(call.admitted)
            await self._refuse(message.id, INTERNAL_ERROR, "the upstream MCP server is gone")

    def _cancel(self, message: JSONRPCNotification) -> bool:
        """The agent cancels a request; whether to pass the cancellation on. A call that may have run is charged
        its held cost now, and its answer, should it still come, is dropped; a call not yet forwarded never runs."""
        cancelled = cancelled_request_id_from_params(message.params)
        call = self.pending.get(cancelled) if cancelled is not None else None
        if call is None or call.cancelled or call.answered:
            return call is None  # unknown to the gateway: the upstream's business; answered: too late to cancel
        call.cancelled = True
        if call.admitted is not None and call.forwarded:
            call.keeper.cancel()
            self._spawn(self.guard.conclude, call.admitted, None)
        return call.forwarded

    async def _keep(self, call: _Pending) -> None:
        if call.admitted is not None:
            with call.keeper:
                await self.guard.keep(call.admitted)

    # -- upstream -> agent -----------------------------------------------------------------------------
    async def _from_upstream(self) -> None:
        async for item in self.upstream_read:
            if isinstance(item, Exception):
                log.warning("the upstream sent something that is not JSON-RPC (%s)", type(item).__name__)
                continue
            try:
                await self._upstream_said(item.message)
            except _SEVERED:
                raise
            except Exception:
                log.exception("could not handle a message from the upstream")
        self.upstream_gone = True
        self.tg.cancel_scope.cancel()

    async def _upstream_said(self, message: JSONRPCMessage) -> None:
        call = None
        if isinstance(message, JSONRPCResponse | JSONRPCError) and message.id is not None:
            call = self.pending.get(message.id)
        elif isinstance(message, JSONRPCNotification) and message.method == "notifications/tasks/status":
            self._task_status(message.params or {})
        if self.stamp is not None:
            self.stamp.learn(message, call is not None and call.method == "tools/list")
        if call is None:
            await self._to_agent(message)
            return
        assert isinstance(message, JSONRPCResponse | JSONRPCError) and message.id is not None
        id = message.id
        if call.answered:
            return  # a second answer to one request: the first one concludes it
        if call.cancelled:
            del self.pending[id]  # charged when it was cancelled; the agent no longer waits for it
            return
        if isinstance(message, JSONRPCResponse):
            if call.method in LISTINGS:
                listed = self.guard.filter_listing(call.method, message.result, call.token)
                message = message.model_copy(update={"result": listed})
            elif call.admitted is not None and (task_id := _task_id(message.result)) is not None:
                # A task-augmented call: created, not done. Its final result concludes it.
                del self.pending[id]
                self.tasks[task_id] = call
                await self._to_agent(message)
                return
            elif call.task_id is not None and (task := self.tasks.pop(call.task_id, None)) is not None:
                del self.pending[id]
                task.keeper.cancel()
                await self._conclude(task, message)  # the task's own answer, as for a call
                return
            else:
                self._task_status(message.result)
        if call.admitted is None:
            del self.pending[id]
            await self._to_agent(message)
            return
        # Concluded before the agent sees the answer; the id stays busy, and the call tracked, until then.
        call.answered = True
        call.keeper.cancel()
        self._spawn(self._conclude, call, message)

    def _task_status(self, task: Mapping[str, Any]) -> None:
        """A task the upstream reports ended without a result to settle: failed, nothing is charged; cancelled,
        the held cost (it may have acted)."""
        status, task_id = task.get("status"), task.get("taskId")
        if status not in ("failed", "cancelled") or not isinstance(task_id, str):
            return
        call = self.tasks.pop(task_id, None)
        if call is not None and call.admitted is not None:
            call.keeper.cancel()
            if status == "failed":
                self._spawn(self.guard.abandon, call.admitted)
            else:
                self._spawn(self.guard.conclude, call.admitted, None)

    async def _conclude(self, call: _Pending, message: JSONRPCResponse | JSONRPCError) -> None:
        # Settled (or released) before the agent sees the answer, so its next call sees the new balance.
        if call.admitted is not None:
            if isinstance(message, JSONRPCResponse):
                await self.guard.conclude(call.admitted, message.result)
            else:
                await self.guard.abandon(call.admitted)
            call.admitted = None  # concluded: nothing left for the end of the relay to charge
        await self._to_agent(message)
        if message.id is not None and self.pending.get(message.id) is call:
            del self.pending[message.id]

    def _spawn(self, work: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Run `work` beside the relay; should it fail, it is logged: a failure of one call's work must not end
        the relay, whose end would conclude every other call in flight."""

        async def safely() -> None:
            try:
                await work(*args)
            except Exception:
                log.exception("a call's work failed")

        self.tg.start_soon(safely)

    # -- the two wires ---------------------------------------------------------------------------------
    async def _to_upstream(self, message: JSONRPCMessage) -> None:
        metadata = self.stamp.headers(message) if self.stamp is not None else None
        await self.upstream_write.send(SessionMessage(message, metadata))

    async def _to_agent(self, message: JSONRPCMessage) -> None:
        try:
            await self.agent_write.send(SessionMessage(message))
        except _SEVERED:
            log.debug("the agent is gone; dropped %s", type(message).__name__)

    async def _refuse(self, id: RequestId, code: int, text: str) -> None:
        await self._to_agent(JSONRPCError(jsonrpc="2.0", id=id, error=ErrorData(code=code, message=text)))


def _authorization(item: SessionMessage) -> str | None:
    """The Authorization header of the HTTP request a message came in, on streamable HTTP."""
    metadata = item.metadata
    request = metadata.request_context if isinstance(metadata, ServerMessageMetadata) else None
    headers = getattr(request, "headers", None)
    value = headers.get("authorization") if headers is not None else None
    return value if isinstance(value, str) else None


def _task_id(result: Mapping[str, Any]) -> str | None:
    """The id of the task a task-augmented request created (`{"task": {"taskId", ...}}`), if it is one."""
    task = result.get("task")
    task_id = task.get("taskId") if isinstance(task, Mapping) and "content" not in result else None
    return task_id if isinstance(task_id, str) else None


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
