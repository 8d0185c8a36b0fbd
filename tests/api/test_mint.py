"""POST /v1/tokens (docs/api.md): the 201 body, every optional field, and what is refused before a token exists."""

from __future__ import annotations

import calendar
import time

import pytest

from tests.api.conftest import LOCATION, Api


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


def test_minimal_mint_is_a_delegate_caveat_and_nothing_else(api: Api) -> None:
    r = api.mint_response(subject="orchestrator")
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"token", "token_id", "expires_at", "caveats"}
    assert body["caveats"] == ["delegate = orchestrator"]
    assert body["expires_at"] is None
    assert len(body["token_id"]) == 32 and int(body["token_id"], 16) >= 0
    assert "=" not in body["token"] and "+" not in body["token"] and "/" not in body["token"]
    # Unrestricted beyond the subject: any tool, no budgets, the subject is the holder.
    allowed = api.allowed(body["token"], tool="anything")
    assert allowed["token_id"] == body["token_id"]
    assert allowed["holder"] == "orchestrator"
    assert allowed["delegation"] == ["orchestrator"]
    assert allowed["budgets"] == []
    assert "expires_at" not in allowed and "charged" not in allowed


def test_every_optional_field_becomes_its_caveat_in_order(api: Api) -> None:
    body = api.mint(
        subject="orchestrator",
        budget={"amount": "10", "currency": "USD"},
        tools=["search", "github.*"],
        audience=["search-srv", "payments-srv"],
        expires_in=3600,
        max_depth=2,
        cost_cap={"amount": "0.5", "currency": "USD"},
        rate="100/1h",
        caveats=["arg.repo = acme/web"],
    )
    expires = iso(api.clock.now + 3600)
    assert body["expires_at"] == expires
    assert body["caveats"] == [
        "delegate = orchestrator",
        f"expires < {expires}",
        "tools in search,github.*",
        "audience in search-srv,payments-srv",
        "budget <= 10.00 USD",
        "cost <= 0.50 USD",
        "rate <= 100/1h",
        "depth <= 2",
        "arg.repo = acme/web",
    ]
    inspected = api.post("/v1/inspect", {"token": body["token"]}).json()
    assert [c["caveat"] for c in inspected["hops"][0]["caveats"]] == body["caveats"]
    assert inspected["token_id"] == body["token_id"]
    assert inspected["key_id"] == api.settings.ring.signing_kid
    assert inspected["tools"] == ["search", "github.*"]
    decision = api.allowed(
        body["token"],
        tool="github.issues",
        audience="payments-srv",
        args={"repo": "acme/web"},
        cost={"amount": "0.50", "currency": "USD"},
    )
    assert decision["expires_at"] == expires
    assert decision["charged"] == {"amount": "0.50", "currency": "USD"}


@pytest.mark.parametrize(("sent", "charged"), [("1", "1.00"), ("2.5", "2.50"), ("0.123456", "0.123456")])
def test_the_charge_is_written_as_every_amount_in_an_answer(api: Api, sent: str, charged: str) -> None:
    """decisions.md: amounts in responses have at least two decimals; the charge too, not the request's text."""
    token = api.token(budget={"amount": "10", "currency": "USD"})
    decision = api.allowed(token, cost={"amount": sent, "currency": "USD"})
    assert decision["charged"] == {"amount": charged, "currency": "USD"}


def test_location_is_the_configured_public_url(api: Api) -> None:
    from app.token import codec

    token = api.token()
    assert codec.decode(token).location == LOCATION.encode()


