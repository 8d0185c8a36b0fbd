"""Strict decoding: everything but one canonical first-party V2 macaroon is InvalidToken, before any HMAC.

Most hostile tokens here are signed correctly (tests/token/forge.py), so the one thing a test changes is the
only reason the token can be refused.
"""

from __future__ import annotations

import base64
import string
from collections.abc import Iterator

import pytest
from pymacaroons import MACAROON_V1, Macaroon
from pymacaroons.serializers import JsonSerializer

import app.token.hmac_chain as chain_module
from app.errors import InvalidToken
from app.token import codec
from app.token.keys import KeyRing, new_key_entry
from app.token.mint import attenuate, mint
from app.token.verifier import Verifier
from tests.token.forge import EOS, ID, LOC, LOCATION, RING, SIG, VID, b64, field, root_key, signed

URL_SAFE = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
# One caveat longer than 127 bytes, so that a two-byte length is part of every test below.
CAVEATS = [b"delegate = orchestrator", b"budget <= 10 USD", b"arg.note = " + b"x" * 150]
RAW = signed(CAVEATS)
GOOD = b64(RAW)
VERIFIER = Verifier(RING)


def refused(token: object) -> str:
    """The InvalidToken message for `token`, which must not verify."""
    with pytest.raises(InvalidToken) as e:
        VERIFIER.verify(token)  # type: ignore[arg-type]
    return str(e.value)


def with_residue(rest: int) -> str:
    """A correctly signed token whose unpadded base64 length is `rest` modulo 4."""
    for n in range(3):
        token = b64(signed([*CAVEATS, b"arg.n = " + b"1" * (n + 1)]))
        if len(token) % 4 == rest:
            return token
    raise AssertionError(rest)


@pytest.fixture
def hmac_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls: list[int] = []
    real = chain_module.signatures

    def counting(*args: object) -> list[bytes]:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(chain_module, "signatures", counting)
    yield calls


def test_the_hand_built_tokens_are_real_ones() -> None:
    chain = VERIFIER.verify(GOOD)
    assert chain.analysis.texts == tuple(c.decode() for c in CAVEATS)
    assert codec.encode(codec.decode(GOOD)) == GOOD
    assert attenuate(b64(signed(CAVEATS[:1])), [c.decode() for c in CAVEATS[1:]]) == GOOD
    for rest in (0, 2, 3):
        assert len(with_residue(rest)) % 4 == rest
        VERIFIER.verify(with_residue(rest))


# --- the base64 layer -----------------------------------------------------------------------------------------


def test_the_standard_alphabet_is_refused_even_for_the_same_bytes() -> None:
    token = next(t for t in (b64(signed([*CAVEATS, b"arg.n = %d" % i])) for i in range(500)) if "-" in t and "_" in t)
    VERIFIER.verify(token)
    standard = token.replace("-", "+").replace("_", "/")
    assert base64.b64decode(standard + "=" * (-len(standard) % 4)) == codec.b64decode(token)  # the same bytes
    assert "not URL-safe base64" in refused(standard)
    i, j = token.index("-"), token.index("_")
    refused(token[:i] + "+" + token[i + 1 :])
    refused(token[:j] + "/" + token[j + 1 :])
    refused(base64.b64encode(codec.b64decode(token)).decode())
    refused(base64.encodebytes(codec.b64decode(token)).decode())  # MIME: standard alphabet and line breaks


