"""`budget <= 5.00 USD`: total spend through this chain prefix and everything derived from it stays within.

Stateful: the counter store decides it, keyed by the prefix id that ends at this caveat.
"""

from __future__ import annotations

import re
from typing import ClassVar

from caveats.base import Caveat
from caveats.money import MONEY, Amount, money_of, parse_money


class Budget(Caveat, frozen=True):
    KEY: ClassVar[str] = "budget"
    OPS: ClassVar[frozenset[str]] = frozenset({"<="})
    STATEFUL: ClassVar[bool] = True
    PATTERN: ClassVar[re.Pattern[str]] = re.compile(f"budget <= {MONEY}")
    limit: Amount

    @classmethod
    def parse(cls, op: str, value: str) -> Budget:
        return cls(parse_money(value))

    @classmethod
    def from_match(cls, m: re.Match[str]) -> Budget:
        return cls(money_of(m))
