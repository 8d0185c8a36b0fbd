"""Requests outside decisions (docs/api.md): strict bodies, 413, ops endpoints, crashes and an unreachable store."""

from __future__ import annotations

import json
import logging
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from app.api.app import create_app
from app.config import Settings
from app.store.redis import RedisStore
from app.store.runner import NodeRunner
from tests.api.conftest import Api, Clock

USD = {"amount": "1", "currency": "USD"}


# -- strict bodies -------------------------------------------------------------------------------------


def verify_body(token: str, **extra: Any) -> dict[str, Any]:
    return {"token": token, "tool": "search", "cost": USD, "request_id": "r", **extra}


def raw(body: dict[str, Any]) -> str:
    return json.dumps(body)


DEEP = "args.a.0.k"  # a repeat inside an object inside a list
BAD_VERIFY: list[tuple[str, Any, str | None]] = [
    # (name, how the body is built from the valid one, the field the 400 must name)
    ("unknown-field", lambda b: raw({**b, "extra": 1}), "extra"),
    ("unknown-nested-field", lambda b: raw({**b, "cost": {**USD, "fx": "1"}}), "cost.fx"),
    ("amount-number", lambda b: raw({**b, "cost": {"amount": 1, "currency": "USD"}}), "cost.amount"),
    ("amount-float", lambda b: raw({**b, "cost": {"amount": 0.5, "currency": "USD"}}), "cost.amount"),
    ("amount-exponent", lambda b: raw({**b, "cost": {"amount": "1e3", "currency": "USD"}}), "cost.amount"),
    ("amount-negative", lambda b: raw({**b, "cost": {"amount": "-1", "currency": "USD"}}), "cost.amount"),
    ("amount-7-decimals", lambda b: raw({**b, "cost": {"amount": "0.0000001", "currency": "USD"}}), "cost.amount"),
    ("amount-13-digits", lambda b: raw({**b, "cost": {"amount": "1" * 13, "currency": "USD"}}), "cost.amount"),
    ("amount-arabic-digits", lambda b: raw({**b, "cost": {"amount": "\u0661", "currency": "USD"}}), "cost.amount"),
    ("currency-lower", lambda b: raw({**b, "cost": {"amount": "1", "currency": "usd"}}), "cost.currency"),
    ("tool-number", lambda b: raw({**b, "tool": 5}), "tool"),
    ("tool-space", lambda b: raw({**b, "tool": "a b"}), "tool"),
    ("token-number", lambda b: raw({**b, "token": 5}), "token"),
    ("args-list", lambda b: raw({**b, "args": [1, 2]}), "args"),
    ("audience-empty", lambda b: raw({**b, "audience": ""}), "audience"),
    ("mode-bad", lambda b: raw({**b, "mode": "later"}), "mode"),
    ("hold-ttl-string", lambda b: raw({**b, "hold_ttl": "30"}), "hold_ttl"),
    ("duplicate-top-level-key", lambda b: raw(b)[:-1] + ', "tool": "pay"}', "tool"),
    ("duplicate-cost", lambda b: raw(b)[:-1] + ', "cost": {"amount": "0", "currency": "USD"}}', "cost"),
    ("duplicate-in-args", lambda b: raw({**b, "args": {"x": 1}})[:-2] + ', "x": 2}}', "args.x"),
    ("duplicate-escaped", lambda b: raw({**b, "args": {"x": 1}})[:-2] + ', "\\u0078": 2}}', "args.x"),
    ("duplicate-deep", lambda b: raw({**b, "args": {"a": [{"k": 1, "z": {"k": 0}}]}})[:-4] + ', "k": 2}]}}', DEEP),
    ("NaN-in-args", lambda b: raw(b)[:-1] + ', "args": {"x": NaN}}', "args.x"),
    ("Infinity-in-args", lambda b: raw(b)[:-1] + ', "args": {"x": Infinity}}', "args.x"),
    ("minus-Infinity-in-args", lambda b: raw(b)[:-1] + ', "args": {"x": -Infinity}}', "args.x"),
]


