"""Strict JSON request bodies: msgspec decoding into the schema Structs, plus what msgspec allows that we don't.

msgspec already refuses NaN/Infinity, unknown fields and wrong types; duplicate keys it would silently take
the last of, so a second pass with the standard library's C scanner refuses them (and names the field of a
NaN, which msgspec refuses without saying where).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")
_FIELD_RE = re.compile(r" - at `\$\.?([^`]*)`$")
_NAMED_RE = re.compile(r"(?:unknown|missing required) field `([^`]*)`")
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


class BadRequest(Exception):
    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class _Object(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs in order, so a repeated key is still visible."""


class _NonFinite:
    def __init__(self, word: str) -> None:
        self.word = word


def _scan(value: Any, path: str) -> None:
    """Refuse a repeated key or a NaN/Infinity anywhere, naming it by its dotted path."""
    if isinstance(value, _Object):
        seen: set[str] = set()
        for key, item in value:
            where = f"{path}.{key}" if path else key
            if key in seen:
                raise BadRequest(f"duplicate key {key!r} in the JSON body", where)
            seen.add(key)
            _scan(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _scan(item, f"{path}.{index}" if path else str(index))
    elif isinstance(value, _NonFinite):
        raise BadRequest(f"{value.word} is not a JSON number; amounts and arguments must be finite", path or None)


def _strict_scan(body: bytes) -> None:
    try:
        tree = json.loads(body, parse_constant=_NonFinite, object_pairs_hook=_Object)
    except ValueError as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    _scan(tree, "")


def decode(body: bytes, kind: type[T]) -> T:
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
    except msgspec.DecodeError as e:
        _strict_scan(body)  # names a NaN/Infinity's field if that is what msgspec refused
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if body.count(b'"') >= 4:  # a repeated key needs two quoted keys
        _strict_scan(body)
    return value
