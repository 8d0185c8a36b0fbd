"""`arg.PATH OP VALUE`: the call's argument at a dot-path compares so; a missing argument denies.

Paths: 1 to 8 segments of `[A-Za-z0-9_-]{1,64}`. `=`, `!=`, `in` take printable ASCII without spaces (and
without commas, which separate `in` items); `<`, `<=`, `>`, `>=` take `-?\\d{1,12}(\\.\\d{1,6})?`.
Arguments come from a JSON body: str, int, Decimal (JSON numbers with a fraction), bool, None, dict, list.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from caveats.arg import Arg
from tests.caveats.support import LOOKALIKE_NUMBERS, assert_malformed, assert_parses, code, ctx, ids, run

PRINTABLE = "!\"#$%&'()*+-./:;<=>?@[\\]^_`{|}~"

VALID = [
    ("arg.amount <= 500", Arg(("amount",), "<=", ("500",), Decimal(500))),
    ("arg.order.total > -2.5", Arg(("order", "total"), ">", ("-2.5",), Decimal("-2.5"))),
    ("arg.x < -0", Arg(("x",), "<", ("-0",), Decimal(0))),
    ("arg.x >= 0.000001", Arg(("x",), ">=", ("0.000001",), Decimal("0.000001"))),
    ("arg.x > -999999999999.999999", Arg(("x",), ">", ("-999999999999.999999",), Decimal("-999999999999.999999"))),
    ("arg.x <= 007", Arg(("x",), "<=", ("007",), Decimal(7))),
    ("arg.currency in usd,eur", Arg(("currency",), "in", ("usd", "eur"))),
    ("arg.x in 1", Arg(("x",), "in", ("1",))),
    ("arg.x in " + ",".join("v" * 64), Arg(("x",), "in", ("v",) * 64)),  # 64 items at most
    ("arg.repo = acme/web", Arg(("repo",), "=", ("acme/web",))),
    ("arg.repo != acme/secret", Arg(("repo",), "!=", ("acme/secret",))),
    ("arg.userId = 7", Arg(("userId",), "=", ("7",))),
    ("arg.x != true", Arg(("x",), "!=", ("true",))),
    ("arg.x = =1", Arg(("x",), "=", ("=1",))),
    ("arg.x = in", Arg(("x",), "=", ("in",))),
    (f"arg.x = {PRINTABLE}", Arg(("x",), "=", (PRINTABLE,))),
    ("arg.x = " + "v" * 256, Arg(("x",), "=", ("v" * 256,))),
    ("arg.a.b.c.d.e.f.g.h = x", Arg(tuple("abcdefgh"), "=", ("x",))),  # eight segments at most
    ("arg." + "p" * 64 + " = x", Arg(("p" * 64,), "=", ("x",))),
    ("arg.A-b_C = x", Arg(("A-b_C",), "=", ("x",))),
    ("arg.0 = x", Arg(("0",), "=", ("x",))),
]


@pytest.mark.parametrize(("text", "value"), VALID, ids=ids(VALID))
def test_valid_forms_parse_to_path_operator_and_values(text: str, value: Arg) -> None:
    assert_parses(text, value)


MALFORMED = [
    # paths
    "arg. = 1",
    "arg.a..b = 1",
    "arg..a = 1",
    "arg.a. = 1",
    "arg.a b = 1",
    "arg.a/b = 1",
    "arg.a:b = 1",
    "arg.a@b = 1",
    "arg.a*b = 1",
    "arg.é = 1",
    "arg.ａ = 1",
    "arg." + "p" * 65 + " = 1",
    "arg.a.b.c.d.e.f.g.h.i = 1",  # nine segments
    # ordering takes a decimal number only
    *[f"arg.x <= {n}" for n in LOOKALIKE_NUMBERS if n != "-1"],
    *[f"arg.x {op} abc" for op in ("<", "<=", ">", ">=")],
    "arg.x <= -Infinity",
    "arg.x <= --1",
    "arg.x <= -",
    "arg.x <= +5",
    "arg.x <= 1.",
    "arg.x <= .5",
    "arg.x <= 1.1234567",
    "arg.x <= 1234567890123",
    "arg.x <= 1,2",
    "arg.x > true",
    "arg.x in 1, 2",
    # equality values: printable ASCII, no space, no comma; lists of 1 to 64 non-empty items
    "arg.x = ",
    "arg.x = x y",
    "arg.x = a,b",
    "arg.x != a,b",
    "arg.x = é",
    "arg.x = ＄",
    "arg.x = a\u00a0",
    "arg.x = " + "v" * 257,
    "arg.x in ",
    "arg.x in ,",
    "arg.x in a,",
    "arg.x in ,a",
    "arg.x in x,,y",
    "arg.x in " + ",".join("v" * 65),
]


@pytest.mark.parametrize("text", MALFORMED, ids=ids(MALFORMED))
def test_malformed_forms_deny(text: str) -> None:
    assert_malformed(text)


OBJ: dict[str, Any] = {"k": 1}
ARR: list[Any] = [1]

CHECKS: list[tuple[str, Any, str | None]] = [
    # ints, Decimals and numeric strings order as exact decimals
    ("arg.x < 5", 4, None),
    ("arg.x < 5", 5, "arg_mismatch"),
    ("arg.x <= 5", 5, None),
    ("arg.x <= 5", 6, "arg_mismatch"),
    ("arg.x <= 5", Decimal("5.000001"), "arg_mismatch"),
    ("arg.x <= 5", Decimal("5.0000000001"), "arg_mismatch"),  # finer than the grammar, still exact
    ("arg.x <= 5", Decimal("4.9999999999"), None),
    ("arg.x <= 5", Decimal("5E0"), None),
    ("arg.x <= 5", Decimal("0.5E1"), None),
    ("arg.x <= 5", Decimal("1E+1"), "arg_mismatch"),
    ("arg.x < 5", Decimal("1E+999999999"), "arg_mismatch"),
    ("arg.x < 5", Decimal("-1E+999999999"), None),
    ("arg.x <= 0.3", Decimal("0.1") + Decimal("0.2"), None),  # exact, not binary floating point
    ("arg.x < 0.3", Decimal("0.30"), "arg_mismatch"),
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
    ("arg.x <= 5", "4.999999", None),
    ("arg.x <= 5", "5.000001", "arg_mismatch"),
    ("arg.x <= 5", "-7", None),
    ("arg.x <= 5", "005", None),
    ("arg.x > 2", "2.5", None),
    # strings outside the decimal grammar are not numbers
    ("arg.x > 2", "2,5", "arg_mismatch"),
    ("arg.x <= 5", " 5", "arg_mismatch"),
    ("arg.x <= 5", "5 ", "arg_mismatch"),
    ("arg.x <= 5", "5\n", "arg_mismatch"),
    ("arg.x <= 5", "+5", "arg_mismatch"),
    ("arg.x <= 5", "5e0", "arg_mismatch"),
    ("arg.x <= 5", "٣", "arg_mismatch"),
    ("arg.x <= 5", "３", "arg_mismatch"),
    ("arg.x <= 5", "1_0", "arg_mismatch"),
    ("arg.x <= 5", "NaN", "arg_mismatch"),
    ("arg.x >= 5", "Infinity", "arg_mismatch"),
    ("arg.x <= 5", "-Infinity", "arg_mismatch"),
    ("arg.x <= 5", "1.1234567", "arg_mismatch"),
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
    ("arg.x in 1,0", True, "arg_mismatch"),
    ("arg.x in true,yes", "yes", None),
    ("arg.x = true", "true", None),  # a string equal to the text
    # = and in on numbers compare numerically
    ("arg.x = 7", 7, None),
    ("arg.x = 7", Decimal("7.000"), None),
    ("arg.x = 7.0", 7, None),
    ("arg.x = 007", 7, None),
    ("arg.x = -0", 0, None),
    ("arg.x = 7", 8, "arg_mismatch"),
    ("arg.x = 7", -7, "arg_mismatch"),
    ("arg.x = 7", Decimal("7.000001"), "arg_mismatch"),
    ("arg.x = seven", 7, "arg_mismatch"),
    ("arg.x in 1,2", 2, None),
    ("arg.x in 1,2", Decimal("2.0"), None),
    ("arg.x in 1,2", 3, "arg_mismatch"),
    ("arg.x in a,1", 1, None),
    # = and in on strings compare the text exactly: the narrower reading
    ("arg.x = 7", "7", None),
    ("arg.x = 7", "07", "arg_mismatch"),
    ("arg.x = 7", "7.0", "arg_mismatch"),
    ("arg.x in 1,2", "2.0", "arg_mismatch"),
    ("arg.x = acme/web", "acme/web", None),
    ("arg.x = acme/web", "ACME/web", "arg_mismatch"),
    ("arg.x = acme/web", "acme/web ", "arg_mismatch"),
    ("arg.x = acme/web", "acme/web2", "arg_mismatch"),
    ("arg.x = acme/web", "", "arg_mismatch"),
    ("arg.x in usd,eur", "usd", None),
    ("arg.x in usd,eur", "eur", None),
    ("arg.x in usd,eur", "EUR", "arg_mismatch"),
    ("arg.x in usd,eur", "usd,eur", "arg_mismatch"),
    ("arg.x in usd,eur", "gbp", "arg_mismatch"),
    # != denies when the argument matches under either reading: its text, or (for a number) its number
    ("arg.x != 7", 8, None),
    ("arg.x != 7", "8", None),
    ("arg.x != 7", 7, "arg_mismatch"),
    ("arg.x != 7", Decimal("7.0"), "arg_mismatch"),
    ("arg.x != 7", "7", "arg_mismatch"),
    ("arg.x != 7", "7.0", "arg_mismatch"),  # was allowed: a tool reading "7.0" as 7 got what != 7 excludes
    ("arg.x != 7", "07", "arg_mismatch"),
    ("arg.x != 0", "0.00", "arg_mismatch"),
    ("arg.x != 0", "-0", "arg_mismatch"),
    ("arg.x != 0", "0.000001", None),
    ("arg.x != 7", "7 ", None),  # not a number: text, and not the text 7
    ("arg.x != 07", "7", "arg_mismatch"),
    ("arg.x != acme/secret", "acme/web", None),
    ("arg.x != acme/secret", "acme/secret", "arg_mismatch"),
    ("arg.x != 1.5", "1.50", "arg_mismatch"),
    ("arg.x != true", "true", "arg_mismatch"),
    ("arg.x != true", "false", None),
    # objects, arrays and null deny under every operator, != included
    *[
        (f"arg.x {op} 1", bad, "arg_mismatch")
        for op in ("=", "!=", "in", "<", "<=", ">", ">=")
        for bad in (OBJ, ARR, None)
    ],
    ("arg.x != a", {}, "arg_mismatch"),
    ("arg.x != a", [], "arg_mismatch"),
]


@pytest.mark.parametrize(("text", "value", "want"), CHECKS, ids=[f"{t} | {v!r}"[:70] for t, v, _ in CHECKS])
def test_comparisons(text: str, value: Any, want: str | None) -> None:
    assert code(text, ctx(args={"x": value})) == want


# Values no JSON body decodes to, but a Python caller (the MCP guard, the SDK, json.loads' NaN and Infinity)
# can hand over: `!= 5` once held for 5.0 and NaN, `> 5` for Decimal('Infinity'), and sNaN raised.
NOT_JSON: list[Any] = [
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
    bytearray(b"5"),
    object(),
]
OPERATORS = [
    "arg.x = 5",
    "arg.x != 5",
    "arg.x != a",
    "arg.x in 5,a",
    "arg.x < 5",
    "arg.x <= 5",
    "arg.x > 5",
    "arg.x >= 5",
]


@pytest.mark.parametrize("value", NOT_JSON, ids=repr)
@pytest.mark.parametrize("text", OPERATORS)
def test_values_no_json_body_holds_deny_under_every_operator(text: str, value: Any) -> None:
    assert code(text, ctx(args={"x": value})) == "arg_mismatch"


NESTED: list[tuple[str, dict[str, Any], str | None]] = [
    ("arg.a.b.c = 1", {"a": {"b": {"c": 1}}}, None),
    ("arg.a.b.c = 1", {"a": {"b": {"c": 2}}}, "arg_mismatch"),
    ("arg.a.b.c = 1", {"a": {"b": {}}}, "arg_mismatch"),
    ("arg.a.b.c = 1", {"a": {"b": 1}}, "arg_mismatch"),
    ("arg.a.b.c = 1", {"a": {"b": [1]}}, "arg_mismatch"),
    ("arg.a.b.c = 1", {"a": {"b": "c"}}, "arg_mismatch"),
    ("arg.a.b.c = 1", {"a": None}, "arg_mismatch"),
    ("arg.a.b.c = 1", {"a.b.c": 1}, "arg_mismatch"),  # dots separate segments, never part of a key
    ("arg.a.b.c = 1", {}, "arg_mismatch"),
    ("arg.a.0 = 1", {"a": [1]}, "arg_mismatch"),  # no array indexing
    ("arg.a.0 = 1", {"a": {"0": 1}}, None),
    ("arg.a.b.c.d.e.f.g.h <= 3", {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 3}}}}}}}}, None),
    ("arg.order.total <= 3", {"order": {"total": 2}}, None),
    ("arg.order.total <= 3", {"order": 2}, "arg_mismatch"),
    ("arg.Amount <= 3", {"amount": 1}, "arg_mismatch"),  # keys are case-sensitive
    # a missing argument denies under every operator, != included
    *[(f"arg.a {op} 1", {"b": 1}, "arg_mismatch") for op in ("=", "!=", "in", "<", "<=", ">", ">=")],
    ("arg.a.b != 1", {"a": {}}, "arg_mismatch"),
    ("arg.a.b != 1", {"a": {"b": 2}}, None),
]


@pytest.mark.parametrize(("text", "args", "want"), NESTED, ids=[f"{t} | {a}"[:70] for t, a, _ in NESTED])
def test_nested_paths_and_missing_arguments(text: str, args: dict[str, Any], want: str | None) -> None:
    assert code(text, ctx(args=args)) == want


def test_reasons_name_the_argument() -> None:
    missing = run("arg.a.b != 1", ctx(args={}))
    assert missing is not None and missing.reason == "argument 'a.b' is missing"
    wrong = run("arg.c in usd,eur", ctx(args={"c": "gbp"}))
    assert wrong is not None and wrong.reason == "argument 'c' is not in usd,eur"
    over = run("arg.amount <= 3", ctx(args={"amount": 4}))
    assert over is not None and over.reason == "argument 'amount' is not <= 3"
    other = run("arg.repo = acme/web", ctx(args={"repo": "acme/api"}))
    assert other is not None and other.reason == "argument 'repo' is not acme/web"
    excluded = run("arg.repo != acme/secret", ctx(args={"repo": "acme/secret"}))  # not "is not != acme/secret"
    assert excluded is not None and excluded.reason == "argument 'repo' must not be acme/secret"
    for value, what in [(None, "null"), ({"k": 1}, "an object"), ([1], "an array"), (1.5, "a float")]:
        odd = run("arg.b != x", ctx(args={"b": value}))  # not "must not be x": it is not x, and still denied
        assert odd is not None and odd.reason == f"argument 'b' is {what}, which no caveat compares", value
