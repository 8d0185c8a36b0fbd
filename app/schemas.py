"""The wire: request and response bodies of docs/api.md as msgspec Structs, below every layer that speaks them —
the Authority, the HTTP API, the SDK client and the MCP guard.

Requests forbid unknown fields and constrain every string, so a bad request is refused with the field and
the reason before anything happens.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

AmountText = Annotated[str, Meta(pattern=r"^[0-9]{1,12}(\.[0-9]{1,6})?\Z", description="exact decimal, e.g. 10.00")]
CurrencyText = Annotated[str, Meta(pattern=r"^[A-Z][A-Z0-9_]{1,15}\Z")]
Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}\Z")]
ToolName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}\*?\Z")]
RequestId = Annotated[str, Meta(pattern=r"^[ -~]{1,255}\Z", description="1-255 printable ASCII characters")]
HoldTtl = Annotated[int, Meta(ge=1, le=86400)]
# No length bound here: an oversized or empty token is an invalid_token denial (docs/caveats.md, Limits),
# not a bad request.
TokenText = str


class Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class Money(Strict):
    amount: AmountText
    currency: CurrencyText


class MintRequest(Strict):
    subject: Name
    budget: Money | None = None
    tools: list[ToolName] | None = None
    audience: list[Name] | None = None
    expires_in: Annotated[int, Meta(ge=1, le=10 * 366 * 86400)] | None = None
    expires_at: str | None = None
    max_depth: Annotated[int, Meta(ge=0, le=1000)] | None = None
    cost_cap: Money | None = None
    rate: str | None = None
    caveats: list[Annotated[str, Meta(max_length=1024)]] | None = None


class MintResponse(Strict):
    token: str
    token_id: str
    expires_at: str | None  # always present: null for a token that never expires
    caveats: list[str]


class VerifyRequest(Strict):
    token: TokenText
    tool: Name  # the tool called: a name; patterns with `*` belong in caveats
    args: dict[str, Any] | None = None
    audience: Name | None = None
    cost: Money | None = None
    request_id: RequestId | None = None
    mode: Literal["charge", "hold"] = "charge"
    hold_ttl: HoldTtl = 300
    wait: Annotated[float, Meta(ge=0, le=60)] = 0  # seconds an approval_required answer may wait for the decision


class BudgetView(Strict):
    hop: int
    caveat: str
    limit: str
    spent: str
    held: str
    remaining: str
    currency: str


class Allowed(Strict):
    allowed: bool
    token_id: str
    holder: str | None
    delegation: list[str]
    budgets: list[BudgetView]
    charged: Money | None = None
    hold_id: str | None = None
    expires_at: str | None = None
    replayed: bool = False  # true: the stored first answer of this request_id, not a new authorization


class ApprovalRef(Strict):
    """The approval a denial names: approval_required (pending) or approval_denied (denied)."""

    id: str
    state: str
    expires_at: str


class Denied(Strict):
    allowed: bool
    code: str
    reason: str
    caveat: str | None = None
    hop: int | None = None
    budgets: list[BudgetView] | None = None
    tools: list[str] | None = None
    replayed: bool = False  # as in Allowed: sent only when true
    request_id: str | None = None  # a 503 only: resend the request with it to replay what the store may have decided
    approval: ApprovalRef | None = None  # approval_required, approval_denied


class SettleRequest(Strict):
    amount: AmountText | None = None


class ReleaseRequest(Strict):
    """Release takes no fields: an empty body or `{}`; anything else is refused, not ignored."""


class ExtendRequest(Strict):
    hold_ttl: HoldTtl  # seconds from now


class HoldResponse(Strict):
    hold_id: str
    state: Literal["held", "settled", "released"]
    currency: str
    amount: str | None = None  # held: what it holds; settled: what it charged; released: absent
    expires_at: str | None = None  # held: when it is released by itself (RFC 3339, whole seconds, rounded down)


class RevokeRequest(Strict):
    token: TokenText | None = None
    token_id: Annotated[str, Meta(pattern=r"^[0-9a-f]{32}\Z")] | None = None
    chain: Annotated[str, Meta(pattern=r"^[0-9a-f]{32}\Z")] | None = None  # with token_id: one chain seen under it


class RevokeResponse(Strict):
    revoked: bool
    token_id: str


class InspectRequest(Strict):
    token: TokenText


class CaveatView(Strict):
    caveat: str
    denies: str | None = None  # the denial code this caveat gives right now, if any


class HopView(Strict):
    hop: int
    agent: str | None
    caveats: list[CaveatView]


class InspectResponse(Strict):
    valid: bool
    reason: str | None = None
    token_id: str | None = None
    key_id: str | None = None
    holder: str | None = None
    delegation: list[str] | None = None
    hops: list[HopView] | None = None
    budgets: list[BudgetView] | None = None
    tools: list[str] | None = None
    expires_at: str | None = None
    revoked: bool | None = None
    denials: list[Denied] | None = None


class ApprovalView(Strict):
    """One approval as a credential that may decide it sees it (docs/approvals.md)."""

    id: str
    state: str
    tool: str
    args: dict[str, Any]
    delegation: list[str]
    holder: str | None
    caveat: str
    hop: int
    created_at: str
    expires_at: str
    cost: Money | None = None
    audience: str | None = None
    decided_by: str | None = None
    reason: str | None = None


class ApprovalList(Strict):
    approvals: list[ApprovalView]


class DecideRequest(Strict):
    reason: Annotated[str, Meta(max_length=1024, pattern=r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*\Z")] | None = None


class ErrorBody(Strict):
    code: str
    reason: str
    field: str | None = None
    request_id: str | None = None
