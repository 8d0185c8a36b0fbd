"""The token on the wire (docs/caveats.md, Limits): tampering, strict decoding, limits, other macaroon libraries,
key rotation.

A token whose signature fails never touches the counter store: over Redis, DBSIZE does not move.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from pymacaroons import Macaroon

from app.token import codec, hmac_chain, identifier
from app.token.keys import KeyRing
from app.token.mint import attenuate
from tests.api.conftest import LOCATION, Api, ApiFactory, make_settings, padded

USD = {"amount": "1", "currency": "USD"}


def resign(token: str, caveats: tuple[bytes, ...], signature: bytes | None = None) -> str:
    raw = codec.decode(token)
    return codec.encode(raw._replace(caveats=caveats, signature=signature or raw.signature))


def flip(token: str, index: int) -> str:
    c = token[index]
    return token[:index] + ("B" if c == "A" else "A") + token[index + 1 :]


def with_url_chars(api: Api) -> str:
    """A token whose encoding holds '-' or '_' (almost every token does)."""
    for _ in range(50):
        token = api.token(budget=USD)
        if "-" in token or "_" in token:
            return token
    raise AssertionError("no token with - or _ in 50 mints")


def assert_untouched(api: Api, token: str, attempts: dict[str, str], **warm: object) -> None:
    """Every attempt is invalid_token on verify, revoke and inspect, and nothing is written anywhere."""
    api.allowed(token, cost=USD, request_id="warm", **warm)  # the store now holds this root's keys
    before_size, before = api.dbsize(), api.snapshot()
    for name, bad in attempts.items():
        for fields in ({}, {"cost": USD, "request_id": f"r-{name}"}, {"cost": USD, "mode": "hold"}):
            denied = api.denied(bad, "invalid_token", **fields)
            assert set(denied) == {"allowed", "code", "reason"}, (name, denied)
        r = api.post("/v1/revoke", {"token": bad})
        assert r.status_code == 403 and r.json()["code"] == "invalid_token", (name, r.text)
        inspected = api.post("/v1/inspect", {"token": bad})
        assert inspected.status_code == 200 and inspected.json()["valid"] is False, (name, inspected.text)
    assert api.dbsize() == before_size
    assert api.snapshot() == before


def test_tampered_tokens_are_invalid_and_write_nothing(api: Api) -> None:
    root = api.mint(budget={"amount": "10", "currency": "USD"}, tools=["search"])["token"]
    token = attenuate(root, ["delegate = a", "budget <= 5 USD", "tools in search"])
    raw = codec.decode(token)
    a, b, c, d, e, f = raw.caveats
    sig = raw.signature
    attempts = {
        "flip-identifier": flip(token, 30),
        "flip-caveat": flip(token, len(token) // 2),
        "flip-signature": flip(token, len(token) - 10),
        "drop-last-caveat": resign(token, (a, b, c, d, e)),
        "drop-middle-caveat": resign(token, (a, b, c, e, f)),
        "drop-root-budget": resign(token, (a, c, d, e, f)),
        "reorder": resign(token, (a, b, c, d, f, e)),
        "swap-budget-text": resign(token, (a, b, c, d, b"budget <= 500 USD", f)),
        "append-unsigned": resign(token, (*raw.caveats, b"tools in pay")),
        "zero-signature": resign(token, raw.caveats, bytes(32)),
        "other-root-signature": resign(token, raw.caveats, codec.decode(api.token()).signature),
        "signature-of-a-prefix": resign(token, raw.caveats, hmac_chain.extend(sig, b"x")),
        "location-changed": codec.encode(raw._replace(location=b"http://evil.test")),
    }
    assert_untouched(api, token, attempts)


def test_a_token_from_another_key_ring_is_invalid(api: Api, make_api: ApiFactory, tmp_path: Path) -> None:
    stranger = make_api(make_settings(tmp_path / "other"))
    foreign = stranger.token()
    # Same kid, other key: the identifier names a key this service has under another value.
    kid = api.settings.ring.signing_kid
    same_kid = KeyRing({kid: secrets.token_bytes(32)})
    forged_token_id = identifier.new_token_id()
    ident = identifier.make(kid, forged_token_id)
    root_key = same_kid.root_key(kid, bytes.fromhex(forged_token_id), LOCATION.encode())
    assert root_key is not None
    sig = hmac_chain.signatures(root_key, ident, (b"delegate = orchestrator",))[-1]
    forged = codec.encode(codec.RawMacaroon(LOCATION.encode(), ident, (b"delegate = orchestrator",), sig))
    assert_untouched(api, api.token(budget=USD), {"foreign-ring": foreign, "same-kid-other-key": forged})


def test_strict_decoding(api: Api) -> None:
    token = with_url_chars(api)
    raw = codec.decode(token)
    std = token.replace("-", "+").replace("_", "/")
    body = token.rstrip("=")
    extra = base64.urlsafe_b64encode(base64.urlsafe_b64decode(padded(token)) + b"\x00").decode().rstrip("=")
    attempts = {
        "standard-alphabet": std,
        "leading-space": " " + token,
        "trailing-space": token + " ",
        "trailing-newline": token + "\n",
        "inner-newline": token[:20] + "\n" + token[20:],
        "inner-tab": token[:20] + "\t" + token[20:],
        "too-much-padding": padded(token) + "====",
        "padding-inside": token[:8] + "=" + token[8:],
        "bytes-after-signature": extra,
        "truncated": body[: len(body) - 4],
        "empty-ish": "AA",
        "percent-encoded": token[:10] + "%2D" + token[11:],
        "short-signature": codec.encode(raw._replace(signature=raw.signature[:31])),
        "not-an-agentcaps-identifier": codec.encode(raw._replace(identifier=b"hello")),
    }
    if len(body) % 4 == 0:
        attempts["spurious-padding"] = body + "=="
    else:
        attempts["wrong-padding"] = body + "=" * ((-len(body) % 4) + 1)
    # The last character's unused low bits must be zero: flipping one decodes to the same bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if len(body) % 4 in (2, 3):
        last = alphabet.index(body[-1])
        attempts["non-canonical-bits"] = body[:-1] + alphabet[last | 1 if last % 2 == 0 else last & ~1]
    assert_untouched(api, token, attempts)


def test_padding_is_optional(api: Api) -> None:
    token = api.token(budget=USD)
    api.allowed(padded(token))
    assert api.post("/v1/inspect", {"token": padded(token)}).json()["valid"] is True


def test_version_1_and_third_party_caveats_are_refused(api: Api) -> None:
    """Built with pymacaroons and the token's real root key: only the format makes them invalid."""
    minted = api.mint(budget=USD)
    kid = api.settings.ring.signing_kid
    root_key = api.settings.ring.root_key(kid, bytes.fromhex(minted["token_id"]), LOCATION.encode())
    ident = identifier.make(kid, minted["token_id"]).decode()
    v1 = Macaroon(location=LOCATION, identifier=ident, key=root_key, version=1)
    v1 = v1.add_first_party_caveat("delegate = orchestrator")
    v2 = Macaroon(location=LOCATION, identifier=ident, key=root_key, version=2)
    v2 = v2.add_first_party_caveat("delegate = orchestrator")
    api.allowed(v2.serialize())  # the same macaroon in V2 verifies: the key and chain are right
    third = v2.add_third_party_caveat("http://auth.test", b"third-party-secret-key", "tp-id")  # mutates v2
    assert_untouched(api, minted["token"], {"v1": v1.serialize(), "third-party": third.serialize()})


