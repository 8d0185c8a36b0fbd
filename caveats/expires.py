"""`expires < 2026-12-01T00:00:00Z`: the call happens before this instant (RFC 3339, UTC, `Z`, whole seconds)."""

from __future__ import annotations

import calendar
import re
import time
from typing import ClassVar

from caveats.base import Caveat, Context
from caveats.denial import Code, Denial
from caveats.grammar import CaveatSyntaxError

_RFC3339_Z = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


def parse_instant(text: str) -> int:
    """`2026-12-01T00:00:00Z` -> Unix seconds; only this exact form, a real calendar date, no leap second."""
    m = _RFC3339_Z.fullmatch(text)
    if m is None:
        raise CaveatSyntaxError(f"time must be RFC 3339 UTC like 2026-12-01T00:00:00Z, got {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups())
    if not (
        year >= 1970
        and 1 <= month <= 12
        and 1 <= day <= calendar.monthrange(year, month)[1]
        and hour < 24
        and minute < 60
        and second < 60
    ):
        raise CaveatSyntaxError(f"time {text!r} is not a valid instant")
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def format_instant(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class Expires(Caveat, frozen=True):
    KEY: ClassVar[str] = "expires"
    OPS: ClassVar[frozenset[str]] = frozenset({"<"})
    at: int

    @classmethod
    def parse(cls, op: str, value: str) -> Expires:
        return cls(parse_instant(value))

    def check(self, ctx: Context, hop: int) -> Denial | None:
        if ctx.now < self.at:
            return None
        return Denial(Code.EXPIRED, f"token expired at {format_instant(self.at)}")
