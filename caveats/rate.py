"""`rate <= 100/1h`: at most this many allowed calls in any window of that length (an exact sliding window).

Stateful: the counter store decides it, scoped like a budget by the prefix id ending at this caveat.
"""

from __future__ import annotations

import re
from typing import ClassVar

from caveats.base import Caveat, Role
from caveats.grammar import UINT, CaveatSyntaxError, parse_uint

# Each allowed call is one timestamp in the store until it leaves the window: the count bounds what one window
# holds, and the window how long the store keeps it.
MAX_COUNT = 100_000
MAX_WINDOW_DAYS = 31
MAX_WINDOW = MAX_WINDOW_DAYS * 86_400
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_WINDOW = r"([1-9][0-9]{0,7})([smhd])"  # 8 digits: a longer window in any unit is refused as too long, by name
_RATE_RE = re.compile(rf"([0-9]+)/{_WINDOW}")


class Rate(Caveat, frozen=True):
    KEY: ClassVar[str] = "rate"
    OPS: ClassVar[frozenset[str]] = frozenset({"<="})
    ROLE: ClassVar[Role] = Role.COUNTER
    MAX_PER_CHAIN: ClassVar[int] = 8  # docs/caveats.md, Limits
    PATTERN: ClassVar[re.Pattern[str]] = re.compile(rf"rate <= ({UINT})/{_WINDOW}")
    VALID: ClassVar[tuple[str, ...]] = (
        "rate <= 100/1h",
        "rate <= 100000/31d",
        "rate <= 0/2678400s",
        "rate <= 1/744h",
        "rate <= 5/15m",
    )
    MALFORMED: ClassVar[tuple[str, ...]] = (
        "rate <= 100001/1s",
        "rate <= 01/1h",
        "rate <= 1/32d",
        "rate <= 1/2678401s",
        "rate <= 1/0s",
        "rate <= 1/1w",
        "rate <= 1/1H",
        "rate <= 1",
    )
    count: int
    window: int  # seconds

    @classmethod
    def parse(cls, op: str, value: str) -> Rate:
        return cls(*parse_rate(value))

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Rate | None:
        count, number, unit = m.groups()
        calls, window = int(count), int(number) * UNITS[unit]
        return cls(calls, window) if calls <= MAX_COUNT and window <= MAX_WINDOW else None


def parse_rate(value: str) -> tuple[int, int]:
    """`100/1h` -> (100, 3600)."""
    m = _RATE_RE.fullmatch(value)
    if m is None:
        raise CaveatSyntaxError(f"rate must look like 100/1h (units s, m, h, d), got {value!r}")
    count = parse_uint(m.group(1), "rate count", MAX_COUNT)
    window = int(m.group(2)) * UNITS[m.group(3)]
    if window > MAX_WINDOW:
        raise CaveatSyntaxError(f"rate window must be at most {MAX_WINDOW_DAYS}d, got {value!r}")
    return count, window