@pytest.mark.parametrize(
    "space", [" ", "\t", "\n", "\r", "\r\n", "\v", "\f", "\x00", "\x85", "\u00a0", "\u200b", "\u2028", "\u3000"]
)
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_whitespace_and_invisible_characters_are_refused(space: str, where: str) -> None:
    at = {"start": 0, "middle": len(GOOD) // 2, "end": len(GOOD)}[where]
    refused(GOOD[:at] + space + GOOD[at:])


def test_line_wrapped_tokens_are_refused() -> None:
    refused("\n".join(GOOD[i : i + 76] for i in range(0, len(GOOD), 76)))
    refused("\r\n".join(GOOD[i : i + 64] for i in range(0, len(GOOD), 64)))


@pytest.mark.parametrize(
    ("rest", "pads"),
    [(0, "="), (0, "=="), (0, "==="), (0, "===="), (2, "="), (2, "==="), (2, "===="), (3, "=="), (3, "===")],
)
def test_wrong_padding_is_refused(rest: int, pads: str) -> None:
    refused(with_residue(rest) + pads)


@pytest.mark.parametrize("rest", [2, 3])
def test_the_right_padding_is_optional(rest: int) -> None:
    token = with_residue(rest)
    padded = token + "=" * (-len(token) % 4)
    assert VERIFIER.verify(padded).chain_id == VERIFIER.verify(token).chain_id


@pytest.mark.parametrize("token", ["", "=", "==", "===", "====", "A", "AA", "AA==", "A===", "AAAA"])
def test_empty_and_tiny_strings_are_refused(token: str) -> None:
    refused(token)


def test_padding_anywhere_but_the_end_is_refused() -> None:
    token = with_residue(2)
    for at in (0, 1, 4, 8, len(token) // 2, len(token) - 1):
        refused(token[:at] + "==" + token[at:])
        refused(token[:at] + "=" + token[at:])
    refused(token + "==" + "AA")
    refused(token + "==" + token)


@pytest.mark.parametrize(("rest", "padded"), [(2, False), (2, True), (3, False), (3, True)])
def test_unused_trailing_bits_must_be_zero(rest: int, padded: bool) -> None:
    """Every last character that only differs in unused bits decodes to the same bytes leniently; only one is ours."""
    token = with_residue(rest)
    pads = "=" * (-len(token) % 4) if padded else ""
    raw = codec.b64decode(token)
    same_bytes = [c for c in URL_SAFE if base64.urlsafe_b64decode(token[:-1] + c + "=" * (-len(token) % 4)) == raw]
    assert len(same_bytes) == {2: 16, 3: 4}[rest] and token[-1] in same_bytes
    for c in same_bytes:
        if c != token[-1]:
            assert "canonical" in refused(token[:-1] + c + pads)
    VERIFIER.verify(token + pads)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="None"),
        pytest.param(0, id="int"),
        pytest.param(1.5, id="float"),
        pytest.param(b"", id="empty-bytes"),
        pytest.param(GOOD.encode(), id="bytes"),
        pytest.param(memoryview(GOOD.encode()), id="memoryview"),
        pytest.param(("x",), id="tuple"),
        pytest.param(
            bytearray(GOOD.encode()),
            id="bytearray",
        ),
        pytest.param(
            [GOOD],
            id="list",
        ),
        pytest.param(
            {"token": GOOD},
            id="dict",
        ),
    ],
)
def test_anything_but_a_str_is_invalid(token: object) -> None:
    refused(token)


@pytest.mark.parametrize("token", [None, 0, b"", GOOD.encode(), bytearray(GOOD.encode()), [GOOD]])
def test_the_codec_refuses_anything_but_a_str(token: object) -> None:
    with pytest.raises(InvalidToken):
        codec.decode(token)  # type: ignore[arg-type]


def test_a_token_cut_at_any_character_is_invalid() -> None:
    for n in range(len(GOOD)):
        refused(GOOD[:n])


def test_a_token_cut_at_any_byte_is_invalid() -> None:
    for n in range(len(RAW)):
        refused(b64(RAW[:n]))
        with pytest.raises(InvalidToken):
            codec.decode(b64(RAW[:n]))


# --- the V2 binary layer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 3, 0x30, 0x7F, 0x80, 0xFF])
def test_a_version_other_than_2_is_refused(version: int) -> None:
    assert "version 2" in refused(b64(signed(CAVEATS, version=version)))


def test_pymacaroons_version_1_and_json_serializations_are_refused() -> None:
    v1 = Macaroon(location=LOCATION, identifier=codec.decode(GOOD).identifier, key=root_key(), version=MACAROON_V1)
    for caveat in CAVEATS:
        v1.add_first_party_caveat(caveat)
    v2 = Macaroon.deserialize(GOOD)
    for text in (v1.serialize(), v1.serialize().rstrip("="), v2.serialize(serializer=JsonSerializer())):
        refused(text)


@pytest.mark.parametrize(
    ("signature", "why"),
    [(b"", "32 bytes"), (b"\x01" * 31, "32 bytes"), (b"\x01" * 33, "32 bytes"), (b"\x01" * 64, "32 bytes")],
)
def test_a_signature_of_another_size_is_refused(signature: bytes, why: str) -> None:
    assert why in refused(b64(signed(CAVEATS, signature=signature)))


def test_a_signature_with_a_byte_more_or_less_is_refused() -> None:
    sig = codec.decode(GOOD).signature
    refused(b64(signed(CAVEATS, signature=sig[:31])))
    refused(b64(signed(CAVEATS, signature=sig + b"\x00")))
    refused(b64(signed(CAVEATS, signature=b"\x00" + sig)))


@pytest.mark.parametrize(
    "trailer", [b"\x00", b"\x02", b"\xff", field(SIG, b"s" * 32), field(ID, b"delegate = x") + b"\x00", RAW]
)
def test_bytes_after_the_signature_are_refused(trailer: bytes) -> None:
    assert "after its signature" in refused(b64(signed(CAVEATS, trailer=trailer)))


