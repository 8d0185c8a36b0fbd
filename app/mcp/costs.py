"""What a tool call costs (docs/mcp.md): one JSON file shared by the guard and the gateway.

`{"search": {"amount": "0.01", "currency": "USD"}, "pay": {"from_arg": "amount", "currency": "USD"}}`.
A tool not in the file costs nothing; `from_arg` reads a non-negative decimal (number or string) at a dot-path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from app.errors import CostError
from app.schemas import Money
from caveats.grammar import CaveatSyntaxError
from caveats.money import CURRENCY_RE, format_micros, parse_micros, parse_money


class _Rule(msgspec.Struct, forbid_unknown_fields=True):
    currency: str
    amount: str | None = None
    from_arg: str | None = None


Computed = Callable[[Mapping[str, Any]], "Money | str | None"]


class CostTable:
    def __init__(self, rules: Mapping[str, Any] | None = None, computed: Mapping[str, Computed] | None = None) -> None:
        """`rules` as in the file: {tool: {"amount" | "from_arg": ..., "currency": ...}}. `computed` (in code only)
        maps a tool to a function of its arguments returning a Money, `"0.25 USD"`, or None for free."""
        self.computed = dict(computed or {})
        try:
            self.rules = msgspec.convert(dict(rules or {}), dict[str, _Rule])
        except msgspec.ValidationError as e:
            raise ValueError(f"costs: {e}") from None
        for tool, rule in self.rules.items():
            if not CURRENCY_RE.fullmatch(rule.currency) or (rule.amount is None) == (rule.from_arg is None):
                raise ValueError(f"cost of {tool!r}: give a currency and exactly one of amount or from_arg")
            if rule.amount is not None:
                parse_micros(rule.amount)  # raises with the reason

    @classmethod
    def load(cls, path: str | Path | None) -> CostTable:
        if path is None:
            return cls()
        try:
            return cls(msgspec.json.decode(Path(path).read_bytes()))
        except (msgspec.MsgspecError, CaveatSyntaxError, ValueError, OSError) as e:
            raise ValueError(f"cost file {path}: {e}") from None

    def cost_of(self, tool: str, args: Mapping[str, Any]) -> Money | None:
        if tool in self.computed:
            return self._computed(tool, args)
        rule = self.rules.get(tool)
        if rule is None:
            return None
        if rule.amount is not None:
            return Money(rule.amount, rule.currency)
        assert rule.from_arg is not None
        value: Any = args
        for part in rule.from_arg.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise CostError(f"argument '{rule.from_arg}' is missing: it gives this call's cost")
            value = value[part]
        if isinstance(value, float):
            value = Decimal(repr(value))  # the decimal the client wrote, not the binary float
        if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
            raise CostError(f"argument '{rule.from_arg}' must be a decimal amount, it is {json.dumps(str(value))[:40]}")
        text = str(value)
        try:
            micros = parse_micros(format(Decimal(text), "f") if not isinstance(value, str) else text)
        except (CaveatSyntaxError, ArithmeticError):
            raise CostError(
                f"argument '{rule.from_arg}' must be a non-negative amount with at most 6 decimals, got {text[:40]!r}"
            ) from None
        return Money(format_micros(micros), rule.currency)

    def _computed(self, tool: str, args: Mapping[str, Any]) -> Money | None:
        try:
            value = self.computed[tool](args)
        except Exception as e:  # the function could not price this call: it does not run
            raise CostError(f"the cost of {tool!r} could not be computed from its arguments: {e}") from None
        if value is None:
            return None
        try:
            amount = parse_money(f"{value.amount} {value.currency}" if isinstance(value, Money) else value)
        except (CaveatSyntaxError, TypeError):
            raise CostError(f"the cost of {tool!r} was computed as {value!r}, not an amount like '0.25 USD'") from None
        return Money(format_micros(amount.micros), amount.currency)
