"""`budget <= 5.00 USD`: parsed here, decided by the counter store, so its stateless check always holds."""

from __future__ import annotations

import pytest

from caveats.base import Role
from caveats.budget import Budget
from caveats.money import Amount
from tests.caveats.support import BAD_MONEY, assert_malformed, assert_parses, code, ctx, ids, run

VALID = [
    ("budget <= 5.00 USD", Budget(Amount("USD", 5_000_000))),
    ("budget <= 5 USD", Budget(Amount("USD", 5_000_000))),
    ("budget <= 1.5 EUR", Budget(Amount("EUR", 1_500_000))),
    ("budget <= 0 CREDITS", Budget(Amount("CREDITS", 0))),
    ("budget <= 0.000001 A1", Budget(Amount("A1", 1))),
    ("budget <= 000000000000.000000 US", Budget(Amount("US", 0))),
    ("budget <= 999999999999 USD", Budget(Amount("USD", 999_999_999_999_000_000))),
    ("budget <= 999999999999.999999 TOKENS", Budget(Amount("TOKENS", 10**18 - 1))),
    ("budget <= 1 U_", Budget(Amount("U_", 1_000_000))),
    ("budget <= 1 ABCDEFGHIJKLMNOP", Budget(Amount("ABCDEFGHIJKLMNOP", 1_000_000))),
    ("budget <= 1 A123456789012345", Budget(Amount("A123456789012345", 1_000_000))),
]


@pytest.mark.parametrize(("text", "value"), VALID, ids=ids(VALID))
def test_valid_forms_parse_to_their_limit(text: str, value: Budget) -> None:
    assert_parses(text, value)


@pytest.mark.parametrize("value", BAD_MONEY, ids=ids(BAD_MONEY))
def test_malformed_amounts_deny(value: str) -> None:
    assert_malformed(f"budget <= {value}")


def test_budget_is_a_counter_with_a_limit_per_chain() -> None:
    assert Budget.ROLE is Role.COUNTER and Budget.MAX_PER_CHAIN == 16


@pytest.mark.parametrize("cost", [None, Amount("USD", 10**18)])
def test_the_stateless_check_leaves_the_spend_to_the_store(cost: Amount | None) -> None:
    assert code("budget <= 1 USD", ctx(cost=cost)) is None  # overspend is the store's budget_exceeded


@pytest.mark.parametrize("cost", [Amount("EUR", 1), Amount("EUR", 0), Amount("USDX", 1)])
def test_a_call_costed_in_another_currency_is_a_currency_mismatch(cost: Amount) -> None:
    denial = run("budget <= 1 USD", ctx(cost=cost))
    assert denial is not None and denial.code == "currency_mismatch"
    assert denial.reason == f"the call costs {cost.currency} but this budget is in USD"
