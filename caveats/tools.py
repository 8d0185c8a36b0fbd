"""`tools in search,fetch,github.*`: the requested tool is one of these names; a trailing `*` matches a prefix."""

from __future__ import annotations

import re
from typing import ClassVar

from caveats.base import Caveat, Context
from caveats.denial import Code, Denial
from caveats.grammar import TOOL_LIST, TOOL_LIST_RE, CaveatSyntaxError


def tool_matches(pattern: str, tool: str) -> bool:
    return tool.startswith(pattern[:-1]) if pattern.endswith("*") else tool == pattern


class Tools(Caveat, frozen=True):
    KEY: ClassVar[str] = "tools"
    OPS: ClassVar[frozenset[str]] = frozenset({"in"})
    PATTERN: ClassVar[re.Pattern[str]] = re.compile(f"tools in ({TOOL_LIST})")
    VALID: ClassVar[tuple[str, ...]] = ("tools in search,gh.*", "tools in a*,b.c:d@e/f-g_h", "tools in resources/read")
    MALFORMED: ClassVar[tuple[str, ...]] = (
        "tools in *",
        "tools in a,,b",
        "tools in a,",
        "tools in a b",
        "tools in a**",
        "tools in *a",
        "tools in é",
    )
    patterns: tuple[str, ...]

    @classmethod
    def parse(cls, op: str, value: str) -> Tools:
        if not TOOL_LIST_RE.fullmatch(value):
            raise CaveatSyntaxError(f"tools must be comma-separated names (optionally ending in *), got {value!r}")
        return cls(tuple(value.split(",")))

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Tools:
        return cls(tuple(m[1].split(",")))

    def allows(self, tool: str) -> bool:
        # A plain loop on purpose: this runs on every call, and any() over a generator costs about 5x.
        for pattern in self.patterns:  # noqa: SIM110
            if tool_matches(pattern, tool):
                return True
        return False

    def check(self, ctx: Context, hop: int) -> Denial | None:
        if self.allows(ctx.tool):
            return None
        allowed = ",".join(self.patterns)
        return Denial(Code.TOOL_NOT_ALLOWED, f"tool '{ctx.tool}' is not among the allowed tools: {allowed}")
