"""Verify a serialized token: strict decode, limits, HMAC chain in constant time, then the caveat analysis.

The result, a VerifiedChain, depends only on the token's bytes and the key ring, so it is cached in an LRU
bounded by bytes (caveats.cache), keyed by the exact token string (a hit was strictly decoded when it went in).
The cache holds no per-call decision: expiry, tools, arguments, revocation and counters are decided on every
call. A token not seen before still parses only the caveat texts that no earlier token carried
(`caveats.registry.read`). A token refused (InvalidToken) is not remembered.

Cost per token size against pymacaroons and a bare HMAC chain: `scripts/bench_verify.py`.
"""

from __future__ import annotations

import hmac

import msgspec

from app.errors import InvalidToken
from app.token import codec, hmac_chain
from app.token.identifier import unverified_identifier
from app.token.keys import KeyRing
from caveats.cache import ByteLRU, caveats_bytes
from caveats.chain import Analysis, analyse

CHAIN_OVERHEAD = 2048  # the VerifiedChain, its Analysis and their tuples, the cache's entry
PER_CAVEAT = 256  # a prefix id (64 hex characters), a Step or counter, a slot in each tuple


class VerifiedChain(msgspec.Struct, frozen=True, gc=False):
    """A token whose signature holds. `prefixes[i]` names the chain through caveat i-1 (`prefixes[0]`: none)."""

    token_id: str
    key_id: str
    location: str
    prefixes: tuple[str, ...]
    analysis: Analysis

    @property
    def chain_id(self) -> str:
        """The whole chain's prefix id: what revoking this exact token marks."""
        return self.prefixes[-1]

    def counter_prefix(self, index: int) -> str:
        """The prefix id of the chain that ends at caveat `index`: the key of its budget or rate counter."""
        return self.prefixes[index + 1]


class Verifier:
    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.cache: ByteLRU[str, VerifiedChain] = ByteLRU("chains")

    def verify(self, token: str) -> VerifiedChain:
        """The verified chain of `token`, or InvalidToken. Only a str is a token (the cache would hash anything)."""
        if type(token) is not str:
            raise InvalidToken("a token is a string")
        verified = self.cache.get(token)
        if verified is None:
            raw = codec.decode(token)
            verified = self._verify(raw)
            # The token string as the key, and the chain: its prefix ids, analysis, caveat texts and what they
            # parse to (shared with the caveat memo while it keeps them, counted here too).
            nbytes = CHAIN_OVERHEAD + len(token) + PER_CAVEAT * len(raw.caveats) + caveats_bytes(raw.caveats)
            self.cache.put(token, verified, nbytes)
        return verified

    def _verify(self, raw: codec.RawMacaroon) -> VerifiedChain:
        kid, token_id = unverified_identifier(raw.identifier)
        root_key = self.ring.root_key(kid, bytes.fromhex(token_id), raw.location)
        if root_key is None:
            raise InvalidToken("token was signed with an unknown key id")
        sigs = hmac_chain.signatures(root_key, raw.identifier, raw.caveats)
        if not hmac.compare_digest(sigs[-1], raw.signature):
            raise InvalidToken("token signature does not verify")
        analysis = analyse(raw.caveats)
        if analysis.over_limit is not None:  # more counters than a token may make the store keep
            raise InvalidToken(analysis.over_limit)
        return VerifiedChain(
            token_id=token_id,
            key_id=kid,
            location=raw.location.decode("utf-8", errors="replace"),
            prefixes=hmac_chain.prefix_ids(sigs),
            analysis=analysis,
        )
