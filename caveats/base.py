"""What a caveat is: a parsed, typed restriction that checks one call's Context and returns a Denial or None.

A caveat kind is a class that describes itself: its `KEY`, `OPS` and `ROLE`, its whole-text `PATTERN`,
`parse(op, value)` and `check(ctx, hop)`, and sample texts (`VALID`, `MALFORMED`) that the caveat tests run
for every registered kind. Checks read the time from `ctx.now`, never the clock, so a verifier decides a call
at one instant and tests can freeze it.

The `PATTERN` is what `registry.read` tries first: a verifier reads every caveat of every token it has not
seen, and one fullmatch costs a fraction of the full parser's split, per-part patterns and exceptions. The full
parser accepts the same language and alone explains a refusal; the caveat tests check that the two agree on
every valid and malformed form they hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

from caveats.denial import Denial
from caveats.money import Amount


class Role(Enum):
    """What a kind is to the chain: how `chain.analyse` files each caveat of it (one branch per role).

    - CHECK: decided on every call by `check(ctx, hop)`, in chain order (tools, audience, cost, arg.*).
    - EXPIRY: a CHECK whose instant, the field `at`, also ends the chain: the earliest one is the chain's
      `expires_at`, and no counter after it outlives it (expires).
    - COUNTER: a counter the store keeps for the chain prefix that ends at it (a caveats.base.Counter);
      `MAX_PER_CHAIN` says how many a chain may carry. A `check` of its own, if the kind has one, is decided on
      every call like a CHECK (budget: its currency; rate: none).
    - HOP: opens the next delegation hop; the field `agent` names who holds it (delegate).
    - STATIC: decided once per chain, from `Context.hops` alone: the same for every call (depth).
    - GATE: never denies here; a call its `matches(ctx)` takes runs only once a human approves it, which the
      store decides after the counters. The first matching one in chain order names who may approve (approval).
    """

    CHECK = "check"
    EXPIRY = "expiry"
    COUNTER = "counter"
    HOP = "hop"
    STATIC = "static"
    GATE = "gate"


class Context(msgspec.Struct, frozen=True):
    """One call as the caveats see it. `hops` is how many `delegate` caveats the whole chain holds."""

    now: int  # Unix seconds
    tool: str
    audience: str | None = None
    cost: Amount | None = None
    args: Mapping[str, Any] = msgspec.field(default_factory=dict)
    hops: int = 0


class Caveat(msgspec.Struct, frozen=True, gc=False):
    """Base of every caveat kind. Subclasses set the class attributes below and implement parse and check.

    gc=False here and on the structs a verifier builds per token (Counter, Step, Analysis, VerifiedChain): they are
    immutable and hold only strings, numbers, tuples and each other, so they can make no cycle, and untracked
    they neither bring the next collection sooner nor make it longer (a first sight ~2-4 us less).
    """

    # The key; `arg.*` (a key ending in `.*`) names every key with that prefix.
    KEY: ClassVar[str]
    OPS: ClassVar[frozenset[str]]
    ROLE: ClassVar[Role] = Role.CHECK
    # Every well-formed caveat of this kind, key included, in ASCII classes only (so never a control character).
    PATTERN: ClassVar[re.Pattern[str]]
    # Sample texts, whole caveats, that every registered kind is tested with: VALID ones parse (the first is the
    # kind's example, which the shape tests mutate), MALFORMED ones carry this kind's key and deny as malformed.
    VALID: ClassVar[tuple[str, ...]]
    MALFORMED: ClassVar[tuple[str, ...]]
    # COUNTER kinds: how many of this kind one chain may carry (each is a counter the store keeps).
    MAX_PER_CHAIN: ClassVar[int] = 0

    @classmethod
    def parse(cls, op: str, value: str) -> Caveat:
        raise NotImplementedError

    @classmethod
    def from_parts(cls, key: str, op: str, value: str) -> Caveat:
        """The full parser's entry, the key already known to be this kind's: `parse`, or the key's own reading
        for a prefix kind (`arg.*`). Raises CaveatSyntaxError."""
        return cls.parse(op, value)

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Caveat | None:
        """The caveat a PATTERN match spells; None when it is well-shaped but out of range (`parse` says why)."""
        raise NotImplementedError

    def check(self, ctx: Context, hop: int) -> Denial | None:
        """None when the call satisfies this caveat; else why not (the evaluator adds the caveat and hop)."""
        return None


K = TypeVar("K", bound=Caveat)


class Counter(msgspec.Struct, Generic[K], frozen=True, gc=False):
    """One COUNTER caveat as the store counts it: `index` in the chain (its prefix ends there), its hop, text,
    and what it parsed to (`parsed.limit` of a budget, `parsed.count` of a rate). `expires_at` is the earliest
    expiry at or before it: no token derived from its prefix outlives that."""

    index: int
    hop: int
    caveat: str
    expires_at: int | None
    parsed: K
