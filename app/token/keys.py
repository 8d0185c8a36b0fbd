"""Master keys by key id: the first signs, all verify (rotation). Per-token root keys are derived, never stored.

root_key = HMAC(master[kid], "agentcaps/root/v1" | token_id | location): binding the location too means
that no byte of a token, not even its unsigned location hint, can change and still verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass, field

from app.errors import ConfigError
from app.token.hmac_chain import KeyedHmac

KID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_ROOT_TAG = b"agentcaps/root/v1\x00"
MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class KeyRing:
    keys: dict[str, bytes] = field(repr=False)  # kid -> master key, in order: the first signs; never printed
    version: str = field(init=False)
    _macs: dict[str, KeyedHmac] = field(init=False, repr=False, compare=False)  # each key hashed once, not per token

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError("the key ring needs at least one master key")
        # Names this exact set of keys without revealing them; caches keyed on it empty on rotation.
        digest = hashlib.sha256(b"".join(k.encode() + b"\x00" + v for k, v in self.keys.items()))
        object.__setattr__(self, "version", digest.hexdigest()[:16])
        object.__setattr__(self, "_macs", {kid: KeyedHmac(key) for kid, key in self.keys.items()})

    @property
    def signing_kid(self) -> str:
        return next(iter(self.keys))

    def root_key(self, kid: str, token_id: bytes, location: bytes) -> bytes | None:
        mac = self._macs.get(kid)
        if mac is None:
            return None
        return mac.digest(_ROOT_TAG + token_id + b"\x00" + location)

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """`kid:base64url-key[,kid:key...]` as in AGENTCAPS_MASTER_KEYS (the error never echoes a key)."""
        keys: dict[str, bytes] = {}
        for n, item in enumerate(text.strip().split(","), 1):
            kid, sep, encoded = item.strip().partition(":")
            if not sep or not KID_RE.fullmatch(kid):
                raise ConfigError(f"master key {n}: expected kid:base64url-key with kid of [A-Za-z0-9_-]{{1,32}}")
            try:
                key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except (binascii.Error, ValueError):
                raise ConfigError(f"master key {kid!r}: the key is not URL-safe base64") from None
            if len(key) < MIN_KEY_BYTES:
                raise ConfigError(f"master key {kid!r}: needs at least {MIN_KEY_BYTES} bytes")
            if kid in keys:
                raise ConfigError(f"master key id {kid!r} appears twice")
            keys[kid] = key
        return cls(keys)

    def serialize(self) -> str:
        return ",".join(f"{kid}:{base64.urlsafe_b64encode(k).rstrip(b'=').decode()}" for kid, k in self.keys.items())

    def rotated(self) -> KeyRing:
        """A ring whose new first key signs while every older key still verifies."""
        return KeyRing({**new_key_entry(), **self.keys})


def new_key_entry() -> dict[str, bytes]:
    return {"k" + secrets.token_hex(4): secrets.token_bytes(32)}