def test_expires_at_replaces_expires_in(api: Api) -> None:
    at = iso(api.clock.now + 7200)
    body = api.mint(expires_at=at)
    assert body["expires_at"] == at
    assert f"expires < {at}" in body["caveats"]
    api.clock.advance(7199)
    api.allowed(body["token"])
    api.clock.advance(1)
    denied = api.denied(body["token"], "expired")
    assert denied["caveat"] == f"expires < {at}" and denied["hop"] == 0


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"expires_in": 60, "expires_at": "2099-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2099-01-01T00:00:00+00:00"}, "expires_at"),
        ({"expires_at": "2099-01-01 00:00:00Z"}, "expires_at"),
        ({"expires_at": "2099-02-30T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": -5}, "expires_in"),
        ({"expires_in": "3600"}, "expires_in"),
        ({"expires_in": 1.5}, "expires_in"),
        ({"subject": ""}, "subject"),
        ({"subject": "has space"}, "subject"),
        ({"subject": 7}, "subject"),
        ({"budget": {"amount": 10, "currency": "USD"}}, "budget.amount"),
        ({"budget": {"amount": "10.5", "currency": "usd"}}, "budget.currency"),
        ({"budget": {"amount": "1.1234567", "currency": "USD"}}, "budget.amount"),
        ({"budget": {"amount": "-1", "currency": "USD"}}, "budget.amount"),
        ({"budget": {"amount": "1"}}, "budget.currency"),
        ({"budget": {"amount": "1", "currency": "USD", "extra": 1}}, "budget.extra"),
        ({"cost_cap": {"amount": 0.5, "currency": "USD"}}, "cost_cap.amount"),
        ({"tools": "search"}, "tools"),
        ({"tools": ["search", "bad tool"]}, "tools[1]"),
        ({"tools": ["*"]}, "tools[0]"),
        ({"audience": ["ok", ""]}, "audience[1]"),
        ({"max_depth": -1}, "max_depth"),
        ({"max_depth": True}, "max_depth"),
        ({"rate": "100 per hour"}, "rate"),
        ({"rate": "100/1y"}, "rate"),
        ({"rate": "100001/1h"}, "rate"),
        ({"caveats": ["color = red"]}, "caveats[0]"),
        ({"caveats": ["tools in search", "budget <= lots USD"]}, "caveats[1]"),
        ({"caveats": ["tools  in search"]}, "caveats[0]"),
        ({"caveats": ["x" * 1025]}, "caveats[0]"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_bad_fields_are_400_naming_the_field(api: Api, fields: dict[str, object], field: str) -> None:
    body = {"subject": "orchestrator", **fields}
    r = api.post("/v1/tokens", body, headers=api.admin)
    assert r.status_code == 400, r.text
    error = r.json()
    assert error["code"] == "bad_request"
    assert error["field"] == field, error
    assert error["reason"]


def test_a_missing_required_field_is_named(api: Api) -> None:
    r = api.post("/v1/tokens", {"tools": ["search"]}, headers=api.admin)
    assert r.status_code == 400
    assert r.json()["code"] == "bad_request"
    assert r.json()["field"] == "subject"
    r = api.post("/v1/verify", {"token": api.token()})
    assert r.status_code == 400 and r.json()["field"] == "tool"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-the-admin-key"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic whatever"},
    ],
    ids=["missing", "wrong", "empty", "not-bearer"],
)
def test_mint_needs_the_admin_key(api: Api, headers: dict[str, str]) -> None:
    r = api.post("/v1/tokens", {"subject": "orchestrator"}, headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
    assert api.settings.admin_keys[0] not in r.text
    wrong = headers.get("Authorization") == "Bearer not-the-admin-key"
    # A key that was sent and is wrong is said to be rejected, not missing; the key sent is never echoed.
    assert ("rejected" in r.json()["reason"]) == wrong, r.json()
    assert "not-the-admin-key" not in r.text


def test_admin_key_with_the_scheme_in_another_case_still_mints(api: Api) -> None:
    # RFC 9110: the auth scheme is case-insensitive.
    r = api.post("/v1/tokens", {"subject": "o"}, headers={"Authorization": f"bearer {api.settings.admin_keys[0]}"})
    assert r.status_code == 201


def test_expires_at_is_whole_seconds_utc(api: Api) -> None:
    at = "2099-12-31T23:59:59Z"
    body = api.mint(expires_at=at)
    assert body["expires_at"] == at
    assert calendar.timegm(time.strptime(at, "%Y-%m-%dT%H:%M:%SZ")) > api.clock.now


def test_the_mint_answer_always_has_expires_at(api: Api) -> None:
    # docs/api.md marks optional keys with `?`; the mint answer's expires_at has none: null when it never expires.
    body = api.mint()
    assert "expires_at" in body and body["expires_at"] is None


@pytest.mark.parametrize(
    ("caveats", "reason"),
    [
        (["arg.x = 1"] * 128, "a token holds at most 128 caveats, this one would hold 129"),  # with its delegate
        ([f"arg.x{n} = " + "v" * 245 for n in range(60)], "the token would be over 16 KiB"),
        (["budget <= 1 USD"] * 17, "a token carries at most 16 budget caveats, this one has 17"),
        (["rate <= 1/1s"] * 9, "a token carries at most 8 rate caveats, this one has 9"),
    ],
    ids=["129 caveats", "over 16 KiB", "17 budgets", "9 rates"],
)
def test_a_token_over_the_limits_is_never_minted(api: Api, caveats: list[str], reason: str) -> None:
    """The token limits (docs/caveats.md): the verifier would refuse such a token, so mint refuses to make it
    (400, not 500)."""
    r = api.post("/v1/tokens", {"subject": "a", "caveats": caveats}, headers=api.admin)
    assert r.status_code == 400, r.text
    assert (r.json()["field"], r.json()["reason"]) == ("caveats", reason)


def test_a_token_at_the_limits_is_minted_and_verifies(api: Api) -> None:
    body = api.mint(subject="a", caveats=["arg.x = 1"] * 127)
    assert len(body["caveats"]) == 128
    assert api.allowed(body["token"], tool="t", args={"x": 1})["token_id"] == body["token_id"]
