"""Key ring: parsing, rotation, secrecy; the verified-chain cache never skips a per-call check."""

from __future__ import annotations

import pytest

from app.errors import ConfigError, InvalidToken
from app.token.keys import KeyRing, new_key_entry
from app.token.mint import attenuate, mint
from app.token.verifier import Verifier
from caveats.base import Context

LOCATION = "http://agentcaps.test"


def test_rotation_keeps_old_tokens_and_signs_new_ones_with_the_new_key() -> None:
    old = KeyRing(new_key_entry())
    token, _ = mint(old, LOCATION, ["delegate = a"])
    rotated = old.rotated()
    assert rotated.signing_kid != old.signing_kid and list(rotated.keys)[1:] == list(old.keys)
    assert Verifier(rotated).verify(token).key_id == old.signing_kid
    fresh, _ = mint(rotated, LOCATION, ["delegate = a"])
    assert Verifier(rotated).verify(fresh).key_id == rotated.signing_kid
    without_old = KeyRing({rotated.signing_kid: rotated.keys[rotated.signing_kid]})
    with pytest.raises(InvalidToken, match="unknown key id"):
        Verifier(without_old).verify(token)


def test_the_ring_round_trips_and_never_shows_its_keys() -> None:
    ring = KeyRing(new_key_entry()).rotated()
    assert KeyRing.parse(ring.serialize()).keys == ring.keys
    assert all(key.hex() not in repr(ring) and str(key) not in repr(ring) for key in ring.keys.values())
    assert ring.serialize().split(",")[0].split(":")[1] not in repr(ring)


@pytest.mark.parametrize(
    "text",
    ["", "nokey", "k1:", "k1:short", "bad kid!:" + "A" * 43, "k1:" + "A" * 43 + ",k1:" + "B" * 43, "k1:%%%%"],
)
def test_bad_master_keys_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(ConfigError) as refused:
        KeyRing.parse(text)
    secret = text.partition(":")[2]
    assert not secret or len(secret) < 8 or secret not in str(refused.value)


def test_the_root_key_is_bound_to_token_id_and_location() -> None:
    ring = KeyRing(new_key_entry())
    kid = ring.signing_kid
    keys = {
        ring.root_key(kid, bytes(16), b"a"),
        ring.root_key(kid, b"\x01" * 16, b"a"),
        ring.root_key(kid, bytes(16), b"b"),
    }
    assert len(keys) == 3 and ring.root_key("nope", bytes(16), b"a") is None


def test_a_cached_chain_still_checks_expiry_and_the_call_every_time() -> None:
    ring = KeyRing(new_key_entry())
    token, _ = mint(ring, LOCATION, ["delegate = a", "expires < 2030-01-01T00:00:00Z", "tools in search"])
    verifier = Verifier(ring)
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # cached
    before = Context(1_800_000_000, "search", hops=1)
    after = Context(1_900_000_000, "search", hops=1)
    assert first.analysis.evaluate(before) is None
    expired = first.analysis.evaluate(after)
    assert expired is not None and expired.code == "expired"
    wrong_tool = first.analysis.evaluate(Context(1_800_000_000, "pay", hops=1))
    assert wrong_tool is not None and wrong_tool.code == "tool_not_allowed"


def test_invalid_tokens_are_not_cached_as_valid() -> None:
    ring = KeyRing(new_key_entry())
    token, _ = mint(ring, LOCATION, ["delegate = a"])
    verifier = Verifier(ring)
    child = attenuate(token, ["tools in search"])
    forged = child[:-2] + ("A" if child[-2] != "A" else "B") + child[-1]
    for _ in range(2):
        with pytest.raises(InvalidToken):
            verifier.verify(forged)
    assert verifier.verify(child).analysis.tools == ("search",)