@pytest.mark.parametrize(("name", "build", "field"), BAD_VERIFY, ids=[c[0] for c in BAD_VERIFY])
def test_bad_verify_bodies_are_400_naming_the_field_and_change_nothing(
    api: Api, name: str, build: Any, field: str
) -> None:
    token = api.token(budget={"amount": "10", "currency": "USD"})
    api.allowed(token, cost=USD, request_id="warm")
    before = api.snapshot()
    r = api.post("/v1/verify", content=build(verify_body(token)))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request" and r.json()["reason"]
    assert api.snapshot() == before
    assert api.spent(token) == ["1.00"]
    assert r.json().get("field") == field, r.json()


@pytest.mark.parametrize(
    "content",
    [b"", b"null", b"[]", b'"token"', b"{", b'{"token": "a"', b"\xff\xfe", b'{"token": "a", "tool": "b"} x'],
    ids=["empty", "null", "array", "string", "open", "unclosed", "not-utf8", "trailing"],
)
@pytest.mark.parametrize("path", ["/v1/verify", "/v1/tokens", "/v1/revoke", "/v1/inspect"])
def test_bodies_that_are_not_one_json_object_are_400(api: Api, path: str, content: bytes) -> None:
    r = api.post(path, content=content, headers=api.admin)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request"
    assert api.dbsize() == 0


BAD_UTF8: list[tuple[str, str, bytes, dict[str, str] | None]] = [
    # (name, path, body with bytes that are not UTF-8 inside a JSON string, headers)
    ("verify-tool", "/v1/verify", b'{"token":"x","tool":"s\xff"}', None),
    ("verify-args-key", "/v1/verify", b'{"token":"x","tool":"s","args":{"k\xed\xa0\x80":1}}', None),
    ("mint-subject", "/v1/tokens", b'{"subject":"o\xc3"}', {}),
    ("revoke-token", "/v1/revoke", b'{"token":"\x80"}', None),
    ("inspect-token", "/v1/inspect", b'{"token":"a\xfe\xff"}', None),
    ("settle-amount", "/v1/holds/{hold}/settle", b'{"amount":"1\xff"}', None),
    ("release", "/v1/holds/{hold}/release", b'{"\xff":1}', None),
]


@pytest.mark.parametrize(("name", "path", "content", "headers"), BAD_UTF8, ids=[c[0] for c in BAD_UTF8])
def test_a_json_string_that_is_not_utf8_is_400_and_changes_nothing(
    api: Api, name: str, path: str, content: bytes, headers: dict[str, str] | None
) -> None:
    token = api.token(budget={"amount": "10", "currency": "USD"})
    hold_id = api.allowed(token, cost=USD, mode="hold")["hold_id"]
    before = api.snapshot()
    r = api.post(path.format(hold=hold_id), content=content, headers=api.admin if headers is not None else None)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request"
    assert "not valid UTF-8" in r.json()["reason"], r.json()
    assert api.snapshot() == before


def nested(levels: int, leaf: str = "1", array: bool = False) -> str:
    """`levels` objects (or arrays) one inside the other around `leaf`."""
    return ("[" * levels + leaf + "]" * levels) if array else ('{"a":' * levels + leaf + "}" * levels)


