"""/v1/verify's plain ASGI route (app/api/asgi_route.py) answers like every Litestar route: the same 405, 413 and
error shapes, the same headers; a body is read whole however it arrives, and refused once it is over the limit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.exceptions import InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from app.api.asgi_route import read_body
from tests.api.conftest import Api


def receiver(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


def chunk(body: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_a_body_in_chunks_is_read_whole() -> None:
    no_body = {"type": "http.request", "more_body": True}  # `body` is optional in ASGI
    receive = receiver(chunk(b'{"a"'), chunk(b""), no_body, chunk(b":1}", more=False))
    assert await read_body([], receive, 10) == b'{"a":1}'


async def test_a_body_one_byte_over_the_limit_is_refused_however_it_arrives() -> None:
    assert await read_body([], receiver(chunk(b"x" * 10, more=False)), 10) == b"x" * 10
    with pytest.raises(RequestEntityTooLarge):
        await read_body([], receiver(chunk(b"x" * 6), chunk(b"x" * 5, more=False)), 10)
    with pytest.raises(RequestEntityTooLarge):  # said before a byte is read: nothing is read
        await read_body([(b"content-length", b"11")], receiver(), 10)


async def test_a_client_gone_mid_body_is_an_error_not_a_short_body() -> None:
    with pytest.raises(InternalServerException):
        await read_body([], receiver(chunk(b'{"token": "'), {"type": "http.disconnect"}), 100)


def test_other_methods_get_the_405_every_route_gives(api: Api) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        r = api.client.request(method, "/v1/verify")
        assert r.status_code == 405, (method, r.text)
        assert r.json()["code"] == "http_error" and r.headers["allow"] == "POST", r.text
        r = api.client.request(method, "/v1/tokens", headers=api.admin)
        assert r.status_code == 405 and r.json()["code"] == "http_error" and "POST" in r.headers["allow"], r.text


def test_a_chunked_body_without_length_is_read_and_refused_over_64_kib(api: Api) -> None:
    token = api.token(budget={"amount": "10", "currency": "USD"})
    body = json.dumps({"token": token, "tool": "search", "cost": {"amount": "1", "currency": "USD"}}).encode()

    def pieces(data: bytes) -> Iterator[bytes]:
        yield from (data[i : i + 100] for i in range(0, len(data), 100))

    r = api.client.post("/v1/verify", content=pieces(body), headers={"content-type": "application/json"})
    assert r.status_code == 200 and "content-length" not in r.request.headers, r.text
    padded = body[:-1] + b', "args": {"x": "' + b"a" * (64 * 1024) + b'"}}'
    r = api.client.post("/v1/verify", content=pieces(padded), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "too_large", r.text
    assert api.spent(token) == ["1.00"]


def test_answers_carry_the_headers_a_litestar_route_would(api: Api) -> None:
    token = api.token(rate="1/1m")
    allowed = api.verify(token)
    assert allowed.headers["content-type"] == "application/json"
    assert int(allowed.headers["content-length"]) == len(allowed.content)
    limited = api.verify(token)
    assert limited.status_code == 429 and limited.headers["retry-after"].isdigit(), limited.text
    assert int(limited.headers["content-length"]) == len(limited.content)
    bad = api.post("/v1/verify", content=b'{"token": 1}')
    assert bad.status_code == 400 and bad.json()["field"] == "token", bad.text
    assert bad.headers["content-type"] == "application/json"
