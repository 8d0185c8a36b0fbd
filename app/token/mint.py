"""Mint a root token: a fresh token id under the signing master key, then the root's caveats in order."""

from __future__ import annotations

from app.token import chain, codec, identifier
from app.token.keys import KeyRing


def mint(ring: KeyRing, location: str, caveats: list[str]) -> tuple[str, str]:
    """(serialized token, token id). Caveats are appended as given; the caller has validated them."""
    kid = ring.signing_kid
    token_id = identifier.new_token_id()
    loc = location.encode("utf-8")
    root_key = ring.root_key(kid, bytes.fromhex(token_id), loc)
    assert root_key is not None
    ident = identifier.make(kid, token_id)
    raw_caveats = tuple(c.encode("utf-8") for c in caveats)
    signature = chain.signatures(root_key, ident, raw_caveats)[-1]
    return codec.encode(codec.RawMacaroon(loc, ident, raw_caveats, signature)), token_id


def attenuate(token: str, caveats: list[str]) -> str:
    """Append first-party caveats offline: no key, only the token's own signature is extended."""
    raw = codec.decode(token)
    sig = raw.signature
    added = tuple(c.encode("utf-8") for c in caveats)
    for caveat in added:
        sig = chain.extend(sig, caveat)
    out = raw._replace(caveats=raw.caveats + added, signature=sig)
    # The verifier's limits, checked here too: a token it would refuse is better never made.
    if len(out.caveats) > codec.MAX_CAVEATS:
        raise ValueError(f"a token holds at most {codec.MAX_CAVEATS} caveats")
    if any(len(caveat) > codec.MAX_CAVEAT_BYTES for caveat in added):
        raise ValueError(f"a caveat is at most {codec.MAX_CAVEAT_BYTES} bytes")
    encoded = codec.encode(out)
    if len(encoded) > codec.MAX_TOKEN_CHARS:
        raise ValueError(f"the token would be over {codec.MAX_TOKEN_CHARS // 1024} KiB")
    return encoded
