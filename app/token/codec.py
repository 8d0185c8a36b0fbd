"""Strict macaroon V2 binary codec (libmacaroons format.txt) in URL-safe base64, with SPEC §1's limits.

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
_B64_RE = re.compile(r"[A-Za-z0-9_-]+={0,2}")


class RawMacaroon(NamedTuple):
    location: bytes
    identifier: bytes
    caveats: tuple[bytes, ...]
    signature: bytes


def b64decode(token: str) -> bytes:
    """URL-safe base64, padding optional; refuses other characters, wrong padding and non-canonical bits."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not _B64_RE.fullmatch(token):
        raise InvalidToken("token is not URL-safe base64 within 16 KiB")
    body = token.rstrip("=")
    padding = len(token) - len(body)
    if len(body) % 4 == 1 or (padding and (len(body) + padding) % 4):
        raise InvalidToken("token has a malformed base64 length or padding")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as e:  # pragma: no cover - the pattern above already refused it
        raise InvalidToken("token is not valid base64") from e
    # Unused low bits of the last character must be zero, else two strings decode to the same bytes.
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != body.encode("ascii"):
        raise InvalidToken("token is not canonical base64")
    return raw


def b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(token: str) -> RawMacaroon:
    """Decode a serialized token. Raises InvalidToken for anything but a canonical first-party V2 macaroon."""
    data = b64decode(token)
    reader = _Reader(data)
    if reader.byte() != VERSION:
        raise InvalidToken("token is not a version 2 macaroon")
    location = reader.optional(LOCATION)
    identifier = reader.required(IDENTIFIER)
    reader.end_of_section()
    caveats: list[bytes] = []
    while not reader.at_eos():
        if len(caveats) == MAX_CAVEATS:
            raise InvalidToken(f"token has more than {MAX_CAVEATS} caveats")
        if reader.peek_type() == LOCATION:
            raise InvalidToken("first-party caveats carry no location")
        caveat = reader.required(IDENTIFIER)
        if len(caveat) > MAX_CAVEAT_BYTES:
            raise InvalidToken(f"a caveat is longer than {MAX_CAVEAT_BYTES} bytes")
        if reader.peek_type() == VID:
            raise InvalidToken("third-party caveats are not accepted")
        reader.end_of_section()
        caveats.append(caveat)
    reader.end_of_section()
    signature = reader.required(SIGNATURE)
    if len(signature) != 32:
        raise InvalidToken("token signature is not 32 bytes")
    if not reader.done():
        raise InvalidToken("token has bytes after its signature")
    return RawMacaroon(location, identifier, tuple(caveats), signature)


def encode(m: RawMacaroon) -> str:
    out = bytearray([VERSION])
    if m.location:
        _field(out, LOCATION, m.location)
    _field(out, IDENTIFIER, m.identifier)
    out.append(EOS)
    for caveat in m.caveats:
        _field(out, IDENTIFIER, caveat)
        out.append(EOS)
    out.append(EOS)
    _field(out, SIGNATURE, m.signature)
    return b64encode(bytes(out))


def _field(out: bytearray, kind: int, data: bytes) -> None:
    out.append(kind)
    n = len(data)
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    out += data


class _Reader:
    """A cursor over the decoded bytes; every read is bounds-checked and raises InvalidToken."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise InvalidToken("token ends early")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def peek_type(self) -> int:
        if self.pos >= len(self.data):
            raise InvalidToken("token ends early")
        return self.data[self.pos]

    def at_eos(self) -> bool:
        return self.peek_type() == EOS

    def done(self) -> bool:
        return self.pos == len(self.data)

    def end_of_section(self) -> None:
        if self.byte() != EOS:
            raise InvalidToken("token has an unexpected field")

    def optional(self, kind: int) -> bytes:
        return self.required(kind) if self.peek_type() == kind else b""

    def required(self, kind: int) -> bytes:
        if self.byte() != kind:
            raise InvalidToken("token has a missing or misplaced field")
        length = self._uvarint()
        end = self.pos + length
        if end > len(self.data):
            raise InvalidToken("token ends early")
        value = self.data[self.pos : end]
        self.pos = end
        return value

    def _uvarint(self) -> int:
        value, shift = 0, 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                # Minimal encoding only: a trailing zero continuation byte would be a second spelling.
                if b == 0 and shift:
                    raise InvalidToken("token has a non-minimal length")
                break
            shift += 7
            if shift > 14:  # 3 bytes cover 2 MiB, far past any field a 16 KiB token can hold
                raise InvalidToken("token has an oversized field")
        return value
