"""The shape every caveat shares: `KEY OP VALUE`, single spaces, nothing around it, no control characters,
valid UTF-8; and the shared number and name patterns."""

from __future__ import annotations

import pytest

from caveats import Code, Denial, parse
from caveats.grammar import CaveatSyntaxError, parse_names, parse_uint, split
from caveats.registry import read
from tests.caveats.support import LOOKALIKE_NUMBERS, N128, N129, assert_malformed, ids

SPLITS = [
    ("budget <= 5.00 USD", ("budget", "<=", "5.00 USD")),  # only the value may hold a space
    ("expires < 2026-12-01T00:00:00Z", ("expires", "<", "2026-12-01T00:00:00Z")),
    ("tools in in", ("tools", "in", "in")),
    ("arg.x = =", ("arg.x", "=", "=")),
    ("arg.x != !=", ("arg.x", "!=", "!=")),
    ("arg.x < <", ("arg.x", "<", "<")),
    ("arg.x > >=", ("arg.x", ">", ">=")),
    ("frob = x", ("frob", "=", "x")),
    ("a = b", ("a", "=", "b")),
]


@pytest.mark.parametrize(("text", "parts"), SPLITS, ids=ids(SPLITS))
def test_split_is_unambiguous(text: str, parts: tuple[str, str, str]) -> None:
    assert split(text) == parts


SHAPE = [
    "",
    " ",
    "   ",
    "budget",
    "budget <=",
    "budget <= ",
    "BUDGET <= 5 USD",  # keys start with a lower-case letter
    "Budget <= 5 USD",
    "_budget <= 5 USD",
    "1budget <= 5 USD",
    "budget =< 5 USD",
    "budget == 5 USD",
    "budget => 5 USD",
    "budget <> 5 USD",
    "budget ≤ 5 USD",
    "budget ＜= 5 USD",
    "tools IN a",
    "tools In a",
    "tools ∈ a",
    "k" * 129 + " = 1",  # keys of at most 128 characters
]


@pytest.mark.parametrize("text", SHAPE, ids=ids(SHAPE))
def test_not_of_the_shape_key_op_value(text: str) -> None:
    assert_malformed(text)


@pytest.mark.parametrize("c", ["\n", "\r\n", "\x00", "\x85", "\u2028", "\u2029"])
def test_a_line_break_never_smuggles_a_second_caveat(c: str) -> None:
    assert_malformed(f"tools in search{c}tools in pay")
    assert_malformed(f"depth <= 1{c}")


INVALID_UTF8 = [
    b"\x80",
    b"\xbf",
    b"\xc0\x80",  # overlong NUL
    b"\xc1\xbf",
    b"\xe0\x80\xaf",  # overlong /
    b"\xf0\x80\x80\xaf",
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xfe",
    b"\xff",
    b"\xff\xfeb\x00",  # UTF-16 with a BOM
    b"tools in search\xe2\x82",  # truncated
    b"tools in s\xc3",
    b"delegate = \xc3",
    b"delegate = \xc0\xaf",
    b"budget <= 5 US\xc4",
    b"budget <= 5 USD\xff",
    b"\xef\xbb",
]


@pytest.mark.parametrize("raw", INVALID_UTF8, ids=[r.hex() for r in INVALID_UTF8])
def test_invalid_utf8_denies(raw: bytes) -> None:
    result = parse(raw)
    assert result == Denial(Code.MALFORMED_CAVEAT, "caveat is not valid UTF-8")
    text, read_result = read(raw)
    assert read_result == result and "\ufffd" in text  # printable for a denial or a listing


@pytest.mark.parametrize(
    "raw", [b"tools in a\xc2\x85", b"tools in a\xe2\x80\xa8", b"tools in a\xe2\x80\xa9", b"a\xc2\x9f"]
)
def test_encoded_c1_and_separators_deny_as_control_characters(raw: bytes) -> None:
    assert assert_malformed(raw.decode()).reason == "caveat contains a control character"


@pytest.mark.parametrize("text", ["tools in a\ud800", "delegate = \udfff", "arg.x = \ud83d", "\ud800 = 1"])
def test_lone_surrogates_deny(text: str) -> None:
    assert_malformed(text)


# -- shared patterns ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("1", 1), ("10", 10), ("999", 999), ("1000", 1000)])
def test_parse_uint(text: str, value: int) -> None:
    assert parse_uint(text, "n", 1000) == value


@pytest.mark.parametrize("text", [*LOOKALIKE_NUMBERS, "1001", "00", "01", "1.0", "9" * 10, "9" * 5000])
def test_parse_uint_refuses(text: str) -> None:
    with pytest.raises(CaveatSyntaxError, match="n must be a whole number from 0 to 1000"):
        parse_uint(text, "n", 1000)


@pytest.mark.parametrize(("text", "value"), [("a", ("a",)), ("a,b", ("a", "b")), (f"{N128},0", (N128, "0"))])
def test_parse_names(text: str, value: tuple[str, ...]) -> None:
    assert parse_names(text, "names") == value


@pytest.mark.parametrize("text", ["", ",", "a,", ",a", "a,,b", "a b", N129, "-a", "a*", "é"])
def test_parse_names_refuses(text: str) -> None:
    with pytest.raises(CaveatSyntaxError, match="names must be comma-separated names"):
        parse_names(text, "names")
