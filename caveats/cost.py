"""`cost <= 0.50 USD`: a single call costs at most this; a call in another currency is a currency mismatch."""

from __future__ import annotations

import re
from typing import ClassVar

from caveats.base import Caveat, Context
from caveats.denial import Code, Denial
from caveats.money import MONEY, Amount, money_of, parse_money


class Cost(Caveat, frozen=True):
    KEY: ClassVar[str] = "cost"
    OPS: ClassVar[frozenset[str]] = frozenset({"<="})
    PATTERN: ClassVar[re.Pattern[str]] = re.compile(f"cost <= {MONEY}")
    VALID: ClassVar[tuple[str, ...]] = ("cost <= 0.50 USD", "cost <= 0 XY", "cost <= 999999999999.999999 EUR")
    MALFORMED: ClassVar[tuple[str, ...]] = ("cost <= 0,50 USD", "cost <= .5 USD", "cost <= 5 Usd", "cost <= 5USD")
    cap: Amount

    @classmethod
    def parse(cls, op: str, value: str) -> Cost:
        return cls(parse_money(value))

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Cost:
        return cls(money_of(m))

    def check(self, ctx: Context, hop: int) -> Denial | None:
        cost = ctx.cost
        if cost is None:
            return None
        if cost.currency != self.cap.currency:
            return Denial(Code.CURRENCY_MISMATCH, f"the call costs {cost.currency}, the cap is in {self.cap.currency}")
        if cost.micros <= self.cap.micros:
            return None
        return Denial(Code.COST_CAP_EXCEEDED, f"the call costs {cost}, more than the cap of {self.cap}")
