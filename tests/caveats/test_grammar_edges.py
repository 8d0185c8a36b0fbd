"""The caveat grammar of SPEC §2 at its edges, kind by kind: every bound on both sides, every look-alike.

test_parsing.py holds the representative forms; this file walks each limit (names of 128/129 characters,
counts of 100000/100001, windows of 366d/367d in every unit, 12.6 digits, 2..16-letter currencies, eight
path segments, 64 list items), every control character one by one, every operator a kind does not take,
and byte sequences that are not UTF-8.
"""

from __future__ import annotations

import string
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caveats import Amount, Caveat, Code, Denial, parse
from caveats.arg import Arg
from caveats.audience import Audience
from caveats.budget import Budget
from caveats.cost import Cost
from caveats.delegate import Delegate
from caveats.depth import Depth
from caveats.expires import Expires, format_instant, parse_instant
from caveats.money import format_micros, parse_micros, parse_money
from caveats.rate import Rate
from caveats.registry import read
from caveats.tools import Tools

N128 = "a" + "b" * 127
N129 = N128 + "c"

# One valid caveat per kind: the base every mutation below starts from.
BASE = {
    "expires": "expires < 2026-12-01T00:00:00Z",
    "tools": "tools in search,gh.*",
    "audience": "audience in payments-srv",
    "budget": "budget <= 5.00 USD",
    "cost": "cost <= 0.50 USD",
    "rate": "rate <= 100/1h",
    "depth": "depth <= 2",
    "delegate": "delegate = researcher",
    "arg": "arg.amount <= 500",
}

VALID = [
    # expires: whole-second UTC instants from the epoch to year 9999, leap days only in leap years
    ("expires < 2028-02-29T00:00:00Z", Expires(1_835_395_200)),
    ("expires < 2000-02-29T12:34:56Z", Expires(951_827_696)),
    ("expires < 9999-12-31T23:59:59Z", Expires(253_402_300_799)),
    ("expires < 1970-01-01T00:00:01Z", Expires(1)),
    # names: 1 to 128 characters of the name alphabet, a trailing * for tools only
    ("tools in a", Tools(("a",))),
    (f"tools in {N128}", Tools((N128,))),
    (f"tools in {N128}*", Tools((N128 + "*",))),
    ("tools in 0", Tools(("0",))),
    ("tools in A-z_9.:@/", Tools(("A-z_9.:@/",))),
    ("tools in gh*,gh.issues", Tools(("gh*", "gh.issues"))),
    ("tools in a,a", Tools(("a", "a"))),
    (f"audience in {N128},b", Audience((N128, "b"))),
    ("audience in srv:8443", Audience(("srv:8443",))),
    ("delegate = agent@example.org/x", Delegate("agent@example.org/x")),
    (f"delegate = {N128}", Delegate(N128)),
    ("delegate = 7", Delegate("7")),
    # money: up to 12 digits before and 6 after the point; currencies of 2..16 characters
    ("budget <= 000000000000.000000 US", Budget(Amount("US", 0))),
    ("budget <= 999999999999 USD", Budget(Amount("USD", 999_999_999_999_000_000))),
    ("budget <= 1.5 EUR", Budget(Amount("EUR", 1_500_000))),
    ("budget <= 0.000001 CREDITS", Budget(Amount("CREDITS", 1))),
    ("budget <= 1 U_", Budget(Amount("U_", 1_000_000))),
    ("budget <= 1 ABCDEFGHIJKLMNOP", Budget(Amount("ABCDEFGHIJKLMNOP", 1_000_000))),
    ("budget <= 1 A123456789012345", Budget(Amount("A123456789012345", 1_000_000))),
    ("cost <= 0 TOKENS", Cost(Amount("TOKENS", 0))),
    ("cost <= 12.345678 USD", Cost(Amount("USD", 12_345_678))),
    # rate: count 0..100000, windows of every unit up to 366 days
    ("rate <= 100000/1s", Rate(100_000, 1)),
    ("rate <= 1/59s", Rate(1, 59)),
    ("rate <= 1/366d", Rate(1, 31_622_400)),
    ("rate <= 1/8784h", Rate(1, 31_622_400)),
    ("rate <= 1/527040m", Rate(1, 31_622_400)),
    ("rate <= 1/999999s", Rate(1, 999_999)),
    ("rate <= 10/1d", Rate(10, 86_400)),
    # depth 0..1000
    ("depth <= 1", Depth(1)),
    ("depth <= 999", Depth(999)),
    # arg: eight segments of up to 64 characters; values of printable ASCII; lists of up to 64 items
    ("arg.a.b.c.d.e.f.g.h = x", Arg(tuple("abcdefgh"), "=", ("x",))),
    ("arg." + "p" * 64 + " = x", Arg(("p" * 64,), "=", ("x",))),
    ("arg.A-b_C = x", Arg(("A-b_C",), "=", ("x",))),
    ("arg.0 = x", Arg(("0",), "=", ("x",))),
    ("arg.x = " + "v" * 256, Arg(("x",), "=", ("v" * 256,))),
    ("arg.x in " + ",".join("v" * 64), Arg(("x",), "in", ("v",) * 64)),
    ("arg.x = =1", Arg(("x",), "=", ("=1",))),
    ("arg.x = !\"#$%&'()*+-./:;<=>?@[\\]^_`{|}~", Arg(("x",), "=", ("!\"#$%&'()*+-./:;<=>?@[\\]^_`{|}~",))),
    ("arg.x != true", Arg(("x",), "!=", ("true",))),
    ("arg.x < -0", Arg(("x",), "<", ("-0",), Decimal(0))),
    ("arg.x >= 0.000001", Arg(("x",), ">=", ("0.000001",), Decimal("0.000001"))),
    ("arg.x > -999999999999.999999", Arg(("x",), ">", ("-999999999999.999999",), Decimal("-999999999999.999999"))),
    ("arg.x <= 007", Arg(("x",), "<=", ("007",), Decimal(7))),
    ("arg.x in 1", Arg(("x",), "in", ("1",))),
]