def test_two_tokens_in_one_string_are_refused() -> None:
    refused(GOOD + GOOD)
    refused(GOOD + "." + GOOD)
    refused(b64(RAW + RAW))


def test_a_third_party_caveat_added_by_pymacaroons_is_refused() -> None:
    m = Macaroon.deserialize(GOOD)
    m.add_third_party_caveat("http://auth.test", "a third party's key", "tp-id")
    # Signed as pymacaroons signs a third-party caveat; the chain is fine, the format is not ours. pymacaroons
    # writes the caveat's location first, so that is the fault named.
    assert "location" in refused(m.serialize())


def test_a_vid_field_is_refused_with_or_without_a_caveat_location() -> None:
    header = RAW[: RAW.index(field(ID, CAVEATS[0]))]
    for caveat in (field(ID, b"tp-id") + field(VID, b"v" * 48), field(LOC, b"http://x") + field(ID, b"tp-id")):
        refused(b64(header + caveat + bytes([EOS, EOS]) + field(SIG, b"s" * 32)))
    vid_only = header + field(ID, b"tp-id") + field(VID, b"v" * 48) + bytes([EOS, EOS]) + field(SIG, b"s" * 32)
    assert "third-party" in refused(b64(vid_only))


def test_a_first_party_caveat_with_a_location_is_refused() -> None:
    # A caveat's location is not covered by the HMAC: accepting one would be unauthenticated slack.
    token = b64(signed(CAVEATS, caveat_prefix=field(LOC, b"http://elsewhere")))
    assert "location" in refused(token)


@pytest.mark.parametrize("kind", [3, 5, 7, 0x40, 0xFF])
def test_unknown_field_types_are_refused(kind: int) -> None:
    refused(b64(signed(CAVEATS, caveat_prefix=field(kind, b"x"))))
    refused(b64(signed(CAVEATS, trailer=field(kind, b"x"))))


def test_a_malformed_header_is_refused() -> None:
    ident = codec.decode(GOOD).identifier
    tail = bytes([EOS, EOS]) + field(SIG, codec.decode(GOOD).signature)
    for header in (
        field(ID, ident) + field(LOC, LOCATION.encode()),  # location after the identifier
        field(LOC, LOCATION.encode()) + field(ID, ident) + field(ID, ident),  # two identifiers
        field(LOC, LOCATION.encode()) + field(LOC, LOCATION.encode()) + field(ID, ident),  # two locations
        field(LOC, LOCATION.encode()),  # no identifier
        b"",
    ):
        refused(b64(bytes([2]) + header + tail))
    # No end of the header section: the first caveat runs into it.
    refused(b64(bytes([2]) + field(LOC, LOCATION.encode()) + field(ID, ident) + field(ID, CAVEATS[0]) + tail))
    # No end of the caveat section.
    no_end = RAW[: RAW.rindex(bytes([EOS]) + field(SIG, codec.decode(GOOD).signature))] + field(SIG, b"s" * 32)
    refused(b64(no_end))


@pytest.mark.parametrize("extra", [1, 2])
@pytest.mark.parametrize("which", ["location", "identifier", "caveat", "signature"])
def test_a_length_spelled_with_more_bytes_than_needed_is_refused(which: str, extra: int) -> None:
    # The lengths are not signed: accepting a second spelling would let anyone re-spell a token.
    token = b64(signed(CAVEATS, extra={which: extra}))
    assert token != GOOD and codec.b64decode(token) != RAW
    assert refused(token) in {"token has a non-minimal length", "token has an oversized field"}


def test_a_length_of_four_bytes_or_more_is_refused() -> None:
    ident = codec.decode(GOOD).identifier
    for length in (b"\x80\x80\x80\x01", b"\xff\xff\xff\x7f", b"\x81\x80\x80\x80\x00"):
        refused(b64(bytes([2, LOC]) + length + LOCATION.encode() + field(ID, ident) + bytes([EOS, EOS])))


def test_a_wrong_length_is_refused() -> None:
    for field_start in (1, RAW.index(field(ID, CAVEATS[0])), len(RAW) - 34):
        for length in (b"\x7f", b"\xff\x7f", b"\x80\x01"):
            data = RAW[: field_start + 1] + length + RAW[field_start + 2 :]
            refused(b64(data))


def test_an_empty_location_has_one_spelling() -> None:
    without = signed([b"delegate = a"], location=b"")  # no location field
    assert without[1] == ID
    spellings = [b64(without), b64(without[:1] + field(LOC, b"") + without[1:])]
    decoded = []
    for text in spellings:
        try:
            raw = codec.decode(text)
        except InvalidToken:
            continue
        decoded.append(text)
        assert codec.encode(raw) == text, "decode -> encode changed the string"
    assert len(decoded) == 1, "two strings decode to the same token"


