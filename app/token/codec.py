"""Strict macaroon V2 binary codec (libmacaroons format.txt) in URL-safe base64, with the token limits
(docs/caveats.md).

Everything that is not exactly one canonical encoding of a first-party-only V2 macaroon is InvalidToken,
so that no two strings verify as the same token and no byte of a token is unauthenticated slack.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import NamedTuple

from app.errors import InvalidToken

MAX_TOKEN_CHARS = 16 * 1024
MAX_CAVEATS = 128
MAX_CAVEAT_BYTES = 1024
MAX_FIELD_BYTES = MAX_TOKEN_CHARS  # no field can be longer than the whole token

VERSION = 2
EOS, LOCATION, IDENTIFIER, VID, SIGNATURE = 0, 1, 2, 4, 6
_URL_SAFE_RE = re.compile(r"[A-Za-z0-9_-]+")  # only to name the fault in a token that is refused anyway
# The URL-safe alphabet in the standard one, for binascii's strict decoder (C speed, unlike a regex over 16 KiB);
# '+' and '/' are not in the URL-safe alphabet, so they become '.', which that decoder refuses like any stray byte.
_TO_STANDARD = bytes.maketrans(b"-_+/", b"+/..")
# The last character of an unpadded body with 2 or 3 characters in its final group carries 4 or 2 unused low
# bits; only the characters whose unused bits are zero are canonical.
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}
_MISPLACED = "token has a missing or misplaced field"
_UNEXPECTED = "token has an unexpected field"


class RawMacaroon(NamedTuple):
    location: bytes
    identifier: bytes
    caveats: tuple[bytes, ...]
    signature: bytes


def b64decode(token: str) -> bytes:
    """URL-safe base64, padding optional; refuses other characters, wrong padding and non-canonical bits."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("token is not URL-safe base64 within 16 KiB")
    body = token.rstrip("=")
    padding = len(token) - len(body)
    if not body or padding > 2:
        raise InvalidToken("token is not URL-safe base64 within 16 KiB")
    rest = len(body) % 4
    if rest == 1 or (padding and (len(body) + padding) % 4):
        if not _URL_SAFE_RE.fullmatch(body):  # name the stray character first, as the decoder below would
            raise InvalidToken("token is not URL-safe base64 within 16 KiB")
        raise InvalidToken("token has a malformed base64 length or padding")
    try:
        # Strict mode refuses bytes outside the alphabet, whitespace and '=' anywhere but at the end.
        standard = (body + "==="[: -rest % 4]).encode("ascii").translate(_TO_STANDARD)
        raw = binascii.a2b_base64(standard, strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidToken("token is not URL-safe base64 within 16 KiB") from None
    # Unused low bits of the last character must be zero, else two strings decode to the same bytes.
    if rest and body[-1] not in _CANONICAL_LAST[rest]:
        raise InvalidToken("token is not canonical base64")
    return raw


def b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(token: str) -> RawMacaroon:
    """Decode a serialized token. Raises InvalidToken for anything but a canonical first-party V2 macaroon."""
    data = b64decode(token)
    try:
        if data[0] != VERSION:
            raise InvalidToken("token is not a version 2 macaroon")
        location, pos = _field(data, 1, LOCATION) if data[1] == LOCATION else (b"", 1)
        if pos > 1 and not location:  # an empty field spells "no location" a second way
            raise InvalidToken("token has an empty location field")
        identifier, pos = _field(data, pos, IDENTIFIER)
        pos = _end_of_section(data, pos)
        caveats: list[bytes] = []
        # The caveat section, inlined: it is most of a token, and each caveat is one field and an EOS. One test
        # guards each step; only a failing token pays for working out which fault to name.
        while (kind := data[pos]) != EOS:
            if kind != IDENTIFIER or len(caveats) == MAX_CAVEATS:
                raise InvalidToken(_caveat_start_fault(kind, len(caveats)))
            length, start = data[pos + 1], pos + 2
            if length & 0x80:
                length, start = _uvarint(data, start, length)
            pos = start + length
            if length > MAX_CAVEAT_BYTES or pos >= len(data) or data[pos] != EOS:
                raise InvalidToken(_caveat_end_fault(data, pos, length))
            caveats.append(data[start:pos])
            pos += 1
        signature, pos = _field(data, pos + 1, SIGNATURE)
    except IndexError:  # a read of a byte past the end: slices never raise, their ends are checked instead
        raise InvalidToken("token ends early") from None
    if len(signature) != 32:
        raise InvalidToken("token signature is not 32 bytes")
    if pos != len(data):
        raise InvalidToken("token has bytes after its signature")
    return RawMacaroon(location, identifier, tuple(caveats), signature)


def _caveat_start_fault(kind: int, count: int) -> str:
    """Why a caveat field cannot start here; the faults are named in the order the format checks them."""
    if count == MAX_CAVEATS:
        return f"token has more than {MAX_CAVEATS} caveats"
    return "first-party caveats carry no location" if kind == LOCATION else _MISPLACED


def _caveat_end_fault(data: bytes, end: int, length: int) -> str:
    """Why a caveat field that ends at `end` is refused; the faults are named in the order the format checks them."""
    if end > len(data):
        return "token ends early"
    if length > MAX_CAVEAT_BYTES:
        return f"a caveat is longer than {MAX_CAVEAT_BYTES} bytes"
    if end == len(data):
        return "token ends early"
    return "third-party caveats are not accepted" if data[end] == VID else _UNEXPECTED


def _field(data: bytes, pos: int, kind: int) -> tuple[bytes, int]:
    """The value of the field of type `kind` that starts at `pos`, and the position after it."""
    if data[pos] != kind:
        raise InvalidToken(_MISPLACED)
    length = data[pos + 1]
    pos += 2
    if length & 0x80:  # a multi-byte uvarint: caveats up to 127 bytes never get here
        length, pos = _uvarint(data, pos, length)
    end = pos + length
    if end > len(data):
        raise InvalidToken("token ends early")
    return data[pos:end], end


def _uvarint(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a length whose first byte, `first`, had its continuation bit set."""
    value, shift, b = first & 0x7F, 7, data[pos]
    while b & 0x80:
        if shift == 14:  # 3 bytes cover 2 MiB, far past any field a 16 KiB token can hold
            raise InvalidToken("token has an oversized field")
        value |= (b & 0x7F) << shift
        shift += 7
        pos += 1
        b = data[pos]
    # Minimal encoding only: a trailing zero continuation byte would be a second spelling.
    if b == 0:
        raise InvalidToken("token has a non-minimal length")
    return value | b << shift, pos + 1


def _end_of_section(data: bytes, pos: int) -> int:
    if data[pos] != EOS:
        raise InvalidToken(_UNEXPECTED)
    return pos + 1


def encode(m: RawMacaroon) -> str:
    out = bytearray([VERSION])
    if m.location:
        _put(out, LOCATION, m.location)
    _put(out, IDENTIFIER, m.identifier)
    out.append(EOS)
    for caveat in m.caveats:
        _put(out, IDENTIFIER, caveat)
        out.append(EOS)
    out.append(EOS)
    _put(out, SIGNATURE, m.signature)
    return b64encode(bytes(out))


def _put(out: bytearray, kind: int, data: bytes) -> None:
    out.append(kind)
    n = len(data)
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    out += data
