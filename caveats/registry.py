"""The caveat language's one entry point: raw caveat bytes -> a typed Caveat, or a Denial (fail closed).

Adding a kind is one module plus one line in KINDS.
"""

from __future__ import annotations

from collections.abc import Iterable

from caveats.arg import PREFIX as ARG_PREFIX
from caveats.arg import Arg
from caveats.audience import Audience
from caveats.base import Caveat
from caveats.budget import Budget
from caveats.cache import CAVEAT_OVERHEAD, ITEM_BYTES, ByteMemo, caveat_bytes
from caveats.cost import Cost
from caveats.delegate import Delegate
from caveats.denial import Code, Denial
from caveats.depth import Depth
from caveats.expires import Expires
from caveats.grammar import CaveatSyntaxError, split
from caveats.rate import Rate
from caveats.tools import Tools

KINDS: tuple[type[Caveat], ...] = (Expires, Tools, Audience, Budget, Cost, Rate, Depth, Delegate)


def _by_key(kinds: tuple[type[Caveat], ...]) -> dict[str, type[Caveat]]:
    table: dict[str, type[Caveat]] = {}
    for kind in kinds:
        if kind.KEY in table:
            raise ValueError(f"two caveat kinds claim the key {kind.KEY!r}")
        table[kind.KEY] = kind
    return table


BY_KEY = _by_key(KINDS)
# Which PATTERN to try for a text: the keys' first three characters tell the kinds apart, `arg.*` included.
EVERY_KIND: tuple[type[Caveat], ...] = (*KINDS, Arg)  # Arg by its key's prefix, `arg.`
_BY_START = {kind.KEY[:3]: kind for kind in EVERY_KIND}
if len(_BY_START) != len(BY_KEY) + 1:
    raise ValueError("two caveat keys start with the same three characters")


def parse(raw: bytes | str) -> Caveat | Denial:
    """Parse one caveat. Never raises for any input: what does not parse is a Denial."""
    return _read(raw)[1]


def read(raw: bytes | str) -> tuple[str, Caveat | Denial]:
    """(text_of(raw), parse(raw)), remembered by the exact caveat: see read_all."""
    return read_all((raw,))[0]


_memo: ByteMemo[bytes | str, tuple[str, Caveat | Denial]] = ByteMemo("caveats")


def read_all(raws: Iterable[bytes | str]) -> list[tuple[str, Caveat | Denial]]:
    """read() of each caveat of a chain, in one call: the loop a verifier runs for every new token.

    The same texts recur across tokens (`delegate = researcher`, a policy's `tools in ...`), and what they
    parse to is immutable and depends on nothing but the text, so a verifier parses each one once, within the
    memo's share of the cache bytes (caveats.cache).
    """
    get, put = _memo.get, _memo.put
    entries = []
    for raw in raws:
        entry = get(raw)
        if entry is None:
            entry = _read(raw)
            # caveat_bytes(raw), inlined for the bytes a verifier reads: this runs for every new caveat
            if type(raw) is bytes:
                put(raw, entry, CAVEAT_OVERHEAD + 12 * len(raw) + ITEM_BYTES * (raw.count(b",") + raw.count(b".")))
            else:
                put(raw, entry, caveat_bytes(raw))
        entries.append(entry)
    return entries


def forget() -> None:
    """Empty the memo (benchmarks measure first sight of a text with it)."""
    _memo.clear()


def _read(raw: bytes | str) -> tuple[str, Caveat | Denial]:
    """(text, caveat): the kind's PATTERN first, the full parser for what it does not take."""
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return text_of(raw), Denial(Code.MALFORMED_CAVEAT, "caveat is not valid UTF-8")
    caveat = by_pattern(text)
    return text, caveat if caveat is not None else parse_fully(text)


def by_pattern(text: str) -> Caveat | None:
    """The caveat if its kind's PATTERN takes the text whole, else None: the full parser decides and explains."""
    kind = _BY_START.get(text[:3])  # a hint only: the PATTERN holds the whole key
    if kind is None:
        return None
    m = kind.PATTERN.fullmatch(text)
    return None if m is None else kind.from_match(m)


def parse_fully(text: str) -> Caveat | Denial:
    """Parse by the grammar's parts (shape, key, operator, value), each refusal saying what is wrong."""
    try:
        key, op, value = split(text)
        if key.startswith(ARG_PREFIX):
            kind: type[Caveat] = Arg
        elif key in BY_KEY:
            kind = BY_KEY[key]
        else:
            return Denial(Code.UNKNOWN_CAVEAT, f"unknown caveat key '{key}'")
        if op not in kind.OPS:
            raise CaveatSyntaxError(f"'{key}' takes {' or '.join(sorted(kind.OPS))}, not '{op}'")
        return Arg.parse_arg(key, op, value) if kind is Arg else kind.parse(op, value)
    except CaveatSyntaxError as e:
        return Denial(Code.MALFORMED_CAVEAT, str(e))


def text_of(raw: bytes) -> str:
    """Caveat bytes as printable text for a denial or a listing (invalid UTF-8 replaced, never raising)."""
    return raw.decode("utf-8", errors="replace")