@pytest.mark.parametrize("array", [False, True], ids=["objects", "arrays"])
def test_args_nested_past_64_levels_are_400_cheaply_and_change_nothing(api: Api, array: bool) -> None:
    token = api.token(budget={"amount": "10", "currency": "USD"})
    api.allowed(token, cost=USD, request_id="warm")
    before = api.snapshot()
    inner = nested(2999, array=array)  # args itself is the first level: 3000 in all, about 15 KB
    content = f'{{"token": "{token}", "tool": "search", "cost": {raw(USD)}, "args": {{"a": {inner}}}}}'
    assert len(content) < 64 * 1024
    r = api.post("/v1/verify", content=content)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request" and r.json()["field"] == "args", r.json()
    assert "64 levels" in r.json()["reason"], r.json()
    assert api.snapshot() == before
    # 65 levels is one too many; exactly 64 is allowed; brackets inside strings are not nesting.
    too_deep = f'{{"token": "{token}", "tool": "search", "args": {{"a": {nested(64, array=array)}}}}}'
    r = api.post("/v1/verify", content=too_deep)
    assert r.status_code == 400 and r.json()["field"] == "args", r.text
    deepest = f'{{"token": "{token}", "tool": "search", "args": {{"a": {nested(63, array=array)}}}}}'
    assert api.post("/v1/verify", content=deepest).status_code == 200
    # The duplicate-key scan walks the deepest allowed args without recursion and names the full path.
    duplicate = nested(62, '{"k": 1, "k": 2}')  # 64 levels with args and the innermost object
    r = api.post("/v1/verify", content=f'{{"token": "{token}", "tool": "search", "args": {{"a": {duplicate}}}}}')
    assert r.status_code == 400 and r.json()["field"] == "args" + ".a" * 63 + ".k", r.text
    brackets = "[{" * 3000 + '\\"'
    r = api.post("/v1/verify", content=f'{{"token": "{token}", "tool": "search", "args": {{"s": "{brackets}"}}}}')
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("path", "content", "field"),
    [
        ("/v1/verify", '{"token": "t", "tool": "search", "extra": ' + nested(3000) + "}", "extra"),
        ("/v1/verify", '{"token": "t", "tool": ' + nested(3000, array=True) + "}", "tool"),
        ("/v1/tokens", '{"subject": "o", "caveats": ' + nested(3000, '"x"', array=True) + "}", "caveats"),
        ("/v1/inspect", nested(3000, array=True), None),
        ("/v1/revoke", '{"token": "t", "token": ' + nested(3000) + "}", "token"),
        ("/v1/holds/{hold}/settle", '{"amount": ' + nested(100) + "}", "amount"),
        ("/v1/holds/{hold}/release", '{"x": ' + nested(3000, array=True) + "}", "x"),
    ],
    ids=[
        "verify-unknown-field",
        "verify-tool",
        "mint-caveats",
        "inspect-top-level",
        "revoke-duplicate",
        "settle",
        "release",
    ],
)
def test_every_json_endpoint_refuses_deep_nesting_with_400(
    api: Api, path: str, content: str, field: str | None
) -> None:
    token = api.token(budget={"amount": "10", "currency": "USD"})
    hold_id = api.allowed(token, cost=USD, mode="hold")["hold_id"]
    before = api.snapshot()
    r = api.post(path.format(hold=hold_id), content=content, headers=api.admin)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request" and r.json().get("field") == field, r.json()
    assert "nests" in r.json()["reason"], r.json()
    assert api.snapshot() == before


def test_a_body_over_64_kib_is_413(api: Api) -> None:
    token = api.token(budget={"amount": "10", "currency": "USD"})
    filler = "a" * (64 * 1024)
    for path, body, headers in [
        ("/v1/verify", verify_body(token, args={"x": filler}), None),
        ("/v1/tokens", {"subject": "o", "caveats": [filler]}, api.admin),
        ("/v1/inspect", {"token": filler}, None),
        ("/v1/revoke", {"token": filler}, None),
    ]:
        r = api.post(path, body, headers=headers)
        assert r.status_code == 413, (path, r.text)
        assert r.json()["code"] == "too_large"
    assert api.spent(token) == ["0.00"]


def test_a_body_of_exactly_64_kib_is_read(api: Api) -> None:
    token = api.token(budget={"amount": "10", "currency": "USD"})
    body = verify_body(token, args={"x": ""})
    pad = 64 * 1024 - len(raw(body).encode())
    content = raw(verify_body(token, args={"x": "a" * pad}))
    assert len(content.encode()) == 64 * 1024
    r = api.post("/v1/verify", content=content)
    assert r.status_code == 200, r.text
    r = api.post("/v1/verify", content=raw(verify_body(token, request_id="s", args={"x": "a" * (pad + 1)})))
    assert r.status_code == 413