@pytest.mark.parametrize(("text", "value"), VALID, ids=[t[:60] for t, _ in VALID])
def test_edge_forms_parse_to_their_typed_value(text: str, value: Caveat) -> None:
    assert parse(text) == value
    assert parse(text.encode()) == value
    assert read(text.encode()) == (text, value)


def test_every_base_form_parses() -> None:
    for text in BASE.values():
        assert isinstance(parse(text), Caveat), text


LOOKALIKE_NUMBERS = [
    "１００",
    "٣",
    "۳",
    "३",
    "𝟓",
    "1_000",
    "+1",
    "-1",
    "1e3",
    "1E3",
    "NaN",
    "nan",
    "Infinity",
    "inf",
    "0x1",
]

MALFORMED = [
    # look-alike numbers in every numeric slot
    *[f"budget <= {n} USD" for n in LOOKALIKE_NUMBERS],
    *[f"cost <= {n} USD" for n in LOOKALIKE_NUMBERS],
    *[f"rate <= {n}/1h" for n in LOOKALIKE_NUMBERS],
    *[f"rate <= 1/{n}h" for n in LOOKALIKE_NUMBERS],
    *[f"depth <= {n}" for n in LOOKALIKE_NUMBERS],
    *[f"arg.x <= {n}" for n in LOOKALIKE_NUMBERS if n not in ("-1",)],
    "arg.x <= -Infinity",
    "arg.x <= --1",
    "arg.x <= -",
    "arg.x <= 1.",
    "arg.x <= .5",
    "arg.x <= 1.1234567",
    "arg.x <= 1234567890123",
    "arg.x <= 1 ",
    "arg.x <= 1,2",
    "arg.x in 1, 2",
    # amounts: 12.6 digits at most, a point needs digits on both sides
    "budget <= 0000000000001 USD",
    "budget <= 1.0000000 USD",
    "budget <= 1..0 USD",
    "budget <= 1.0.0 USD",
    "budget <= . USD",
    "budget <= USD",
    "budget <= USD 5",
    "budget <= 5 USD EUR",
    "budget <= 5USD",
    "budget <= 5\u00a0USD",
    "cost <= 5.00 $",
    "cost <= $5.00",
    # currencies: [A-Z][A-Z0-9_]{1,15}
    "budget <= 5 Usd",
    "budget <= 5 U",
    "budget <= 5 _USD",
    "budget <= 5 1USD",
    "budget <= 5 USD-",
    "budget <= 5 US.D",
    "budget <= 5 ABCDEFGHIJKLMNOPQ",
    "budget <= 5 ＵＳＤ",
    "budget <= 5 ÜS",
    # names: [A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}
    f"tools in {N129}",
    f"tools in a,{N129}",
    f"audience in {N129}",
    f"delegate = {N129}",
    *[f"tools in {c}abc" for c in "-_.:@/*"],
    *[f"audience in {c}abc" for c in "-_.:@/*"],
    *[f"delegate = {c}abc" for c in "-_.:@/*"],
    *[f"tools in ab{c}cd" for c in " +#!?$%&'\"\\|~^`()[]{}<>=;"],
    "tools in a,",
    "tools in ,a",
    "tools in a,,b",
    "tools in a, b",
    "tools in a ,b",
    "tools in a*,",
    "tools in a**",
    "tools in a*b",
    "tools in **",
    "audience in ",
    "audience in a,",
    "audience in ,",
    "audience in a,,b",
    "audience in a*",
    "delegate = a b",
    "delegate = a*",
    "delegate = a,",
    "tools in ѕearch",  # Cyrillic s
    "audience in ｓrv",
    "delegate = résumé",
    # rate: count <= 100000, no leading zeros; window units s m h d, at most 366 days
    "rate <= 100001/1s",
    "rate <= 999999999/1s",
    "rate <= 1/367d",
    "rate <= 1/8785h",
    "rate <= 1/527041m",
    "rate <= 1/31622401s",
    "rate <= 1/0d",
    "rate <= 1/00s",
    "rate <= 1/1",
    "rate <= 1/s",
    "rate <= 1/1S",
    "rate <= 1/1H",
    "rate <= 1/1ms",
    "rate <= 1/1w",
    "rate <= 1/1y",
    "rate <= 1/1.5h",
    "rate <= 1/1 h",
    "rate <= 1/1hh",
    "rate <= 1//1h",
    "rate <= 1/1h/2",
    "rate <= /1h",
    "rate <= 1/",
    "rate <= 1",
    "rate <= 1 /1h",
    "rate <= 00/1h",
    # depth: 0..1000, no leading zeros or signs
    "depth <= 1001",
    "depth <= 9999999999",
    "depth <= 00",
    "depth <= 1 ",
    "depth <= 1,2",
    "depth <= ",
    # expires: RFC 3339, UTC, Z only, whole seconds, real calendar instants from 1970
    "expires < 2026-02-29T00:00:00Z",
    "expires < 2100-02-29T00:00:00Z",
    "expires < 2026-04-31T00:00:00Z",
    "expires < 2026-00-10T00:00:00Z",
    "expires < 2026-01-00T00:00:00Z",
    "expires < 2026-01-32T00:00:00Z",
    "expires < 2026-12-01T24:00:00Z",
    "expires < 2026-12-01T00:60:00Z",
    "expires < 2016-12-31T23:59:60Z",
    "expires < 2026-12-01T00:00:00+00:00",
    "expires < 2026-12-01T00:00:00-00:00",
    "expires < 2026-12-01T00:00:00+01:00",
    "expires < 2026-12-01T00:00:00.000Z",
    "expires < 2026-12-01T00:00:00,5Z",
    "expires < 2026-12-01t00:00:00Z",
    "expires < 2026-12-01T00:00:00z",
    "expires < 2026-12-01T00:00:00",
    "expires < 2026-12-01T00:00Z",
    "expires < 2026-12-1T00:00:00Z",
    "expires < 2026-1-01T00:00:00Z",
    "expires < 26-12-01T00:00:00Z",
    "expires < 12026-12-01T00:00:00Z",
    "expires < 0000-01-01T00:00:00Z",
    "expires < 1969-12-31T23:59:59Z",
    "expires < 2026-12-01T00:00:00ZZ",
    "expires < 2026-12-01T00:00:00 Z",
    "expires < 2026/12/01T00:00:00Z",
    "expires < 2026-12-01T0:00:00Z",
    "expires < 2026-12-01T00:00:0٣Z",
    "expires < -2026-12-01T00:00:00Z",
    "expires < +2026-12-01T00:00:00Z",
    "expires < now",
    # arg paths and values
    "arg.a.b.c.d.e.f.g.h.i = x",
    "arg." + "p" * 65 + " = x",
    "arg.a..b = x",
    "arg..a = x",
    "arg.a. = x",
    "arg.a/b = x",
    "arg.a:b = x",
    "arg.a@b = x",
    "arg.é = x",
    "arg.x = " + "v" * 257,
    "arg.x in " + ",".join("v" * 65),
    "arg.x in a,",
    "arg.x in ,a",
    "arg.x = a,b",
    "arg.x != a,b",
    "arg.x = é",
    "arg.x = ＄",
    # shape: one space each side of the operator, nothing before or after
    "budget <=\u00a05 USD",
    "budget\u3000<= 5 USD",
    "\ufeffbudget <= 5 USD",
    "budget <= 5 USD\ufeff",
    "budget <= 5\u200b USD",
    "budget <= 5 USD\u200b",
    "tools in a\u200b",
    "BUDGET <= 5 USD",
    "budget<= 5 USD",
    "budget <=5 USD",
    "budget =< 5 USD",
    "budget == 5 USD",
    "budget ≤ 5 USD",
    "tools IN a",
    "tools in",
    "",
    " ",
    "   ",
]


