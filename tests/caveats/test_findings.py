"""Regressions for caveat bugs found by the edge tables; each names what failed open or crashed before."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from caveats import Caveat, Code, Context, parse
from caveats.build import restriction_caveats

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
