"""The ASGI app that scripts/bench_http.py loads: the real service plus a bare baseline route on the same server.

`/bare` only decodes the same body into a msgspec Struct and answers: the floor for one HTTP round trip.
`/bare-store` does the same plus one store call that finds nothing (a lookup of an unknown request id, one script
through the same batching and connections as a verify's): the floor for an endpoint that asks Redis anything.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, post

from app.api.server import app_from_env
from app.schemas import VerifyRequest

_decoder = msgspec.json.Decoder(VerifyRequest)


@post("/bare", status_code=200)
async def bare(request: Request[Any, Any, Any]) -> Response[bytes]:
    req = _decoder.decode(await request.body())
    return Response(b'{"allowed":true,"tool":"%s"}' % req.tool.encode(), media_type="application/json")


def app() -> Litestar:
    service = app_from_env()  # as `agentcaps serve` builds it
    store = service.state.authority.store
    root = secrets.token_hex(16)  # no token's: nothing is ever stored under it

    @post("/bare-store", status_code=200)
    async def bare_store(request: Request[Any, Any, Any]) -> Response[bytes]:
        req = _decoder.decode(await request.body())
        await store.lookup(root, req.tool, "")
        return Response(b'{"allowed":true,"tool":"%s"}' % req.tool.encode(), media_type="application/json")

    service.register(bare)
    service.register(bare_store)
    return service
