"""A whole chain as the language reads it: hops, delegation path, the first failing caveat, chain-wide rules."""

from __future__ import annotations

import pytest

from caveats import Amount, Code
from caveats.chain import Analysis, analyse, intersect
from tests.caveats.support import ctx


def chain(*texts: str) -> Analysis:
    return analyse([t.encode() for t in texts])


def test_hops_delegation_and_holder() -> None:
    a = chain("delegate = o", "budget <= 10 USD", "delegate = r", "tools in search", "delegate = z", "depth <= 0")
    assert a.hops == (0, 0, 1, 1, 2, 2)
    assert a.delegation == ("o", "r", "z") and a.holder == "z"


def test_the_first_failing_caveat_in_chain_order_is_reported() -> None:
    a = chain("delegate = o", "tools in pay", "frob = 1", "expires < 2020-01-01T00:00:00Z")
    denial = a.evaluate(ctx("search"))
    assert denial is not None and (denial.code, denial.caveat, denial.hop) == ("tool_not_allowed", "tools in pay", 0)
    later = chain("delegate = o", "frob = 1", "tools in pay")
    denial = later.evaluate(ctx("search"))
    assert denial is not None and (denial.code, denial.caveat) == ("unknown_caveat", "frob = 1")


def test_denials_carry_the_caveat_text_and_hop() -> None:
    a = chain("delegate = o", "delegate = r", "expires < 2026-12-01T00:00:00Z")
    denial = a.evaluate(ctx(hops=2))
    assert denial is not None and (denial.code, denial.caveat, denial.hop) == (
        Code.EXPIRED,
        "expires < 2026-12-01T00:00:00Z",
        1,
    )
    assert denial.reason == "token expired at 2026-12-01T00:00:00Z (caveat 'expires < 2026-12-01T00:00:00Z' at hop 1)"


def test_malformed_and_unknown_caveats_deny_with_their_text_and_hop() -> None:
    denial = chain("delegate = o", "delegate = r", "budget <= 5 usd").evaluate(ctx(hops=2))
    assert denial is not None and (denial.code, denial.caveat, denial.hop) == (
        Code.MALFORMED_CAVEAT,
        "budget <= 5 usd",
        1,
    )
    denial = analyse([b"delegate = o", b"tools in \xff"]).evaluate(ctx())
    assert denial is not None and (denial.code, denial.caveat) == (Code.MALFORMED_CAVEAT, "tools in \ufffd")


@pytest.mark.parametrize("after", range(0, 5))
def test_depth_counts_the_delegates_after_it(after: int) -> None:
    a = chain("delegate = o", "delegate = a", "depth <= 2", *(f"delegate = d{n}" for n in range(after)))
    denial = a.evaluate(ctx(hops=len(a.delegation)))
    if after <= 2:
        assert denial is None
    else:
        assert denial is not None and (denial.code, denial.caveat, denial.hop) == (Code.DEPTH_EXCEEDED, "depth <= 2", 1)


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
        (["budget <= 10 USD"], None, None),  # a call without a cost is not a spend
        ([], Amount("EUR", 1), None),  # no budget: not spend-limited
    ],
)
def test_every_budget_admits_only_calls_in_its_currency(
    budgets: list[str], cost: Amount | None, want: Code | None
) -> None:
    denial = chain("delegate = o", *budgets).evaluate(ctx(cost=cost))
    assert (None if denial is None else denial.code) == want
    if denial is not None:
        assert denial.caveat in budgets and denial.hop == 0


def test_a_budget_added_in_another_currency_never_widens() -> None:
    a = chain("delegate = o", "budget <= 10 USD", "delegate = r", "budget <= 1000 EUR")
    for cost in (Amount("USD", 1), Amount("EUR", 1)):
        denial = a.evaluate(ctx(cost=cost, hops=2))
        assert denial is not None and denial.code == Code.CURRENCY_MISMATCH


def test_a_budgets_currency_is_decided_in_chain_order_with_the_other_stateless_caveats() -> None:
    """docs/caveats.md: the first failing stateless caveat in chain order is the one reported."""
    a = chain("delegate = o", "budget <= 1 USD", "tools in x", "delegate = r", "budget <= 1 EUR")
    first = a.evaluate(ctx("y", cost=Amount("EUR", 1), hops=2))
    assert first is not None and (first.code, first.caveat) == (Code.CURRENCY_MISMATCH, "budget <= 1 USD")
    later = a.evaluate(ctx("x", cost=Amount("USD", 1), hops=2))
    assert later is not None and (later.code, later.caveat, later.hop) == (Code.CURRENCY_MISMATCH, "budget <= 1 EUR", 1)
    tools_first = chain("delegate = o", "tools in x", "budget <= 1 USD").evaluate(ctx("y", cost=Amount("EUR", 1)))
    assert tools_first is not None and tools_first.code == Code.TOOL_NOT_ALLOWED


def test_a_cost_cap_in_another_currency_is_a_currency_mismatch() -> None:
    denial = chain("delegate = o", "cost <= 1 EUR").evaluate(ctx(cost=Amount("USD", 1)))
    assert denial is not None and (denial.code, denial.caveat) == (Code.CURRENCY_MISMATCH, "cost <= 1 EUR")


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


@pytest.mark.parametrize(
    ("a", "b", "both"),
    [
        (("search", "gh.*"), ("gh.issues", "pay"), ("gh.issues",)),
        (("gh.*",), ("gh.is*",), ("gh.is*",)),
        (("a*",), ("b*",), ()),
        (("search",), ("search",), ("search",)),
    ],
)
def test_intersect(a: tuple[str, ...], b: tuple[str, ...], both: tuple[str, ...]) -> None:
    assert intersect(a, b) == both


def test_malformed_counters_count_against_their_kinds_limit_and_unknown_keys_do_not() -> None:
    rates = [f"rate <= {n}/1h" for n in range(8)]
    assert chain("delegate = o", *rates).over_limit is None
    assert chain("delegate = o", *rates, "rate <= 1/366d").over_limit == (
        "a token carries at most 8 rate caveats, this one has 9"
    )
    assert chain("delegate = o", *rates, "rates <= 1/1h", "rate_daily <= 1/1d", "rate").over_limit is None
    a = chain("delegate = o", "budget <= 1 USD", "rate <= 1/1s", "budget <= 2 USD")
    assert [b.caveat for b in a.budgets] == ["budget <= 1 USD", "budget <= 2 USD"]
    assert [(r.index, r.parsed.count) for r in a.rates] == [(2, 1)]
