"""A whole caveat chain read as the language sees it: hops, delegation path, the tightest limit of each kind.

Pure and key-free: the verifier builds one after the signature holds; the offline SDK builds one to show a
token. `evaluate` decides the stateless caveats of one call; budgets and rates go to the counter store.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from caveats.base import Caveat, Context
from caveats.budget import Budget
from caveats.cache import ITEM_BYTES, ByteLRU
from caveats.delegate import Delegate
from caveats.denial import Denial
from caveats.depth import Depth
from caveats.expires import Expires
from caveats.money import Amount
from caveats.rate import Rate
from caveats.registry import EVERY_KIND, read_all
from caveats.tools import Tools

# Each budget and rate caveat is a counter the store keeps for its prefix, and a holder can append any number:
# a chain with more than these is refused whole (invalid_token), before any store call.
MAX_BUDGETS = 16
MAX_RATES = 8


class Counter(msgspec.Struct, frozen=True):
    """A budget or rate caveat: `index` in the chain (its prefix ends there), its hop and text.

    `expires_at` is the earliest expiry at or before it: no token derived from its prefix outlives that.
    """

    index: int
    hop: int
    caveat: str
    expires_at: int | None


class BudgetCounter(Counter, frozen=True):
    limit: Amount


class RateCounter(Counter, frozen=True):
    count: int
    window: int


class Step(msgspec.Struct, frozen=True):
    index: int
    hop: int
    caveat: str
    check: Caveat


class Analysis(msgspec.Struct, frozen=True):
    texts: tuple[str, ...]
    hops: tuple[int, ...]
    parsed: tuple[Caveat | Denial, ...]
    delegation: tuple[str, ...]
    steps: tuple[Step, ...]  # the per-call checks, in chain order
    static_denial: Denial | None  # malformed, unknown or depth: fails whatever the call
    static_index: int
    budgets: tuple[BudgetCounter, ...]
    rates: tuple[RateCounter, ...]
    expires_at: int | None
    over_limit: str | None  # why the chain holds more budget or rate caveats than a token may, else None

    @property
    def tools(self) -> tuple[str, ...] | None:
        """The effective tool allowlist, None when unrestricted. Worked out when asked (a denial or a view names
        it), as no decision needs it: each `tools` caveat checks the call itself."""
        allowed: tuple[str, ...] | None = None
        for caveat in self.parsed:
            if type(caveat) is Tools:
                allowed = caveat.patterns if allowed is None else intersect(allowed, caveat.patterns)
        return allowed

    @property
    def holder(self) -> str | None:
        return self.delegation[-1] if self.delegation else None

    def evaluate(self, ctx: Context) -> Denial | None:
        """The first failing stateless caveat in chain order (a budget's currency included); None if all hold."""
        static = self.static_denial
        for step in self.steps:
            if static is not None and self.static_index < step.index:
                return static
            denial = step.check.check(ctx, step.hop)
            if denial is not None:
                return denial.at(step.caveat, step.hop)
        return static


def analyse(raw_caveats: Sequence[bytes | str]) -> Analysis:
    entries = read_all(raw_caveats)
    hops: list[int] = []
    delegation: list[str] = []
    steps: list[Step] = []
    budgets: list[BudgetCounter] = []
    rates: list[RateCounter] = []
    fixed: list[int] = []  # caveats whose verdict does not depend on the call: malformed or unknown, and depth
    malformed_budgets = malformed_rates = 0  # they count against the limits too: each would be a counter if it parsed
    expires_at: int | None = None
    hop = 0
    # `type(c) is K` rather than isinstance: a miss on a Struct class costs several times more, and this loop
    # runs for every caveat of every token a verifier has not seen yet. Caveat kinds are never subclassed.
    for index, (text, caveat) in enumerate(entries):
        if type(caveat) is Delegate:
            delegation.append(caveat.agent)
            hop = len(delegation) - 1
        elif type(caveat) is Budget:  # a counter for the store, and its currency checked with the call
            budgets.append(BudgetCounter(index, hop, text, expires_at, caveat.limit))
            steps.append(Step(index, hop, text, caveat))
        elif type(caveat) in _CHECKED:
            steps.append(Step(index, hop, text, caveat))  # type: ignore[arg-type]  # a Caveat: Denial is not checked
            if type(caveat) is Expires and (expires_at is None or caveat.at < expires_at):
                expires_at = caveat.at
        elif type(caveat) is Rate:
            rates.append(RateCounter(index, hop, text, expires_at, caveat.count, caveat.window))
        elif type(caveat) is Depth or type(caveat) is Denial:
            fixed.append(index)
            if type(caveat) is Denial:
                malformed_budgets += text.startswith("budget ")
                malformed_rates += text.startswith("rate ")
        hops.append(hop)
    texts, parsed = zip(*entries, strict=True) if entries else ((), ())
    static_denial, static_index = _static_denial(fixed, parsed, texts, hops, len(delegation)) if fixed else (None, -1)
    return Analysis(
        texts,
        tuple(hops),
        parsed,
        tuple(delegation),
        tuple(steps),
        static_denial,
        static_index,
        tuple(budgets),
        tuple(rates),
        expires_at,
        _over_limit(len(budgets) + malformed_budgets, len(rates) + malformed_rates),
    )


def _over_limit(budgets: int, rates: int) -> str | None:
    if budgets > MAX_BUDGETS:
        return f"a token carries at most {MAX_BUDGETS} budget caveats, this one has {budgets}"
    if rates > MAX_RATES:
        return f"a token carries at most {MAX_RATES} rate caveats, this one has {rates}"
    return None


# The kinds whose check depends on the call, so every call runs it: the Steps of `evaluate` (Budget is one,
# taken first for its counter). Depth depends on the chain alone and is decided once, in `_static_denial`.
_CHECKED: frozenset[type[Caveat]] = frozenset(
    kind for kind in EVERY_KIND if kind.check is not Caveat.check and kind is not Depth
)


def _static_denial(
    fixed: list[int], parsed: Sequence[Caveat | Denial], texts: Sequence[str], hops: list[int], delegations: int
) -> tuple[Denial | None, int]:
    """The first caveat that fails whatever the call: unparseable, unknown key, or depth already exceeded."""
    ctx = Context(now=0, tool="", hops=delegations)
    for index in fixed:
        caveat = parsed[index]
        denial = caveat if isinstance(caveat, Denial) else caveat.check(ctx, hops[index])
        if denial is not None:
            return denial.at(texts[index], hops[index]), index
    return None, -1


def covers(outer: str, inner: str) -> bool:
    """Every tool that pattern `inner` matches is matched by pattern `outer`."""
    return inner.startswith(outer[:-1]) if outer.endswith("*") else inner == outer


# Pure, on immutable tuples; a policy's tool lists recur across tokens.
_intersections: ByteLRU[tuple[tuple[str, ...], tuple[str, ...]], tuple[str, ...]] = ByteLRU("tool lists")


def intersect(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """The patterns allowed by both lists, remembered (within its share of the cache bytes)."""
    both = _intersections.get((a, b))
    if both is None:
        both = _intersect(a, b)
        # Three tuples and the pattern strings they keep alive, each counted as if it were its own.
        nbytes = 512 + ITEM_BYTES * (len(a) + len(b) + len(both)) + 4 * sum(map(len, (*a, *b)))
        _intersections.put((a, b), both, nbytes)
    return both


def forget_intersections() -> None:
    _intersections.clear()


def _intersect(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """The patterns allowed by both lists (pairwise, the more specific of two overlapping patterns).

    `p` is covered by a list when some pattern there `covers` it: it is in the list, or starts with the stem of
    one of its `*` patterns (`str.startswith` takes them all at once). Sets, not the tuples, answer `in`: lists
    of hundreds of names would otherwise cost quadratic time on every denial that names the allowlist.
    """
    stems_a = tuple([q[:-1] for q in a if q.endswith("*")])
    stems_b = tuple([q[:-1] for q in b if q.endswith("*")])
    in_a, in_b = set(a), set(b)
    out: dict[str, None] = {}  # ordered, and a set for `in`
    for p in (*a, *b):
        if p not in out and (p in in_a or p.startswith(stems_a)) and (p in in_b or p.startswith(stems_b)):
            out[p] = None
    return tuple(out)
