"""registry.parse: raw caveat bytes or text -> the kind its whole key names, or a Denial; it never raises.

The per-kind tests loop over every registered kind, reading its own samples (VALID, MALFORMED): a new kind is
tested by being registered. Colour, a kind that exists only in this file, runs through every one of them.
"""

from __future__ import annotations

import re
import string
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import caveats
from caveats import Caveat, Code, Context, Denial, parse
from caveats.base import Role
from caveats.chain import analyse
from caveats.grammar import CaveatSyntaxError
from caveats.registry import KINDS, REGISTRY, Registry, read
from tests.caveats.support import CONTROLS, OPS, assert_malformed, ctx


class Colour(Caveat, frozen=True):
    """A kind that exists only in this file: registering it is all it takes to parse, check and be tested."""

    KEY: ClassVar[str] = "colour"
    OPS: ClassVar[frozenset[str]] = frozenset({"="})
    PATTERN: ClassVar[re.Pattern[str]] = re.compile("colour = (red|green|blue)")
    VALID: ClassVar[tuple[str, ...]] = ("colour = blue", "colour = red")
    MALFORMED: ClassVar[tuple[str, ...]] = ("colour = mauve", "colour = Blue", "colour = blue,red", "colour = ")
    name: str

    @classmethod
    def parse(cls, op: str, value: str) -> Colour:
        if value not in ("red", "green", "blue"):
            raise CaveatSyntaxError(f"colour must be red, green or blue, got {value!r}")
        return cls(value)

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Colour:
        return cls(m[1])

    def check(self, ctx: Context, hop: int) -> Denial | None:
        if ctx.args.get("colour") == self.name:
            return None
        return Denial(Code.ARG_MISMATCH, f"the call is not {self.name}")


WITH_COLOUR = Registry((*KINDS, Colour))
# Every registered kind with the registry that holds it: the throwaway kind runs through every looped test.
EVERY = [*((kind, REGISTRY) for kind in KINDS), (Colour, WITH_COLOUR)]
EVERY_IDS = [kind.KEY for kind, _ in EVERY]
every_kind = pytest.mark.parametrize(("kind", "registry"), EVERY, ids=EVERY_IDS)


@every_kind
def test_every_sample_parses_to_its_kind_on_both_paths(kind: type[Caveat], registry: Registry) -> None:
    assert kind.VALID and kind.MALFORMED, kind
    for text in kind.VALID:
        caveat = registry.by_pattern(text)  # every valid caveat takes the fast path
        assert type(caveat) is kind and caveat == registry.parse_fully(text), text
        assert registry.parse(text) == caveat and registry.parse(text.encode()) == caveat
        assert registry.read_all([text.encode()]) == [(text, caveat)]
        caveat.check(ctx(), 0)  # what parses, checks


@every_kind
def test_every_malformed_sample_denies_on_both_paths(kind: type[Caveat], registry: Registry) -> None:
    for text in kind.MALFORMED:
        assert registry.kind_of(text.split(" ", 1)[0]) is kind, text  # the sample names its own kind
        assert_malformed(text, registry)


@every_kind
def test_every_kind_has_the_same_shape(kind: type[Caveat], registry: Registry) -> None:
    assert kind.OPS and set(OPS) >= kind.OPS, kind
    assert kind.__struct_config__.frozen, kind  # a parsed caveat is a value, safe to memoise and share
    assert "parse" in vars(kind) or "from_parts" in vars(kind), kind  # each kind parses its own value
    assert "from_match" in vars(kind), kind
    assert isinstance(kind.ROLE, Role) and registry.roles[kind] is kind.ROLE
    assert (kind.MAX_PER_CHAIN > 0) == (kind.ROLE is Role.COUNTER), kind


@every_kind
def test_an_operator_a_kind_does_not_take_is_malformed(kind: type[Caveat], registry: Registry) -> None:
    key, _, value = kind.VALID[0].split(" ", 2)
    for op in OPS:
        if op not in kind.OPS:
            assert f"'{key}' takes" in assert_malformed(f"{key} {op} {value}", registry).reason


