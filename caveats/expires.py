"""`expires < 2026-12-01T00:00:00Z`: the call happens before this instant (RFC 3339, UTC, `Z`, whole seconds)."""

from __future__ import annotations

import functools
import re
import time
from datetime import datetime
from typing import ClassVar

from caveats.base import Caveat, Context, Role
from caveats.denial import Code, Denial
from caveats.grammar import CaveatSyntaxError

_INSTANT = "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z"
_INSTANT_RE = re.compile(_INSTANT)


def parse_instant(text: str) -> int:
    """`2026-12-01T00:00:00Z` -> Unix seconds; only this exact form, a real calendar date, no leap second."""
    if _INSTANT_RE.fullmatch(text) is None:
        raise CaveatSyntaxError(f"time must be RFC 3339 UTC like 2026-12-01T00:00:00Z, got {text!r}")
    seconds = instant(text)
    if seconds is None:
        raise CaveatSyntaxError(f"time {text!r} is not a valid instant")
    return seconds


def instant(text: str) -> int | None:
    """Unix seconds of text already shaped as _INSTANT, or None if it names no real instant since 1970.

    The shape leaves only numbers to check: datetime refuses a month, day, hour, minute or second out of range
    (February 29 of a common year, 24:00, a leap second), in C and exactly; its float is exact below 2**53.
    """
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return int(at.timestamp()) if at.year >= 1970 else None


@functools.lru_cache(maxsize=4096)  # a chain's expiry, in every answer that allows; entries of fixed small size
def format_instant(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class Expires(Caveat, frozen=True):
    KEY: ClassVar[str] = "expires"
    OPS: ClassVar[frozenset[str]] = frozenset({"<"})
    ROLE: ClassVar[Role] = Role.EXPIRY
    PATTERN: ClassVar[re.Pattern[str]] = re.compile(f"expires < ({_INSTANT})")
    VALID: ClassVar[tuple[str, ...]] = (
        "expires < 2026-12-01T00:00:00Z",
        "expires < 1970-01-01T00:00:00Z",
        "expires < 2024-02-29T23:59:59Z",
        "expires < 9999-12-31T23:59:59Z",
    )
    MALFORMED: ClassVar[tuple[str, ...]] = (
        "expires < 2025-02-29T00:00:00Z",
        "expires < 2026-12-01T24:00:00Z",
        "expires < 2026-12-31T23:59:60Z",
        "expires < 1969-12-31T23:59:59Z",
        "expires < 2026-12-01T00:00:00+00:00",
        "expires < 2026-12-01 00:00:00Z",
        "expires < 2026-12-01T00:00:00.5Z",
    )
    at: int

    @classmethod
    def parse(cls, op: str, value: str) -> Expires:
        return cls(parse_instant(value))

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Expires | None:
        at = instant(m[1])
        return None if at is None else cls(at)

    def check(self, ctx: Context, hop: int) -> Denial | None:
        if ctx.now < self.at:
            return None
        return Denial(Code.EXPIRED, f"token expired at {format_instant(self.at)}")
