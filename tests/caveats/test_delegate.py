"""`delegate = agent`: one agent's name; it records a hop and always holds itself."""

from __future__ import annotations

import pytest

from caveats.delegate import Delegate
from tests.caveats.support import N128, N129, assert_malformed, assert_parses, code, ctx, ids

VALID = [
    ("delegate = researcher", Delegate("researcher")),
    ("delegate = 7", Delegate("7")),
    ("delegate = agent@example.org/x", Delegate("agent@example.org/x")),
    ("delegate = a-b_c.d:e", Delegate("a-b_c.d:e")),
    (f"delegate = {N128}", Delegate(N128)),
]


@pytest.mark.parametrize(("text", "value"), VALID, ids=ids(VALID))
def test_valid_names_parse(text: str, value: Delegate) -> None:
    assert_parses(text, value)


MALFORMED = [
    "",
    N129,
    "a,b",  # one agent per delegate caveat
    "a,",
    "a b",
    "a*",
    *[f"{c}abc" for c in "-_.:@/*,"],
    "résumé",
    "ａgent",
    "agent\u200b",
]


@pytest.mark.parametrize("value", MALFORMED, ids=ids(MALFORMED))
def test_malformed_names_deny(value: str) -> None:
    assert_malformed(f"delegate = {value}")


@pytest.mark.parametrize("hops", [0, 1, 5, 1000])
def test_a_delegate_always_holds(hops: int) -> None:
    assert code("delegate = x", ctx("anything", hops=hops), hop=hops) is None
