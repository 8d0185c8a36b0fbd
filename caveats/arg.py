"""`arg.amount <= 500`, `arg.currency in usd,eur`, `arg.repo = acme/web`: the call's argument at a dot-path.

Numbers compare as exact decimals (JSON numbers reach us as int or Decimal, never float). A string in the
decimal grammar orders as its number; for `=` and `in` it must match the text exactly, and `!=` excludes it when
its text or its number matches: under either reading, the narrower one wins. A missing argument, or one that is
an object, array or null, denies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

from caveats.base import Caveat, Context
from caveats.denial import Code, Denial
from caveats.grammar import CaveatSyntaxError

PREFIX = "arg."
_PATH = r"[A-Za-z0-9_-]{1,64}(?:\.[A-Za-z0-9_-]{1,64}){0,7}"
_PATH_RE = re.compile(_PATH)
_NUMBER = r"-?[0-9]{1,12}(?:\.[0-9]{1,6})?"
_NUMBER_RE = re.compile(_NUMBER)
_ITEM = r"[!-+\--~]{1,256}"  # printable ASCII but space and comma
_VALUE_RE = re.compile(_ITEM)
_LIST = rf"{_ITEM}(?:,{_ITEM}){{0,63}}"
_LIST_RE = re.compile(_LIST)
# The grammar's key is at most 128 characters (`grammar.split`), so a path at most 124: the lookahead says so.
_KEY = rf"arg\.(?=[A-Za-z0-9_.-]{{1,124}} )({_PATH})"
_ORDER = {"<": Decimal.__lt__, "<=": Decimal.__le__, ">": Decimal.__gt__, ">=": Decimal.__ge__}
# How a denial words the failed rule; the others read "is not in usd,eur", "is not <= 500".
_FAILED = {"=": "is not", "!=": "must not be"}
_MISSING = object()


def lookup(args: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = args
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    return "an array" if isinstance(value, list | tuple) else f"a {type(value).__name__}"


def as_number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        return value if value.is_finite() else None  # NaN and Infinity are not exact decimals; sNaN would raise
    if isinstance(value, str) and _NUMBER_RE.fullmatch(value):
        return Decimal(value)
    return None


def equals(value: Any, text: str) -> bool:
    """An argument equals caveat text: booleans as true/false, numbers numerically, strings exactly."""
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if isinstance(value, int | Decimal):
        return _NUMBER_RE.fullmatch(text) is not None and as_number(value) == Decimal(text)
    return isinstance(value, str) and value == text


class Arg(Caveat, frozen=True):
    KEY: ClassVar[str] = "arg.*"
    OPS: ClassVar[frozenset[str]] = frozenset({"=", "!=", "in", "<", "<=", ">", ">="})
    # groups: path; an ordering and its number; = or != and its value; the list of `in`
    PATTERN: ClassVar[re.Pattern[str]] = re.compile(rf"{_KEY} (?:(<=?|>=?) ({_NUMBER})|(!?=) ({_ITEM})|in ({_LIST}))")
    VALID: ClassVar[tuple[str, ...]] = (
        "arg.amount <= 500",
        "arg.a.b in x,y",
        "arg.n >= -999999999999.999999",
        "arg.s != -",
        "arg.repo = acme/web",
        "arg." + "p" * 64 + "." + "q" * 59 + " = 1",  # the longest path a 128-character key holds
    )
    MALFORMED: ClassVar[tuple[str, ...]] = (
        "arg." + "p" * 64 + "." + "q" * 60 + " = 1",  # one character past the key's 128
        "arg.amount <= five",
        "arg.amount < 1e3",
        "arg.a..b = 1",
        "arg.a = x y",
        "arg.a in x,,y",
        "arg.a = é",
    )
    path: tuple[str, ...]
    op: str
    values: tuple[str, ...]
    bound: Decimal | None = None  # the number of an ordering comparison, parsed once

    @classmethod
    def from_parts(cls, key: str, op: str, value: str) -> Arg:
        path = key[len(PREFIX) :]
        if not _PATH_RE.fullmatch(path):
            raise CaveatSyntaxError(f"argument path must be dot-separated names, got {path!r}")
        if op in _ORDER:
            if not _NUMBER_RE.fullmatch(value):
                raise CaveatSyntaxError(f"'{op}' needs a decimal number, got {value!r}")
        elif not (_LIST_RE if op == "in" else _VALUE_RE).fullmatch(value):
            raise CaveatSyntaxError(f"argument value must be printable ASCII without spaces, got {value!r}")
        values = tuple(value.split(",")) if op == "in" else (value,)
        return cls(tuple(path.split(".")), op, values, Decimal(value) if op in _ORDER else None)

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Arg:
        path, order, number, equality, value, listed = m.groups()
        if order is not None:
            return cls(tuple(path.split(".")), order, (number,), Decimal(number))
        if equality is not None:
            return cls(tuple(path.split(".")), equality, (value,))
        return cls(tuple(path.split(".")), "in", tuple(listed.split(",")))

    def holds(self, value: Any) -> bool:
        if self.bound is not None:
            number = as_number(value)
            return number is not None and _ORDER[self.op](number, self.bound)
        if isinstance(value, str):  # the common case, without a call per listed value
            matched = value in self.values
            if not matched and self.op == "!=" and _NUMBER_RE.fullmatch(value):
                # A tool may read "0.00" as the number 0 (the MCP cost's `from_arg` does): `!= 0` excludes it too.
                matched = equals(Decimal(value), self.values[0])
        elif isinstance(value, bool | int) or (isinstance(value, Decimal) and value.is_finite()):
            matched = any(equals(value, text) for text in self.values)
        else:  # objects, arrays, null, and anything no JSON body yields (floats, NaN, tuples): never holds
            return False
        return not matched if self.op == "!=" else matched

    def check(self, ctx: Context, hop: int) -> Denial | None:
        value = lookup(ctx.args, self.path)
        if value is not _MISSING and self.holds(value):
            return None
        name = ".".join(self.path)
        if value is _MISSING:
            return Denial(Code.ARG_MISMATCH, f"argument '{name}' is missing")
        if not isinstance(value, str | bool | int | Decimal):  # whatever the rule: no caveat compares these
            return Denial(Code.ARG_MISMATCH, f"argument '{name}' is {_kind_of(value)}, which no caveat compares")
        failed = _FAILED.get(self.op) or f"is not {self.op}"
        return Denial(Code.ARG_MISMATCH, f"argument '{name}' {failed} {','.join(self.values)}")
