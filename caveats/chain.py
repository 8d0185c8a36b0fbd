"""A whole caveat chain read as the language sees it: hops, delegation path, the tightest limit of each kind.

Pure and key-free: the verifier builds one after the signature holds; the offline SDK builds one to show a
token. `evaluate` decides the stateless caveats of one call; counters (budgets, rates) go to the counter store,
and so does `approval`, the gate (approval caveat) a call must be approved by, which never denies here.
`analyse` files each caveat by its kind's Role (caveats.base), never by its concrete kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from caveats.base import Caveat, Context, Counter, Role
from caveats.budget import Budget
from caveats.cache import ITEM_BYTES, ByteLRU
from caveats.denial import Denial
from caveats.rate import Rate
from caveats.registry import REGISTRY, Registry
from caveats.tools import Tools


class Step(msgspec.Struct, frozen=True, gc=False):
    index: int
    hop: int
    caveat: str
    check: Caveat


class Analysis(msgspec.Struct, frozen=True, gc=False):
    texts: tuple[str, ...]
    hops: tuple[int, ...]
    parsed: tuple[Caveat | Denial, ...]
    delegation: tuple[str, ...]
    steps: tuple[Step, ...]  # the per-call checks, in chain order
    static_denial: Denial | None  # malformed, unknown or depth: fails whatever the call
    static_index: int
    counters: dict[type[Caveat], tuple[Counter[Any], ...]]  # by each COUNTER kind the chain holds, in chain order
    expires_at: int | None
    over_limit: str | None  # why the chain holds more counters of a kind than a token may, else None
    gates: tuple[Step, ...] = ()  # the approval caveats, in chain order: never decided by `evaluate`

    @property
    def budgets(self) -> tuple[Counter[Budget], ...]:
        return self.counters.get(Budget, ())

    @property
    def rates(self) -> tuple[Counter[Rate], ...]:
        return self.counters.get(Rate, ())

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

    def approval(self, ctx: Context) -> Step | None:
        """The first gate in chain order that the call matches, None when the call needs no approval. Its
        `index` and `hop` say who may approve: a token whose chain is a prefix ending before that caveat."""
        for gate in self.gates:
            caveat: Any = gate.check  # a GATE kind: its `matches` is checked when the kind is registered
            if caveat.matches(ctx):
                return gate
        return None


# The roles as module globals, compared by identity in the loop below.
_CHECK, _EXPIRY, _COUNTER, _HOP, _GATE = Role.CHECK, Role.EXPIRY, Role.COUNTER, Role.HOP, Role.GATE


def analyse(raw_caveats: Sequence[bytes | str], registry: Registry = REGISTRY) -> Analysis:
    """Read a chain, filing each caveat by its kind's Role (`registry.roles`, one table by exact type): a
    branch per role says what it means to a chain. A new kind in an existing role needs nothing here."""
    entries = registry.read_all(raw_caveats)
    roles = registry.roles
    checked_counters = registry.checked_counters
    hops: list[int] = []
    delegation: list[str] = []
    steps: list[Step] = []
    # By kind, each a tuple grown by one: cheaper than lists and a copy at the end for the few a chain has.
    counters: dict[type[Caveat], tuple[Counter[Any], ...]] = {}
    ncounters = 0
    gates: tuple[Step, ...] = ()  # grown by one like the counters: a chain without any pays nothing
    fixed: list[int] = []  # caveats whose verdict does not depend on the call: malformed or unknown, and STATIC
    # The counter kinds of malformed caveats with a counter's key: each would be a counter if it parsed, so each
    # counts against its kind's MAX_PER_CHAIN.
    refused: list[type[Caveat]] = []
    expires_at: int | None = None
    hop = 0
    # One dict lookup by the exact type, then identity compares: no isinstance (a miss on a Struct class costs
    # several times more), and this loop runs for every caveat of every token a verifier has not seen yet. Each
    # role's fields (`agent`, `at`) are checked when the kind is registered, hence `Any` here.
    caveat: Any
    for index, (text, caveat) in enumerate(entries):
        kind = type(caveat)
        role = roles[kind]
        if role is _CHECK:
            steps.append(Step(index, hop, text, caveat))
        elif role is _HOP:
            delegation.append(caveat.agent)
            hop = len(delegation) - 1
        elif role is _EXPIRY:
            steps.append(Step(index, hop, text, caveat))
            if expires_at is None or caveat.at < expires_at:
                expires_at = caveat.at
        elif role is _COUNTER:
            counters[kind] = (*counters.get(kind, ()), Counter(index, hop, text, expires_at, caveat))
            ncounters += 1
            if kind in checked_counters:  # a budget's currency is decided with the call
                steps.append(Step(index, hop, text, caveat))
        elif role is _GATE:  # after the common roles: only a STATIC or malformed caveat meets one more compare
            gates = (*gates, Step(index, hop, text, caveat))
        else:  # STATIC, and Denial
            fixed.append(index)
            if kind is Denial and " " in text:
                named = registry.kind_of(text[: text.index(" ")])
                if named is not None and named.ROLE is _COUNTER:
                    refused.append(named)
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
        counters,
        expires_at,
        _over_limit(registry, counters, refused) if refused or ncounters > registry.fewest else None,
        gates,
    )


def _over_limit(
    registry: Registry, counters: dict[type[Caveat], tuple[Counter[Any], ...]], refused: list[type[Caveat]]
) -> str | None:
    """Why the chain holds more caveats of a COUNTER kind (malformed ones with its key included) than its
    MAX_PER_CHAIN, else None."""
    for kind in registry.counter_kinds:  # in registry order: the first kind over its limit is named
        n = len(counters.get(kind, ())) + refused.count(kind)
        if n > kind.MAX_PER_CHAIN:
            return f"a token carries at most {kind.MAX_PER_CHAIN} {kind.KEY} caveats, this one has {n}"
    return None


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
