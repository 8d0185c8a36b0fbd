"""Strict JSON request bodies: msgspec decoding into the schema Structs, plus what msgspec allows that we don't.

msgspec already refuses NaN/Infinity, unknown fields and wrong types; duplicate keys it would silently take
the last of, so a second pass with the standard library's C scanner refuses them.
"""

from __future__ import annotations

import contextlib
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


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise BadRequest(f"duplicate key {key!r} in the JSON body", key)
        seen[key] = value
    return seen


class _NonFinite:
    def __init__(self, word: str) -> None:
        self.word = word


def _refuse_non_finite(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    for key, value in pairs:
        if isinstance(value, _NonFinite) or (isinstance(value, list) and any(isinstance(v, _NonFinite) for v in value)):
            word = value.word if isinstance(value, _NonFinite) else "NaN or Infinity"
            raise BadRequest(f"{word} is not a JSON number; amounts and arguments must be finite", key)
    return dict(pairs)


def _name_a_non_finite_number(body: bytes) -> None:
    """msgspec refuses NaN/Infinity without saying where; the stdlib parser can name the field."""
    with contextlib.suppress(ValueError):  # malformed for another reason: the caller's message stands
        json.loads(body, parse_constant=_NonFinite, object_pairs_hook=_refuse_non_finite)


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
        _name_a_non_finite_number(body)
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if body.count(b'"') >= 4:  # a repeated key needs two quoted keys
        try:
            json.loads(body, object_pairs_hook=_no_duplicates)
        except ValueError as e:
            raise BadRequest(f"the body is not valid JSON: {e}") from None
    return value
