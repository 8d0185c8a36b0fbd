"""The token identifier: format version, key id and 128-bit token id, opaque to holders.

`ac1:<kid>:<32 hex>`. Text, so any macaroon library shows it; read before the HMAC only to pick the key.
"""

from __future__ import annotations

import re
import secrets

from app.errors import InvalidToken

_ID_RE = re.compile(rb"ac1:([A-Za-z0-9_-]{1,32}):([0-9a-f]{32})")


def new_token_id() -> str:
    return secrets.token_hex(16)


def make(kid: str, token_id: str) -> bytes:
    return f"ac1:{kid}:{token_id}".encode("ascii")


def unverified_identifier(identifier: bytes) -> tuple[str, str]:
    """(kid, token_id) from an identifier whose signature is not checked yet: only to find the key."""
    m = _ID_RE.fullmatch(identifier)
    if m is None:
        raise InvalidToken("token identifier is not an agentcaps identifier")
    return m.group(1).decode("ascii"), m.group(2).decode("ascii")
