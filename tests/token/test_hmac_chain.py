"""The chain's own HMAC-SHA256 (app.token.hmac_chain) against the standard library's, byte for byte."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from app.token import hmac_chain
from app.token.keys import KeyRing

# Key lengths around the block size (64): shorter keys are padded, longer ones hashed first.
KEY_LENGTHS = (0, 1, 23, 31, 32, 33, 63, 64, 65, 100, 200)


def reference(key: bytes, msg: bytes) -> bytes:
    return hmac.digest(key, msg, "sha256")


@pytest.mark.parametrize("length", KEY_LENGTHS)
def test_keyed_hmac_is_hmac_sha256_for_keys_of_any_length(length: int) -> None:
    rng = random.Random(length)
    key = rng.randbytes(length)
    mac = hmac_chain.KeyedHmac(key)
    for size in (0, 1, 55, 56, 63, 64, 65, 1024, 16 * 1024):  # messages across SHA-256's block boundaries
        msg = rng.randbytes(size)
        assert mac.digest(msg) == reference(key, msg)
    # The hashed key states are copied per message, never consumed: the same message again, the same MAC.
    assert mac.digest(b"again") == mac.digest(b"again") == reference(key, b"again")


def test_hmac32_is_hmac_sha256_under_a_32_byte_key() -> None:
    rng = random.Random(32)
    for _ in range(500):
        key, msg = rng.randbytes(32), rng.randbytes(rng.randrange(0, 2048))
        assert hmac_chain.hmac32(key, msg) == reference(key, msg)
    hostile = (bytes(32), b"\xff" * 32, b"\x36" * 32, b"\x5c" * 32)  # keys equal to a pad: XOR gives zeros
    for key in hostile:
        assert hmac_chain.hmac32(key, b"delegate = x") == reference(key, b"delegate = x")


def test_signatures_are_the_standard_macaroon_chain() -> None:
    rng = random.Random(7)
    root_key, identifier = rng.randbytes(32), b"ac1:k1:" + rng.randbytes(16).hex().encode()
    caveats = tuple(rng.randbytes(rng.randrange(1, 300)) for _ in range(20))
    sig = reference(reference(b"macaroons-key-generator", root_key), identifier)
    expected = [sig]
    for caveat in caveats:
        sig = reference(sig, caveat)
        expected.append(sig)
    assert hmac_chain.signatures(root_key, identifier, caveats) == expected
    assert hmac_chain.extend(expected[3], caveats[3]) == expected[4]


def test_root_keys_are_hmac_of_the_master_key() -> None:
    masters = {"short": b"k" * 32, "long": bytes(range(200))}  # a master key past the block is hashed first
    ring = KeyRing(masters)
    for kid, master in masters.items():
        root = ring.root_key(kid, bytes(16), b"https://example")
        assert root == reference(master, b"agentcaps/root/v1\x00" + bytes(16) + b"\x00" + b"https://example")
    assert ring.root_key("other", bytes(16), b"") is None
    assert "KeyedHmac(...)" not in repr(ring) and "k" * 32 not in repr(ring)


def test_prefix_ids_keep_their_derivation() -> None:
    """Counters and revocation marks in a store are keyed by prefix ids: a change of derivation would lose them."""
    sigs = [random.Random(n).randbytes(32) for n in range(12)]
    expected = tuple(hashlib.sha256(b"agentcaps/prefix\x00" + sig).hexdigest()[:32] for sig in sigs)
    assert hmac_chain.prefix_ids(sigs) == expected
    assert tuple(map(hmac_chain.prefix_id, sigs)) == expected
    assert hmac_chain.prefix_id(bytes(32)) == "15129dd26cd77ee0e7f6c3be55ff7f4c"  # as stores hold it today
