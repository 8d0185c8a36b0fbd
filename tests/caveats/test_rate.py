"""`rate <= N/W`: N from 0 to 100000 calls, a window in s, m, h or d of at most 31 days; the store decides it."""

from __future__ import annotations

import pytest

from caveats.base import Role
from caveats.rate import Rate
from tests.caveats.support import LOOKALIKE_NUMBERS, assert_malformed, assert_parses, code, ctx, ids

DAY = 86_400

VALID = [
    ("rate <= 100/1h", Rate(100, 3600)),
    ("rate <= 5/15m", Rate(5, 900)),
    ("rate <= 10/1d", Rate(10, DAY)),
    ("rate <= 1/59s", Rate(1, 59)),
    ("rate <= 0/1s", Rate(0, 1)),  # allowed: no call at all
    ("rate <= 100000/1s", Rate(100_000, 1)),
    ("rate <= 100000/31d", Rate(100_000, 31 * DAY)),
    # 31 days, the longest window, in every unit
    ("rate <= 1/31d", Rate(1, 31 * DAY)),
    ("rate <= 1/744h", Rate(1, 31 * DAY)),
    ("rate <= 1/44640m", Rate(1, 31 * DAY)),
    ("rate <= 1/2678400s", Rate(1, 31 * DAY)),
    ("rate <= 1/999999s", Rate(1, 999_999)),
    ("rate <= 1/1000000s", Rate(1, 1_000_000)),  # seven digits: the window once stopped at six
]


@pytest.mark.parametrize(("text", "value"), VALID, ids=ids(VALID))
def test_valid_forms_parse_to_count_and_seconds(text: str, value: Rate) -> None:
    assert_parses(text, value)


MALFORMED = [
    *[f"{n}/1h" for n in LOOKALIKE_NUMBERS],
    *[f"1/{n}h" for n in LOOKALIKE_NUMBERS],
    # count: 0 to 100000, no leading zeros
    "100001/1s",
    "999999999/1s",
    "9999999999/1s",
    "01/1h",
    "00/1h",
    "1.5/1h",
    # window: 1 or more of s, m, h, d, at most 31 days, no leading zeros
    "1/32d",
    "1/745h",
    "1/44641m",
    "1/2678401s",
    "1/366d",  # a year of timestamps per counter: what the limit keeps a holder from making the store hold
    "1/31622400s",
    "1/99999999s",
    "1/100000000s",
    "1/0s",
    "1/0d",
    "1/00s",
    "1/01h",
    "1/1.5h",
    "1/1",
    "1/s",
    "1/h",
    "1/1S",
    "1/1H",
    "1/1ms",
    "1/1w",
    "1/1y",
    "1/1hh",
    "1/1h1m",
    "1/1 h",
    "1 /1h",
    "1/ 1h",
    "1//1h",
    "1/1h/2",
    "/1h",
    "1/",
    "1",
    "1:1h",
    "1 per 1h",
]


@pytest.mark.parametrize("value", MALFORMED, ids=ids(MALFORMED))
def test_malformed_rates_deny(value: str) -> None:
    assert_malformed(f"rate <= {value}")


def test_rate_is_a_counter_and_its_stateless_check_holds() -> None:
    assert Rate.ROLE is Role.COUNTER and Rate.MAX_PER_CHAIN == 8
    assert code("rate <= 0/1s", ctx()) is None  # the store counts calls; nothing to decide here
