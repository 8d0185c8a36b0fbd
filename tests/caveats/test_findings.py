"""Regressions for caveat bugs found by the edge tables; each names what failed open or crashed before."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from caveats import Caveat, Code, Context, Denial, parse
from caveats.build import restriction_caveats
from caveats.money import decimal_to_micros
from caveats.rate import Rate

# Values no JSON body decodes to, but a Python caller (the MCP guard, the SDK, json.loads' NaN/Infinity
# constants) can hand over. `arg.x != 5` held for the float 5.0 and for NaN; `arg.x > 5` held for
# Decimal('Infinity'); Decimal('sNaN') raised InvalidOperation out of check().
NOT_JSON_SCALARS: list[Any] = [
    5.0,
    6.0,
    float("nan"),
    float("inf"),
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
    (5,),
    {5},
    b"5",
    object(),
]


@pytest.mark.parametrize("value", NOT_JSON_SCALARS, ids=repr)
@pytest.mark.parametrize(
    "text",
    ["arg.x = 5", "arg.x != 5", "arg.x != a", "arg.x in 5,a", "arg.x < 5", "arg.x <= 5", "arg.x > 5", "arg.x >= 5"],
)
def test_non_json_and_non_finite_values_deny_under_every_operator(text: str, value: Any) -> None:
    caveat = parse(text)
    assert isinstance(caveat, Caveat)
    denial = caveat.check(Context(now=0, tool="t", args={"x": value}), 0)
    assert denial is not None and denial.code == Code.ARG_MISMATCH


# The builder promises ValueError naming the field: an instant beyond time_t raised OverflowError (the SDK
# let it escape as such), and `tools="search"` built `tools in s,e,a,r,c,h`.
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"expires_at": 10**20}, "expires"),
        ({"expires_at": -(10**20)}, "expires"),
        ({"expires_at": 2**63}, "expires"),
        ({"tools": "search"}, "tools"),
        ({"audience": "srv"}, "audience"),
    ],
)
def test_builder_raises_value_error_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError) as raised:
        restriction_caveats(**kwargs)
    assert str(raised.value).startswith(f"{field}: ")


# SPEC §2 bounds a rate window at 366 days in any of s, m, h, d; the window number was capped at six digits,
# so `rate <= 1/31622400s` (exactly 366d) and every window from 1000000s (11.6 days) up failed closed.
@pytest.mark.parametrize(("text", "window"), [("rate <= 1/1000000s", 1_000_000), ("rate <= 1/31622400s", 31_622_400)])
def test_windows_in_seconds_up_to_366_days_parse(text: str, window: int) -> None:
    assert parse(text) == Rate(1, window)


@pytest.mark.parametrize("text", ["rate <= 1/31622401s", "rate <= 1/99999999s", "rate <= 1/100000000s"])
def test_windows_beyond_366_days_stay_malformed(text: str) -> None:
    result = parse(text)
    assert isinstance(result, Denial) and result.code == Code.MALFORMED_CAVEAT


# decimal_to_micros scaled in the default 28-digit context: long values were rounded into a wrong whole
# number of micros instead of being refused, and exponents near Emax raised decimal.Overflow.
@pytest.mark.parametrize(
    ("value", "micros"),
    [
        (Decimal("12345678901234567890123.0000001"), None),
        (Decimal("1234567890123456789012345.1234561"), None),
        (Decimal("1234567890123456789012345.123456"), 1234567890123456789012345123456),
        (Decimal("999999999999.999999"), 10**18 - 1),
        (Decimal("-0.000001"), -1),
        (Decimal("0E-1000"), 0),
        (Decimal("1E+29"), 10**35),
        (Decimal("1E+30"), None),
        (Decimal("1E+999999"), None),
        (Decimal("-9E+999999"), None),
        (Decimal("1E-999999"), None),
        (Decimal("sNaN"), None),
    ],
)
def test_decimal_to_micros_is_exact_or_none(value: Decimal, micros: int | None) -> None:
    assert decimal_to_micros(value) == micros
