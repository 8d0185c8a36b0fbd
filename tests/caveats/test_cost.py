"""`cost <= 0.50 USD`: one call's cost, to the micro-unit; a cost in another currency is currency_mismatch."""

from __future__ import annotations

import pytest

from caveats.cost import Cost
from caveats.money import Amount
from tests.caveats.support import BAD_MONEY, assert_malformed, assert_parses, code, ctx, ids, run

VALID = [
    ("cost <= 0.50 EUR", Cost(Amount("EUR", 500_000))),
    ("cost <= 0 TOKENS", Cost(Amount("TOKENS", 0))),
    ("cost <= 12.345678 USD", Cost(Amount("USD", 12_345_678))),
    ("cost <= 999999999999.999999 USD", Cost(Amount("USD", 10**18 - 1))),
]


@pytest.mark.parametrize(("text", "value"), VALID, ids=ids(VALID))
def test_valid_forms_parse_to_their_cap(text: str, value: Cost) -> None:
    assert_parses(text, value)


@pytest.mark.parametrize("value", BAD_MONEY, ids=ids(BAD_MONEY))
def test_malformed_amounts_deny(value: str) -> None:
    assert_malformed(f"cost <= {value}")


CHECKS = [
    ("cost <= 0.50 USD", None, None),  # a call without a cost is within any cap
    ("cost <= 0.50 USD", Amount("USD", 0), None),
    ("cost <= 0.50 USD", Amount("USD", 499_999), None),
    ("cost <= 0.50 USD", Amount("USD", 500_000), None),  # the cap itself is allowed
    ("cost <= 0.50 USD", Amount("USD", 500_001), "cost_cap_exceeded"),  # one micro-unit over
    ("cost <= 0.50 USD", Amount("USD", 10**18), "cost_cap_exceeded"),
    ("cost <= 0 USD", Amount("USD", 0), None),
    ("cost <= 0 USD", Amount("USD", 1), "cost_cap_exceeded"),
    ("cost <= 0.000001 USD", Amount("USD", 1), None),
    ("cost <= 0.000001 USD", Amount("USD", 2), "cost_cap_exceeded"),
    ("cost <= 999999999999.999999 USD", Amount("USD", 10**18 - 1), None),
    ("cost <= 999999999999.999999 USD", Amount("USD", 10**18), "cost_cap_exceeded"),
    # another currency is a mismatch whatever the amount, even zero; never a conversion
    ("cost <= 0.50 USD", Amount("EUR", 0), "currency_mismatch"),
    ("cost <= 0.50 USD", Amount("EUR", 1), "currency_mismatch"),
    ("cost <= 0.50 USD", Amount("EUR", 10**18), "currency_mismatch"),
    ("cost <= 0.50 USD", Amount("US", 1), "currency_mismatch"),
    ("cost <= 0.50 USD", Amount("USDT", 1), "currency_mismatch"),
    ("cost <= 0.50 USD", Amount("usd", 1), "currency_mismatch"),
]


@pytest.mark.parametrize(("text", "cost", "want"), CHECKS, ids=[f"{t} | {c}" for t, c, _ in CHECKS])
def test_the_call_costs_at_most_the_cap(text: str, cost: Amount | None, want: str | None) -> None:
    assert code(text, ctx(cost=cost)) == want


def test_reasons_are_plain_words() -> None:
    over = run("cost <= 0.50 USD", ctx(cost=Amount("USD", 500_001)))
    assert over is not None and over.reason == "the call costs 0.500001 USD, more than the cap of 0.50 USD"
    other = run("cost <= 0.50 USD", ctx(cost=Amount("EUR", 1)))
    assert other is not None and other.reason == "the call costs EUR, the cap is in USD"