def test_pymacaroons_attenuation_verifies(api: Api) -> None:
    token = api.token(budget={"amount": "5", "currency": "USD"})
    m = Macaroon.deserialize(token)
    m = m.add_first_party_caveat("delegate = researcher")
    m = m.add_first_party_caveat("tools in search")
    body = api.allowed(m.serialize(), cost=USD)
    assert body["holder"] == "researcher"
    api.denied(m.serialize(), "tool_not_allowed", tool="pay")


# -- limits --------------------------------------------------------------------------------------------


def build(api: Api, caveats: list[bytes]) -> str:
    """A correctly signed token with these caveats after the root's, built below the attenuate() guard."""
    raw = codec.decode(api.token(budget=USD))
    sig = raw.signature
    for c in caveats:
        sig = hmac_chain.extend(sig, c)
    return codec.encode(raw._replace(caveats=raw.caveats + tuple(caveats), signature=sig))


def test_caveat_count_limit(api: Api) -> None:
    # The root holds 2 caveats (delegate, budget): 126 more is 128, the limit.
    at_limit = build(api, [b"tools in search"] * 126)
    api.allowed(at_limit)
    over = build(api, [b"tools in search"] * 127)
    assert_untouched(api, at_limit, {"129-caveats": over})


def test_caveat_size_limit(api: Api) -> None:
    # A valid list caveat of exactly 1024 bytes: three items of 255 characters and a shorter fourth.
    at_limit = ("arg.x in " + ",".join(["b" * 255] * 4))[:1024]
    assert len(at_limit.encode()) == 1024
    ok = build(api, [at_limit.encode()])
    api.allowed(ok, args={"x": "b" * 255})
    over = build(api, [(at_limit + "b").encode()])
    assert_untouched(api, ok, {"caveat-over-1KiB": over}, args={"x": "b" * 255})


