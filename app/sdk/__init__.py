"""The Python SDK: `Token` (offline: read, attenuate) and `Client` / `AsyncClient` (the HTTP API)."""

from app.errors import ApiError, TokenError
from app.sdk.client import AsyncClient, Client
from app.sdk.token import Hop, Limits, Token

__all__ = ["ApiError", "AsyncClient", "Client", "Hop", "Limits", "Token", "TokenError"]