def test_json_numbers_in_args_may_be_huge_or_tiny_without_error(api: Api) -> None:
    token = api.token(caveats=["arg.x <= 1"])
    for text, status in [("1e400", 403), ("-1e400", 200), ("1e-400", 200), ("123456789012345678901234567890", 403)]:
        r = api.post("/v1/verify", content=f'{{"token": "{token}", "tool": "t", "args": {{"x": {text}}}}}')
        assert r.status_code == status, (text, r.text)


# -- ops -----------------------------------------------------------------------------------------------


def test_healthz_and_readyz(api: Api) -> None:
    r = api.client.get("/healthz")
    assert r.status_code == 200
    r = api.client.get("/readyz")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("store_kind", ["redis"], indirect=True)  # memory:// has no eviction policy
def test_readyz_refuses_a_redis_that_may_evict(api: Api) -> None:
    assert api.redis is not None
    policy = api.redis.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        api.redis.config_set("maxmemory-policy", "allkeys-lru")
        r = api.client.get("/readyz")
    finally:
        api.redis.config_set("maxmemory-policy", policy)
    assert r.status_code == 503
    assert "allkeys-lru" in r.json()["reason"] and "noeviction" in r.json()["reason"]
    assert r.headers.get("retry-after")
    assert api.client.get("/readyz").status_code == 200


def test_metrics_are_prometheus_text_named_agentcaps(api: Api) -> None:
    token = api.token(budget={"amount": "1", "currency": "USD"}, tools=["search"])
    api.allowed(token, cost=USD)
    api.denied(token, "tool_not_allowed", tool="pay")
    r = api.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples
    for line in samples:
        assert line.startswith("agentcaps_"), line
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            assert line.split(" ")[2].startswith("agentcaps_"), line
    assert re.search(r'^agentcaps_decisions_total\{code="allowed"\} 1\.0$', text, re.M)
    assert re.search(r'^agentcaps_decisions_total\{code="tool_not_allowed"\} 1\.0$', text, re.M)
    for secret in (api.settings.admin_keys[0], token):
        assert secret not in text


def spend_metric(api: Api, currency: str = "USD") -> str | None:
    """agentcaps_spend_total for a currency as /metrics renders it (None: no sample yet)."""
    m = re.search(rf'^agentcaps_spend_total\{{currency="{currency}"\}} (\S+)$', api.client.get("/metrics").text, re.M)
    return m.group(1) if m else None


def test_invented_currencies_cannot_grow_the_metrics(api: Api) -> None:
    """A token without budgets may be charged in any currency: 3,000 invented ones keep the first 32 by name and
    count the rest as `other`, so /metrics stays as small as 33 currencies make it."""
    token = api.token()
    invented = [f"X{n:04d}" for n in range(3000)]
    for currency in invented:
        api.allowed(token, cost={"amount": "0.01", "currency": currency})
    text = api.client.get("/metrics").text
    series = re.findall(r'^agentcaps_spend_total\{currency="([^"]+)"\} (\S+)$', text, re.M)
    assert [c for c, _ in series] == [*invented[:32], "other"]
    assert {v for _, v in series[:32]} == {"0.01"} and series[32][1] == "29.68"  # 2,968 charges of 0.01, exact
    assert len(text) < 16 * 1024
    assert len([line for line in text.splitlines() if line.startswith("agentcaps_")]) < 100


def test_spend_metric_counts_new_charges_only_not_replays_or_holds(api: Api) -> None:
    token = api.token(budget={"amount": "100", "currency": "USD"}, expires_in=60)
    api.allowed(token, cost={"amount": "2.5", "currency": "USD"}, request_id="r1")
    assert spend_metric(api) == "2.5"
    for _ in range(3):  # the same answer again: no new charge
        assert api.allowed(token, cost={"amount": "2.5", "currency": "USD"}, request_id="r1")["charged"]
    assert spend_metric(api) == "2.5"
    hold_id = api.allowed(token, cost={"amount": "4", "currency": "USD"}, mode="hold")["hold_id"]
    api.allowed(token, cost={"amount": "4", "currency": "USD"}, mode="hold", request_id="h1")
    assert spend_metric(api) == "2.5"  # a hold may be released: not spend
    assert api.release(hold_id).status_code == 200
    api.denied(token, "budget_exceeded", cost={"amount": "100", "currency": "USD"})
    assert spend_metric(api) == "2.5"
    api.allowed(token, cost={"amount": "1", "currency": "USD"})  # no request_id: always new
    assert spend_metric(api) == "3.5"
    api.clock.advance(120)  # expired since: the stored answer is still replayed, and still not a new charge
    assert api.allowed(token, cost={"amount": "2.5", "currency": "USD"}, request_id="r1")["charged"]
    assert spend_metric(api) == "3.5"
    assert api.spent(token) == ["3.50"]


