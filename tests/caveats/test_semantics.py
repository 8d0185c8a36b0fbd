"""Each kind's check against a frozen Context, operator by operator and type by type, and the chain rules.

test_checks.py shows one case per rule; here the tables cross every arg operator with every argument
type a JSON body can produce, depth with every hop, and costs with caps to the micro-unit.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from caveats import Amount, Caveat, Code, Context, Denial, parse
from caveats.build import restriction_caveats
from caveats.chain import Analysis, analyse

NOW = 1_796_083_200  # 2026-12-01T00:00:00Z


def ctx(tool: str = "search", **kw: Any) -> Context:
    return Context(
        now=kw.pop("now", NOW),
        tool=tool,
        audience=kw.pop("audience", None),
        cost=kw.pop("cost", None),
        args=kw.pop("args", {}),
        hops=kw.pop("hops", 1),
    )


def run(text: str, context: Context, hop: int = 0) -> Denial | None:
    caveat = parse(text)
    assert isinstance(caveat, Caveat), caveat
    return caveat.check(context, hop)


def code(text: str, context: Context, hop: int = 0) -> str | None:
    denial = run(text, context, hop)
    return None if denial is None else str(denial.code)


# -- expires, tools, audience ----------------------------------------------------------------------------

EXPIRES = [(NOW - 10**9, None), (NOW - 1, None), (NOW, "expired"), (NOW + 1, "expired"), (NOW + 10**9, "expired")]


@pytest.mark.parametrize(("now", "want"), EXPIRES)
def test_expires_holds_strictly_before_the_instant(now: int, want: str | None) -> None:
    assert code("expires < 2026-12-01T00:00:00Z", ctx(now=now)) == want


def test_expired_reason_names_the_instant() -> None:
    denial = run("expires < 2026-12-01T00:00:00Z", ctx(now=NOW))
    assert denial is not None and denial.reason == "token expired at 2026-12-01T00:00:00Z"


TOOLS = [
    ("tools in search", "search", None),
    ("tools in search", "searc", "tool_not_allowed"),
    ("tools in search", "search2", "tool_not_allowed"),
    ("tools in search", "Search", "tool_not_allowed"),
    ("tools in search", "", "tool_not_allowed"),
    ("tools in gh.*", "gh.", None),
    ("tools in gh.*", "gh.issues.create", None),
    ("tools in gh.*", "gh", "tool_not_allowed"),
    ("tools in gh.*", "ghx", "tool_not_allowed"),
    ("tools in gh.*", "GH.issues", "tool_not_allowed"),
    ("tools in gh*", "gh", None),
    ("tools in gh*", "ghost", None),
    ("tools in gh*", "g", "tool_not_allowed"),
    ("tools in a,b*,c", "c", None),
    ("tools in a,b*,c", "bz", None),
    ("tools in a,b*,c", "d", "tool_not_allowed"),
    ("tools in a:b", "a:b", None),
    ("tools in search", "search*", "tool_not_allowed"),  # a requested name is never a pattern
]


@pytest.mark.parametrize(("text", "tool", "want"), TOOLS)
def test_tools(text: str, tool: str, want: str | None) -> None:
    assert code(text, ctx(tool)) == want


AUDIENCE = [
    ("payments-srv", None),
    ("search-srv", None),
    ("Payments-srv", "audience_mismatch"),
    ("payments", "audience_mismatch"),
    ("payments-srv,search-srv", "audience_mismatch"),
    ("", "audience_mismatch"),
    (None, "audience_mismatch"),
]


@pytest.mark.parametrize(("audience", "want"), AUDIENCE)
def test_audience(audience: str | None, want: str | None) -> None:
    assert code("audience in payments-srv,search-srv", ctx(audience=audience)) == want


def test_audience_reasons() -> None:
    missing = run("audience in a,b", ctx(audience=None))
    assert missing is not None and missing.reason == "a verifier that named no audience is not in a,b"
    other = run("audience in a,b", ctx(audience="c"))
    assert other is not None and other.reason == "'c' is not in a,b"


# -- cost caps to the micro-unit ------------------------------------------------------------------------

COST = [
    ("cost <= 0.50 USD", Amount("USD", 0), None),
    ("cost <= 0.50 USD", Amount("USD", 499_999), None),
    ("cost <= 0.50 USD", Amount("USD", 500_000), None),
    ("cost <= 0.50 USD", Amount("USD", 500_001), "cost_cap_exceeded"),
    ("cost <= 0.50 USD", Amount("USD", 10**18), "cost_cap_exceeded"),
    ("cost <= 0 USD", Amount("USD", 0), None),
    ("cost <= 0 USD", Amount("USD", 1), "cost_cap_exceeded"),
    ("cost <= 0.000001 USD", Amount("USD", 1), None),
    ("cost <= 999999999999.999999 USD", Amount("USD", 10**18 - 1), None),
    ("cost <= 999999999999.999999 USD", Amount("USD", 10**18), "cost_cap_exceeded"),
    ("cost <= 0.50 USD", Amount("EUR", 0), "currency_mismatch"),
    ("cost <= 0.50 USD", Amount("EUR", 1), "currency_mismatch"),
    ("cost <= 0.50 USD", Amount("US", 1), "currency_mismatch"),
    ("cost <= 0.50 USD", Amount("USDT", 1), "currency_mismatch"),
    ("cost <= 0.50 USD", None, None),
]


@pytest.mark.parametrize(("text", "cost", "want"), COST)
def test_cost_caps(text: str, cost: Amount | None, want: str | None) -> None:
    assert code(text, ctx(cost=cost)) == want


def test_cost_reasons_are_plain_words() -> None:
    over = run("cost <= 0.50 USD", ctx(cost=Amount("USD", 500_001)))
    assert over is not None and over.reason == "the call costs 0.500001 USD, more than the cap of 0.50 USD"
    other = run("cost <= 0.50 USD", ctx(cost=Amount("EUR", 1)))
    assert other is not None and other.reason == "the call costs EUR, the cap is in USD"


@pytest.mark.parametrize("text", ["budget <= 1 USD", "rate <= 0/1s", "delegate = x"])
def test_stateful_and_delegate_caveats_hold_in_the_stateless_check(text: str) -> None:
    assert run(text, ctx(cost=Amount("EUR", 10**18), hops=10)) is None


# -- depth: ctx.hops is every delegate in the chain; hop h has seen h + 1 of them --------------------------

DEPTH = [
    (limit, hop, hops, None if hops - (hop + 1) <= limit else "depth_exceeded")
    for limit in (0, 1, 2)
    for hop in (0, 1, 3)
    for hops in range(hop + 1, hop + 5)
]


@pytest.mark.parametrize(("limit", "hop", "hops", "want"), DEPTH)
def test_depth_counts_delegations_after_its_hop(limit: int, hop: int, hops: int, want: str | None) -> None:
    assert code(f"depth <= {limit}", ctx(hops=hops), hop) == want


def test_depth_reason() -> None:
    denial = run("depth <= 1", ctx(hops=4), 0)
    assert denial is not None and denial.reason == "3 delegations follow a limit of 1"


# -- arg: every operator against every type a JSON body can produce ----------------------------------------

OBJ: dict[str, Any] = {"k": 1}
ARR: list[Any] = [1]
ARG = [
    # ints, Decimals and numeric strings order as exact decimals
    ("arg.x < 5", 4, None),
    ("arg.x < 5", 5, "arg_mismatch"),
    ("arg.x <= 5", 5, None),
    ("arg.x <= 5", Decimal("5.000001"), "arg_mismatch"),
    ("arg.x <= 5", Decimal("5.0000000001"), "arg_mismatch"),
    ("arg.x <= 5", Decimal("4.9999999999"), None),
    ("arg.x <= 5", Decimal("5E0"), None),
    ("arg.x <= 5", Decimal("0.5E1"), None),
    ("arg.x <= 5", Decimal("1E+1"), "arg_mismatch"),
    ("arg.x > 5", 6, None),
    ("arg.x > 5", 5, "arg_mismatch"),
    ("arg.x >= 5", 5, None),
    ("arg.x >= 5", 4, "arg_mismatch"),
    ("arg.x >= -5", -5, None),
    ("arg.x > -5", -6, "arg_mismatch"),
    ("arg.x <= 0", Decimal("-0"), None),
    ("arg.x < 0", Decimal("-0"), "arg_mismatch"),
    ("arg.x <= 5", 10**30, "arg_mismatch"),
    ("arg.x >= 5", 10**30, None),
    ("arg.x <= 5", "5", None),
    ("arg.x <= 5", "5.000001", "arg_mismatch"),
    ("arg.x <= 5", "-7", None),
    ("arg.x <= 5", "005", None),
    ("arg.x <= 5", " 5", "arg_mismatch"),
    ("arg.x <= 5", "5 ", "arg_mismatch"),
    ("arg.x <= 5", "+5", "arg_mismatch"),
    ("arg.x <= 5", "5e0", "arg_mismatch"),
    ("arg.x <= 5", "٣", "arg_mismatch"),
    ("arg.x <= 5", "1_0", "arg_mismatch"),
    ("arg.x <= 5", "NaN", "arg_mismatch"),
    ("arg.x >= 5", "Infinity", "arg_mismatch"),
    ("arg.x <= 5", "", "arg_mismatch"),
    ("arg.x <= 5", "five", "arg_mismatch"),
    ("arg.x <= 5", Decimal("NaN"), "arg_mismatch"),
    ("arg.x >= 5", Decimal("NaN"), "arg_mismatch"),
    # booleans are true/false, never numbers
    ("arg.x <= 5", True, "arg_mismatch"),
    ("arg.x >= 0", False, "arg_mismatch"),
    ("arg.x = true", True, None),
    ("arg.x = false", False, None),
    ("arg.x = true", False, "arg_mismatch"),
    ("arg.x = True", True, "arg_mismatch"),
    ("arg.x = 1", True, "arg_mismatch"),
    ("arg.x = 0", False, "arg_mismatch"),
    ("arg.x = true", 1, "arg_mismatch"),
    ("arg.x != true", False, None),
    ("arg.x != true", True, "arg_mismatch"),
    ("arg.x != 1", True, None),
    ("arg.x in true,false", False, None),
    ("arg.x in true,yes", "yes", None),
    ("arg.x = true", "true", None),  # a string equal to the text
    # = and != on numbers compare numerically; on strings exactly
    ("arg.x = 7", 7, None),
    ("arg.x = 7", Decimal("7.000"), None),
    ("arg.x = 7.0", 7, None),
    ("arg.x = 007", 7, None),
    ("arg.x = -0", 0, None),
    ("arg.x = 7", 8, "arg_mismatch"),
    ("arg.x = 7", Decimal("7.000001"), "arg_mismatch"),
    ("arg.x = seven", 7, "arg_mismatch"),
    ("arg.x = 7", "7", None),
    ("arg.x = 7", "07", "arg_mismatch"),
    ("arg.x != 7", 8, None),
    ("arg.x != 7", 7, "arg_mismatch"),
    ("arg.x != 7", Decimal("7.0"), "arg_mismatch"),
    ("arg.x != 7", "7", "arg_mismatch"),
    ("arg.x != 7", "8", None),
    ("arg.x = acme/web", "acme/web", None),
    ("arg.x = acme/web", "ACME/web", "arg_mismatch"),
    ("arg.x = acme/web", "acme/web ", "arg_mismatch"),
    ("arg.x = acme/web", "", "arg_mismatch"),
    ("arg.x in usd,eur", "usd", None),
    ("arg.x in usd,eur", "eur", None),
    ("arg.x in usd,eur", "usd,eur", "arg_mismatch"),
    ("arg.x in usd,eur", "gbp", "arg_mismatch"),
    ("arg.x in 1,2", 2, None),
    ("arg.x in 1,2", Decimal("2.0"), None),
    ("arg.x in 1,2", 3, "arg_mismatch"),
    ("arg.x in a,1", 1, None),
    # objects, arrays and null deny under every operator
    *[
        (f"arg.x {op} 1", bad, "arg_mismatch")
        for op in ("=", "!=", "in", "<", "<=", ">", ">=")
        for bad in (OBJ, ARR, None)
    ],
    ("arg.x != a", {}, "arg_mismatch"),
    ("arg.x != a", [], "arg_mismatch"),
]


@pytest.mark.parametrize(("text", "value", "want"), ARG, ids=[f"{t} | {v!r}"[:70] for t, v, _ in ARG])
def test_arg_comparisons(text: str, value: Any, want: str | None) -> None:
    assert code(text, ctx(args={"x": value})) == want


NESTED = [
    ("arg.a.b.c = 1", {"a": {"b": {"c": 1}}}, None),
    ("arg.a.b.c = 1", {"a": {"b": {"c": 2}}}, "arg_mismatch"),
    ("arg.a.b.c = 1", {"a": {"b": {}}}, "arg_mismatch"),
    ("arg.a.b.c = 1", {"a": {"b": 1}}, "arg_mismatch"),
    ("arg.a.b.c = 1", {"a": {"b": [1]}}, "arg_mismatch"),
    ("arg.a.b.c = 1", {"a": {"b": "c"}}, "arg_mismatch"),
    ("arg.a.b.c = 1", {"a": None}, "arg_mismatch"),
    ("arg.a.b.c = 1", {"a.b.c": 1}, "arg_mismatch"),  # dots are path separators, never part of a key
    ("arg.a.b.c = 1", {}, "arg_mismatch"),
    ("arg.a.0 = 1", {"a": [1]}, "arg_mismatch"),  # no array indexing
    ("arg.a.0 = 1", {"a": {"0": 1}}, None),
    ("arg.a != 1", {"b": 2}, "arg_mismatch"),
    ("arg.a.b != 1", {"a": {}}, "arg_mismatch"),
    ("arg.a.b != 1", {"a": {"b": 2}}, None),
]


@pytest.mark.parametrize(("text", "args", "want"), NESTED)
def test_nested_paths_and_missing_arguments(text: str, args: dict[str, Any], want: str | None) -> None:
    assert code(text, ctx(args=args)) == want


def test_arg_reasons_name_the_argument_in_plain_words() -> None:
    missing = run("arg.a.b != 1", ctx(args={}))
    assert missing is not None and missing.reason == "argument 'a.b' is missing"
    wrong = run("arg.c in usd,eur", ctx(args={"c": "gbp"}))
    assert wrong is not None and wrong.reason == "argument 'c' is not in usd,eur"


# -- Denial.at and the chain ------------------------------------------------------------------------------


def test_denial_at_keeps_the_code_and_appends_caveat_and_hop() -> None:
    base = Denial(Code.EXPIRED, "token expired at 2026-12-01T00:00:00Z")
    at = base.at("expires < 2026-12-01T00:00:00Z", 3)
    assert at == Denial(
        Code.EXPIRED,
        "token expired at 2026-12-01T00:00:00Z (caveat 'expires < 2026-12-01T00:00:00Z' at hop 3)",
        "expires < 2026-12-01T00:00:00Z",
        3,
    )
    assert base.caveat is None and base.hop is None  # a value: at() returns a new one


def chain(*texts: str) -> Analysis:
    return analyse([t.encode() for t in texts])


def test_chain_denials_carry_caveat_text_and_hop() -> None:
    a = chain("delegate = o", "delegate = r", "expires < 2026-12-01T00:00:00Z")
    denial = a.evaluate(ctx(hops=2))
    assert denial is not None and (denial.code, denial.caveat, denial.hop) == (
        Code.EXPIRED,
        "expires < 2026-12-01T00:00:00Z",
        1,
    )
    assert denial.reason.endswith("(caveat 'expires < 2026-12-01T00:00:00Z' at hop 1)")


def test_malformed_and_unknown_in_a_chain_carry_text_and_hop() -> None:
    a = chain("delegate = o", "delegate = r", "budget <= 5 usd")
    denial = a.evaluate(ctx(hops=2))
    assert denial is not None and (denial.code, denial.caveat, denial.hop) == (
        Code.MALFORMED_CAVEAT,
        "budget <= 5 usd",
        1,
    )
    raw = analyse([b"delegate = o", b"tools in \xff"])
    denial = raw.evaluate(ctx())
    assert denial is not None and denial.code == Code.MALFORMED_CAVEAT and denial.caveat == "tools in \ufffd"


@pytest.mark.parametrize(
    ("budgets", "cost", "want"),
    [
        (["budget <= 10 USD"], Amount("USD", 1), None),
        (["budget <= 10 USD"], Amount("USD", 10**18), None),  # the amount is the store's to decide
        (["budget <= 10 USD"], Amount("EUR", 0), Code.CURRENCY_MISMATCH),
        (["budget <= 10 USD", "budget <= 5 USD"], Amount("USD", 1), None),
        (["budget <= 10 USD", "budget <= 5 EUR"], Amount("USD", 1), Code.CURRENCY_MISMATCH),
        (["budget <= 10 USD", "budget <= 5 EUR"], Amount("EUR", 1), Code.CURRENCY_MISMATCH),
        (["budget <= 10 CREDITS"], Amount("CREDIT", 1), Code.CURRENCY_MISMATCH),
        ([], Amount("EUR", 1), None),  # no budget: not spend-limited
    ],
)
def test_every_budget_admits_only_calls_in_its_currency(budgets: list[str], cost: Amount, want: Code | None) -> None:
    a = chain("delegate = o", *budgets)
    denial = a.evaluate(ctx(cost=cost))
    assert (None if denial is None else denial.code) == want
    if denial is not None:
        assert denial.caveat in budgets and denial.hop == 0


def test_the_currency_denial_names_the_first_budget_in_another_currency() -> None:
    a = chain("delegate = o", "budget <= 10 USD", "delegate = r", "budget <= 5 EUR")
    denial = a.evaluate(ctx(cost=Amount("USD", 1), hops=2))
    assert denial is not None and (denial.caveat, denial.hop) == ("budget <= 5 EUR", 1)


def test_a_cost_cap_in_another_currency_is_a_currency_mismatch_in_the_chain() -> None:
    a = chain("delegate = o", "cost <= 1 EUR")
    denial = a.evaluate(ctx(cost=Amount("USD", 1)))
    assert denial is not None and denial.code == Code.CURRENCY_MISMATCH and denial.caveat == "cost <= 1 EUR"


@pytest.mark.parametrize("delegations", range(0, 5))
def test_depth_in_a_chain_counts_later_delegates(delegations: int) -> None:
    texts = ["delegate = o", "delegate = a", "depth <= 2", *(f"delegate = d{n}" for n in range(delegations))]
    a = chain(*texts)
    denial = a.evaluate(ctx(hops=len(a.delegation)))
    if delegations <= 2:
        assert denial is None
    else:
        assert denial is not None and (denial.code, denial.caveat, denial.hop) == (Code.DEPTH_EXCEEDED, "depth <= 2", 1)


@pytest.mark.parametrize(
    ("lists", "effective", "allowed", "denied"),
    [
        (["tools in gh.*,search", "tools in gh.issues,pay"], ("gh.issues",), ["gh.issues"], ["search", "pay", "gh.pr"]),
        (["tools in gh*", "tools in gh.is*"], ("gh.is*",), ["gh.issues"], ["gh.pr", "ghost"]),
        (["tools in a", "tools in b"], (), [], ["a", "b"]),
        (["tools in search,fetch", "tools in fetch,search"], ("search", "fetch"), ["search", "fetch"], ["x"]),
    ],
)
def test_effective_tools_narrow_with_every_list(
    lists: list[str], effective: tuple[str, ...], allowed: list[str], denied: list[str]
) -> None:
    a = chain("delegate = o", *lists)
    assert a.tools == effective
    for tool in allowed:
        assert a.evaluate(ctx(tool)) is None
    for tool in denied:
        denial = a.evaluate(ctx(tool))
        assert denial is not None and denial.code == Code.TOOL_NOT_ALLOWED


# -- the builder -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"to": "a b"}, "to"),
        ({"to": "-a"}, "to"),
        ({"budget": "5 usd"}, "budget"),
        ({"budget": Amount("USD", -1)}, "budget"),
        ({"budget": Amount("USD", 10**18)}, "budget"),
        ({"budget": Amount("usd", 1)}, "budget"),
        ({"cost_cap": "1e3 USD"}, "cost_cap"),
        ({"tools": []}, "tools"),
        ({"tools": ["a", ""]}, "tools"),
        ({"tools": ["*"]}, "tools"),
        ({"audience": []}, "audience"),
        ({"audience": ["a*"]}, "audience"),
        ({"expires_at": -1}, "expires"),
        ({"expires_at": 253_402_300_800}, "expires"),
        ({"max_depth": 1001}, "max_depth"),
        ({"rate": "100001/1h"}, "rate"),
        ({"rate": "1/367d"}, "rate"),
        ({"args": {"a..b": "= 1"}}, "args.a..b"),
        ({"args": {"a": "<= x"}}, "args.a"),
        ({"caveats": ["depth <= 1", "frob = 1"]}, "caveats[1]"),
        ({"caveats": ["tools in a\nexpires < 2030-01-01T00:00:00Z"]}, "caveats[0]"),
    ],
)
def test_builder_names_the_field_it_refuses(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError) as raised:
        restriction_caveats(**kwargs)
    assert str(raised.value).startswith(f"{field}: ")


def test_builder_round_trips_typed_values() -> None:
    texts = restriction_caveats(
        to="r",
        budget=Amount("USD", 1),
        cost_cap=Amount("EUR", 12_500_000),
        tools=("a", "b*"),
        audience=iter(["srv"]),
        expires_at=253_402_300_799,
        max_depth=1000,
        rate="100000/366d",
        args={"a.b": "!= x", "n": "in 1,2"},
    )
    assert texts == [
        "delegate = r",
        "expires < 9999-12-31T23:59:59Z",
        "tools in a,b*",
        "audience in srv",
        "budget <= 0.000001 USD",
        "cost <= 12.50 EUR",
        "rate <= 100000/366d",
        "depth <= 1000",
        "arg.a.b != x",
        "arg.n in 1,2",
    ]
    assert all(isinstance(parse(t), Caveat) for t in texts)
    assert restriction_caveats() == []
