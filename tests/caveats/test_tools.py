"""`tools in a,b,c*`: names of `[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}`, each may end in `*` to match a prefix."""

from __future__ import annotations

import pytest

from caveats.tools import Tools
from tests.caveats.support import N128, N129, assert_malformed, assert_parses, code, ctx, ids, run

VALID = [
    ("tools in search", Tools(("search",))),
    ("tools in search,fetch,github.*", Tools(("search", "fetch", "github.*"))),
    ("tools in a", Tools(("a",))),
    ("tools in 0", Tools(("0",))),
    ("tools in a:b@c/d-e_f.g", Tools(("a:b@c/d-e_f.g",))),
    ("tools in A-z_9.:@/", Tools(("A-z_9.:@/",))),
    (f"tools in {N128}", Tools((N128,))),
    (f"tools in {N128}*", Tools((N128 + "*",))),  # a pattern is a name and a star
    ("tools in gh*,gh.issues", Tools(("gh*", "gh.issues"))),
    ("tools in a*", Tools(("a*",))),
    ("tools in a,a", Tools(("a", "a"))),
    ("tools in " + ",".join(f"t{n}" for n in range(100)), Tools(tuple(f"t{n}" for n in range(100)))),
]


@pytest.mark.parametrize(("text", "value"), VALID, ids=ids(VALID))
def test_valid_lists_parse_to_their_patterns(text: str, value: Tools) -> None:
    assert_parses(text, value)


MALFORMED = [
    # empty items, stray commas, spaces
    "",
    ",",
    "search,",
    ",search",
    "search,,fetch",
    "a, b",
    "a ,b",
    "a*,",
    "sea rch",
    "a\u00a0b",
    # the star: only one, only at the end, never alone (a bare * would be no restriction at all)
    "*",
    "**",
    "a**",
    "search**",
    "se*rch",
    "*search",
    "a*,*",
    # names: 1 to 128 characters, starting with a letter or digit, of the name alphabet only
    N129,
    f"a,{N129}",
    f"{N129}*",
    *[f"{c}abc" for c in "-_.:@/"],
    *[f"ab{c}cd" for c in "+#!?$%&'\"\\|~^`()[]{}<>=;"],
    "séarch",
    "ѕearch",  # Cyrillic s
    "ｓearch",  # fullwidth s
    "search\u200b",
    "١",
]


@pytest.mark.parametrize("value", MALFORMED, ids=ids(MALFORMED))
def test_malformed_lists_deny(value: str) -> None:
    assert_malformed(f"tools in {value}")


CHECKS = [
    ("tools in search", "search", None),
    ("tools in search", "searc", "tool_not_allowed"),
    ("tools in search", "search2", "tool_not_allowed"),
    ("tools in search", "searcher", "tool_not_allowed"),
    ("tools in search", "Search", "tool_not_allowed"),
    ("tools in search", " search", "tool_not_allowed"),
    ("tools in search", "", "tool_not_allowed"),
    ("tools in search", "search*", "tool_not_allowed"),  # a requested name is never a pattern
    ("tools in search,fetch", "fetch", None),
    ("tools in search,fetch", "pay", "tool_not_allowed"),
    # a trailing star matches by prefix, the stem itself included
    ("tools in gh.*", "gh.", None),
    ("tools in gh.*", "gh.issues", None),
    ("tools in gh.*", "gh.issues.create", None),
    ("tools in gh.*", "gh", "tool_not_allowed"),
    ("tools in gh.*", "ghx", "tool_not_allowed"),
    ("tools in gh.*", "GH.issues", "tool_not_allowed"),
    ("tools in gh.*", "xgh.issues", "tool_not_allowed"),
    ("tools in gh*", "gh", None),
    ("tools in gh*", "ghost", None),
    ("tools in gh*", "g", "tool_not_allowed"),
    ("tools in search*", "searcher", None),
    ("tools in a,b*,c", "a", None),
    ("tools in a,b*,c", "bz", None),
    ("tools in a,b*,c", "c", None),
    ("tools in a,b*,c", "d", "tool_not_allowed"),
    ("tools in a:b", "a:b", None),
]


@pytest.mark.parametrize(("text", "tool", "want"), CHECKS, ids=[f"{t} | {tool!r}" for t, tool, _ in CHECKS])
def test_the_requested_tool_must_be_listed(text: str, tool: str, want: str | None) -> None:
    assert code(text, ctx(tool)) == want


def test_reason_names_the_tool_and_the_list() -> None:
    denial = run("tools in search,gh.*", ctx("pay"))
    assert denial is not None and denial.reason == "tool 'pay' is not among the allowed tools: search,gh.*"