# --- limits, checked before any HMAC ----------------------------------------------------------------------------


def of_size(n_bytes: int) -> list[bytes]:
    """Caveats (each at most 1 KiB) whose correctly signed token is exactly `n_bytes` long."""
    caveats = [b"arg.pad = " + b"a" * 990] * 12
    base = len(signed(caveats))
    last = n_bytes - base - 4  # a field type, a two-byte length and an end of section
    assert 128 <= last <= 1024
    caveats = [*caveats, b"arg.pad = " + b"b" * (last - 10)]
    assert len(signed(caveats)) == n_bytes
    return caveats


def test_a_16_kib_token_verifies_and_one_character_more_is_refused(hmac_calls: list[int]) -> None:
    at_limit = b64(signed(of_size(12 * 1024)))
    assert len(at_limit) == 16 * 1024
    VERIFIER.verify(at_limit)
    over = b64(signed(of_size(12 * 1024 + 1)))
    assert len(over) == 16 * 1024 + 2
    hmac_calls.clear()
    assert "16 KiB" in refused(over)
    assert "16 KiB" in refused(over + "==")
    assert "16 KiB" in refused("A" * (16 * 1024 + 4))
    assert hmac_calls == []


def test_128_caveats_verify_and_129_are_refused(hmac_calls: list[int]) -> None:
    VERIFIER.verify(b64(signed([b"delegate = a"] * 128)))
    hmac_calls.clear()
    assert "128 caveats" in refused(b64(signed([b"delegate = a"] * 129)))
    assert "128 caveats" in refused(b64(signed([b"x"] * 1000)))
    assert hmac_calls == []


def test_a_1024_byte_caveat_verifies_and_a_1025_byte_one_is_refused(hmac_calls: list[int]) -> None:
    VERIFIER.verify(b64(signed([b"arg.x = " + b"a" * 1016])))
    hmac_calls.clear()
    for position in (0, 1, 2):
        caveats = [b"delegate = a", b"delegate = b"]
        caveats.insert(position, b"arg.x = " + b"a" * 1017)
        assert "1024 bytes" in refused(b64(signed(caveats)))
    assert hmac_calls == []


# --- identifiers and keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ident",
    [
        b"",
        b"keyid",
        b"ac1",
        b"ac1::0123456789abcdef0123456789abcdef",
        b"ac2:k1:0123456789abcdef0123456789abcdef",
        b"AC1:k1:0123456789abcdef0123456789abcdef",
        b"ac1:k1:0123456789ABCDEF0123456789ABCDEF",  # the same token id in upper case: a second spelling
        b"ac1:k1:0123456789abcdef0123456789abcde",
        b"ac1:k1:0123456789abcdef0123456789abcdef0",
        b"ac1:k1:0123456789abcdef0123456789abcdef\n",
        b" ac1:k1:0123456789abcdef0123456789abcdef",
        b"ac1:k1:0123456789abcdef0123456789abcdef\x00",
        b"ac1:k.1:0123456789abcdef0123456789abcdef",
        b"ac1:" + b"k" * 33 + b":0123456789abcdef0123456789abcdef",
        b"ac1:k1:0123456789abcdef:0123456789abcdef",
        b"ac1:k1:\xef\xbc\x90123456789abcdef0123456789abcdef",  # a fullwidth digit
        b"\xff\xfe",
        b"ac1:k1:" + b"0" * 1000,
    ],
)
def test_a_garbage_identifier_is_refused(ident: bytes) -> None:
    assert "identifier" in refused(b64(signed(CAVEATS, ident=ident)))


def test_an_unknown_key_id_is_refused(hmac_calls: list[int]) -> None:
    other = KeyRing(new_key_entry())
    token, _ = mint(other, LOCATION, ["delegate = a"])
    hmac_calls.clear()
    assert "unknown key id" in refused(token)
    assert hmac_calls == []


def test_the_same_key_id_with_another_key_is_a_bad_signature() -> None:
    impostor = KeyRing({RING.signing_kid: b"\x07" * 32})
    token, _ = mint(impostor, LOCATION, ["delegate = a"])
    assert "signature" in refused(token)


def test_the_location_is_bound_to_the_root_key() -> None:
    elsewhere = b64(signed(CAVEATS, location=b"http://attacker.test", signature=codec.decode(GOOD).signature))
    assert "signature" in refused(elsewhere)
    assert "signature" in refused(b64(signed(CAVEATS, location=b"", signature=codec.decode(GOOD).signature)))
