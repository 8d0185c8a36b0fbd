"""The ASGI app that scripts/bench_http.py loads: the real service plus a bare baseline route on the same server.

`/bare` only decodes the same body into a msgspec Struct and answers: the floor for one HTTP round trip.
"""

from __future__ import annotations

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
    service.register(bare)
    return service
