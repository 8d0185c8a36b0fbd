"""The caveat language's one entry point: raw caveat bytes -> a typed Caveat, or a Denial (fail closed).

A kind describes itself (caveats.base.Caveat: key, operators, role, pattern, samples), so adding one is its
module plus one line in KINDS; a counter kind also needs its part in the store. A kind is found by its whole key
(`arg.*` by the prefix `arg.`), never by a part of it, so keys may share any beginning (`budget`,
`budget_daily`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, overload

from caveats.approval import Approval
from caveats.arg import Arg
from caveats.audience import Audience
from caveats.base import Caveat, Role
from caveats.budget import Budget
from caveats.cache import ByteMemo, caveat_bytes, caveats_bytes
from caveats.cost import Cost
from caveats.delegate import Delegate
from caveats.denial import Code, Denial
from caveats.depth import Depth
from caveats.expires import Expires
from caveats.grammar import CaveatSyntaxError, split
from caveats.rate import Rate
from caveats.tools import Tools

KINDS: tuple[type[Caveat], ...] = (Expires, Tools, Audience, Budget, Cost, Rate, Depth, Delegate, Arg, Approval)

# What each role needs of its kind, checked when a registry is built: a kind that misses it fails at import.
_ROLE_NEEDS: dict[Role, tuple[str, ...]] = {
    Role.CHECK: ("check",),
    Role.EXPIRY: ("check", "at"),
    Role.COUNTER: ("MAX_PER_CHAIN",),
    Role.HOP: ("agent",),
    Role.STATIC: ("check",),
    Role.GATE: ("matches",),
}


class Registry:
    """A set of kinds and the readers over them: `read_all` (memoised; the verifier's), `parse`, `by_pattern`,
    `parse_fully`, and `roles`, the table `chain.analyse` dispatches on.

    The service has one, REGISTRY, over KINDS; a test builds another to try a kind of its own.
    """

    def __init__(self, kinds: Iterable[type[Caveat]]) -> None:
        self.kinds = tuple(kinds)
        self.by_key: dict[str, type[Caveat]] = {}  # exact keys; and prefixes (`arg.`) of keys ending in `.*`
        for kind in self.kinds:
            _check_shape(kind)
            key = kind.KEY[:-1] if kind.KEY.endswith(".*") else kind.KEY
            if key.endswith(".") and key.index(".") != len(key) - 1:  # found by the key up to its first `.`
                raise ValueError(f"a prefix key holds one `.`, before the `*`: {kind.KEY!r}")
            if key in self.by_key:
                raise ValueError(f"two caveat kinds claim the key {kind.KEY!r}")
            self.by_key[key] = kind
        # Denial: malformed or unknown, it fails every call alike, so it is filed as chain-static.
        self.roles: dict[type[Caveat | Denial], Role] = {kind: kind.ROLE for kind in self.kinds}
        self.roles[Denial] = Role.STATIC
        self.counter_kinds = tuple(kind for kind in self.kinds if kind.ROLE is Role.COUNTER)
        # A chain with no more counters than this is within every counter kind's MAX_PER_CHAIN.
        self.fewest = min((kind.MAX_PER_CHAIN for kind in self.counter_kinds), default=0)
        # Counters with a check of their own (budget: its currency), decided on every call too.
        self.checked_counters = frozenset(kind for kind in self.counter_kinds if kind.check is not Caveat.check)
        self.memo: ByteMemo[bytes | str, tuple[str, Caveat | Denial]] = ByteMemo("caveats")

    def parse(self, raw: bytes | str) -> Caveat | Denial:
        """Parse one caveat. Never raises for any input: what does not parse is a Denial."""
        return self._read(raw)[1]

    def read_all(self, raws: Iterable[bytes | str]) -> list[tuple[str, Caveat | Denial]]:
        """(text_of(raw), parse(raw)) of each caveat of a chain, in one call: the loop a verifier runs for every
        new token.

        The same texts recur across tokens (`delegate = researcher`, a policy's `tools in ...`), and what they
        parse to is immutable and depends on nothing but the text, so a verifier parses each one once, within
        the memo's share of the cache bytes (caveats.cache).
        """
        memo = self.memo
        get, add = memo.get, memo.add
        entries = []
        new: list[bytes | str] | None = None  # this chain's texts not seen before
        try:
            for raw in raws:
                entry = get(raw)
                if entry is None:
                    entry = self._read(raw)
                    add(raw, entry)  # at once: a text twice in this chain is a hit
                    if new is None:
                        new = [raw]
                    else:
                        new.append(raw)
                entries.append(entry)
        finally:
            # Accounted together, in a few C calls over their bytes (caveats_bytes): an estimate per text cost
            # ~0.25 us each, ~2 us of a fresh 10-caveat chain's first sight; a minted token's one new text
            # (its expiry) costs the same either way.
            if new is not None:
                try:
                    nbytes = caveats_bytes(new)  # type: ignore[arg-type]  # the bytes a verifier reads
                except TypeError:  # text, from the SDK and tests
                    nbytes = sum(map(caveat_bytes, new))
                memo.account(new, nbytes)
        return entries

    @overload
    def _read(self, raw: bytes | str) -> tuple[str, Caveat | Denial]: ...
    @overload
    def _read(self, raw: bytes | str, fully: Literal[False]) -> tuple[str, Caveat | Denial | None]: ...
    def _read(self, raw: bytes | str, fully: bool = True) -> tuple[str, Caveat | Denial | None]:
        """(text, caveat): the kind's PATTERN first, then the full parser for what it does not take (`fully`) or
        None. One function, not one a step: a verifier runs it for every text it has not seen yet."""
        if isinstance(raw, str):
            text = raw
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return text_of(raw), Denial(Code.MALFORMED_CAVEAT, "caveat is not valid UTF-8")
        # The key is what comes before the first space; the PATTERN, which holds the whole key, decides.
        # str.partition, not a slice at str.find: find parses its arguments the slow way, ~0.09 us a text.
        key = text.partition(" ")[0]
        kind = self.by_key.get(key)
        if kind is None:
            kind = self.by_key.get(key[: key.find(".") + 1])  # a prefix kind's (`arg.`); "" is no key
        if kind is not None:
            m = kind.PATTERN.fullmatch(text)
            if m is not None:
                caveat = kind.from_match(m)
                if caveat is not None:
                    return text, caveat
        return text, self.parse_fully(text) if fully else None

    def by_pattern(self, text: str) -> Caveat | None:
        """The caveat if its kind's PATTERN takes the text whole, else None: the full parser decides and explains."""
        caveat = self._read(text, fully=False)[1]
        return None if isinstance(caveat, Denial) else caveat  # a str is never refused as bytes are

    def parse_fully(self, text: str) -> Caveat | Denial:
        """Parse by the grammar's parts (shape, key, operator, value), each refusal saying what is wrong."""
        try:
            key, op, value = split(text)
            kind = self.kind_of(key)
            if kind is None:
                return Denial(Code.UNKNOWN_CAVEAT, f"unknown caveat key '{key}'")
            if op not in kind.OPS:
                raise CaveatSyntaxError(f"'{key}' takes {' or '.join(sorted(kind.OPS))}, not '{op}'")
            return kind.from_parts(key, op, value)
        except CaveatSyntaxError as e:
            return Denial(Code.MALFORMED_CAVEAT, str(e))

    def kind_of(self, key: str) -> type[Caveat] | None:
        """The kind a key names: by the whole key, or by its prefix up to the first `.` for a prefix kind."""
        kind = self.by_key.get(key)
        if kind is None and "." in key:
            kind = self.by_key.get(key[: key.index(".") + 1])
        return kind

    def forget(self) -> None:
        """Empty the memo (benchmarks measure first sight of a text with it)."""
        self.memo.clear()


def _check_shape(kind: type[Caveat]) -> None:
    """A kind states everything the registry, the chain and the tests read of it."""
    for name in ("KEY", "OPS", "ROLE", "PATTERN", "VALID", "MALFORMED"):
        if not hasattr(kind, name):
            raise ValueError(f"caveat kind {kind.__name__} does not set {name}")
    for need in _ROLE_NEEDS[kind.ROLE]:
        own = [vars(c) for c in kind.__mro__ if c is not Caveat and issubclass(c, Caveat)]
        if need not in kind.__struct_fields__ and not any(need in names for names in own):
            raise ValueError(f"caveat kind {kind.__name__} is a {kind.ROLE.value} kind and does not set {need}")


REGISTRY = Registry(KINDS)
parse = REGISTRY.parse
read_all = REGISTRY.read_all
by_pattern = REGISTRY.by_pattern
parse_fully = REGISTRY.parse_fully
forget = REGISTRY.forget
_memo = REGISTRY.memo


def read(raw: bytes | str) -> tuple[str, Caveat | Denial]:
    """(text_of(raw), parse(raw)), remembered by the exact caveat: see Registry.read_all."""
    return read_all((raw,))[0]


def text_of(raw: bytes) -> str:
    """Caveat bytes as printable text for a denial or a listing (invalid UTF-8 replaced, never raising)."""
    return raw.decode("utf-8", errors="replace")
