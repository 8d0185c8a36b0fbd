"""`audience in payments-srv,search-srv`: the verifying tool server is one of these."""

from __future__ import annotations

import re
from typing import ClassVar

from caveats.base import Caveat, Context
from caveats.denial import Code, Denial
from caveats.grammar import NAME_LIST, parse_names


class Audience(Caveat, frozen=True):
    KEY: ClassVar[str] = "audience"
    OPS: ClassVar[frozenset[str]] = frozenset({"in"})
    PATTERN: ClassVar[re.Pattern[str]] = re.compile(f"audience in ({NAME_LIST})")
    VALID: ClassVar[tuple[str, ...]] = ("audience in payments-srv", "audience in a,b")
    MALFORMED: ClassVar[tuple[str, ...]] = ("audience in a*", "audience in a,,b", "audience in ,a", "audience in é")
    names: tuple[str, ...]

    @classmethod
    def parse(cls, op: str, value: str) -> Audience:
        return cls(parse_names(value, "audience"))

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Audience:
        return cls(tuple(m[1].split(",")))

    def check(self, ctx: Context, hop: int) -> Denial | None:
        if ctx.audience in self.names:
            return None
        who = f"'{ctx.audience}'" if ctx.audience else "a verifier that named no audience"
        return Denial(Code.AUDIENCE_MISMATCH, f"{who} is not among the allowed audiences: {','.join(self.names)}")
