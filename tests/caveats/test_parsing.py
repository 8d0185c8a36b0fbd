"""Every caveat kind's grammar, table-driven: what parses to which typed value, and everything that must not."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caveats import Amount, Code, Denial, parse
from caveats.arg import Arg
from caveats.audience import Audience
from caveats.budget import Budget
from caveats.cost import Cost
from caveats.delegate import Delegate
from caveats.depth import Depth
from caveats.expires import Expires
from caveats.money import decimal_to_micros, format_micros, parse_micros
from caveats.rate import Rate
from caveats.tools import Tools

VALID = [
    ("expires < 2026-12-01T00:00:00Z", Expires(1_796_083_200)),
    ("expires < 2024-02-29T23:59:59Z", Expires(1_709_251_199)),
    ("expires < 1970-01-01T00:00:00Z", Expires(0)),
    ("tools in search", Tools(("search",))),
    ("tools in search,fetch,github.*", Tools(("search", "fetch", "github.*"))),
    ("tools in a:b@c/d-e_f.g", Tools(("a:b@c/d-e_f.g",))),
    ("audience in payments-srv,search-srv", Audience(("payments-srv", "search-srv"))),
    ("budget <= 5.00 USD", Budget(Amount("USD", 5_000_000))),
    ("budget <= 0 CREDITS", Budget(Amount("CREDITS", 0))),
    ("budget <= 999999999999.999999 TOKENS", Budget(Amount("TOKENS", 999_999_999_999_999_999))),
    ("budget <= 0.000001 A1", Budget(Amount("A1", 1))),
    ("cost <= 0.50 EUR", Cost(Amount("EUR", 500_000))),
    ("rate <= 100/1h", Rate(100, 3600)),
    ("rate <= 0/1s", Rate(0, 1)),
    ("rate <= 100000/366d", Rate(100_000, 366 * 86_400)),
    ("rate <= 5/15m", Rate(5, 900)),
    ("depth <= 0", Depth(0)),
    ("depth <= 1000", Depth(1000)),
    ("delegate = researcher", Delegate("researcher")),
    ("arg.amount <= 500", Arg(("amount",), "<=", ("500",), Decimal(500))),
    ("arg.order.total > -2.5", Arg(("order", "total"), ">", ("-2.5",), Decimal("-2.5"))),
    ("arg.currency in usd,eur", Arg(("currency",), "in", ("usd", "eur"))),
    ("arg.repo = acme/web", Arg(("repo",), "=", ("acme/web",))),
    ("arg.repo != acme/secret", Arg(("repo",), "!=", ("acme/secret",))),
    ("arg.userId = 7", Arg(("userId",), "=", ("7",))),
]


@pytest.mark.parametrize(("text", "value"), VALID, ids=[t for t, _ in VALID])
def test_valid_caveats_parse_to_their_typed_value(text: str, value: object) -> None:
    assert parse(text) == value
    assert parse(text.encode()) == value


MALFORMED = [
    # shape: single spaces, no leading/trailing space, no control characters
    "budget  <= 5 USD",
    " budget <= 5 USD",
    "budget <= 5 USD ",
    "budget <=  5 USD",
    "budget<=5 USD",
    "budget",
    "budget <=",
    "budget <= ",
    "tools\tin search",
    "tools in search\n",
    "tools in sea\x00rch",
    "tools in sea\x85rch",
    "tools in sea\u2028rch",
    "tools in sea\u2029rch",
    "tools in sea\x7frch",
    "delegate = a\r",
    # amounts: ASCII digits, at most 12.6, no sign, exponent, separators, words
    "budget <= ５ USD",
    "budget <= ٣ USD",
    "budget <= 1_000 USD",
    "budget <= +5 USD",
    "budget <= -5 USD",
    "budget <= 1e3 USD",
    "budget <= NaN USD",
    "budget <= Infinity USD",
    "budget <= 5. USD",
    "budget <= .5 USD",
    "budget <= 1234567890123 USD",
    "budget <= 1.1234567 USD",
    "budget <= 1,5 USD",
    "budget <= 0x10 USD",
    # currencies
    "budget <= 5 usd",
    "budget <= 5 U",
    "budget <= 5 1USD",
    "budget <= 5 USDOLLARSANDMORE1",
    "budget <= 5",
    "budget <= 5 US D",
    "budget <= 5 ÜSD",
    "cost <= 1 usd",
    # operators per kind
    "budget < 5 USD",
    "budget = 5 USD",
    "cost < 1 USD",
    "tools = search",
    "tools <= search",
    "audience = a",
    "expires <= 2026-12-01T00:00:00Z",
    "expires > 2026-12-01T00:00:00Z",
    "rate < 5/1h",
    "depth < 2",
    "depth = 2",
    "delegate in a,b",
    "delegate != a",
    # names and lists
    "tools in ",
    "tools in ,",
    "tools in search,",
    "tools in ,search",
    "tools in search,,fetch",
    "tools in -search",
    "tools in sea rch",
    "tools in *",
    "tools in search**",
    "tools in se*rch",
    "tools in " + "a" * 129,
    "tools in séarch",
    "audience in a b",
    "audience in a*",
    "delegate = " + "a" * 129,
    "delegate = a,b",
    "delegate = ",
    "delegate = .a",
    # times: RFC 3339 UTC with Z, whole seconds, real dates
    "expires < 2026-02-30T00:00:00Z",
    "expires < 2026-13-01T00:00:00Z",
    "expires < 2026-12-01T24:00:00Z",
    "expires < 2026-12-01T23:60:00Z",
    "expires < 2026-12-31T23:59:60Z",
    "expires < 2026-12-01T00:00:00+00:00",
    "expires < 2026-12-01T00:00:00.5Z",
    "expires < 2026-12-01t00:00:00z",
    "expires < 2026-12-01 00:00:00Z",
    "expires < 1969-12-31T23:59:59Z",
    "expires < 2026-12-01",
    "expires < 1796083200",
    "expires < 2023-02-29T00:00:00Z",
    "expires < ２026-12-01T00:00:00Z",
    # rates and depth
    "rate <= 100001/1h",
    "rate <= 10/0s",
    "rate <= 10/367d",
    "rate <= 10/1w",
    "rate <= 10/h",
    "rate <= 10 /1h",
    "rate <= -1/1h",
    "rate <= 01/1h",
    "rate <= 10/01h",
    "depth <= -1",
    "depth <= 1001",
    "depth <= 01",
    "depth <= ２",
    "depth <= 1.0",
    # args
    "arg. = 1",
    "arg.a..b = 1",
    "arg.a b = 1",
    "arg.amount <= x",
    "arg.amount <= 1e3",
    "arg.amount < NaN",
    "arg.a in x,,y",
    "arg.a = x y",
    "arg.a = ",
    "arg.a in ",
    "arg.a = é",
    "arg." + "a" * 65 + " = 1",
    "arg.a.b.c.d.e.f.g.h.i = 1",
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_caveats_deny_as_malformed(text: str) -> None:
    result = parse(text)
    assert isinstance(result, Denial) and result.code == Code.MALFORMED_CAVEAT, (text, result)
    assert result.reason and "Traceback" not in result.reason


@pytest.mark.parametrize(
    "text",
    [
        "frob = 1",
        "budgets <= 5 USD",
        "tool in search",
        "Budget <= 5 USD",
        "args.a = 1",
        "x in y",
        "expire < 2026-12-01T00:00:00Z",
    ],
)
def test_unknown_keys_deny_as_unknown(text: str) -> None:
    result = parse(text)
    assert isinstance(result, Denial) and result.code in (Code.UNKNOWN_CAVEAT, Code.MALFORMED_CAVEAT)
    if text[0].islower() and " " in text:
        assert result.code == Code.UNKNOWN_CAVEAT or "not of the form" in result.reason


@pytest.mark.parametrize("raw", [b"\xff", b"tools in s\xc3", b"\xed\xa0\x80", b"delegate = \xc0\xaf", b""])
def test_invalid_utf8_and_empty_deny(raw: bytes) -> None:
    result = parse(raw)
    assert isinstance(result, Denial) and result.code == Code.MALFORMED_CAVEAT


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_parse_never_raises(raw: bytes | str) -> None:
    result = parse(raw)
    assert isinstance(result, Denial) or result is not None


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**18 - 1))
def test_amounts_round_trip_exactly(micros: int) -> None:
    assert parse_micros(format_micros(micros)) == micros


@pytest.mark.parametrize(
    ("text", "micros"), [("0", 0), ("0.1", 100_000), ("12.5", 12_500_000), ("1.000001", 1_000_001), ("007", 7_000_000)]
)
def test_parse_micros(text: str, micros: int) -> None:
    assert parse_micros(text) == micros


def test_format_micros_keeps_two_decimals_at_least() -> None:
    assert [format_micros(m) for m in (0, 1, 10_000, 12_500_000, 1_000_001)] == [
        "0.00",
        "0.000001",
        "0.01",
        "12.50",
        "1.000001",
    ]


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        (Decimal("1.5"), 1_500_000),
        (Decimal("1E-6"), 1),
        (Decimal("1E-7"), None),
        (Decimal("NaN"), None),
        (Decimal("Infinity"), None),
    ],
)
def test_decimal_to_micros(value: Decimal, micros: int | None) -> None:
    assert decimal_to_micros(value) == micros