@every_kind
def test_spacing_mutations_deny(kind: type[Caveat], registry: Registry) -> None:
    text = kind.VALID[0]
    key, op, value = text.split(" ", 2)
    for bad in (
        f" {text}",
        f"{text} ",
        f"  {text}",
        f"{key}  {op} {value}",
        f"{key} {op}  {value}",
        f"{key}\t{op} {value}",
        f"{key} {op}\t{value}",
        f"{key}\u00a0{op} {value}",
        f"{key}\u3000{op} {value}",
        f"{key} {op}\u00a0{value}",
        f"{key}{op} {value}",
        f"{key} {op}{value}",
        f"{key}{op}{value}",
        f"{key} {op}",
        f"{key} {op} ",
        f"{op} {value}",
        key,
        f"\ufeff{text}",
        f"{text}\ufeff",
        f"{text}\u200b",
    ):
        assert_malformed(bad, registry)


@every_kind
def test_every_control_character_anywhere_denies(kind: type[Caveat], registry: Registry) -> None:
    text = kind.VALID[0]
    for c in CONTROLS:
        for bad in (c + text, text + c, text[:3] + c + text[3:], text.replace(" ", c, 1), text[:-1] + c + text[-1]):
            denial = assert_malformed(bad, registry)
            assert denial.reason == "caveat contains a control character", bad


def _edit(text: str, at: int, cut: int, insert: str) -> str:
    at = min(at, len(text))
    return text[:at] + insert + text[at + cut :]


# Small edits to valid caveats at the edges of their kinds' ranges land where the two readings could part.
EDITS = st.tuples(
    st.integers(0, 140),
    st.integers(0, 3),
    st.text(alphabet="0123456789.,-:/*TZsmhdUS=<>! a\u00e9\x85\u2028", max_size=3),
)


@every_kind
@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_kinds_pattern_takes_only_what_the_full_parser_takes_and_reads_it_alike(
    kind: type[Caveat], registry: Registry, data: st.DataObject
) -> None:
    text = _edit(data.draw(st.sampled_from(kind.VALID + kind.MALFORMED)), *data.draw(EDITS))
    fast = registry.by_pattern(text)
    assert fast is None or fast == registry.parse_fully(text), text
    result = registry.parse(text)
    assert isinstance(result, Caveat | Denial)
    assert fast is None or result == fast


def test_a_key_that_two_kinds_claim_is_refused() -> None:
    tools = next(kind for kind in KINDS if kind.KEY == "tools")
    with pytest.raises(ValueError, match="two caveat kinds claim the key 'tools'"):
        Registry((*KINDS, tools))


def test_a_prefix_key_with_a_dot_inside_is_refused() -> None:
    class Deep(Colour, frozen=True):
        KEY: ClassVar[str] = "meta.arg.*"

    with pytest.raises(ValueError, match=re.escape("a prefix key holds one `.`, before the `*`: 'meta.arg.*'")):
        Registry((*KINDS, Deep))


def test_a_kind_that_misses_what_its_role_needs_is_refused() -> None:
    class Uncapped(Colour, frozen=True):
        KEY: ClassVar[str] = "uncapped"
        ROLE: ClassVar[Role] = Role.COUNTER  # but no MAX_PER_CHAIN

    with pytest.raises(ValueError, match="Uncapped is a counter kind and does not set MAX_PER_CHAIN"):
        Registry((*KINDS, Uncapped))


