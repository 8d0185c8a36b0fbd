"""POST /v1/verify (docs/caveats.md, docs/api.md): the allow body, every caveat kind, every denial code, and which
denial wins."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.token.mint import attenuate
from tests.api.conftest import Api

USD = "USD"


def money(amount: str, currency: str = USD) -> dict[str, str]:
    return {"amount": amount, "currency": currency}


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


# -- the allow body ------------------------------------------------------------------------------------


def test_allow_reports_charge_delegation_and_every_budget_level(api: Api) -> None:
    root = api.token(budget=money("10.00"), expires_in=600)
    child = attenuate(root, ["delegate = researcher", "budget <= 4 USD"])
    body = api.allowed(child, cost=money("1.25"))
    assert body["holder"] == "researcher"
    assert body["delegation"] == ["orchestrator", "researcher"]
    assert body["charged"] == {"amount": "1.25", "currency": "USD"}
    assert "hold_id" not in body
    assert body["expires_at"] == iso(api.clock.now + 600)
    assert body["budgets"] == [
        {
            "hop": 0,
            "caveat": "budget <= 10.00 USD",
            "limit": "10.00",
            "spent": "1.25",
            "held": "0.00",
            "remaining": "8.75",
            "currency": "USD",
        },
        {
            "hop": 1,
            "caveat": "budget <= 4 USD",
            "limit": "4.00",
            "spent": "1.25",
            "held": "0.00",
            "remaining": "2.75",
            "currency": "USD",
        },
    ]


def test_a_call_without_cost_is_allowed_and_charges_nothing(api: Api) -> None:
    token = api.token(budget=money("1"))
    body = api.allowed(token)
    assert "charged" not in body
    assert body["budgets"][0]["spent"] == "0.00"


def test_amounts_are_exact_micro_units(api: Api) -> None:
    token = api.token(budget=money("0.3"))
    api.allowed(token, cost=money("0.1"))
    api.allowed(token, cost=money("0.2"))
    # 0.1 + 0.2 is exactly 0.3 here, so nothing is left, not 5.5e-17.
    denied = api.denied(token, "budget_exceeded", cost=money("0.000001"))
    assert denied["budgets"][0]["remaining"] == "0.00"
    assert denied["budgets"][0]["spent"] == "0.30"


@pytest.mark.parametrize("cost", ["100000000", "999999999999.999998"])
def test_amounts_up_to_twelve_integer_digits_are_exact(api: Api, cost: str) -> None:
    # Past 10^14 micro-units a Lua number prints as 1e+14: balances must stay exact strings end to end.
    big = api.token(budget=money("999999999999.999999"))
    body = api.allowed(big, cost=money(cost))
    assert body["budgets"][0]["spent"] == (cost if "." in cost else f"{cost}.00")
    assert api.spent(big) == [body["budgets"][0]["spent"]]


# -- every caveat kind ---------------------------------------------------------------------------------


def test_expires(api: Api) -> None:
    token = api.token(expires_in=10)
    api.clock.advance(9.5)
    api.allowed(token)
    api.clock.advance(0.5)  # exactly the instant: `now < expires` no longer holds
    denied = api.denied(token, "expired")
    assert denied["caveat"].startswith("expires < ") and denied["hop"] == 0
    assert "hop 0" in denied["reason"]


def test_an_attenuated_expiry_only_shortens(api: Api) -> None:
    root = api.token(expires_in=100)
    longer = attenuate(root, ["delegate = r", f"expires < {iso(api.clock.now + 10_000)}"])
    shorter = attenuate(root, ["delegate = r", f"expires < {iso(api.clock.now + 10)}"])
    api.clock.advance(50)
    api.allowed(longer)
    denied = api.denied(shorter, "expired")
    assert denied["hop"] == 1
    api.clock.advance(50)
    denied = api.denied(longer, "expired")
    assert denied["hop"] == 0


def test_tools_exact_and_prefix(api: Api) -> None:
    token = api.token(tools=["search", "github.*"])
    api.allowed(token, tool="search")
    api.allowed(token, tool="github.issues")
    api.allowed(token, tool="github.")
    for tool in ["searchx", "sear", "github", "fetch"]:
        denied = api.denied(token, "tool_not_allowed", tool=tool)
        assert denied["caveat"] == "tools in search,github.*" and denied["hop"] == 0
        assert denied["tools"] == ["search", "github.*"]


def test_tools_narrow_across_hops(api: Api) -> None:
    root = api.token(tools=["search", "github.*"])
    child = attenuate(root, ["delegate = r", "tools in github.issues,fetch"])
    api.allowed(child, tool="github.issues")
    denied = api.denied(child, "tool_not_allowed", tool="search")
    assert denied["hop"] == 1
    denied = api.denied(child, "tool_not_allowed", tool="fetch")
    assert denied["hop"] == 0  # the root never allowed fetch: widening fails at the root's caveat
    assert denied["tools"] == ["github.issues"]


def test_audience(api: Api) -> None:
    token = api.token(audience=["search-srv", "payments-srv"])
    api.allowed(token, audience="payments-srv")
    denied = api.denied(token, "audience_mismatch", audience="other-srv")
    assert denied["caveat"] == "audience in search-srv,payments-srv" and denied["hop"] == 0
    api.denied(token, "audience_mismatch")  # a verifier that names no audience is not in the list


def test_cost_cap_and_its_currency(api: Api) -> None:
    token = api.token(cost_cap=money("0.50"))
    api.allowed(token, cost=money("0.50"))
    api.allowed(token)  # no cost: the cap has nothing to cap
    denied = api.denied(token, "cost_cap_exceeded", cost=money("0.500001"))
    assert denied["caveat"] == "cost <= 0.50 USD" and denied["hop"] == 0
    denied = api.denied(token, "currency_mismatch", cost=money("0.01", "EUR"))
    assert denied["caveat"] == "cost <= 0.50 USD" and denied["hop"] == 0


def test_budget_currency_mismatch_and_budgets_in_two_currencies(api: Api) -> None:
    token = api.token(budget=money("1"))
    denied = api.denied(token, "currency_mismatch", cost=money("0.01", "EUR"))
    assert denied["caveat"] == "budget <= 1.00 USD" and denied["hop"] == 0
    assert denied["budgets"][0]["spent"] == "0.00"
    # Appending a budget in another currency must not open that currency: it only narrows, so a token
    # with budgets in two currencies admits no costed call at all (and calls without a cost still pass).
    both = attenuate(token, ["budget <= 2 EUR"])
    denied = api.denied(both, "currency_mismatch", cost=money("0.01", "EUR"))
    assert denied["caveat"] == "budget <= 1.00 USD" and denied["hop"] == 0
    denied = api.denied(both, "currency_mismatch", cost=money("0.01", "USD"))
    assert denied["caveat"] == "budget <= 2 EUR"
    assert [(b["currency"], b["spent"]) for b in denied["budgets"]] == [("USD", "0.00"), ("EUR", "0.00")]
    api.allowed(both)
    # A token without any budget is not spend-limited, whatever the currency.
    api.allowed(api.token(), cost=money("999999", "CREDITS"))


def test_rate_is_a_sliding_window_with_retry_after(api: Api) -> None:
    token = api.token(rate="2/1m")
    api.allowed(token)
    api.clock.advance(20)
    api.allowed(token)
    api.clock.advance(20)
    r = api.verify(token)
    assert r.status_code == 429
    body = r.json()
    assert body["allowed"] is False and body["code"] == "rate_limited"
    assert body["caveat"] == "rate <= 2/1m" and body["hop"] == 0
    assert body["reason"] == "the 2 calls allowed per 60s are used up (caveat 'rate <= 2/1m' at hop 0)"
    # The oldest call leaves the window 60 s after it was made: 20 s from now.
    assert r.headers["retry-after"] == "20"
    api.clock.advance(20)
    api.allowed(token)
    assert api.verify(token).status_code == 429


def test_rate_is_shared_by_everything_derived_from_its_prefix(api: Api) -> None:
    root = api.token(rate="3/1h")
    a = attenuate(root, ["delegate = a"])
    b = attenuate(root, ["delegate = b", "rate <= 1/1h"])
    api.allowed(a)
    api.allowed(b)
    r = api.verify(b)
    assert r.status_code == 429 and r.json()["hop"] == 1
    api.allowed(a)
    r = api.verify(a)
    assert r.status_code == 429 and r.json()["hop"] == 0 and r.json()["caveat"] == "rate <= 3/1h"


def test_denied_calls_do_not_use_up_the_rate(api: Api) -> None:
    token = api.token(rate="1/1h", tools=["search"], budget=money("1"))
    api.denied(token, "tool_not_allowed", tool="pay")
    api.denied(token, "budget_exceeded", cost=money("2"))
    api.allowed(token)


def test_depth(api: Api) -> None:
    root = api.token(max_depth=1)
    one = attenuate(root, ["delegate = a"])
    api.allowed(one)
    two = attenuate(one, ["delegate = b"])
    denied = api.denied(two, "depth_exceeded")
    assert denied["caveat"] == "depth <= 1" and denied["hop"] == 0
    # A depth caveat further down counts only the delegates after it.
    inner = attenuate(api.token(), ["delegate = a", "depth <= 0"])
    api.allowed(inner)
    denied = api.denied(attenuate(inner, ["delegate = b"]), "depth_exceeded")
    assert denied["caveat"] == "depth <= 0" and denied["hop"] == 1
    # Sharing without a new delegate stays within depth: restrictions alone are no delegation.
    api.allowed(attenuate(one, ["tools in search"]))


def test_delegate_always_holds_and_numbers_the_hops(api: Api) -> None:
    root = api.token(tools=["search", "fetch"])
    chain = attenuate(root, ["delegate = a", "tools in search", "delegate = b", "delegate = c", "cost <= 1 USD"])
    body = api.allowed(chain)
    assert body["delegation"] == ["orchestrator", "a", "b", "c"]
    assert body["holder"] == "c"
    denied = api.denied(chain, "cost_cap_exceeded", cost=money("2"))
    assert denied["hop"] == 3
    denied = api.denied(chain, "tool_not_allowed", tool="fetch")
    assert denied["hop"] == 1


ARG_CASES: list[tuple[str, Any, bool]] = [
    ("arg.repo = acme/web", "acme/web", True),
    ("arg.repo = acme/web", "acme/api", False),
    ("arg.repo != acme/web", "acme/api", True),
    ("arg.repo != acme/web", "acme/web", False),
    ("arg.currency in usd,eur", "eur", True),
    ("arg.currency in usd,eur", "gbp", False),
    ("arg.amount < 500", 499.999999, True),
    ("arg.amount < 500", 500, False),
    ("arg.amount <= 500", 500, True),
    ("arg.amount <= 500", 500.000001, False),
    ("arg.amount <= 500", "500.00", True),  # a decimal string compares as a number
    ("arg.amount > 0", 0.000001, True),
    ("arg.amount > 0", 0, False),
    ("arg.amount >= -1.5", -1.5, True),
    ("arg.amount >= -1.5", -1.500001, False),
    ("arg.amount <= 500", True, False),  # a boolean is no number
    ("arg.amount <= 500", "lots", False),
    ("arg.amount <= 500", None, False),
    ("arg.amount <= 500", [1], False),
    ("arg.amount = 1", 1.0, True),
    ("arg.amount = 1", "1", True),
    ("arg.flag = true", True, True),
    ("arg.flag = true", "true", True),
    ("arg.flag = true", False, False),
    ("arg.repo = acme/web", {"x": 1}, False),
]


@pytest.mark.parametrize(("caveat", "value", "allowed"), ARG_CASES)
def test_arg_operators(api: Api, caveat: str, value: Any, allowed: bool) -> None:
    path = caveat.split(" ")[0].removeprefix("arg.")
    token = api.token(caveats=[caveat])
    r = api.verify(token, args={path: value})
    assert r.status_code == (200 if allowed else 403), r.text
    if not allowed:
        assert r.json()["code"] == "arg_mismatch"
        assert r.json()["caveat"] == caveat and r.json()["hop"] == 0


def test_arg_numbers_are_exact_decimals_not_floats(api: Api) -> None:
    token = api.token(caveats=["arg.x <= 0.3"])
    # 0.1 + 0.2 as a float prints 0.30000000000000004: larger than 0.3 as a decimal, so denied.
    api.denied(token, "arg_mismatch", args={"x": 0.1 + 0.2})
    api.allowed(token, args={"x": 0.3})
    # Sent as raw JSON so nothing on our side rounds them.
    for text, ok in [("0.3", True), ("0.30000000000000000001", False), ("3e-1", True), ("0.2999999999999999999", True)]:
        r = api.post("/v1/verify", content=f'{{"token": "{token}", "tool": "t", "args": {{"x": {text}}}}}')
        assert r.status_code == (200 if ok else 403), (text, r.text)
    equal = api.token(caveats=["arg.x = 0.3"])
    r = api.post("/v1/verify", content=f'{{"token": "{equal}", "tool": "t", "args": {{"x": 0.30000000000000004}}}}')
    assert r.status_code == 403
    r = api.post("/v1/verify", content=f'{{"token": "{equal}", "tool": "t", "args": {{"x": 0.300}}}}')
    assert r.status_code == 200
    # As a float 900719925473.9999999 rounds up to 900719925474.0; as a decimal it is just below.
    big = api.token(caveats=["arg.n < 900719925474"])
    r = api.post("/v1/verify", content=f'{{"token": "{big}", "tool": "t", "args": {{"n": 900719925473.9999999}}}}')
    assert r.status_code == 200


def test_arg_paths_and_missing_arguments(api: Api) -> None:
    token = api.token(caveats=["arg.payment.amount <= 10"])
    api.allowed(token, args={"payment": {"amount": 10}})
    denied = api.denied(token, "arg_mismatch", args={"payment": {}})
    assert "missing" in denied["reason"]
    api.denied(token, "arg_mismatch", args={"payment": 5})
    api.denied(token, "arg_mismatch")  # no args at all


# -- caveats the service does not understand deny ------------------------------------------------------


@pytest.mark.parametrize(
    ("caveat", "code"),
    [
        ("color = red", "unknown_caveat"),
        ("Tools in search", "malformed_caveat"),  # keys start lowercase: no key, no kind
        ("budget <= lots USD", "malformed_caveat"),
        ("budget <= 1.00 usd", "malformed_caveat"),
        ("budget < 1.00 USD", "malformed_caveat"),
        ("tools  in search", "malformed_caveat"),
        ("tools in search ", "malformed_caveat"),
        ("tools in search\n", "malformed_caveat"),
        ("tools in search\u2028", "malformed_caveat"),
        ("expires < 2099-01-01T00:00:00+00:00", "malformed_caveat"),
        ("expires < 2099-01-01T00:00:00.5Z", "malformed_caveat"),
        ("rate <= 100001/1h", "malformed_caveat"),
        ("depth <= -1", "malformed_caveat"),
        ("arg.x < abc", "malformed_caveat"),
        ("delegate = has space", "malformed_caveat"),
        ("tools in *", "malformed_caveat"),
    ],
)
def test_offline_caveats_that_do_not_parse_deny(api: Api, caveat: str, code: str) -> None:
    token = attenuate(api.token(budget=money("1")), ["delegate = r", caveat])
    denied = api.denied(token, code, cost=money("0.01"))
    assert denied["caveat"] == caveat and denied["hop"] == 1
    assert denied["budgets"][0]["spent"] == "0.00"
    assert api.spent(token) == ["0.00"]


def test_a_caveat_that_is_not_utf8_denies(api: Api) -> None:
    from app.token import codec, hmac_chain

    raw = codec.decode(api.token())
    bad = b"tools in \xff"
    token = codec.encode(raw._replace(caveats=(*raw.caveats, bad), signature=hmac_chain.extend(raw.signature, bad)))
    denied = api.denied(token, "malformed_caveat")
    assert denied["hop"] == 0


# -- which denial wins ---------------------------------------------------------------------------------


def test_stateless_caveats_in_chain_order(api: Api) -> None:
    root = api.token(tools=["search"])
    expired_later = attenuate(root, ["delegate = a", f"expires < {iso(api.clock.now + 1)}"])
    api.clock.advance(5)
    # Both the root's tools caveat and the hop-1 expiry fail: the first in the chain is reported.
    assert api.denied(expired_later, "tool_not_allowed", tool="pay")["hop"] == 0
    assert api.denied(expired_later, "expired")["hop"] == 1
    unknown_first = attenuate(api.token(), ["delegate = a", "color = red", "tools in search"])
    assert api.denied(unknown_first, "unknown_caveat", tool="pay")["caveat"] == "color = red"
    unknown_last = attenuate(api.token(), ["delegate = a", "tools in search", "color = red"])
    assert api.denied(unknown_last, "tool_not_allowed", tool="pay")["caveat"] == "tools in search"
    depth_first = attenuate(api.token(max_depth=0), ["delegate = a", "tools in search"])
    assert api.denied(depth_first, "depth_exceeded", tool="pay")["hop"] == 0
    arg_then_cost = attenuate(api.token(), ["arg.n <= 1", "cost <= 1 USD"])
    assert api.denied(arg_then_cost, "arg_mismatch", args={"n": 2}, cost=money("5"))["caveat"] == "arg.n <= 1"


def test_stateless_denials_win_over_revoked(api: Api) -> None:
    token = api.token(tools=["search"])
    assert api.post("/v1/revoke", {"token": token}).status_code == 200
    api.denied(token, "tool_not_allowed", tool="pay")
    api.denied(token, "revoked")


def test_revoked_wins_over_rate_and_budget(api: Api) -> None:
    token = api.token(rate="1/1h", budget=money("1"))
    api.allowed(token, cost=money("1"))
    assert api.verify(token, cost=money("1")).status_code == 429
    api.post("/v1/revoke", {"token": token})
    api.denied(token, "revoked", cost=money("1"))


def test_rate_limited_wins_over_budget_exceeded(api: Api) -> None:
    token = api.token(rate="1/1h", budget=money("1"))
    api.allowed(token, cost=money("1"))
    r = api.verify(token, cost=money("1"))
    assert r.status_code == 429 and r.json()["code"] == "rate_limited"
    assert r.headers["retry-after"] == "3600"
    assert r.json()["budgets"][0]["remaining"] == "0.00"


def test_currency_mismatch_of_the_budgets_is_decided_before_the_store(api: Api) -> None:
    token = api.token(budget=money("1"))
    api.post("/v1/revoke", {"token": token})
    api.denied(token, "currency_mismatch", cost=money("1", "EUR"))


# -- what a denial tells the holder --------------------------------------------------------------------


def test_denials_after_a_valid_signature_carry_budgets_and_tools(api: Api) -> None:
    token = api.token(budget=money("5"), tools=["search"])
    api.allowed(token, cost=money("1"))
    denied = api.denied(token, "tool_not_allowed", tool="pay")
    assert denied["tools"] == ["search"]
    assert denied["budgets"][0]["remaining"] == "4.00"
    denied = api.denied(token, "budget_exceeded", cost=money("4.01"))
    assert denied["caveat"] == "budget <= 5.00 USD" and denied["hop"] == 0
    assert denied["budgets"][0]["remaining"] == "4.00"
    assert "4.00" in denied["reason"]
    unrestricted = api.denied(attenuate(api.token(), ["color = red"]), "unknown_caveat")
    assert "tools" not in unrestricted  # absent when unrestricted
    assert "budgets" not in unrestricted or unrestricted["budgets"] == []


def test_invalid_token_carries_neither_budgets_tools_nor_caveat(api: Api) -> None:
    token = api.token(budget=money("5"), tools=["search"])
    denied = api.denied(token[:-2] + ("AA" if token[-2:] != "AA" else "BA"), "invalid_token")
    assert set(denied) <= {"allowed", "code", "reason"}


# -- edges -------------------------------------------------------------------------------------------


def test_a_rate_of_zero_allows_nothing(api: Api) -> None:
    token = api.token(rate="0/1h")
    r = api.verify(token)
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "rate_limited" and r.headers["retry-after"] == "3600"


def test_the_requested_tool_is_a_name_not_a_pattern(api: Api) -> None:
    token = api.token(tools=["search*"])
    r = api.verify(token, tool="search*")
    assert r.status_code == 400
    assert r.json()["field"] == "tool"
    api.allowed(token, tool="search.web")