@pytest.mark.parametrize("text", MALFORMED, ids=[repr(t)[:60] for t in MALFORMED])
def test_malformed_edges_deny_as_malformed(text: str) -> None:
    for raw in (text, text.encode()):
        result = parse(raw)
        assert isinstance(result, Denial), (text, result)
        assert result.code == Code.MALFORMED_CAVEAT, (text, result)
        assert_plain_words(result.reason)


def assert_plain_words(reason: str) -> None:
    assert reason and reason == reason.strip() and "\n" not in reason
    for jargon in ("Traceback", "Error", "Exception", "re.Match", "<class", "None"):
        assert jargon not in reason, reason


# Every control character the spec names (C0, DEL, C1, U+2028, U+2029), one at a time, in three places.
CONTROLS = [chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)]


@pytest.mark.parametrize("kind", sorted(BASE))
def test_every_control_character_anywhere_denies(kind: str) -> None:
    text = BASE[kind]
    for c in CONTROLS:
        for bad in (c + text, text + c, text[:3] + c + text[3:], text.replace(" ", c, 1), text[:-1] + c + text[-1]):
            result = parse(bad)
            assert isinstance(result, Denial) and result.code == Code.MALFORMED_CAVEAT, (bad, result)
            result = parse(bad.encode())
            assert isinstance(result, Denial) and result.code == Code.MALFORMED_CAVEAT, (bad, result)


