"""What a caveat is: a parsed, typed restriction that checks one call's Context and returns a Denial or None.

A caveat kind is a class with `KEY`, `OPS`, `parse(op, value)` and `check(ctx, hop)`; checks read the time
from `ctx.now`, never the clock, so a verifier decides a call at one instant and tests can freeze it.

Each kind also states its grammar as one whole-text `PATTERN`, which `registry.read` tries first: a verifier
reads every caveat of every token it has not seen, and one fullmatch costs a fraction of the full parser's
split, per-part patterns and exceptions. The full parser accepts the same language and alone explains a
refusal; the caveat tests check that the two agree on every valid and malformed form they hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from caveats.denial import Denial
from caveats.money import Amount


class Context(msgspec.Struct, frozen=True):
    """One call as the caveats see it. `hops` is how many `delegate` caveats the whole chain holds."""

    now: int  # Unix seconds
    tool: str
    audience: str | None = None
    cost: Amount | None = None
    args: Mapping[str, Any] = msgspec.field(default_factory=dict)
    hops: int = 0


class Caveat(msgspec.Struct, frozen=True):
    """Base of every caveat kind. Subclasses set KEY and OPS and implement parse and check."""

    KEY: ClassVar[str]
    OPS: ClassVar[frozenset[str]]
    # Stateless caveats are checked in the verifier; stateful ones (budget, rate) by the counter store.
    STATEFUL: ClassVar[bool] = False
    # Every well-formed caveat of this kind, key included, in ASCII classes only (so never a control character).
    PATTERN: ClassVar[re.Pattern[str]]

    @classmethod
    def parse(cls, op: str, value: str) -> Caveat:
        raise NotImplementedError

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Caveat | None:
        """The caveat a PATTERN match spells; None when it is well-shaped but out of range (`parse` says why)."""
        raise NotImplementedError

    def check(self, ctx: Context, hop: int) -> Denial | None:
        """None when the call satisfies this caveat; else why not (the evaluator adds the caveat and hop)."""
        return None