def test_the_throwaway_kind_registers_parses_and_checks_in_a_chain() -> None:
    assert WITH_COLOUR.parse(b"colour = blue") == Colour("blue")
    assert REGISTRY.parse("colour = blue") == Denial(Code.UNKNOWN_CAVEAT, "unknown caveat key 'colour'")
    a = analyse([b"delegate = o", b"colour = blue", b"delegate = r", b"tools in paint"], WITH_COLOUR)
    assert [step.caveat for step in a.steps] == ["colour = blue", "tools in paint"]  # a CHECK: every call
    assert a.evaluate(ctx("paint", args={"colour": "blue"}, hops=2)) is None
    denial = a.evaluate(ctx("paint", args={"colour": "red"}, hops=2))
    assert denial is not None and (denial.code, denial.caveat, denial.hop) == ("arg_mismatch", "colour = blue", 0)
    malformed = analyse([b"delegate = o", b"colour = mauve"], WITH_COLOUR).evaluate(ctx())
    assert malformed is not None and malformed.code == "malformed_caveat"


def test_keys_sharing_a_beginning_are_told_apart_by_the_whole_key() -> None:
    class BudgetDaily(Colour, frozen=True):
        KEY: ClassVar[str] = "budget_daily"
        PATTERN: ClassVar[re.Pattern[str]] = re.compile("budget_daily = (red|green|blue)")
        VALID: ClassVar[tuple[str, ...]] = ("budget_daily = red",)

    registry = Registry((*KINDS, BudgetDaily))
    assert registry.parse("budget_daily = red") == BudgetDaily("red")
    assert type(registry.parse("budget <= 5 USD")) is REGISTRY.by_key["budget"]
    assert registry.parse("budget_daily <= 5 USD").code == Code.MALFORMED_CAVEAT  # type: ignore[union-attr]


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
    "budget_daily <= 5 USD",  # keys sharing a kind's beginning name no kind
    "tools_deny in x",
    "rates_x <= 1/1h",
    "colour = blue",  # a kind only a test's own registry holds
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
    st.sampled_from([*(kind.VALID[0].split(" ")[0] for kind in KINDS), "arg.x", "arg.a.b", "frob"]),
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
    fast = REGISTRY.by_pattern(raw) if isinstance(raw, str) else None
    assert fast is None or fast == REGISTRY.parse_fully(raw) == result  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(EVERY), st.integers(0, 40), st.characters())
def test_one_inserted_character_never_raises(every: tuple[type[Caveat], Registry], at: int, char: str) -> None:
    kind, registry = every
    text = kind.VALID[0]
    at = min(at, len(text))
    assert isinstance(registry.parse(text[:at] + char + text[at:]), Caveat | Denial)


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


class Tally(Colour, frozen=True):
    """A throwaway COUNTER kind: the chain hands it to the store as a Counter and caps how many a chain carries."""

    KEY: ClassVar[str] = "tally"
    ROLE: ClassVar[Role] = Role.COUNTER
    MAX_PER_CHAIN: ClassVar[int] = 2
    PATTERN: ClassVar[re.Pattern[str]] = re.compile("tally = (red|green|blue)")
    VALID: ClassVar[tuple[str, ...]] = ("tally = red",)
    MALFORMED: ClassVar[tuple[str, ...]] = ("tally = mauve",)


def test_a_throwaway_counter_kind_is_counted_and_capped_without_touching_the_chain() -> None:
    registry = Registry((*KINDS, Tally))
    a = analyse([b"delegate = o", b"expires < 2026-12-01T00:00:00Z", b"tally = red", b"delegate = r"], registry)
    ((counter,),) = a.counters.values()
    assert (counter.index, counter.hop, counter.caveat, counter.parsed) == (2, 0, "tally = red", Tally("red"))
    assert counter.expires_at == 1_796_083_200 and a.budgets == () and a.over_limit is None
    assert [step.caveat for step in a.steps] == ["expires < 2026-12-01T00:00:00Z", "tally = red"]  # its own check
    over = analyse([b"delegate = o", b"tally = red", b"tally = blue", b"tally = mauve"], registry)
    assert over.over_limit == "a token carries at most 2 tally caveats, this one has 3"  # the malformed one too
    unknown = analyse([b"delegate = o", b"tally = red", b"tally = blue", b"tallies = mauve"], registry)
    assert unknown.over_limit is None
