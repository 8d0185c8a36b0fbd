"""Key ring and verifier: signature before caveats, rotation and removal, and a cache that skips no per-call check."""

from __future__ import annotations

import pytest

import app.token.verifier as verifier_module
from app.errors import ConfigError, InvalidToken
from app.token import codec, hmac_chain, identifier
from app.token.keys import KeyRing, new_key_entry
from app.token.mint import attenuate, mint
from app.token.verifier import Verifier
from caveats.base import Context
from caveats.denial import Code

LOCATION = "http://agentcaps.test"


# --- the signature is checked before any caveat is read -----------------------------------------------------------

MALFORMED = [
    b"frobnicate = 1",  # unknown key
    b"budget <= ten USD",
    b"tools in search\n",  # a control character
    b"expires < 2030-02-30T00:00:00Z",
    b"\xff\xfe not UTF-8",
    b"",
    b"x" * 1024,
]


@pytest.mark.parametrize("caveat", MALFORMED, ids=range(len(MALFORMED)))
def test_a_tampered_token_with_a_malformed_caveat_is_invalid_not_malformed(
    caveat: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = KeyRing(new_key_entry())
    token, _ = mint(ring, LOCATION, ["delegate = a"])
    raw = codec.decode(token)
    good = codec.encode(
        raw._replace(caveats=(*raw.caveats, caveat), signature=hmac_chain.extend(raw.signature, caveat))
    )
    analysed = Verifier(ring).verify(good).analysis.evaluate(Context(0, "search", hops=1))
    assert analysed is not None and analysed.code in (Code.MALFORMED_CAVEAT, Code.UNKNOWN_CAVEAT)

    def no_caveat_may_be_read(*_: object) -> None:
        raise AssertionError("a caveat was read before the signature held")

    monkeypatch.setattr(verifier_module, "analyse", no_caveat_may_be_read)
    for forged in (
        codec.encode(raw._replace(caveats=(*raw.caveats, caveat))),  # the caveat appended, signature not extended
        codec.encode(raw._replace(caveats=(caveat,), signature=hmac_chain.extend(raw.signature, caveat))),  # replaced
        codec.encode(raw._replace(caveats=(*raw.caveats, caveat), signature=bytes(32))),
    ):
        with pytest.raises(InvalidToken, match="signature"):
            Verifier(ring).verify(forged)


# --- rotation and removal ---------------------------------------------------------------------------------------


def test_rotation_keeps_old_tokens_verifying_and_signs_new_ones_with_the_new_kid() -> None:
    old = KeyRing(new_key_entry())
    token, _ = mint(old, LOCATION, ["delegate = a"])
    rotated = old.rotated()
    twice = rotated.rotated()
    assert rotated.signing_kid != old.signing_kid and list(rotated.keys)[1:] == list(old.keys)
    assert list(twice.keys)[1:] == list(rotated.keys) and rotated.version != old.version
    for ring in (rotated, twice):
        assert Verifier(ring).verify(token).key_id == old.signing_kid
        assert Verifier(ring).verify(attenuate(token, ["tools in search"])).key_id == old.signing_kid
    fresh, fresh_id = mint(rotated, LOCATION, ["delegate = a"])
    kid, token_id = identifier.unverified_identifier(codec.decode(fresh).identifier)
    assert (kid, token_id) == (rotated.signing_kid, fresh_id)
    assert Verifier(rotated).verify(fresh).key_id == rotated.signing_kid
    assert Verifier(twice).verify(fresh).key_id == rotated.signing_kid
    with pytest.raises(InvalidToken, match="unknown key id"):
        Verifier(old).verify(fresh)  # a verifier that has not rotated yet does not know the new key


def test_a_new_verifier_without_a_removed_key_rejects_its_tokens_even_after_another_cached_them() -> None:
    ring = KeyRing(new_key_entry()).rotated()
    old_kid, new_kid = list(ring.keys)[1], ring.signing_kid
    old_token, _ = mint(KeyRing({old_kid: ring.keys[old_kid]}), LOCATION, ["delegate = a"])
    new_token, _ = mint(ring, LOCATION, ["delegate = a"])
    before = Verifier(ring)
    assert before.verify(old_token).key_id == old_kid  # now cached by that verifier
    after = Verifier(KeyRing({new_kid: ring.keys[new_kid]}))
    with pytest.raises(InvalidToken, match="unknown key id"):
        after.verify(old_token)
    with pytest.raises(InvalidToken, match="unknown key id"):
        after.verify(attenuate(old_token, ["tools in search"]))
    assert after.verify(new_token).key_id == new_kid


def test_the_same_kid_with_another_key_is_a_bad_signature() -> None:
    ring = KeyRing(new_key_entry())
    token, _ = mint(ring, LOCATION, ["delegate = a"])
    impostor = KeyRing({ring.signing_kid: bytes(32)})
    with pytest.raises(InvalidToken, match="signature"):
        Verifier(impostor).verify(token)


def test_the_ring_round_trips_and_never_shows_its_keys() -> None:
    ring = KeyRing(new_key_entry()).rotated()
    assert KeyRing.parse(ring.serialize()).keys == ring.keys
    for key in ring.keys.values():
        assert key.hex() not in repr(ring) and str(key) not in repr(ring)
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


def test_the_root_key_is_bound_to_the_key_id_token_id_and_location() -> None:
    ring = KeyRing(new_key_entry()).rotated()
    a, b = list(ring.keys)
    keys = {
        ring.root_key(a, bytes(16), b"a"),
        ring.root_key(b, bytes(16), b"a"),
        ring.root_key(a, b"\x01" * 16, b"a"),
        ring.root_key(a, bytes(16), b"b"),
        ring.root_key(a, bytes(16), b"a\x00"),
    }
    assert len(keys) == 5 and ring.root_key("nope", bytes(16), b"a") is None
    assert ring.keys[a] not in keys


# --- the verified-chain cache -----------------------------------------------------------------------------------


def test_a_cached_chain_still_checks_expiry_at_every_later_now() -> None:
    ring = KeyRing(new_key_entry())
    token, _ = mint(ring, LOCATION, ["delegate = a", "expires < 2030-01-01T00:00:00Z", "tools in search"])
    verifier = Verifier(ring)
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # a cache hit
    deadline = 1_893_456_000  # 2030-01-01T00:00:00Z
    assert verifier.verify(token).analysis.evaluate(Context(deadline - 1, "search", hops=1)) is None
    for later in (deadline, deadline + 1, deadline + 86_400 * 365):
        denial = verifier.verify(token).analysis.evaluate(Context(later, "search", hops=1))
        assert denial is not None and denial.code == Code.EXPIRED
    wrong_tool = verifier.verify(token).analysis.evaluate(Context(deadline - 1, "pay", hops=1))
    assert wrong_tool is not None and wrong_tool.code == Code.TOOL_NOT_ALLOWED


def test_invalid_tokens_are_never_cached_as_valid() -> None:
    ring = KeyRing(new_key_entry())
    token, _ = mint(ring, LOCATION, ["delegate = a"])
    verifier = Verifier(ring)
    child = attenuate(token, ["tools in search"])
    raw = codec.decode(child)
    forged = codec.encode(raw._replace(signature=bytes(32)))
    for _ in range(3):
        with pytest.raises(InvalidToken):
            verifier.verify(forged)
    assert verifier.verify(child).analysis.tools == ("search",)
    with pytest.raises(InvalidToken):
        verifier.verify(forged)
    assert len(verifier.cache) == 1  # the child only: a refused token is not remembered


def test_an_evicted_chain_verifies_again_the_same() -> None:
    ring = KeyRing(new_key_entry())
    tokens = [mint(ring, LOCATION, [f"delegate = a{i}"])[0] for i in range(4)]
    verifier = Verifier(ring)
    verifier.verify(tokens[0])
    verifier.cache.max_bytes = verifier.cache.nbytes * 5 // 2  # room for two such chains
    verifier.cache.clear()
    first = [verifier.verify(t) for t in tokens]
    assert [verifier.verify(t) for t in tokens] == first
    assert len(verifier.cache) == 2
