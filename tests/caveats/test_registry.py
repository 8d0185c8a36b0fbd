"""registry.parse: raw caveat bytes or text -> the kind its key names, or a Denial; it never raises."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import caveats
from caveats import Caveat, Code, Context, Denial, parse
from caveats.arg import Arg
from caveats.audience import Audience
from caveats.budget import Budget
from caveats.cost import Cost
from caveats.delegate import Delegate
from caveats.depth import Depth
from caveats.expires import Expires
from caveats.rate import Rate
from caveats.registry import KINDS, _by_key, by_pattern, parse_fully, read
from caveats.tools import Tools
from tests.caveats.support import BASE, OPS, assert_malformed

KIND_OF: dict[str, type[Caveat]] = {
    "expires": Expires,
    "tools": Tools,
    "audience": Audience,
    "budget": Budget,
    "cost": Cost,
    "rate": Rate,
    "depth": Depth,
    "delegate": Delegate,
    "arg": Arg,
}


@pytest.mark.parametrize("kind", sorted(BASE))
def test_each_key_maps_to_its_kind(kind: str) -> None:
    assert type(parse(BASE[kind])) is KIND_OF[kind]
    assert type(parse(BASE[kind].encode())) is KIND_OF[kind]


def test_every_kind_is_registered_once_with_the_same_shape() -> None:
    assert {kind.KEY for kind in KINDS} == set(KIND_OF) - {"arg"}  # arg.* is matched by its prefix
    every: tuple[type[Caveat], ...] = (*KINDS, Arg)
    for kind in every:
        assert kind.OPS and set(OPS) >= kind.OPS, kind
        assert kind.__struct_config__.frozen, kind  # a parsed caveat is a value, safe to memoise and share
    for kind in KINDS:
        assert "parse" in vars(kind), kind  # each kind parses its own value
    with pytest.raises(ValueError, match="two caveat kinds claim the key 'tools'"):
        _by_key((Tools, Audience, Tools))


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
def test_an_operator_a_kind_does_not_take_is_malformed(kind: str, op: str) -> None:
    key, _, value = BASE[kind].split(" ", 2)
    assert f"'{key}' takes" in assert_malformed(f"{key} {op} {value}").reason
    assert (KIND_OF[kind].OPS if kind != "arg" else set(OPS)) == TAKES[kind]


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
    "time < 2026-12-01T00:00:00Z",
    "cid = anything at all",  # the value of an unknown key is not looked at
    "frob = \u00e9",
]


@pytest.mark.parametrize("text", UNKNOWN)
def test_well_formed_unknown_keys_deny_as_unknown(text: str) -> None:
    for raw in (text, text.encode()):
        assert parse(raw) == Denial(Code.UNKNOWN_CAVEAT, f"unknown caveat key '{text.split(' ')[0]}'")


def test_a_malformed_caveat_never_checks_anything() -> None:
    # A Denial is what parse returns for text that does not parse; nothing with a check() escapes.
    result = parse("budget <= 5 usd")
    assert isinstance(result, Denial) and not isinstance(result, Caveat)


NEAR = st.builds(
    lambda key, op, value: f"{key} {op} {value}",
    st.sampled_from([*BASE, "arg.x", "arg.a.b", "frob"]),
    st.sampled_from(OPS),
    st.text(alphabet=string.printable + "٣１\u2028\x85\u00a0é*", max_size=40),
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        NEAR, st.text(max_size=300), st.binary(max_size=300), NEAR.map(lambda t: t.encode("utf-8", "surrogatepass"))
    )
)
def test_parse_never_raises_and_read_agrees(raw: bytes | str) -> None:
    result = parse(raw)
    assert isinstance(result, Caveat | Denial)
    if isinstance(result, Denial):
        assert result.code in (Code.MALFORMED_CAVEAT, Code.UNKNOWN_CAVEAT) and result.reason
    else:
        result.check(Context(now=0, tool="t", args={"x": 1, "a": {"b": "c"}}), 0)  # what parses, checks
    assert read(raw)[1] == result


# Valid caveats at the edges of their kinds' ranges: small edits to them land where the two readings could part.
EDGES = [
    *BASE.values(),
    "expires < 1970-01-01T00:00:00Z",
    "expires < 2024-02-29T23:59:59Z",
    "budget <= 999999999999.999999 ABCDEFGHIJKLMNOP",
    "cost <= 0 XY",
    "rate <= 100000/31d",
    "rate <= 0/2678400s",
    "depth <= 1000",
    "depth <= 0",
    "tools in a*,b.c:d@e/f-g_h",
    "audience in a,b",
    "arg.a.b in x,y",
    "arg.n >= -999999999999.999999",
    "arg.s != -",
    "arg." + "p" * 64 + "." + "q" * 59 + " = 1",  # the longest path a 128-character key holds
]


def _edit(text: str, at: int, cut: int, insert: str) -> str:
    at = min(at, len(text))
    return text[:at] + insert + text[at + cut :]


EDITED = st.builds(
    _edit,
    st.sampled_from(EDGES),
    st.integers(0, 140),
    st.integers(0, 3),
    st.text(alphabet="0123456789.,-:/*TZsmhdUS=<>! a\u00e9\x85\u2028", max_size=3),
)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(NEAR, EDITED))
def test_a_kinds_pattern_takes_only_what_the_full_parser_takes_and_reads_it_alike(text: str) -> None:
    fast = by_pattern(text)
    assert fast is None or fast == parse_fully(text), text


@pytest.mark.parametrize("text", EDGES)
def test_every_valid_edge_takes_the_pattern_path(text: str) -> None:
    caveat = by_pattern(text)
    assert isinstance(caveat, Caveat) and caveat == parse_fully(text)


def test_an_argument_path_past_the_keys_128_characters_is_malformed_on_both_paths() -> None:
    text = "arg." + "p" * 64 + "." + "q" * 60 + " = 1"
    assert isinstance(assert_malformed(text), Denial)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(BASE)), st.integers(0, 40), st.characters())
def test_one_inserted_character_never_raises(kind: str, at: int, char: str) -> None:
    text = BASE[kind]
    at = min(at, len(text))
    assert isinstance(parse(text[:at] + char + text[at:]), Caveat | Denial)


def test_the_package_exports() -> None:
    assert sorted(caveats.__all__) == [
        "Amount",
        "Caveat",
        "Code",
        "Context",
        "Denial",
        "format_micros",
        "parse",
        "parse_micros",
        "parse_money",
    ]