@pytest.mark.parametrize("kind", sorted(BASE))
def test_spacing_mutations_deny(kind: str) -> None:
    text = BASE[kind]
    key, op, value = text.split(" ", 2)
    for bad in (
        f" {text}",
        f"{text} ",
        f"{key}  {op} {value}",
        f"{key} {op}  {value}",
        f"{key}\t{op} {value}",
        f"{key} {op}\t{value}",
        f"{key}{op} {value}",
        f"{key} {op}{value}",
        f"{key} {op}",
        f"{key} {op} ",
        key,
    ):
        result = parse(bad)
        assert isinstance(result, Denial) and result.code == Code.MALFORMED_CAVEAT, (bad, result)


OPS = ("=", "!=", "<", "<=", ">", ">=", "in")
TAKES = {
    "expires": {"<"},
    "tools": {"in"},
    "audience": {"in"},
    "budget": {"<="},
    "cost": {"<="},
    "rate": {"<="},
    "depth": {"<="},
    "delegate": {"="},
    "arg": set(OPS),
}
WRONG_OPS = [(kind, op) for kind in sorted(BASE) for op in OPS if op not in TAKES[kind]]


@pytest.mark.parametrize(("kind", "op"), WRONG_OPS)
def test_every_operator_a_kind_does_not_take_is_malformed(kind: str, op: str) -> None:
    key, _, value = BASE[kind].split(" ", 2)
    result = parse(f"{key} {op} {value}")
    assert isinstance(result, Denial) and result.code == Code.MALFORMED_CAVEAT
    assert f"'{key}' takes" in result.reason


@pytest.mark.parametrize("op", ["=", "!=", "in"])
def test_arg_equality_takes_text_and_ordering_takes_numbers(op: str) -> None:
    assert isinstance(parse(f"arg.x {op} abc"), Arg)
    for order in ("<", "<=", ">", ">="):
        result = parse(f"arg.x {order} abc")
        assert isinstance(result, Denial) and result.code == Code.MALFORMED_CAVEAT


UNKNOWN = [
    "frob = 1",
    "budgets <= 5 USD",
    "expire < 2026-12-01T00:00:00Z",
    "tool in search",
    "delegates = a",
    "audiences in a",
    "arg = 1",
    "args.x = 1",
    "argx = 1",
    "rates <= 1/1h",
    "depth.x <= 1",
    "budget.x <= 5 USD",
    "x in y",
    "a-b = c",
    "third_party = x",
    "cid = anything at all",
]


