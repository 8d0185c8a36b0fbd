"""The reference implementation's V2 vectors: our codec and HMAC chain are the standard macaroon ones."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest

from app.token import chain, codec

VECTORS = sorted((Path(__file__).resolve().parents[1] / "vectors" / "libmacaroons").glob("*.vtest"))


def read(path: Path) -> tuple[bool, bytes, set[bytes], str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    authorized = "authorized" in lines
    key = next(line[4:] for line in lines if line.startswith("key ")).encode()
    exact = {line[6:].encode() for line in lines if line.startswith("exact ")}
    return authorized, key, exact, lines[-1]


def test_there_are_vectors() -> None:
    assert len(VECTORS) == 8


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_decode_encode_round_trips_byte_exactly(path: Path) -> None:
    *_, token = read(path)
    assert codec.encode(codec.decode(token)) == token


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_the_chain_and_the_caveats_decide_as_the_reference_does(path: Path) -> None:
    authorized, key, exact, token = read(path)
    raw = codec.decode(token)
    signature_ok = hmac.compare_digest(chain.signatures(key, raw.identifier, raw.caveats)[-1], raw.signature)
    caveats_ok = all(c in exact for c in raw.caveats)
    assert (signature_ok and caveats_ok) == authorized
    assert raw.location == b"http://example.org/" and raw.identifier == b"keyid"


def test_extend_is_the_first_party_step_of_the_chain() -> None:
    *_, token = read(next(p for p in VECTORS if p.stem == "caveat_v2_4"))
    raw = codec.decode(token)
    sigs = chain.signatures(b"this is the key", raw.identifier, raw.caveats)
    assert chain.extend(sigs[0], raw.caveats[0]) == sigs[1] and chain.extend(sigs[1], raw.caveats[1]) == sigs[2]
