"""`approval in pay,wire.*` · `approval > 1.00 USD`: a GATE, which marks the calls that wait for a human and never
denies one itself; the first matching gate in chain order is the one the store asks about."""

from __future__ import annotations

import re
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caveats import Amount, Code, Context
from caveats.approval import Approval
from caveats.base import Role
from caveats.chain import Analysis, analyse
from caveats.registry import KINDS, REGISTRY, Registry
from tests.caveats.support import (
    BAD_MONEY,
    CONTROLS,
    N128,
    N129,
    assert_malformed,
    assert_parses,
    ctx,
    ids,
    parsed,
)
from tests.caveats.test_registry import Colour


def chain(*texts: str) -> Analysis:
    return analyse([t.encode() for t in texts])


def matches(text: str, context: Context) -> bool:
    caveat = parsed(text)
    assert isinstance(caveat, Approval)
    return caveat.matches(context)


VALID = [
    ("approval in pay", Approval(tools=("pay",))),
    ("approval in pay,wire.*", Approval(tools=("pay", "wire.*"))),
    ("approval in a:b@c/d-e_f.g", Approval(tools=("a:b@c/d-e_f.g",))),
    (f"approval in {N128}*", Approval(tools=(N128 + "*",))),
    ("approval in " + ",".join(f"t{n}" for n in range(100)), Approval(tools=tuple(f"t{n}" for n in range(100)))),
    ("approval > 1.00 USD", Approval(above=Amount("USD", 1_000_000))),
    ("approval > 1 USD", Approval(above=Amount("USD", 1_000_000))),
    ("approval > 0 XY", Approval(above=Amount("XY", 0))),
    ("approval > 0.000001 A1", Approval(above=Amount("A1", 1))),
    ("approval > 999999999999.999999 TOKENS", Approval(above=Amount("TOKENS", 10**18 - 1))),
    ("approval > 1 ABCDEFGHIJKLMNOP", Approval(above=Amount("ABCDEFGHIJKLMNOP", 1_000_000))),
]


@pytest.mark.parametrize(("text", "value"), VALID, ids=ids(VALID))
def test_valid_forms_parse_to_their_tools_or_amount(text: str, value: Approval) -> None:
    assert_parses(text, value)


def test_approval_is_a_gate_and_no_counter() -> None:
    assert Approval.ROLE is Role.GATE and Approval.MAX_PER_CHAIN == 0
    assert REGISTRY.roles[Approval] is Role.GATE and Approval not in REGISTRY.counter_kinds


MALFORMED_TOOLS = [
    "",
    ",",
    "pay,",
    ",pay",
    "pay,,wire",
    "pay, wire",
    "pay wire",
    "*",  # every tool: the `tools` caveat's names, exactly
    "**",
    "pay**",
    "*pay",
    "p*y",
    N129,
    f"{N129}*",
    "-pay",
    "päy",
    "раy",  # Cyrillic a
    "pay\u200b",
    "1.00 USD",  # an amount needs `>`
]


@pytest.mark.parametrize("value", MALFORMED_TOOLS, ids=ids(MALFORMED_TOOLS))
def test_malformed_tool_lists_deny(value: str) -> None:
    assert_malformed(f"approval in {value}")


MALFORMED_MONEY = [*BAD_MONEY, "pay", "pay,wire", "1.00 usd", "-1 USD", "1234567890123 USD", "1.1234567 USD"]


@pytest.mark.parametrize("value", MALFORMED_MONEY, ids=ids(MALFORMED_MONEY))
def test_malformed_amounts_deny(value: str) -> None:
    assert_malformed(f"approval > {value}")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("approval >= 1 USD", "'approval' takes > or in, not '>='"),
        ("approval <= 1 USD", "'approval' takes > or in, not '<='"),
        ("approval = pay", "'approval' takes > or in, not '='"),
        ("approval in", "caveat is not of the form 'KEY OP VALUE' with single spaces"),
        ("approval in ", "caveat is not of the form 'KEY OP VALUE' with single spaces"),
        ("approval  in pay", "caveat is not of the form 'KEY OP VALUE' with single spaces"),
        ("approval > 1.00  USD", "expected an amount and a currency like '5.00 USD', got '1.00  USD'"),
        ("approval > 1.00 usd", "expected an amount and a currency like '5.00 USD', got '1.00 usd'"),
        ("approval > 1.00 U", "currency must be 2-16 of A-Z, 0-9, _ starting with a letter, got 'U'"),
        ("approval > -1 USD", "expected an amount and a currency like '5.00 USD', got '-1 USD'"),
        (
            "approval > 1234567890123 USD",
            "amount must be digits with at most 12 before and 6 after the decimal point, got '1234567890123'",
        ),
        (
            "approval > 1.1234567 USD",
            "amount must be digits with at most 12 before and 6 after the decimal point, got '1.1234567'",
        ),
        (
            "approval in pay wire",
            "approval tools must be comma-separated names (optionally ending in *), got 'pay wire'",
        ),
    ],
)
def test_a_refusal_says_what_is_wrong(text: str, reason: str) -> None:
    assert assert_malformed(text).reason == reason


