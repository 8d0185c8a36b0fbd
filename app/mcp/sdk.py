"""Every name app.mcp takes from the mcp SDK (`mcp`, `mcp_types`), imported here and nowhere else: an SDK update
that moves or renames one breaks this module (and tests/mcp/test_sdk.py), not the guard, relay and gateway.

Some come from modules the SDK does not document as public: they are marked, so that an update is checked there
first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Documented: the client (to list an upstream's tools), the transports (the upstream's client side, the agent's
# server side), the server and its errors.
from mcp import Client
from mcp.client import Transport
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.shared.exceptions import MCPError

# Not documented as public: the per-message HTTP headers of streamable HTTP, and the relay's plumbing.
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
from mcp.shared.message import ClientMessageMetadata, ServerMessageMetadata, SessionMessage

# The protocol's messages, results and codes.
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PROTOCOL_VERSION_META_KEY,
    CallToolResult,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
    RequestParamsMeta,
    TextContent,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

if TYPE_CHECKING:  # the SDK's alias of a transport's streams lives in a private module: for type checkers only,
    from mcp.client._transport import TransportStreams  # so an update that moves it cannot stop the gateway
else:
    TransportStreams = tuple

__all__ = [
    "HANDSHAKE_PROTOCOL_VERSIONS",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MCP_METHOD_HEADER",
    "MCP_NAME_HEADER",
    "MCP_PROTOCOL_VERSION_HEADER",
    "MCP_SESSION_ID_HEADER",
    "MODERN_PROTOCOL_VERSIONS",
    "NAME_BEARING_METHODS",
    "PROTOCOL_VERSION_META_KEY",
    "CallNext",
    "CallToolResult",
    "Client",
    "ClientMessageMetadata",
    "ErrorData",
    "HandlerResult",
    "JSONRPCError",
    "JSONRPCMessage",
    "JSONRPCNotification",
    "JSONRPCRequest",
    "JSONRPCResponse",
    "MCPError",
    "MCPServer",
    "RequestId",
    "RequestParamsMeta",
    "ServerMessageMetadata",
    "ServerRequestContext",
    "SessionMessage",
    "StdioServerParameters",
    "StreamableHTTPServerTransport",
    "TextContent",
    "Transport",
    "TransportStreams",
    "cancelled_request_id_from_params",
    "create_client_server_memory_streams",
    "encode_header_value",
    "find_invalid_x_mcp_header",
    "mcp_param_headers",
    "stdio_client",
    "stdio_server",
    "streamable_http_client",
    "x_mcp_header_map",
]
