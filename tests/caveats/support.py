"""What every caveat test module shares: a frozen call, the parse/check helpers, the look-alike tables."""

from __future__ import annotations

from typing import Any

from caveats import Caveat, Code, Context, Denial, parse
from caveats.registry import REGISTRY, Registry, by_pattern, parse_fully, read

NOW = 1_796_083_200  # 2026-12-01T00:00:00Z: tests never read the clock
N128 = "a" + "b" * 127  # the longest name
N129 = N128 + "c"

# Text that int(), Decimal() or \d would take for a number and the grammar must not.
LOOKALIKE_NUMBERS = [
    "１００",  # fullwidth
    "٣",  # Arabic-Indic
    "۳",  # Extended Arabic-Indic
    "३",  # Devanagari
    "𝟓",  # mathematical bold
    "²",
    "1_000",
    "+1",
    "-1",
    "1e3",
    "1E3",
    "NaN",
    "nan",
    "sNaN",
    "Infinity",
    "inf",
    "0x1",
    "0b1",
    "1 000",
    " 5",
    "5\n",
    "",
]

# Amount and currency text that is not `\d{1,12}(\.\d{1,6})? [A-Z][A-Z0-9_]{1,15}`; each kind prefixes its key.
BAD_MONEY = [
    *[f"{n} USD" for n in LOOKALIKE_NUMBERS],
    "1234567890123 USD",  # 13 digits
    "0000000000001 USD",
    "1.1234567 USD",  # 7 decimals
    "1.0000000 USD",
    "5. USD",
    ".5 USD",
    ". USD",
    "1..0 USD",
    "1.0.0 USD",
    "1,5 USD",
    "-0 USD",
    "USD",
    "USD 5",
    "5",
    "5USD",
    "5  USD",
    "5\tUSD",
    "5\u00a0USD",
    "5\u200b USD",
    "5 USD EUR",
    "5 US D",
    "$5.00",
    "5.00 $",
    "5 usd",
    "5 Usd",
    "5 U",
    "5 _USD",
    "5 1USD",
    "5 USD-",
    "5 US.D",
    "5 ABCDEFGHIJKLMNOPQ",  # 17 characters
    "5 ＵＳＤ",
    "5 ÜS",
]

# Every control character docs/caveats.md names: C0, DEL, C1, U+2028, U+2029.
CONTROLS = [chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)]


def ctx(tool: str = "search", **kw: Any) -> Context:
    """A frozen call at NOW, one delegation deep unless told otherwise."""
    return Context(
        now=kw.pop("now", NOW),
        tool=tool,
        audience=kw.pop("audience", None),
        cost=kw.pop("cost", None),
        args=kw.pop("args", {}),
        hops=kw.pop("hops", 1),
    )


def parsed(text: str) -> Caveat:
    caveat = parse(text)
    assert isinstance(caveat, Caveat), caveat
    return caveat


def run(text: str, context: Context, hop: int = 0) -> Denial | None:
    denial = parsed(text).check(context, hop)
    if denial is not None:  # a kind's check says why; the chain, not the kind, attributes it
        assert (denial.caveat, denial.hop) == (None, None)
        assert_plain_words(denial.reason)
    return denial


def code(text: str, context: Context, hop: int = 0) -> str | None:
    denial = run(text, context, hop)
    return None if denial is None else str(denial.code)


def assert_parses(text: str, value: Caveat) -> None:
    """The text parses to `value` as str and as UTF-8 bytes, and the memoised reader agrees; so do the kind's
    PATTERN (the path every valid caveat takes) and the full parser behind it."""
    assert parse(text) == value
    assert parse(text.encode()) == value
    assert read(text.encode()) == (text, value)
    assert by_pattern(text) == value
    assert parse_fully(text) == value


def assert_malformed(text: str, registry: Registry = REGISTRY) -> Denial:
    """The text denies as malformed_caveat, as str and as bytes, with a plain-words reason."""
    assert registry.by_pattern(text) is None, text  # a kind's PATTERN never takes what the full parser refuses
    denials = []
    for raw in (text, text.encode("utf-8", "surrogatepass")):
        result = registry.parse(raw)
        assert isinstance(result, Denial), (text, result)
        assert result.code == Code.MALFORMED_CAVEAT, (text, result)
        assert (result.caveat, result.hop) == (None, None)
        assert_plain_words(result.reason)
        denials.append(result)
    return denials[0]


def assert_plain_words(reason: str) -> None:
    assert reason and reason == reason.strip() and "\n" not in reason
    for jargon in ("Traceback", "Error", "Exception", "re.Match", "<class", "None", "object at 0x"):
        assert jargon not in reason, reason


def ids(rows: list[Any]) -> list[str]:
    """Readable, bounded test ids for table rows (their first column)."""
    return [repr(row[0] if isinstance(row, tuple) else row)[:60] for row in rows]


OPS = ("=", "!=", "<", "<=", ">", ">=", "in")
