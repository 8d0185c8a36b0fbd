"""`budget <= 5.00 USD`: total spend through this chain prefix and everything derived from it stays within.

Stateful: the counter store decides the spend, keyed by the prefix id that ends at this caveat. Its currency
is decided with the stateless caveats, in chain order: a budget admits only calls costed in its own currency.
Were a budget in another currency merely skipped, a holder could append `budget <= 1000 EUR` to a USD-only
token and spend euros its parent never allowed: attenuation must only ever narrow.
"""

from __future__ import annotations

import re
from typing import ClassVar

from caveats.base import Caveat, Context, Role
from caveats.denial import Code, Denial
from caveats.money import MONEY, Amount, money_of, parse_money


class Budget(Caveat, frozen=True):
    KEY: ClassVar[str] = "budget"
    OPS: ClassVar[frozenset[str]] = frozenset({"<="})
    ROLE: ClassVar[Role] = Role.COUNTER
    MAX_PER_CHAIN: ClassVar[int] = 16  # docs/caveats.md, Limits: else a holder could append hundreds of counters
    PATTERN: ClassVar[re.Pattern[str]] = re.compile(f"budget <= {MONEY}")
    VALID: ClassVar[tuple[str, ...]] = (
        "budget <= 5.00 USD",
        "budget <= 999999999999.999999 ABCDEFGHIJKLMNOP",
        "budget <= 0 XY",
        "budget <= 10 CREDITS",
    )
    MALFORMED: ClassVar[tuple[str, ...]] = (
        "budget <= 5 usd",
        "budget <= 1234567890123 USD",
        "budget <= 1.1234567 USD",
        "budget <= -1 USD",
        "budget <= 5",
        "budget <= 5 ABCDEFGHIJKLMNOPQ",
    )
    limit: Amount

    @classmethod
    def parse(cls, op: str, value: str) -> Budget:
        return cls(parse_money(value))

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Budget:
        return cls(money_of(m))

    def check(self, ctx: Context, hop: int) -> Denial | None:
        cost = ctx.cost
        if cost is None or cost.currency == self.limit.currency:
            return None
        currency = self.limit.currency
        return Denial(Code.CURRENCY_MISMATCH, f"the call costs {cost.currency} but this budget is in {currency}")
