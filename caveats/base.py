"""What a caveat is: a parsed, typed restriction that checks one call's Context and returns a Denial or None.

A caveat kind is a class with `KEY`, `OPS`, `parse(op, value)` and `check(ctx, hop)`; checks read the time
from `ctx.now`, never the clock, so a verifier decides a call at one instant and tests can freeze it.
"""

from __future__ import annotations

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

    @classmethod
    def parse(cls, op: str, value: str) -> Caveat:
        raise NotImplementedError

    def check(self, ctx: Context, hop: int) -> Denial | None:
        """None when the call satisfies this caveat; else why not (the evaluator adds the caveat and hop)."""
        return None
