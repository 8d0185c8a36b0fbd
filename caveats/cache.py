"""What a verifier remembers, bounded by bytes: verified chains, parsed caveats, tool-list intersections,
chains already written to the audit log.

Every token a caller sends may be new, so nothing a verifier remembers may grow with the number of distinct
tokens: each cache's entries are accounted at an over-estimate of the memory they keep alive, and a cache over
its share of the total (`AGENTCAPS_CACHE_MB`, default 64 MiB, set with `configure`) lets go of entries. A
ByteLRU lets go of the least recently used (verified chains: a hot token stays); a ByteMemo, for what is
mostly seen once (caveat texts: a new token's are new), empties itself, which costs a new entry far less.
Estimates are cheap on purpose (lengths and separator counts, never a walk over objects):
tests/token/test_cache_bytes.py measures, with tracemalloc, that they stay above the truth.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Generic, TypeVar

MIB = 1 << 20
DEFAULT_TOTAL_BYTES = 64 * MIB
# Each cache's share of the total. Chains are the big one: a token is up to 16 KiB, and its analysis more.
SHARES = {"chains": 0.75, "caveats": 0.1875, "tool lists": 0.03125, "chains sent": 0.03125}

K = TypeVar("K")
V = TypeVar("V")
_total_bytes = DEFAULT_TOTAL_BYTES
_caches: weakref.WeakSet[ByteLRU[object, object] | ByteMemo[object, object]] = weakref.WeakSet()


class ByteLRU(Generic[K, V]):
    """A mapping bounded by the bytes its entries are accounted at; the least recently used entry goes first.

    `get` is the hot path (a token seen before): one dict lookup and a move to the end, both in C.
    """

    def __init__(self, share: str) -> None:
        self.share = share
        self.max_bytes = int(_total_bytes * SHARES[share])
        self.nbytes = 0
        self._values: OrderedDict[K, V] = OrderedDict()
        self._sizes: dict[K, int] = {}
        _caches.add(self)  # type: ignore[arg-type]  # a WeakSet of every cache, for configure()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: K) -> V | None:
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def put(self, key: K, value: V, nbytes: int) -> None:
        """Remember `value` for a key that `get` just missed, accounted at `nbytes`; one larger than the whole
        cache is not remembered."""
        if nbytes > self.max_bytes:
            return
        self._values[key] = value
        self._sizes[key] = nbytes
        self.nbytes += nbytes
        if self.nbytes > self.max_bytes:
            self._shrink()

    def clear(self) -> None:
        self._values.clear()
        self._sizes.clear()
        self.nbytes = 0

    def _shrink(self) -> None:
        while self.nbytes > self.max_bytes:
            key, _ = self._values.popitem(last=False)
            self.nbytes -= self._sizes.pop(key)


class ByteMemo(Generic[K, V]):
    """A dict bounded by the bytes its entries are accounted at, emptied when the next entries would not fit.

    `get` is the dict's own: a hit costs what a plain dict lookup does. Entries go in one by one with `put`, or,
    for a caller that remembers several in one call of its own (the new caveats of a chain), each with `add`
    (the dict's own setitem, after `get` missed) and then all of them with one `account` before that call
    returns: one estimate over them all costs far less than one per entry.
    """

    def __init__(self, share: str) -> None:
        self.share = share
        self.max_bytes = int(_total_bytes * SHARES[share])
        self.nbytes = 0
        self._values: dict[K, V] = {}
        self.get = self._values.get
        self.add = self._values.__setitem__
        _caches.add(self)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._values)

    def put(self, key: K, value: V, nbytes: int) -> None:
        """Remember `value` for a key that `get` just missed, accounted at `nbytes`."""
        if self.nbytes + nbytes > self.max_bytes:
            self.clear()
            if nbytes > self.max_bytes:
                return
        self._values[key] = value
        self.nbytes += nbytes

    def account(self, keys: list[K], nbytes: int) -> None:
        """Account at `nbytes` together for `keys`, just set with `add`. If the memo is then over its bytes, it
        empties itself and keeps them alone, unless they do not fit even so: as `put` would have."""
        self.nbytes += nbytes
        if self.nbytes > self.max_bytes:
            values = self._values
            kept = {key: values[key] for key in keys if key in values}
            self.clear()
            if nbytes <= self.max_bytes:
                values.update(kept)
                self.nbytes = nbytes

    def clear(self) -> None:
        self._values.clear()  # the same dict: `get` and `add` stay bound to it
        self.nbytes = 0

    def _shrink(self) -> None:
        if self.nbytes > self.max_bytes:
            self.clear()


def configure(total_bytes: int) -> None:
    """Set the total that every cache, present and future, takes its share of (AGENTCAPS_CACHE_MB)."""
    global _total_bytes
    _total_bytes = total_bytes
    for cache in list(_caches):
        cache.max_bytes = int(total_bytes * SHARES[cache.share])
        cache._shrink()


def total_bytes() -> int:
    """The configured total."""
    return _total_bytes


def accounted_bytes() -> int:
    """What every live cache accounts for now: at most total_bytes() per verifier."""
    return sum(cache.nbytes for cache in list(_caches))


CAVEAT_OVERHEAD = 384  # the entry, the key and text objects, the parsed Struct and its tuples
ITEM_BYTES = 80  # one str object and its slot in a tuple
# What separates the items of a list (`,`) or a path (`.`); the bytes a text has of them is its length less that
# of the text without them (one bytes.translate: a bytes.count per separator costs twice as much).
SEPARATORS = b",."


def caveat_bytes(raw: bytes | str) -> int:
    """An over-estimate of what remembering one caveat keeps alive: its bytes as the key, its text (a str, up to
    4 bytes a character), and what it parses to, where every item of a list (`,`) or path (`.`) is a str of its
    own, or a Denial whose reason quotes it."""
    if type(raw) is not bytes:  # a str: the SDK's and tests' own
        raw = raw.encode("utf-8", "surrogatepass")  # type: ignore[union-attr]
    return caveats_bytes((raw,))


def caveats_bytes(raws: Sequence[bytes]) -> int:
    """The sum of caveat_bytes over caveats (a chain's, or its new ones), in a few C calls."""
    joined = b"".join(raws)
    size = len(joined)
    return CAVEAT_OVERHEAD * len(raws) + 12 * size + ITEM_BYTES * (size - len(joined.translate(None, SEPARATORS)))
