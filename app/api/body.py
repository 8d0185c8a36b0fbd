"""Strict JSON request bodies: msgspec decoding into the schema Structs, plus what msgspec allows that we don't.

msgspec already refuses NaN/Infinity, unknown fields and wrong types; duplicate keys it would silently take
the last of, so a second pass with the standard library's C scanner refuses them (and names the field of a
NaN, which msgspec refuses without saying where). That pass checks a valid body in C alone (about 3 µs); only
one that repeats a key is walked again in Python, to name it. Both decoders recurse once per level of nesting,
so a body nested deeper than MAX_DEPTH is refused before either runs, in a few passes of C over the bytes; a string
that is not UTF-8, which msgspec reports as a UnicodeDecodeError, is a malformed body like any other.
"""

from __future__ import annotations

import json
import operator
import re
from decimal import Decimal
from itertools import accumulate, count
from typing import Any, TypeVar

import msgspec

from app.errors import BadRequest

T = TypeVar("T")
_FIELD_RE = re.compile(r" - at `\$\.?([^`]*)`$")
_NAMED_RE = re.compile(r"(?:unknown|missing required) field `([^`]*)`")
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}

ARGS_DEPTH = 64  # levels of objects and arrays a field may nest, `args` itself the first (docs/decisions.md)
MAX_DEPTH = ARGS_DEPTH + 1  # ... inside the request object
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)  # a JSON string: brackets in it are not nesting
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[{\]}]', re.DOTALL)
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # an opener steps one level down, a closer one up
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[{]}")))


class _Object(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs in order, so a repeated key is still visible."""


class _NonFinite:
    def __init__(self, word: str) -> None:
        self.word = word


def _scan(tree: Any) -> None:
    """Refuse a repeated key or a NaN/Infinity anywhere, naming it by its dotted path; a loop, not recursion."""
    stack: list[tuple[Any, str]] = [(tree, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Object):
            seen: set[str] = set()
            items = []
            for key, item in value:
                where = f"{path}.{key}" if path else key
                if key in seen:
                    raise BadRequest(f"duplicate key {key!r} in the JSON body", where)
                seen.add(key)
                items.append((item, where))
            stack.extend(reversed(items))  # popped in document order
        elif isinstance(value, list):
            stack.extend((item, f"{path}.{i}" if path else str(i)) for i, item in reversed(list(enumerate(value))))
        elif isinstance(value, _NonFinite):
            raise BadRequest(f"{value.word} is not a JSON number; amounts and arguments must be finite", path or None)


def _too_deep(body: bytes) -> bool:
    """Whether objects and arrays nest deeper than MAX_DEPTH; each step runs in C, none per byte in Python."""
    if body.count(b"{") + body.count(b"[") <= MAX_DEPTH:  # every well-formed body of the API, in two passes
        return False
    steps = _STRING.sub(b"", body).translate(_STEPS, _NOT_BRACKETS)
    if b"\x02" * (MAX_DEPTH + 1) in steps:  # the usual attack, "[[[[...", without counting
        return True
    # After the k-th bracket the depth is (openers so far) - (closers so far) = sum(steps[:k]) - k.
    return max(map(operator.sub, accumulate(steps), count(1)), default=0) > MAX_DEPTH


def _deep_field(body: bytes) -> str | None:
    """The top-level field that nests too deeply (only once _too_deep said one does): the last string seen at
    the top level before the value that opens level 2 is that value's key."""
    if not body.lstrip().startswith(b"{"):
        return None
    depth, key, field = 0, b"", b""
    for m in _STRING_OR_BRACKET.finditer(body):
        token = m.group()
        if token[:1] == b'"':
            if depth == 1:
                key = token
        elif token in (b"[", b"{"):
            depth += 1
            if depth == 2:
                field = key
            if depth > MAX_DEPTH:
                break
        else:
            depth -= 1
    try:
        name = json.loads(field)
    except ValueError:
        return None
    return name if isinstance(name, str) else None


def _refuse_repeats(pairs: list[tuple[str, Any]]) -> None:
    if len(dict(pairs)) != len(pairs):
        raise BadRequest("a key is repeated in the JSON body")


# The quick check for a repeated key, on a body msgspec has decoded: the C scanner and one dict per object. Only a
# body it refuses is walked again (_strict_scan) to name the key.
_repeats = json.JSONDecoder(object_pairs_hook=_refuse_repeats)


def _strict_scan(body: bytes) -> None:
    try:
        tree = json.loads(body, parse_constant=_NonFinite, object_pairs_hook=_Object)
    except ValueError as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    _scan(tree)


def _not_utf8(body: bytes) -> str:
    """Where the body stops being UTF-8, by byte offset in the body (msgspec counts within the string)."""
    try:
        body.decode()
    except UnicodeDecodeError as e:
        return f"byte {e.start} (0x{body[e.start]:02x}) {e.reason}"
    return "a string is not UTF-8"


def decode_optional(body: bytes, kind: type[T]) -> T:
    """As decode, where the body may be left out: none at all (or only whitespace) is `kind()`, its defaults."""
    return decode(body, kind) if body.strip() else kind()


def decode(body: bytes, kind: type[T]) -> T:
    if _too_deep(body):
        raise BadRequest(
            f"the JSON nests too deeply: objects and arrays may nest at most {ARGS_DEPTH} levels in a field",
            _deep_field(body),
        )
    decoder = _decoders.get(kind)
    if decoder is None:
        # JSON numbers with a fraction become Decimal: arguments compare exactly, never as floats.
        decoder = _decoders[kind] = msgspec.json.Decoder(kind, float_hook=Decimal)
    try:
        value: T = decoder.decode(body)
    except msgspec.ValidationError as e:
        message = str(e)
        m = _FIELD_RE.search(message)
        reason, path = (message[: m.start()], m.group(1)) if m else (message, "")
        named = _NAMED_RE.search(reason)
        if named:
            path = f"{path}.{named.group(1)}" if path else named.group(1)
        raise BadRequest(reason, path or None) from None
    except UnicodeDecodeError:  # msgspec checks the bytes of each string as it decodes it
        raise BadRequest(f"the body is not valid UTF-8 JSON: {_not_utf8(body)}") from None
    except msgspec.DecodeError as e:
        _strict_scan(body)  # names a NaN/Infinity's field if that is what msgspec refused
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if body.count(b'"') >= 4:  # a repeated key needs two quoted keys
        try:
            _repeats.decode(body.decode())
        except BadRequest:
            _strict_scan(body)  # names the repeated key
            raise
    return value
