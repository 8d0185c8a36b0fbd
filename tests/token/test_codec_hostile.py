"""Strict decoding: everything but one canonical first-party V2 macaroon is InvalidToken, before any HMAC."""

from __future__ import annotations

import base64

import pytest
from pymacaroons import MACAROON_V1, Macaroon

from app.errors import InvalidToken
from app.token import codec
from app.token.keys import KeyRing, new_key_entry
from app.token.mint import attenuate, mint
from app.token.verifier import Verifier

RING = KeyRing(new_key_entry())
LOCATION = "http://agentcaps.test"
TOKEN, TOKEN_ID = mint(RING, LOCATION, ["delegate = orchestrator", "budget <= 10 USD"])


def raw_bytes(token: str = TOKEN) -> bytes:
    return codec.b64decode(token)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def field(kind: int, data: bytes) -> bytes:
    """One V2 field, built by hand so tests can build what our encoder never would."""
    out = bytearray([kind])
    n = len(data)
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + data


def build(
    *,
    version: int = 2,
    location: bytes = LOCATION.encode(),
    caveats: list[bytes] | None = None,
    signature: bytes = b"\x00" * 32,
    caveat_extra: bytes = b"",
    trailer: bytes = b"",
    identifier: bytes = b"ac1:k:" + b"0" * 32,
) -> str:
    out = bytes([version]) + field(1, location) + field(2, identifier) + b"\x00"
    for caveat in caveats if caveats is not None else [b"delegate = a"]:
        out += caveat_extra + field(2, caveat) + b"\x00"
    return b64(out + b"\x00" + field(6, signature) + trailer)


def test_the_hand_built_form_is_the_real_one() -> None:
    raw = codec.decode(TOKEN)
    assert build(caveats=list(raw.caveats), signature=raw.signature, identifier=raw.identifier) == TOKEN


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("empty", ""),
        (
            "plus and slash",
            TOKEN.replace("-", "+").replace("_", "/") if ("-" in TOKEN or "_" in TOKEN) else "+" + TOKEN,
        ),
        ("space", TOKEN[:10] + " " + TOKEN[10:]),
        ("newline", TOKEN + "\n"),
        ("tab", "\t" + TOKEN),
        ("three pads", TOKEN + "==="),
        ("pad in the middle", TOKEN[:8] + "=" + TOKEN[8:]),
        ("unicode", TOKEN[:-1] + "é"),
        ("length 4n+1", TOKEN + "A" * (5 - len(TOKEN) % 4 if len(TOKEN) % 4 != 1 else 4)),
        ("version 1", build(version=1)),
        ("version 3", build(version=3)),
        ("31-byte signature", build(signature=b"\x01" * 31)),
        ("33-byte signature", build(signature=b"\x01" * 33)),
        ("bytes after the signature", build(trailer=b"\x00")),
        (
            "third-party caveat",
            b64(raw_bytes()[:-35] + field(2, b"c") + field(4, b"vid") + b"\x00\x00" + field(6, b"s" * 32)),
        ),
        ("caveat location", build(caveat_extra=field(1, b"http://elsewhere"))),
        ("129 caveats", build(caveats=[b"delegate = a"] * 129)),
        ("1025-byte caveat", build(caveats=[b"x" * 1025])),
        ("over 16 KiB", "A" * (16 * 1024 + 4)),
        ("garbage identifier", build(identifier=b"not-ours")),
        ("no identifier", b64(bytes([2]) + field(1, b"l") + b"\x00\x00" + field(6, b"s" * 32))),
    ],
)
def test_malformed_tokens_are_invalid(name: str, token: str) -> None:
    with pytest.raises(InvalidToken):
        Verifier(RING).verify(token)


def test_non_minimal_lengths_and_non_canonical_base64_are_second_spellings() -> None:
    data = raw_bytes()
    # The location length is one byte; spelling it as two (0x80|n, 0x00) must not decode.
    n = data[2]
    longer = data[:2] + bytes([0x80 | n, 0x00]) + data[3:]
    with pytest.raises(InvalidToken):
        codec.decode(b64(longer))
    last = TOKEN[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    tweaked = TOKEN[:-1] + alphabet[alphabet.index(last) ^ 1]  # flips the lowest bit: unused when len%4 != 0
    if len(TOKEN) % 4:
        with pytest.raises(InvalidToken):
            codec.decode(tweaked)


@pytest.mark.parametrize("cut", range(1, 60))
def test_a_token_cut_anywhere_is_invalid(cut: int) -> None:
    data = raw_bytes()
    with pytest.raises(InvalidToken):
        Verifier(RING).verify(b64(data[: len(data) - cut]))


def test_padding_is_optional_and_both_spellings_are_the_same_token() -> None:
    padded = TOKEN + "=" * (-len(TOKEN) % 4)
    assert Verifier(RING).verify(padded).chain_id == Verifier(RING).verify(TOKEN).chain_id


def test_unknown_key_id_and_another_ring_are_invalid() -> None:
    with pytest.raises(InvalidToken, match="unknown key id"):
        Verifier(KeyRing(new_key_entry())).verify(TOKEN)


def test_limits_are_checked_before_any_hmac(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    import app.token.chain as chain_module

    real = chain_module.signatures
    monkeypatch.setattr(chain_module, "signatures", lambda *a: calls.append(1) or real(*a))
    with pytest.raises(InvalidToken):
        Verifier(RING).verify(build(caveats=[b"delegate = a"] * 129))
    with pytest.raises(InvalidToken):
        Verifier(RING).verify("A" * (16 * 1024 + 4))
    assert calls == []


def test_the_signature_is_checked_before_any_caveat() -> None:
    tampered = attenuate(TOKEN, ["frobnicate = 1"])
    raw = codec.decode(tampered)
    forged = codec.encode(raw._replace(signature=bytes(32)))
    with pytest.raises(InvalidToken, match="signature"):
        Verifier(RING).verify(forged)


def test_a_version_1_macaroon_is_invalid() -> None:
    raw = codec.decode(TOKEN)
    root_key = RING.root_key(RING.signing_kid, bytes.fromhex(TOKEN_ID), LOCATION.encode())
    v1 = Macaroon(location=LOCATION, identifier=raw.identifier.decode(), key=root_key, version=MACAROON_V1)
    v1.add_first_party_caveat("delegate = orchestrator")
    for text in (v1.serialize(), v1.serialize().rstrip("=")):
        with pytest.raises(InvalidToken):
            Verifier(RING).verify(text)


def test_max_caveats_and_max_caveat_size_still_verify() -> None:
    token = attenuate(TOKEN, ["arg.x = " + "a" * (1024 - 8)] + ["delegate = a"] * (128 - 3))
    assert len(Verifier(RING).verify(token).analysis.texts) == 128
    with pytest.raises(ValueError, match="at most 128"):
        attenuate(token, ["delegate = b"])
