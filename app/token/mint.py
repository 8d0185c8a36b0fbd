"""Mint a root token: a fresh token id under the signing master key, then the root's caveats in order."""

from __future__ import annotations

from app.token import codec, hmac_chain, identifier
from app.token.keys import KeyRing
from caveats.chain import analyse


def mint(ring: KeyRing, location: str, caveats: list[str]) -> tuple[str, str]:
    """(serialized token, token id). Caveats are appended as given; the caller has validated them.

    Raises ValueError for a token the verifier would refuse (too many or too long caveats, over 16 KiB, more
    budget or rate caveats than a token may carry).
    """
    kid = ring.signing_kid
    token_id = identifier.new_token_id()
    loc = location.encode("utf-8")
    root_key = ring.root_key(kid, bytes.fromhex(token_id), loc)
    assert root_key is not None
    ident = identifier.make(kid, token_id)
    raw_caveats = tuple(c.encode("utf-8") for c in caveats)
    signature = hmac_chain.signatures(root_key, ident, raw_caveats)[-1]
    return _encode_within_limits(codec.RawMacaroon(loc, ident, raw_caveats, signature)), token_id


def attenuate(token: str, caveats: list[str]) -> str:
    """Append first-party caveats offline: no key, only the token's own signature is extended."""
    raw = codec.decode(token)
    sig = raw.signature
    added = tuple(c.encode("utf-8") for c in caveats)
    for caveat in added:
        sig = hmac_chain.extend(sig, caveat)
    return _encode_within_limits(raw._replace(caveats=raw.caveats + added, signature=sig))


def _encode_within_limits(m: codec.RawMacaroon) -> str:
    """The verifier's limits, checked when a token is made: a token it would refuse is better never made."""
    if len(m.caveats) > codec.MAX_CAVEATS:
        raise ValueError(f"a token holds at most {codec.MAX_CAVEATS} caveats, this one would hold {len(m.caveats)}")
    if any(len(caveat) > codec.MAX_CAVEAT_BYTES for caveat in m.caveats):
        raise ValueError(f"a caveat is at most {codec.MAX_CAVEAT_BYTES} bytes")
    over_limit = analyse(m.caveats).over_limit
    if over_limit is not None:
        raise ValueError(over_limit)
    encoded = codec.encode(m)
    if len(encoded) > codec.MAX_TOKEN_CHARS:
        raise ValueError(f"the token would be over {codec.MAX_TOKEN_CHARS // 1024} KiB")
    return encoded
