"""Money, the one amount parser: `\\d{1,12}(\\.\\d{1,6})?` as integer micro-units, `[A-Z][A-Z0-9_]{1,15}`."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caveats.grammar import CaveatSyntaxError
from caveats.money import Amount, decimal_to_micros, format_micros, parse_currency, parse_micros, parse_money
from tests.caveats.support import BAD_MONEY, LOOKALIKE_NUMBERS, ids

MICROS = [
    ("0", 0),
    ("00", 0),
    ("0.0", 0),
    ("0.000001", 1),
    ("0.1", 100_000),
    ("0.10", 100_000),
    ("1", 1_000_000),
    ("007", 7_000_000),  # leading zeros are still one decimal: 7
    ("12.5", 12_500_000),
    ("1.000001", 1_000_001),
    ("12.345678", 12_345_678),
    ("000000000000.000000", 0),
    ("999999999999", 999_999_999_999_000_000),
    ("999999999999.999999", 10**18 - 1),
]


@pytest.mark.parametrize(("text", "micros"), MICROS, ids=ids(MICROS))
def test_parse_micros(text: str, micros: int) -> None:
    assert parse_micros(text) == micros


BAD_AMOUNTS = [
    *LOOKALIKE_NUMBERS,
    "1 ",
    "1.",
    ".1",
    "1..0",
    "1,5",
    "-0",
    "1.1234567",
    "1234567890123",
    "1.5e0",
    "١٢",
    "Infinity",
    "-Infinity",
]


@pytest.mark.parametrize("text", BAD_AMOUNTS, ids=ids(BAD_AMOUNTS))
def test_parse_micros_refuses_everything_but_the_amount_grammar(text: str) -> None:
    with pytest.raises(CaveatSyntaxError, match="amount must be digits"):
        parse_micros(text)


@pytest.mark.parametrize("text", ["USD", "EUR", "CREDITS", "TOKENS", "US", "U_", "A1", "A123456789012345", "X_Y_Z"])
def test_currencies(text: str) -> None:
    assert parse_currency(text) == text


@pytest.mark.parametrize(
    "text",
    ["", "U", "usd", "Usd", "_USD", "1USD", "USD-", "US D", "US.D", "ABCDEFGHIJKLMNOPQ", "ＵＳＤ", "ÜS", "USD\n"],
)
def test_currencies_refused(text: str) -> None:
    with pytest.raises(CaveatSyntaxError, match="currency must be"):
        parse_currency(text)


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("5.00 USD", Amount("USD", 5_000_000)),
        ("0 CREDITS", Amount("CREDITS", 0)),
        ("0.000001 TOKENS", Amount("TOKENS", 1)),
        ("999999999999.999999 EUR", Amount("EUR", 10**18 - 1)),
    ],
)
def test_parse_money(text: str, amount: Amount) -> None:
    assert parse_money(text) == amount
    assert parse_money(str(amount)) == amount


@pytest.mark.parametrize("text", BAD_MONEY, ids=ids(BAD_MONEY))
def test_parse_money_refuses(text: str) -> None:
    with pytest.raises(CaveatSyntaxError):
        parse_money(text)


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "0.00"),
        (1, "0.000001"),
        (10_000, "0.01"),
        (100_000, "0.10"),
        (500_000, "0.50"),
        (1_000_001, "1.000001"),
        (12_500_000, "12.50"),
        (12_345_000, "12.345"),
        (10**18 - 1, "999999999999.999999"),
        (-1, "-0.000001"),
        (-12_500_000, "-12.50"),
    ],
)
def test_format_micros_keeps_two_decimals_and_no_more_zeros(micros: int, text: str) -> None:
    assert format_micros(micros) == text


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**18 - 1))
def test_micros_round_trip_through_text(micros: int) -> None:
    assert parse_micros(format_micros(micros)) == micros


@settings(max_examples=150, deadline=None)
@given(st.from_regex(r"[0-9]{1,12}(\.[0-9]{1,6})?", fullmatch=True))
def test_every_amount_in_the_grammar_is_its_exact_decimal(text: str) -> None:
    micros = parse_micros(text)
    assert Decimal(micros) == Decimal(text) * 1_000_000  # the Decimal oracle, on text the grammar vetted
    canonical = format_micros(micros)
    assert parse_micros(canonical) == micros and format_micros(parse_micros(canonical)) == canonical


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**18 - 1), st.from_regex(r"[A-Z][A-Z0-9_]{1,15}", fullmatch=True))
def test_money_round_trips_through_its_text(micros: int, currency: str) -> None:
    amount = Amount(currency, micros)
    assert parse_money(str(amount)) == amount


DECIMALS = [
    (Decimal("1.5"), 1_500_000),
    (Decimal("1E-6"), 1),
    (Decimal("-0.000001"), -1),
    (Decimal("0E-1000"), 0),
    (Decimal("999999999999.999999"), 10**18 - 1),
    (Decimal("1E+29"), 10**35),
    (Decimal("1234567890123456789012345.123456"), 1234567890123456789012345123456),
    # finer than a micro-unit, not finite, or too large: None, never rounded, never raising
    (Decimal("1E-7"), None),
    (Decimal("0.0000015"), None),
    (Decimal("12345678901234567890123.0000001"), None),  # the default 28-digit context rounded this whole
    (Decimal("1234567890123456789012345.1234561"), None),
    (Decimal("1E+30"), None),
    (Decimal("1E+999999"), None),  # decimal.Overflow in the default context
    (Decimal("-9E+999999"), None),
    (Decimal("1E-999999"), None),
    (Decimal("NaN"), None),
    (Decimal("sNaN"), None),
    (Decimal("Infinity"), None),
    (Decimal("-Infinity"), None),
]


@pytest.mark.parametrize(("value", "micros"), DECIMALS, ids=ids(DECIMALS))
def test_decimal_to_micros_is_exact_or_none(value: Decimal, micros: int | None) -> None:
    assert decimal_to_micros(value) == micros


def test_amounts_order_within_a_currency() -> None:
    assert Amount("USD", 1) < Amount("USD", 2) and Amount("USD", 2) == Amount("USD", 2)