@pytest.mark.parametrize("text", UNKNOWN)
def test_well_formed_unknown_keys_are_unknown(text: str) -> None:
    result = parse(text)
    assert isinstance(result, Denial) and result.code == Code.UNKNOWN_CAVEAT, result
    assert result.reason == f"unknown caveat key '{text.split(' ')[0]}'"


INVALID_UTF8 = [
    b"\x80",
    b"\xbf",
    b"\xc0\x80",  # overlong NUL
    b"\xc1\xbf",
    b"\xe0\x80\xaf",  # overlong /
    b"\xf0\x80\x80\xaf",
    b"\xed\xa0\x80",  # UTF-16 surrogate
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xfe",
    b"\xff",
    b"tools in search\xe2\x82",  # truncated
    b"delegate = \xc3",
    b"budget <= 5 US\xc4",
    b"\xef\xbb",
]


@pytest.mark.parametrize("raw", INVALID_UTF8, ids=[r.hex() for r in INVALID_UTF8])
def test_invalid_utf8_denies_as_malformed(raw: bytes) -> None:
    result = parse(raw)
    assert isinstance(result, Denial) and result.code == Code.MALFORMED_CAVEAT
    assert result.reason == "caveat is not valid UTF-8"
    text, read_result = read(raw)
    assert read_result == result and "\ufffd" in text


def test_utf8_encoded_separators_and_c1_deny() -> None:
    for raw in (b"tools in a\xc2\x85", b"tools in a\xe2\x80\xa8", b"tools in a\xe2\x80\xa9", b"tools in a\xc2\x9f"):
        result = parse(raw)
        assert isinstance(result, Denial) and result.code == Code.MALFORMED_CAVEAT
        assert "control character" in result.reason


def test_lone_surrogates_in_text_deny() -> None:
    for text in ("tools in a\ud800", "delegate = \udfff", "arg.x = \ud83d"):
        result = parse(text)
        assert isinstance(result, Denial) and result.code == Code.MALFORMED_CAVEAT


# -- money and time helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", " 1", "1 ", "-1", "+1", "1e3", "1_0", "١", "1.", ".1", "1.1234567", "1234567890123", "NaN", "0x1"]
)
def test_parse_micros_refuses_everything_but_the_amount_grammar(text: str) -> None:
    with pytest.raises(ValueError, match="amount must be digits"):
        parse_micros(text)


@pytest.mark.parametrize(
    ("micros", "text"), [(-1, "-0.000001"), (-12_500_000, "-12.50"), (10**18 - 1, "999999999999.999999")]
)
def test_format_micros_edges(micros: int, text: str) -> None:
    assert format_micros(micros) == text


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**18 - 1), st.from_regex(r"[A-Z][A-Z0-9_]{1,15}", fullmatch=True))
def test_money_round_trips_through_text_and_caveat(micros: int, currency: str) -> None:
    amount = Amount(currency, micros)
    assert parse_money(str(amount)) == amount
    assert parse(f"budget <= {amount}") == Budget(amount)
    assert parse(f"cost <= {amount}") == Cost(amount)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 253_402_300_799))
def test_instants_round_trip(seconds: int) -> None:
    assert parse_instant(format_instant(seconds)) == seconds


# -- never raises, on inputs near the grammar as well as far from it -----------------------------------

NEAR = st.builds(
    lambda key, op, value: f"{key} {op} {value}",
    st.sampled_from([*BASE, "arg.x", "arg.a.b", "frob"]),
    st.sampled_from(OPS),
    st.text(alphabet=string.printable + "٣１\u2028\x85\u00a0é", max_size=40),
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        NEAR, st.text(max_size=300), st.binary(max_size=300), NEAR.map(lambda t: t.encode("utf-8", "surrogatepass"))
    )
)
def test_parse_and_read_never_raise_and_agree(raw: bytes | str) -> None:
    result = parse(raw)
    assert isinstance(result, Caveat | Denial)
    if isinstance(result, Denial):
        assert result.code in (Code.MALFORMED_CAVEAT, Code.UNKNOWN_CAVEAT)
        assert result.reason
    assert read(raw)[1] == result


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(BASE)), st.integers(0, 40), st.characters())
def test_one_inserted_character_never_raises(kind: str, at: int, char: str) -> None:
    text = BASE[kind]
    at = min(at, len(text))
    result = parse(text[:at] + char + text[at:])
    assert isinstance(result, Caveat | Denial)
