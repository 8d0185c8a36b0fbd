"""`delegate = researcher`: records a delegation hop to the named agent; it always holds itself."""

from __future__ import annotations

import re
from typing import ClassVar

from caveats.base import Caveat, Role
from caveats.grammar import NAME, NAME_RE, CaveatSyntaxError


class Delegate(Caveat, frozen=True):
    KEY: ClassVar[str] = "delegate"
    OPS: ClassVar[frozenset[str]] = frozenset({"="})
    ROLE: ClassVar[Role] = Role.HOP
    PATTERN: ClassVar[re.Pattern[str]] = re.compile(f"delegate = ({NAME})")
    VALID: ClassVar[tuple[str, ...]] = ("delegate = researcher", "delegate = a", "delegate = agent@acme.com/x:1-2_3")
    MALFORMED: ClassVar[tuple[str, ...]] = (
        "delegate = a,b",
        "delegate = -a",
        "delegate = a b",
        "delegate = " + "a" * 129,
        "delegate = é",
    )
    agent: str

    @classmethod
    def parse(cls, op: str, value: str) -> Delegate:
        if not NAME_RE.fullmatch(value):
            raise CaveatSyntaxError(f"delegate must name one agent, got {value!r}")
        return cls(value)

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Delegate:
        return cls(m[1])
