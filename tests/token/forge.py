"""Hand-built V2 tokens for the hostile-input tests: what our encoder never writes, signed as if it might verify.

`signed(...)` signs with the real key ring but builds the bytes field by field, so a test can change one
thing a signature does not cover (a length's spelling, a version byte, a trailing byte) and show that this
one change alone is why the token is refused.
"""

from __future__ import annotations

import base64

from app.token import hmac_chain, identifier
from app.token.keys import KeyRing, new_key_entry

RING = KeyRing(new_key_entry())
LOCATION = "http://agentcaps.test"
TOKEN_ID = "0123456789abcdef0123456789abcdef"
EOS, LOC, ID, VID, SIG = 0, 1, 2, 4, 6
_signatures = hmac_chain.signatures  # bound once: tests count the verifier's calls to hmac_chain.signatures


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def varint(n: int, extra: int = 0) -> bytes:
    """n as a LEB128 uvarint; `extra` > 0 spells it non-minimally with that many trailing zero groups."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    for _ in range(extra):
        out[-1] |= 0x80
        out.append(0)
    return bytes(out)


def field(kind: int, data: bytes, extra: int = 0) -> bytes:
    return bytes([kind]) + varint(len(data), extra) + data


def root_key(ring: KeyRing = RING, token_id: str = TOKEN_ID, location: str = LOCATION) -> bytes:
    key = ring.root_key(ring.signing_kid, bytes.fromhex(token_id), location.encode())
    assert key is not None
    return key


def signed(
    caveats: list[bytes],
    *,
    version: int = 2,
    location: bytes = LOCATION.encode(),
    extra: dict[str, int] | None = None,
    caveat_prefix: bytes = b"",
    signature: bytes | None = None,
    trailer: bytes = b"",
    ring: KeyRing = RING,
    ident: bytes | None = None,
) -> bytes:
    """The V2 bytes of a token whose HMAC chain is right for its location, identifier and caveats.

    `extra` spells a field's length non-minimally: keys `location`, `identifier`, `caveat`, `signature`.
    """
    extra = extra or {}
    ident = identifier.make(ring.signing_kid, TOKEN_ID) if ident is None else ident
    key = ring.root_key(ring.signing_kid, bytes.fromhex(TOKEN_ID), location)
    assert key is not None
    sig = _signatures(key, ident, tuple(caveats))[-1] if signature is None else signature
    out = bytes([version])
    if location:
        out += field(LOC, location, extra.get("location", 0))
    out += field(ID, ident, extra.get("identifier", 0)) + bytes([EOS])
    for caveat in caveats:
        out += caveat_prefix + field(ID, caveat, extra.get("caveat", 0)) + bytes([EOS])
    return out + bytes([EOS]) + field(SIG, sig, extra.get("signature", 0)) + trailer