def test_spend_metric_is_the_exact_total_not_a_sum_of_rounded_floats(api: Api) -> None:
    token = api.token(budget={"amount": "1000", "currency": "USD"})
    for _ in range(10):
        api.allowed(token, cost={"amount": "0.1", "currency": "USD"})
    assert spend_metric(api) == "1.0"  # summed as floats: 0.9999999999999999
    api.allowed(token, cost={"amount": "0.2", "currency": "USD"})
    assert spend_metric(api) == "1.2"  # 1.2000000000000002
    other = api.token(budget={"amount": "1000000", "currency": "EUR"})
    for amount in ["0.000001", "123456.789012", "0.3", "0.000007"]:
        api.allowed(other, cost={"amount": amount, "currency": "EUR"})
    assert spend_metric(api, "EUR") == "123457.08902"
    assert spend_metric(api) == "1.2"


def test_schema_is_openapi_with_every_path(api: Api) -> None:
    r = api.client.get("/schema")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path in [
        "/v1/tokens",
        "/v1/verify",
        "/v1/holds/{hold_id}/settle",
        "/v1/holds/{hold_id}/release",
        "/v1/holds/{hold_id}/extend",
        "/v1/revoke",
        "/v1/inspect",
    ]:
        assert "post" in paths[path], path
    for path in ["/healthz", "/readyz", "/metrics"]:
        assert "get" in paths[path], path
    # Settle and release take an optional body, each shown by its schema.
    schemas = doc["components"]["schemas"]
    for path, kind in [("settle", "SettleRequest"), ("release", "ReleaseRequest")]:
        body = paths[f"/v1/holds/{{hold_id}}/{path}"]["post"]["requestBody"]
        assert body["required"] is False
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{kind}"}
    verify_503 = paths["/v1/verify"]["post"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert verify_503 == {"$ref": "#/components/schemas/Denied"}
    inspect_503 = paths["/v1/inspect"]["post"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert inspect_503 == {"$ref": "#/components/schemas/ErrorBody"}
    assert schemas["ReleaseRequest"]["properties"] == {} and schemas["ReleaseRequest"]["additionalProperties"] is False
    extend = paths["/v1/holds/{hold_id}/extend"]["post"]
    assert extend["requestBody"]["required"] is True
    assert schemas["ExtendRequest"]["required"] == ["hold_ttl"]
    assert schemas["ExtendRequest"]["properties"]["hold_ttl"] == {"type": "integer", "minimum": 1, "maximum": 86400}
    assert "held" in schemas["HoldResponse"]["properties"]["state"]["enum"]
    assert "expires_at" in schemas["HoldResponse"]["properties"]


def test_unknown_routes_and_methods(api: Api) -> None:
    assert api.client.get("/v1/nope").status_code == 404
    r = api.client.get("/v1/verify")
    assert r.status_code == 405
    assert "Traceback" not in r.text


# -- failures ------------------------------------------------------------------------------------------


def test_a_crash_while_verifying_is_a_500_never_an_allow(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentcaps")
    token = api.token(budget={"amount": "10", "currency": "USD"})

    async def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internal detail /etc/agentcaps")

    monkeypatch.setattr(api.app.state.authority, "verify", boom)
    r = api.verify(token, cost=USD)
    assert r.status_code == 500
    body = r.json()
    assert body["code"] == "internal_error"
    assert re.fullmatch(r"[0-9a-f]{8,}", body["request_id"])
    assert "allowed" not in body or body["allowed"] is False
    for leak in ("Traceback", "RuntimeError", "secret internal detail", "authority.py", token):
        assert leak not in r.text
    assert api.spent(token) == ["0.00"]
    # The request id the client sees is the one an operator finds in the log; no secret is logged.
    logged = [r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == body["request_id"]]
    assert logged and logged[0].exc_info is not None
    for record in caplog.records:
        text = record.getMessage() + repr(getattr(record, "fields", ""))
        assert api.settings.admin_keys[0] not in text and token not in text


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def down(tmp_path: Path, clock: Clock) -> Any:
    settings = Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path), "AGENTCAPS_LOCATION": "http://agentcaps.test"})
    store = RedisStore(NodeRunner(f"redis://127.0.0.1:{closed_port()}/0", 0.2))
    with TestClient(create_app(settings, store=store, clock=clock)) as client:
        yield client, settings


