"""The standard macaroon HMAC-SHA256 chain, and the prefix ids that counters and revocation key on.

sig_0 = HMAC(HMAC("macaroons-key-generator", root_key), identifier); sig_i = HMAC(sig_{i-1}, caveat_i).
A prefix id is a one-way digest of sig_i: it names the chain up to caveat i without revealing sig_i,
which would let anyone extend that prefix.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from hashlib import sha256
from typing import cast

# hmac.digest("sha256") ends in OpenSSL's one-shot HMAC (`_hashlib.hmac_digest`); calling that directly skips
# hmac.digest's Python-level dispatch, about 0.2 us of 1.5 per HMAC, and a verify does one per caveat.
try:
    import _hashlib

    hmac_sha256 = cast(Callable[[bytes, bytes, str], bytes], _hashlib.hmac_digest)
except (ImportError, AttributeError):  # pragma: no cover - a Python built without OpenSSL
    hmac_sha256 = hmac.digest

KEY_GENERATOR = b"macaroons-key-generator"
_PREFIX_TAG = b"agentcaps/prefix\x00"


def derived_key(root_key: bytes) -> bytes:
    return hmac_sha256(KEY_GENERATOR, root_key, "sha256")


def signatures(root_key: bytes, identifier: bytes, caveats: tuple[bytes, ...]) -> list[bytes]:
    """[sig_0, sig_1, ..., sig_n]: the chain after the identifier and after each caveat."""
    sig = hmac_sha256(derived_key(root_key), identifier, "sha256")
    sigs = [sig]
    for caveat in caveats:
        sig = hmac_sha256(sig, caveat, "sha256")
        sigs.append(sig)
    return sigs


def extend(signature: bytes, caveat: bytes) -> bytes:
    """Attenuate: the signature after appending one first-party caveat (offline, no key needed)."""
    return hmac.digest(signature, caveat, "sha256")


def prefix_id(signature: bytes) -> str:
    return sha256(_PREFIX_TAG + signature).hexdigest()[:32]


def prefix_ids(sigs: list[bytes]) -> tuple[str, ...]:
    """prefix_id of each signature, inlined: a verifier computes one per caveat of every new token."""
    return tuple([sha256(_PREFIX_TAG + sig).hexdigest()[:32] for sig in sigs])
