"""The hot path's route: a JSON POST endpoint as a plain ASGI handler inside the Litestar app.

Litestar's request and response machinery (the Request, its signature model, the Response and its headers) costs
about 28 µs a call, a fifth of a verify's time in the process. /v1/verify needs none of it: it reads one header
and one body and answers JSON. What it keeps of Litestar: the routing, and the app's exception handlers, which
answer whatever the endpoint raises exactly as they answer any other route's. /schema documents it like the others
(app/api/openapi.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from litestar import asgi
from litestar.enums import ScopeType
from litestar.exceptions import InternalServerException, MethodNotAllowedException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers import ASGIRouteHandler
from litestar.types import Receive, Scope, Send

Headers = Iterable[tuple[bytes, bytes]]  # as ASGI gives them: names in lower case
# What an endpoint answers: the status, the JSON body, and any headers beside content-type and content-length.
Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]
Endpoint = Callable[[Headers, bytes], Awaitable[Answer]]
_JSON = (b"content-type", b"application/json")


def header(headers: Headers, name: bytes) -> str | None:
    """The first value of header `name` (lower case), as text."""
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(headers: Headers, receive: Receive, limit: int) -> bytes:
    """The whole body, refused with 413 (as Litestar refuses it on its routes) once it is over `limit` bytes: at
    once when content-length says so, else as soon as that many arrive."""
    announced = header(headers, b"content-length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise RequestEntityTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise InternalServerException("client disconnected prematurely")
        chunk = message.get("body", b"")  # optional in ASGI: none is an empty chunk
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def json_post(path: str, endpoint: Endpoint, max_body: int) -> ASGIRouteHandler:
    """A route that answers POST to `path` with `endpoint(headers, body)`; other methods get 405, as elsewhere."""

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "POST":
            raise MethodNotAllowedException(headers={"allow": "POST"})
        headers = scope["headers"]
        status, body, extra = await endpoint(headers, await read_body(headers, receive, max_body))
        start = [_JSON, (b"content-length", b"%d" % len(body)), *extra]
        await send({"type": "http.response.start", "status": status, "headers": start})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    route.__name__ = route.__qualname__ = endpoint.__name__  # Litestar names handlers after their function
    return asgi(path, copy_scope=False)(route)