def test_an_unreachable_store_is_503_store_unavailable_never_allow(down: tuple[TestClient[Litestar], Settings]) -> None:
    client, settings = down
    admin = {"Authorization": f"Bearer {settings.admin_keys[0]}"}
    minted = client.post(
        "/v1/tokens", json={"subject": "o", "budget": {"amount": "10", "currency": "USD"}}, headers=admin
    )
    assert minted.status_code == 201  # minting needs no counters
    token = minted.json()["token"]
    for body in (
        {"token": token, "tool": "search"},
        {"token": token, "tool": "search", "cost": USD},
        {"token": token, "tool": "search", "cost": USD, "mode": "hold", "request_id": "x"},
    ):
        r = client.post("/v1/verify", json=body)
        assert r.status_code == 503, r.text
        # A verify answer is a decision (docs/api.md lists store_unavailable among its codes): a denial a client
        # reads like any other, body["allowed"] included. It names the request_id to resend it with.
        rid = r.json()["request_id"]
        assert rid == body.get("request_id", rid) and rid.startswith(body.get("request_id", "agentcaps-"))
        reason = r.json()["reason"]
        assert r.json() == {"allowed": False, "code": "store_unavailable", "reason": reason, "request_id": rid}
        assert "store" in r.json()["reason"] and r.headers["retry-after"] == "1"
    hold = "0" * 32 + "." + "1" * 32
    for path, body in [
        (f"/v1/holds/{hold}/settle", None),
        (f"/v1/holds/{hold}/release", None),
        (f"/v1/holds/{hold}/extend", {"hold_ttl": 60}),
        ("/v1/revoke", {"token": token}),
        ("/v1/inspect", {"token": token}),
    ]:
        r = client.post(path, json=body)
        assert r.status_code == 503, (path, r.text)
        assert r.json()["code"] == "store_unavailable" and r.headers["retry-after"]
        assert "allowed" not in r.json()  # not a decision: the error shape of every other endpoint
    r = client.post("/v1/revoke", json={"token_id": minted.json()["token_id"]}, headers=admin)
    assert r.status_code == 503
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["reason"]
    assert client.get("/healthz").status_code == 200
    text = client.get("/metrics").text
    assert re.search(r"^agentcaps_store_errors_total 9\.0$", text, re.M), text
    assert re.search(r'^agentcaps_decisions_total\{code="store_unavailable"\} 3\.0$', text, re.M), text
    assert re.search(r"^agentcaps_verify_seconds_count 3\.0$", text, re.M), text  # decided (unavailable), timed


def test_a_stateless_denial_still_answers_when_the_store_is_down(down: tuple[TestClient[Litestar], Settings]) -> None:
    client, settings = down
    admin = {"Authorization": f"Bearer {settings.admin_keys[0]}"}
    token = client.post(
        "/v1/tokens",
        json={"subject": "o", "tools": ["search"], "budget": {"amount": "10", "currency": "USD"}},
        headers=admin,
    ).json()["token"]
    r = client.post("/v1/verify", json={"token": token, "tool": "pay"})
    assert r.status_code == 403 and r.json()["code"] == "tool_not_allowed"
    r = client.post("/v1/verify", json={"token": token + "A", "tool": "search"})
    assert r.status_code == 403 and r.json()["code"] == "invalid_token"
