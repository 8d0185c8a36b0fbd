"""pymacaroons interop both ways: our tokens are standard V2 macaroons, and theirs attenuate ours."""

from __future__ import annotations

import pytest
from pymacaroons import MACAROON_V2, Macaroon
from pymacaroons import Verifier as PyVerifier
from pymacaroons.exceptions import MacaroonInvalidSignatureException, MacaroonVerificationFailedException

from app.errors import InvalidToken
from app.token import codec, identifier
from app.token.keys import KeyRing, new_key_entry
from app.token.mint import attenuate, mint
from app.token.verifier import Verifier

RING = KeyRing(new_key_entry())
LOCATION = "http://agentcaps.test"
ROOT, ROOT_ID = mint(RING, LOCATION, ["delegate = orchestrator", "budget <= 10.00 USD", "tools in search,pay,gh.*"])
VERIFIER = Verifier(RING)
ROOT_KEY = RING.root_key(RING.signing_kid, bytes.fromhex(ROOT_ID), LOCATION.encode())


def accept_all() -> PyVerifier:
    v = PyVerifier()
    v.satisfy_general(lambda caveat: True)
    return v


def test_a_token_we_mint_and_attenuate_verifies_in_pymacaroons_with_the_derived_root_key() -> None:
    child = attenuate(ROOT, ["delegate = researcher", "tools in search", "arg.repo = acme/web"])
    chain = VERIFIER.verify(child)
    root_key = RING.root_key(chain.key_id, bytes.fromhex(chain.token_id), chain.location.encode())
    assert root_key == ROOT_KEY
    m = Macaroon.deserialize(child)
    assert m.version == MACAROON_V2 and m.location == LOCATION
    assert m.identifier_bytes == identifier.make(RING.signing_kid, ROOT_ID)
    assert [c.caveat_id_bytes.decode() for c in m.first_party_caveats()] == list(chain.analysis.texts)
    assert accept_all().verify(m, root_key)
    # pymacaroons checks each caveat too: one it cannot satisfy fails the verification.
    exact = PyVerifier()
    for text in chain.analysis.texts:
        exact.satisfy_exact(text)
    assert exact.verify(m, root_key)
    partial = PyVerifier()
    for text in chain.analysis.texts[:-1]:
        partial.satisfy_exact(text)
    with pytest.raises(MacaroonVerificationFailedException):
        partial.verify(m, root_key)


@pytest.mark.parametrize(
    "wrong_key",
    [
        b"\x00" * 32,
        RING.keys[RING.signing_kid],  # the master key itself never signs
        RING.root_key(RING.signing_kid, bytes(16), LOCATION.encode()),  # another token id
        RING.root_key(RING.signing_kid, bytes.fromhex(ROOT_ID), b"http://elsewhere"),  # another location
    ],
)
def test_pymacaroons_refuses_our_token_under_any_other_key(wrong_key: bytes | None) -> None:
    assert wrong_key is not None
    with pytest.raises(MacaroonInvalidSignatureException):
        accept_all().verify(Macaroon.deserialize(ROOT), wrong_key)


def test_a_token_attenuated_by_pymacaroons_verifies_here_with_its_caveats() -> None:
    added = ["delegate = buyer", "tools in pay", "cost <= 0.50 USD", "arg.memo = café"]
    m = Macaroon.deserialize(ROOT)
    for text in added:
        m.add_first_party_caveat(text)
    theirs = m.serialize()
    parent, child = VERIFIER.verify(ROOT), VERIFIER.verify(theirs)
    assert child.analysis.texts == (*parent.analysis.texts, *added)
    assert child.analysis.delegation == ("orchestrator", "buyer") and child.analysis.tools == ("pay",)
    assert child.token_id == parent.token_id and child.prefixes[: len(parent.prefixes)] == parent.prefixes
    # The same attenuation done here is the same string, byte for byte: one format, one chain.
    assert theirs == attenuate(ROOT, added)


def test_a_token_attenuated_in_turns_by_both_libraries_verifies() -> None:
    step1 = Macaroon.deserialize(attenuate(ROOT, ["delegate = a"])).add_first_party_caveat("tools in search")
    step2 = attenuate(step1.serialize(), ["delegate = b"])
    step3 = Macaroon.deserialize(step2).add_first_party_caveat("budget <= 1 USD").serialize()
    chain = VERIFIER.verify(step3)
    assert chain.analysis.delegation == ("orchestrator", "a", "b")
    assert chain.analysis.texts[-4:] == ("delegate = a", "tools in search", "delegate = b", "budget <= 1 USD")


def test_a_token_made_by_pymacaroons_with_the_derived_root_key_verifies_here() -> None:
    token_id = "00112233445566778899aabbccddeeff"
    root_key = RING.root_key(RING.signing_kid, bytes.fromhex(token_id), LOCATION.encode())
    m = Macaroon(
        location=LOCATION,
        identifier=identifier.make(RING.signing_kid, token_id),
        key=root_key,
        version=MACAROON_V2,
    )
    m.add_first_party_caveat("delegate = orchestrator")
    chain = VERIFIER.verify(m.serialize())
    assert chain.token_id == token_id and chain.analysis.holder == "orchestrator"


def test_a_pymacaroons_token_under_a_guessed_root_key_is_refused() -> None:
    # Knowing the identifier format is not enough: the root key comes from a master key nobody holds.
    m = Macaroon(location=LOCATION, identifier=codec.decode(ROOT).identifier, key=b"guess" * 8, version=MACAROON_V2)
    m.add_first_party_caveat("delegate = orchestrator")
    with pytest.raises(InvalidToken, match="signature"):
        VERIFIER.verify(m.serialize())


def test_pymacaroons_reads_a_padded_token_as_we_do() -> None:
    padded = ROOT + "=" * (-len(ROOT) % 4)
    assert VERIFIER.verify(padded).chain_id == VERIFIER.verify(ROOT).chain_id
    assert Macaroon.deserialize(padded).signature == Macaroon.deserialize(ROOT).signature
