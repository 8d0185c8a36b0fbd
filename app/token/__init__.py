"""Macaroon tokens: strict V2 codec, HMAC chain, key ring, minting and verification."""
