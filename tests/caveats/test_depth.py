"""`depth <= N`: at most N further `delegate` caveats follow it (N from 0 to 1000).

`Context.hops` is how many `delegate` caveats the whole chain holds; a caveat at hop h has seen h + 1 of them
(the root's own `delegate` is hop 0), so `hops - (h + 1)` follow it.
"""

from __future__ import annotations

import pytest

from caveats.depth import Depth
from tests.caveats.support import LOOKALIKE_NUMBERS, assert_malformed, assert_parses, code, ctx, ids, run

VALID = [
    ("depth <= 0", Depth(0)),
    ("depth <= 1", Depth(1)),
    ("depth <= 2", Depth(2)),
    ("depth <= 10", Depth(10)),
    ("depth <= 999", Depth(999)),
    ("depth <= 1000", Depth(1000)),
]


@pytest.mark.parametrize(("text", "value"), VALID, ids=ids(VALID))
def test_valid_forms_parse_to_their_limit(text: str, value: Depth) -> None:
    assert_parses(text, value)


MALFORMED = [
    *LOOKALIKE_NUMBERS,
    "1001",
    "9999999999",
    "99999999999999999999",
    "00",
    "01",  # a leading zero: octal in some readers
    "1.0",
    "1,2",
    "1/1h",
    "two",
    "２",
]


@pytest.mark.parametrize("value", MALFORMED, ids=ids(MALFORMED))
def test_malformed_limits_deny(value: str) -> None:
    assert_malformed(f"depth <= {value}")


# Every limit at every hop with 0 to 3 delegations after it.
CHECKS = [
    (limit, hop, hops, None if hops - (hop + 1) <= limit else "depth_exceeded")
    for limit in (0, 1, 2)
    for hop in (0, 1, 3)
    for hops in range(hop + 1, hop + 5)
]


@pytest.mark.parametrize(("limit", "hop", "hops", "want"), CHECKS)
def test_counts_the_delegations_after_its_hop(limit: int, hop: int, hops: int, want: str | None) -> None:
    assert code(f"depth <= {limit}", ctx(hops=hops), hop) == want


@pytest.mark.parametrize(
    ("text", "hop", "hops", "want"),
    [
        ("depth <= 0", 0, 1, None),  # the root alone
        ("depth <= 0", 0, 2, "depth_exceeded"),  # the root handed it on once
        ("depth <= 0", 1, 2, None),  # set by the holder itself: nothing after it yet
        ("depth <= 1", 0, 2, None),
        ("depth <= 1", 0, 3, "depth_exceeded"),
        ("depth <= 2", 1, 4, None),
        ("depth <= 2", 1, 5, "depth_exceeded"),
        ("depth <= 1000", 0, 1001, None),
        ("depth <= 1000", 0, 1002, "depth_exceeded"),
    ],
)
def test_examples(text: str, hop: int, hops: int, want: str | None) -> None:
    assert code(text, ctx(hops=hops), hop) == want


def test_reason_counts_the_delegations() -> None:
    denial = run("depth <= 1", ctx(hops=4), 0)
    assert denial is not None and denial.reason == "3 delegations follow a limit of 1"
