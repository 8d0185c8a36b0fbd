"""The reference implementation's V2 vectors: our codec and HMAC chain are the standard macaroon ones.

Read from tests/vectors/libmacaroons (a copy of ../shared/vectors, see tests/vectors/README.md), so that a clean
clone runs them too.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import NamedTuple

import pytest

from app.errors import InvalidToken
from app.token import codec, hmac_chain
from app.token.verifier import Verifier
from tests.token.forge import RING

VECTORS = sorted((Path(__file__).resolve().parents[1] / "vectors" / "libmacaroons").glob("*.vtest"))
IDS = [p.stem for p in VECTORS]


class Vector(NamedTuple):
    authorized: bool
    key: bytes
    accepted: frozenset[bytes]  # the `exact` predicates the vector's verifier satisfies
    token: str


def read(path: Path) -> Vector:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    verdicts = [line for line in lines if line in ("authorized", "unauthorized")]
    assert len(verdicts) == 1 and not any(line.startswith("general ") for line in lines), path
    key = next(line.removeprefix("key ") for line in lines if line.startswith("key "))
    accepted = frozenset(line.removeprefix("exact ").encode() for line in lines if line.startswith("exact "))
    return Vector(verdicts[0] == "authorized", key.encode(), accepted, lines[-1])


def signature_holds(v: Vector) -> bool:
    raw = codec.decode(v.token)
    return hmac.compare_digest(hmac_chain.signatures(v.key, raw.identifier, raw.caveats)[-1], raw.signature)


def test_every_vector_is_here() -> None:
    assert len(VECTORS) == 8
    assert {read(p).authorized for p in VECTORS} == {True, False}


@pytest.mark.parametrize("path", VECTORS, ids=IDS)
def test_decode_then_encode_is_byte_exact(path: Path) -> None:
    token = read(path).token
    raw = codec.decode(token)
    assert codec.encode(raw) == token
    assert raw.location == b"http://example.org/" and raw.identifier == b"keyid" and len(raw.signature) == 32
    assert codec.decode(token + "=" * (-len(token) % 4)) == raw  # padding is optional


@pytest.mark.parametrize("path", VECTORS, ids=IDS)
def test_authorized_vectors_verify_with_their_key(path: Path) -> None:
    v = read(path)
    caveats_accepted = all(c in v.accepted for c in codec.decode(v.token).caveats)
    if v.authorized:
        assert signature_holds(v) and caveats_accepted
    elif caveats_accepted:  # nothing but the key can make it unauthorized: the chain must refuse it
        assert not signature_holds(v)
    else:  # refused by a caveat its verifier does not accept; the chain itself is the standard one
        assert signature_holds(v)


def test_the_wrong_key_vector_is_refused_by_the_chain_alone() -> None:
    v = read(next(p for p in VECTORS if p.stem == "root_v2_2"))
    assert not v.authorized and v.key != b"this is the key" and not signature_holds(v)
    assert signature_holds(v._replace(key=b"this is the key"))


def test_extend_is_one_step_of_the_chain() -> None:
    v = read(next(p for p in VECTORS if p.stem == "caveat_v2_4"))
    raw = codec.decode(v.token)
    sigs = hmac_chain.signatures(v.key, raw.identifier, raw.caveats)
    assert len(sigs) == 3
    assert (
        hmac_chain.extend(sigs[0], raw.caveats[0]) == sigs[1] and hmac_chain.extend(sigs[1], raw.caveats[1]) == sigs[2]
    )
    # Attenuating the one-caveat vector offline gives the two-caveat vector byte for byte.
    one = read(next(p for p in VECTORS if p.stem == "caveat_v2_1")).token
    head = codec.decode(one)
    assert codec.encode(
        head._replace(caveats=raw.caveats, signature=hmac_chain.extend(head.signature, raw.caveats[1]))
    ) == (v.token)


@pytest.mark.parametrize("path", VECTORS, ids=IDS)
def test_a_standard_macaroon_with_a_foreign_identifier_is_not_ours(path: Path) -> None:
    with pytest.raises(InvalidToken, match="identifier"):
        Verifier(RING).verify(read(path).token)
