"""`depth <= 2`: at most this many further `delegate` caveats follow this one in the chain."""

from __future__ import annotations

import re
from typing import ClassVar

from caveats.base import Caveat, Context, Role
from caveats.denial import Code, Denial
from caveats.grammar import UINT, parse_uint

MAX_DEPTH = 1000


class Depth(Caveat, frozen=True):
    KEY: ClassVar[str] = "depth"
    OPS: ClassVar[frozenset[str]] = frozenset({"<="})
    ROLE: ClassVar[Role] = Role.STATIC
    PATTERN: ClassVar[re.Pattern[str]] = re.compile(f"depth <= ({UINT})")
    VALID: ClassVar[tuple[str, ...]] = ("depth <= 2", "depth <= 1000", "depth <= 0")
    MALFORMED: ClassVar[tuple[str, ...]] = (
        "depth <= 1001",
        "depth <= 01",
        "depth <= -1",
        "depth <= 1.0",
        "depth <= \uff12",  # a fullwidth digit
    )
    limit: int

    @classmethod
    def parse(cls, op: str, value: str) -> Depth:
        return cls(parse_uint(value, "depth", MAX_DEPTH))

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Depth | None:
        limit = int(m[1])
        return cls(limit) if limit <= MAX_DEPTH else None

    def check(self, ctx: Context, hop: int) -> Denial | None:
        # The chain opens with the root's `delegate` (hop 0), so hop h has seen h + 1 of them.
        after = ctx.hops - (hop + 1)
        if after <= self.limit:
            return None
        return Denial(Code.DEPTH_EXCEEDED, f"{after} delegations follow a limit of {self.limit}")
