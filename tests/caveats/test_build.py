"""restriction_caveats: typed restrictions -> caveat text that parses back; bad input is a ValueError naming
the field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caveats import Amount, Caveat, parse
from caveats.approval import Approval
from caveats.arg import Arg
from caveats.audience import Audience
from caveats.budget import Budget
from caveats.build import restriction_caveats
from caveats.cost import Cost
from caveats.delegate import Delegate
from caveats.depth import Depth
from caveats.expires import Expires
from caveats.rate import Rate
from caveats.tools import Tools
from tests.caveats.support import NOW


def test_every_field_in_order_delegate_first() -> None:
    texts = restriction_caveats(
        to="r",
        budget=Amount("USD", 1),
        cost_cap=Amount("EUR", 12_500_000),
        tools=("a", "b*"),
        audience=iter(["srv"]),
        expires_at=253_402_300_799,
        max_depth=1000,
        rate="100000/31d",
        args={"a.b": "!= x", "n": "in 1,2"},
        approval_tools=["pay", "wire.*"],
        approval_above=Amount("USD", 1_000_000),
        caveats=["depth <= 3"],
    )
    assert texts == [
        "delegate = r",
        "expires < 9999-12-31T23:59:59Z",
        "tools in a,b*",
        "audience in srv",
        "budget <= 0.000001 USD",
        "cost <= 12.50 EUR",
        "rate <= 100000/31d",
        "depth <= 1000",
        "arg.a.b != x",
        "arg.n in 1,2",
        "approval in pay,wire.*",
        "approval > 1.00 USD",
        "depth <= 3",
    ]
    assert [type(parse(t)) for t in texts] == [
        Delegate,
        Expires,
        Tools,
        Audience,
        Budget,
        Cost,
        Rate,
        Depth,
        Arg,
        Arg,
        Approval,
        Approval,
        Depth,
    ]


def test_nothing_asked_is_nothing_built() -> None:
    assert restriction_caveats() == []


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"budget": "2.00 USD"}, "budget <= 2.00 USD"),
        ({"budget": Amount("USD", 2_000_000)}, "budget <= 2.00 USD"),
        ({"cost_cap": Amount("USD", 0)}, "cost <= 0.00 USD"),
        ({"expires_at": 0}, "expires < 1970-01-01T00:00:00Z"),
        ({"expires_at": NOW}, "expires < 2026-12-01T00:00:00Z"),
        ({"max_depth": 0}, "depth <= 0"),
        ({"tools": []}, None),
        ({"tools": ["search"]}, "tools in search"),
        ({"args": {"amount": "<= 3"}}, "arg.amount <= 3"),
        ({"approval_tools": ["pay"]}, "approval in pay"),
        ({"approval_tools": iter(["pay", "wire.*"])}, "approval in pay,wire.*"),
        ({"approval_above": "1.00 USD"}, "approval > 1.00 USD"),
        ({"approval_above": Amount("EUR", 0)}, "approval > 0.00 EUR"),
        ({"approval_above": Amount("USD", 10**18 - 1)}, "approval > 999999999999.999999 USD"),
    ],
)
def test_single_fields(kwargs: dict[str, Any], text: str | None) -> None:
    if text is None:
        with pytest.raises(ValueError):
            restriction_caveats(**kwargs)
    else:
        assert restriction_caveats(**kwargs) == [text]


NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,20}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    to=NAMES,
    budget=st.builds(Amount, st.from_regex(r"[A-Z][A-Z0-9_]{1,15}", fullmatch=True), st.integers(0, 10**18 - 1)),
    tools=st.lists(st.one_of(NAMES, NAMES.map(lambda n: n + "*")), min_size=1, max_size=5),
    audience=st.lists(NAMES, min_size=1, max_size=5),
    expires_at=st.integers(0, 253_402_300_799),
    max_depth=st.integers(0, 1000),
    rate=st.builds(lambda n, w, u: f"{n}/{w}{u}", st.integers(0, 100_000), st.integers(1, 31), st.just("d")),
)
def test_every_text_built_from_valid_input_parses_back_to_it(
    to: str, budget: Amount, tools: list[str], audience: list[str], expires_at: int, max_depth: int, rate: str
) -> None:
    texts = restriction_caveats(
        to=to,
        budget=budget,
        cost_cap=budget,
        tools=tools,
        audience=audience,
        expires_at=expires_at,
        max_depth=max_depth,
        rate=rate,
        approval_tools=tools,
        approval_above=budget,
    )
    assert [parse(t) for t in texts] == [
        Delegate(to),
        Expires(expires_at),
        Tools(tuple(tools)),
        Audience(tuple(audience)),
        Budget(budget),
        Cost(budget),
        Rate(int(rate.split("/")[0]), int(rate.split("/")[1][:-1]) * 86_400),
        Depth(max_depth),
        Approval(tools=tuple(tools)),
        Approval(above=budget),
    ]


REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"to": ""}, "to"),
    ({"to": "a b"}, "to"),
    ({"to": "-a"}, "to"),
    ({"to": "a,b"}, "to"),
    ({"to": "a\n"}, "to"),
    ({"budget": "5 usd"}, "budget"),
    ({"budget": "2 usd"}, "budget"),
    ({"budget": "5"}, "budget"),
    ({"budget": "５ USD"}, "budget"),
    ({"budget": "5 USD\ndepth <= 9"}, "budget"),
    ({"budget": Amount("USD", -1)}, "budget"),
    ({"budget": Amount("USD", 10**18)}, "budget"),
    ({"budget": Amount("usd", 1)}, "budget"),
    ({"cost_cap": "1e3 USD"}, "cost_cap"),
    ({"cost_cap": Amount("U", 1)}, "cost_cap"),
    ({"tools": "search"}, "tools"),  # one string, not a list: would build `tools in s,e,a,r,c,h`
    ({"tools": []}, "tools"),
    ({"tools": ["a", ""]}, "tools"),
    ({"tools": ["*"]}, "tools"),
    ({"tools": ["a b"]}, "tools"),
    ({"tools": ["search,pay"]}, "tools"),  # one item, two names
    ({"tools": [b"search"]}, "tools"),
    ({"tools": [None]}, "tools"),
    ({"audience": "srv"}, "audience"),
    ({"audience": []}, "audience"),
    ({"audience": ["a*"]}, "audience"),
    ({"audience": ["a,b"]}, "audience"),
    ({"audience": [1]}, "audience"),
    ({"expires_at": -1}, "expires"),
    ({"expires_at": 253_402_300_800}, "expires"),  # year 10000
    ({"expires_at": 10**20}, "expires"),  # beyond time_t: OverflowError once escaped
    ({"expires_at": -(10**20)}, "expires"),
    ({"expires_at": 2**63}, "expires"),
    ({"max_depth": -1}, "max_depth"),
    ({"max_depth": 1001}, "max_depth"),
    ({"rate": "x"}, "rate"),
    ({"rate": "100001/1h"}, "rate"),
    ({"rate": "1/367d"}, "rate"),
    ({"rate": "5 /1m"}, "rate"),
    ({"args": {"a..b": "= 1"}}, "args.a..b"),
    ({"args": {"a": "<= x"}}, "args.a"),
    ({"args": {"a": "~ 1"}}, "args.a"),
    ({"args": {"a": "= 1 2"}}, "args.a"),
    ({"args": {"a": "1"}}, "args.a"),
    ({"approval_tools": "pay"}, "approval_tools"),  # one string: would build `approval in p,a,y`
    ({"approval_tools": []}, "approval_tools"),
    ({"approval_tools": ["*"]}, "approval_tools"),  # every tool: not a name, as in `tools`
    ({"approval_tools": ["pay", ""]}, "approval_tools"),
    ({"approval_tools": ["pay,wire"]}, "approval_tools"),
    ({"approval_tools": ["pay wire"]}, "approval_tools"),
    ({"approval_tools": ["pay\napproval > 0 USD"]}, "approval_tools"),
    ({"approval_tools": [None]}, "approval_tools"),
    ({"approval_above": "1 usd"}, "approval_above"),
    ({"approval_above": "1"}, "approval_above"),
    ({"approval_above": "-1 USD"}, "approval_above"),
    ({"approval_above": "1234567890123 USD"}, "approval_above"),
    ({"approval_above": "1.1234567 USD"}, "approval_above"),
    ({"approval_above": "1 USD\ntools in pay"}, "approval_above"),
    ({"approval_above": Amount("USD", -1)}, "approval_above"),
    ({"approval_above": Amount("USD", 10**18)}, "approval_above"),
    ({"approval_above": Amount("usd", 1)}, "approval_above"),
    ({"caveats": ["nope"]}, "caveats[0]"),
    ({"caveats": ["depth <= 1", "frob = 1"]}, "caveats[1]"),
    ({"caveats": ["tools in a\nexpires < 2030-01-01T00:00:00Z"]}, "caveats[0]"),
    ({"caveats": [b"depth <= 1"]}, "caveats[0]"),  # bytes parse, but the builder promises text
]


@pytest.mark.parametrize(("kwargs", "field"), REFUSED, ids=[repr(k)[:60] for k, _ in REFUSED])
def test_bad_input_is_a_value_error_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError) as raised:
        restriction_caveats(**kwargs)
    assert type(raised.value) is ValueError  # not a subclass the caller would not expect, nor OverflowError
    assert str(raised.value).startswith(f"{field}: ")


def test_an_empty_list_of_names_says_so() -> None:
    for field in ("tools", "audience", "approval_tools"):
        with pytest.raises(ValueError, match=f"^{field}: give at least one name$"):
            restriction_caveats(**{field: []})


def test_a_field_error_stops_the_whole_hop() -> None:
    # Nothing half-built: the caller gets an error, never the valid caveats without the refused one.
    with pytest.raises(ValueError, match=r"^tools: "):
        restriction_caveats(to="r", budget="1 USD", tools=["a b"])


def test_every_built_text_is_a_caveat() -> None:
    texts = restriction_caveats(to="r", tools=["gh.*"], args={"x": "= true"}, caveats=["audience in s"])
    assert all(isinstance(parse(t), Caveat) for t in texts)
