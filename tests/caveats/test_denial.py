"""Denials: the docs/api.md codes, and `at` attributing one to the caveat text and hop that caused it."""

from __future__ import annotations

import msgspec
import pytest

from caveats import Code, Denial

SPEC_CODES = [
    "invalid_token",
    "expired",
    "revoked",
    "tool_not_allowed",
    "audience_mismatch",
    "budget_exceeded",
    "cost_cap_exceeded",
    "currency_mismatch",
    "rate_limited",
    "depth_exceeded",
    "arg_mismatch",
    "malformed_caveat",
    "unknown_caveat",
    "approval_required",
    "approval_denied",
    "store_unavailable",
]


def test_the_codes_are_exactly_the_specs() -> None:
    assert sorted(str(c) for c in Code) == sorted(SPEC_CODES)
    assert all(Code(name) == name for name in SPEC_CODES)  # a code is its wire string


@pytest.mark.parametrize("hop", [0, 1, 7])
def test_at_attributes_caveat_and_hop_and_says_so(hop: int) -> None:
    base = Denial(Code.EXPIRED, "token expired at 2026-12-01T00:00:00Z")
    at = base.at("expires < 2026-12-01T00:00:00Z", hop)
    assert at == Denial(
        Code.EXPIRED,
        f"token expired at 2026-12-01T00:00:00Z (caveat 'expires < 2026-12-01T00:00:00Z' at hop {hop})",
        "expires < 2026-12-01T00:00:00Z",
        hop,
    )
    assert (base.caveat, base.hop) == (None, None)  # a value: at() returns a new one


def test_a_denial_is_an_immutable_value() -> None:
    denial = Denial(Code.TOOL_NOT_ALLOWED, "tool 'pay' is not in search")
    with pytest.raises(AttributeError):
        denial.reason = "allowed"  # type: ignore[misc]
    assert hash(denial) == hash(Denial(Code.TOOL_NOT_ALLOWED, "tool 'pay' is not in search"))
    assert msgspec.json.decode(msgspec.json.encode(denial.at("tools in search", 2))) == {
        "code": "tool_not_allowed",
        "reason": "tool 'pay' is not in search (caveat 'tools in search' at hop 2)",
        "caveat": "tools in search",
        "hop": 2,
    }