@pytest.mark.parametrize("c", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_a_control_character_anywhere_denies(c: str) -> None:
    for bad in (f"approval in pay{c}", f"approval in pay,{c}wire", f"approval > 1.00{c}USD", f"approval > 1 USD{c}"):
        assert assert_malformed(bad).reason == "caveat contains a control character"


MATCHES = [
    # the `in` form: exact names, and a trailing `*` by prefix, the stem itself included
    ("approval in pay", ctx("pay"), True),
    ("approval in pay", ctx("payment"), False),
    ("approval in pay", ctx("Pay"), False),
    ("approval in pay", ctx("pa"), False),
    ("approval in pay", ctx(""), False),
    ("approval in pay", ctx("pay*"), False),  # a requested name is never a pattern
    ("approval in pay,wire.*", ctx("wire."), True),
    ("approval in pay,wire.*", ctx("wire.sepa"), True),
    ("approval in pay,wire.*", ctx("wire.sepa.instant"), True),
    ("approval in pay,wire.*", ctx("wire"), False),
    ("approval in pay,wire.*", ctx("wirex"), False),
    ("approval in pay,wire.*", ctx("search"), False),
    ("approval in pay*", ctx("payroll"), True),
    # the `in` form looks at the tool only, whatever the call costs
    ("approval in pay", ctx("search", cost=Amount("USD", 10**18)), False),
    ("approval in pay", ctx("pay", cost=None), True),
    # the `>` form: strictly more, in the same currency; another currency counts as more; no cost is not more
    ("approval > 1.00 USD", ctx("pay", cost=Amount("USD", 1_000_001)), True),
    ("approval > 1.00 USD", ctx("pay", cost=Amount("USD", 1_000_000)), False),
    ("approval > 1.00 USD", ctx("pay", cost=Amount("USD", 999_999)), False),
    ("approval > 1.00 USD", ctx("pay", cost=Amount("USD", 0)), False),
    ("approval > 1.00 USD", ctx("pay", cost=Amount("EUR", 1)), True),
    ("approval > 1.00 USD", ctx("pay", cost=Amount("EUR", 0)), True),
    ("approval > 1.00 USD", ctx("pay", cost=Amount("USDX", 1)), True),
    ("approval > 1.00 USD", ctx("pay", cost=None), False),
    ("approval > 0 USD", ctx("pay", cost=Amount("USD", 0)), False),
    ("approval > 0 USD", ctx("pay", cost=Amount("USD", 1)), True),
    ("approval > 999999999999.999999 USD", ctx("pay", cost=Amount("USD", 10**18)), True),
]


@pytest.mark.parametrize(
    ("text", "context", "want"), MATCHES, ids=[f"{t} | {c.tool!r} {c.cost}" for t, c, _ in MATCHES]
)
def test_which_calls_need_an_approval(text: str, context: Context, want: bool) -> None:
    assert matches(text, context) is want


@pytest.mark.parametrize("text", Approval.VALID)
def test_the_caveat_itself_never_denies(text: str) -> None:
    caveat = parsed(text)
    for context in (ctx("pay", cost=Amount("EUR", 10**18)), ctx("wire.sepa"), ctx("search")):
        assert caveat.check(context, 0) is None


# -- in a chain ----------------------------------------------------------------------------------------------------
def test_a_chain_without_approval_caveats_has_no_gates() -> None:
    a = chain("delegate = o", "tools in pay", "budget <= 10 USD", "delegate = r", "depth <= 0")
    assert a.gates == () and a.approval(ctx("pay", cost=Amount("EUR", 10**18))) is None


def test_the_first_matching_gate_in_chain_order_names_its_index_and_hop() -> None:
    a = chain(
        "delegate = o",  # 0, hop 0
        "approval > 100 USD",  # 1, hop 0
        "delegate = r",  # 2, hop 1
        "approval in pay",  # 3, hop 1
        "delegate = z",  # 4, hop 2
        "approval > 1 USD",  # 5, hop 2
        "approval in pay,wire.*",  # 6, hop 2
    )
    assert [(g.index, g.hop, g.caveat) for g in a.gates] == [
        (1, 0, "approval > 100 USD"),
        (3, 1, "approval in pay"),
        (5, 2, "approval > 1 USD"),
        (6, 2, "approval in pay,wire.*"),
    ]
    assert a.steps == ()  # no gate is a per-call check
    cases = [
        (ctx("pay", cost=Amount("USD", 500_000_000)), 1, 0),  # over 100 USD: the orchestrator's own gate
        (ctx("pay", cost=Amount("EUR", 1)), 1, 0),  # another currency counts as more
        (ctx("pay", cost=Amount("USD", 2_000_000)), 3, 1),
        (ctx("pay"), 3, 1),
        (ctx("search", cost=Amount("USD", 2_000_000)), 5, 2),
        (ctx("wire.sepa"), 6, 2),
    ]
    for context, index, hop in cases:
        gate = a.approval(context)
        assert gate is not None and (gate.index, gate.hop) == (index, hop), context
        assert gate.caveat == a.texts[index] and gate.check == a.parsed[index]
    assert a.approval(ctx("search")) is None
    assert a.approval(ctx("search", cost=Amount("USD", 1_000_000))) is None  # equal is not more


def test_reordering_the_caveats_changes_which_gate_decides() -> None:
    texts = ["approval in pay", "approval > 1 USD"]
    call = ctx("pay", cost=Amount("USD", 5_000_000))
    first = chain("delegate = o", *texts).approval(call)
    second = chain("delegate = o", *reversed(texts)).approval(call)
    assert first is not None and (first.index, first.caveat) == (1, "approval in pay")
    assert second is not None and (second.index, second.caveat) == (1, "approval > 1 USD")


def test_a_gate_never_denies_and_never_hides_a_denial() -> None:
    a = chain("delegate = o", "approval in pay", "tools in pay", "approval > 0 USD", "expires < 2026-12-02T00:00:00Z")
    assert a.evaluate(ctx("pay", cost=Amount("EUR", 10**18))) is None  # it needs an approval, but is not denied
    assert a.approval(ctx("pay")) is not None
    denial = a.evaluate(ctx("search"))
    assert denial is not None and (denial.code, denial.caveat) == (Code.TOOL_NOT_ALLOWED, "tools in pay")
    assert a.static_denial is None and a.over_limit is None


@pytest.mark.parametrize("malformed", ["approval >= 1 USD", "approval in ", "approval > 1 usd", "approval in *"])
def test_a_malformed_approval_caveat_denies_every_call(malformed: str) -> None:
    """Fail closed: a gate that does not parse would otherwise let the calls it meant to hold run unapproved."""
    a = chain("delegate = o", "delegate = r", malformed, "tools in search")
    assert a.gates == ()
    for context in (ctx("search", hops=2), ctx("pay", hops=2), ctx("search", cost=Amount("USD", 1), hops=2)):
        denial = a.evaluate(context)
        assert denial is not None and (denial.code, denial.caveat, denial.hop) == (Code.MALFORMED_CAVEAT, malformed, 1)


def test_a_malformed_approval_caveat_is_reported_in_chain_order() -> None:
    denial = chain("delegate = o", "tools in search", "approval >= 1 USD").evaluate(ctx("pay"))
    assert denial is not None and denial.code == Code.TOOL_NOT_ALLOWED  # the earlier caveat fails first
    denial = chain("delegate = o", "approval >= 1 USD", "tools in search").evaluate(ctx("pay"))
    assert denial is not None and denial.code == Code.MALFORMED_CAVEAT


def test_approval_caveats_count_against_no_counter_limit() -> None:
    # Not a counter the store keeps: the token's own limits (128 caveats, 1 KiB each) bound how many it carries.
    a = chain("delegate = o", *(f"approval in t{n}" for n in range(100)))
    assert len(a.gates) == 100 and a.over_limit is None and a.counters == {}
    gate = a.approval(ctx("t99"))
    assert gate is not None and gate.index == 100


def test_a_gate_kind_without_matches_is_refused() -> None:
    class Unmatched(Colour, frozen=True):
        KEY: ClassVar[str] = "unmatched"
        ROLE: ClassVar[Role] = Role.GATE
        PATTERN: ClassVar[re.Pattern[str]] = re.compile("unmatched = (red|green|blue)")

    with pytest.raises(ValueError, match="Unmatched is a gate kind and does not set matches"):
        Registry((*KINDS, Unmatched))


CALLS = st.builds(
    lambda tool, cost: ctx(tool, cost=cost),
    st.sampled_from(["pay", "wire.sepa", "search", "", "payx"]),
    st.one_of(st.none(), st.builds(Amount, st.sampled_from(["USD", "EUR"]), st.integers(0, 3_000_000))),
)
OTHERS = ["tools in pay,search", "cost <= 2 USD", "budget <= 10 USD", "expires < 2026-12-02T00:00:00Z"]


@settings(max_examples=200, deadline=None)
@given(
    others=st.lists(st.sampled_from(OTHERS), max_size=4),
    gates=st.lists(st.sampled_from(Approval.VALID), max_size=4),
    places=st.lists(st.integers(0, 8), max_size=4),
    call=CALLS,
)
def test_adding_approval_caveats_never_changes_what_evaluate_decides(
    others: list[str], gates: list[str], places: list[int], call: Context
) -> None:
    texts = ["delegate = o", *others]
    for gate, at in zip(gates, [*places, *[len(texts)] * len(gates)], strict=False):
        texts.insert(max(1, min(at, len(texts))), gate)
    assert chain(*texts).evaluate(call) == chain("delegate = o", *others).evaluate(call)
