"""The Python SDK: `Token` (offline: read, attenuate) and `Client` / `AsyncClient` (the HTTP API)."""

from app.sdk.client import ApiError, AsyncClient, Client
from app.sdk.token import Hop, Limits, Token, TokenError

__all__ = ["ApiError", "AsyncClient", "Client", "Hop", "Limits", "Token", "TokenError"]
