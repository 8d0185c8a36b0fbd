"""Denials: the codes of docs/api.md and the value every failed check returns (a denial is a value, not an error)."""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Code(StrEnum):
    INVALID_TOKEN = "invalid_token"
    EXPIRED = "expired"
    REVOKED = "revoked"
    TOOL_NOT_ALLOWED = "tool_not_allowed"
    AUDIENCE_MISMATCH = "audience_mismatch"
    BUDGET_EXCEEDED = "budget_exceeded"
    COST_CAP_EXCEEDED = "cost_cap_exceeded"
    CURRENCY_MISMATCH = "currency_mismatch"
    RATE_LIMITED = "rate_limited"
    DEPTH_EXCEEDED = "depth_exceeded"
    ARG_MISMATCH = "arg_mismatch"
    MALFORMED_CAVEAT = "malformed_caveat"
    UNKNOWN_CAVEAT = "unknown_caveat"
    APPROVAL_REQUIRED = "approval_required"
    APPROVAL_DENIED = "approval_denied"
    STORE_UNAVAILABLE = "store_unavailable"


class Denial(msgspec.Struct, frozen=True):
    """Why a call is refused; `caveat` (its text) and `hop` are set whenever a caveat caused it."""

    code: Code
    reason: str
    caveat: str | None = None
    hop: int | None = None

    def at(self, caveat: str, hop: int) -> Denial:
        """This denial attributed to the caveat text at a hop, the reason naming both."""
        return Denial(self.code, f"{self.reason} (caveat '{caveat}' at hop {hop})", caveat, hop)
