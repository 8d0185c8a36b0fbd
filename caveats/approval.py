"""`approval in pay,wire.*` · `approval > 1.00 USD`: a call to one of these tools, or costing more than this,
runs only with a human's approval.

A GATE (caveats.base.Role): it never denies a call itself, so `Analysis.evaluate` passes over it; the store
answers approval_required or approval_denied after revocation, rates and budgets. Adding one only ever narrows:
a call it matches needs an approval on top of everything else the chain asks.

A call costed in another currency than the amount counts as costing more: were it skipped, a holder could
dodge `approval > 1.00 USD` by pricing the call in EUR. A call with no cost costs nothing, so it is not more.
"""

from __future__ import annotations

import re
from typing import ClassVar

from caveats.base import Caveat, Context, Role
from caveats.grammar import TOOL_LIST, TOOL_LIST_RE, CaveatSyntaxError
from caveats.money import MONEY, Amount, micros_of, parse_money
from caveats.tools import tool_matches


class Approval(Caveat, frozen=True):
    """One of two forms: `tools` (the `in` form, patterns as the `tools` caveat reads them) or `above` (the `>`
    form). One kind for both: they share the key, the role and what the store does with a match."""

    KEY: ClassVar[str] = "approval"
    OPS: ClassVar[frozenset[str]] = frozenset({"in", ">"})
    ROLE: ClassVar[Role] = Role.GATE
    # Groups: 1 the tool list, or 2-4 MONEY's (whole, fraction, currency).
    PATTERN: ClassVar[re.Pattern[str]] = re.compile(f"approval (?:in ({TOOL_LIST})|> {MONEY})")
    VALID: ClassVar[tuple[str, ...]] = (
        "approval in pay,wire.*",
        "approval > 1.00 USD",
        "approval in resources/read",
        "approval > 0 XY",
        "approval > 999999999999.999999 ABCDEFGHIJKLMNOP",
    )
    MALFORMED: ClassVar[tuple[str, ...]] = (
        "approval in *",
        "approval in pay,",
        "approval in pay wire",
        "approval in 1.00 USD",  # an amount needs `>`
        "approval > pay",  # a tool list needs `in`
        "approval > 1.00 usd",
        "approval > -1 USD",
        "approval > 1234567890123 USD",
        "approval > 1.1234567 USD",
        "approval > 1",
    )
    tools: tuple[str, ...] = ()
    above: Amount | None = None

    @classmethod
    def parse(cls, op: str, value: str) -> Approval:
        if op == ">":
            return cls(above=parse_money(value))
        if not TOOL_LIST_RE.fullmatch(value):
            raise CaveatSyntaxError(
                f"approval tools must be comma-separated names (optionally ending in *), got {value!r}"
            )
        return cls(tools=tuple(value.split(",")))

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Approval:
        tools, whole, fraction, currency = m.groups()
        if tools is not None:
            return cls(tools=tuple(tools.split(",")))
        return cls(above=Amount(currency, micros_of(whole, fraction)))

    def matches(self, ctx: Context) -> bool:
        """The call needs an approval by this caveat: a listed tool, or a cost above the amount."""
        above = self.above
        if above is None:
            tool = ctx.tool
            # A plain loop, as in Tools.allows: any() over a generator costs several times more.
            for pattern in self.tools:  # noqa: SIM110
                if tool_matches(pattern, tool):
                    return True
            return False
        cost = ctx.cost
        return cost is not None and (cost.currency != above.currency or cost.micros > above.micros)