def test_a_token_over_16_kib_is_invalid_token_and_writes_nothing(api: Api) -> None:
    # 100 correctly signed caveats of ~150 bytes: under the caveat limits, over 16 KiB in base64.
    token = build(api, [("arg.x = " + "a" * 140 + str(n)).encode() for n in range(100)])
    assert len(token) > 16 * 1024
    assert_untouched(api, api.token(budget=USD), {"over-16-KiB": token})


def appended(token: str, caveats: list[str]) -> str:
    """What any holder can do with any macaroon library: append first-party caveats, no key needed."""
    m = Macaroon.deserialize(token)
    for caveat in caveats:
        m = m.add_first_party_caveat(caveat)
    serialized: str = m.serialize()
    return serialized


def test_more_counters_than_a_token_may_carry_is_invalid_before_any_store_call(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token limits (docs/caveats.md): at most 16 budget and 8 rate caveats, each a counter in the store. A holder
    appending hundreds would make every call update hundreds of counters (and a year-long window keeps a year of
    timestamps)."""
    root = api.token(budget={"amount": "10", "currency": "USD"})  # one budget already
    api.allowed(appended(root, ["budget <= 5 USD"] * 15), cost=USD)  # 16 budgets: the limit
    api.allowed(appended(root, ["rate <= 100000/31d"] * 8), cost=USD)  # 8 rates: the limit
    hostile = {
        "17 budgets": appended(root, ["budget <= 5 USD"] * 16),
        "120 budgets": appended(root, [f"budget <= {n}.00 USD" for n in range(1, 121)]),
        "9 rates": appended(root, ["rate <= 100000/31d"] * 9),
        "120 rates of 31d": appended(root, ["rate <= 100000/31d"] * 120),
        "120 rates of 366d": appended(root, ["rate <= 100000/366d"] * 120),  # malformed ones count too
    }
    calls: list[str] = []

    def spy(name: str) -> Callable[..., object]:
        async def called(*args: object, **kwargs: object) -> None:
            calls.append(name)
            raise AssertionError(f"the store was called: {name}")

        return called

    for name in ("decide", "lookup", "settle", "release", "revoke", "inspect"):
        monkeypatch.setattr(api.store, name, spy(name))
    for name, token in hostile.items():
        for fields in ({}, {"cost": USD, "request_id": f"r-{name}"}, {"cost": USD, "mode": "hold"}):
            denied = api.denied(token, "invalid_token", **fields)
            assert "at most" in denied["reason"] and set(denied) == {"allowed", "code", "reason"}, denied
        r = api.post("/v1/revoke", {"token": token})
        assert r.status_code == 403 and r.json()["code"] == "invalid_token", (name, r.text)
        inspected = api.post("/v1/inspect", {"token": token}).json()
        assert inspected["valid"] is False and "at most" in inspected["reason"], (name, inspected)
    assert calls == []


# -- key rotation --------------------------------------------------------------------------------------

Rebuild = Callable[[str], Api]


@pytest.fixture
def with_master_keys(make_api: ApiFactory, tmp_path: Path) -> Rebuild:
    def build(keys: str) -> Api:
        return make_api(make_settings(tmp_path / secrets.token_hex(4), AGENTCAPS_MASTER_KEYS=keys))

    return build


def test_rotation_old_tokens_verify_while_their_key_is_listed(with_master_keys: Rebuild) -> None:
    old_ring = KeyRing({"old": secrets.token_bytes(32)})
    old = with_master_keys(old_ring.serialize())
    token = old.token(budget={"amount": "5", "currency": "USD"})
    old.allowed(token, cost=USD)
    rotated_ring = KeyRing({"new": secrets.token_bytes(32), **old_ring.keys})
    rotated = with_master_keys(rotated_ring.serialize())
    body = rotated.allowed(token, cost=USD)
    # Counters live in the store, not the key ring: over Redis the rotated service sees the first charge too.
    assert body["budgets"][0]["spent"] == ("2.00" if rotated.redis is not None else "1.00")
    fresh = rotated.mint()
    inspected = rotated.post("/v1/inspect", {"token": fresh["token"]}).json()
    assert inspected["key_id"] == "new"
    assert rotated.post("/v1/inspect", {"token": token}).json()["key_id"] == "old"
    removed = with_master_keys(KeyRing({"new": rotated_ring.keys["new"]}).serialize())
    removed.allowed(fresh["token"])
    removed.denied(token, "invalid_token")
    assert removed.post("/v1/revoke", {"token": token}).status_code == 403
    # Old service, new token: the key id is unknown there.
    old.denied(fresh["token"], "invalid_token")
