"""The caveat language of docs/caveats.md: pure parsing and checking, no I/O, never imports `app`."""

from caveats.base import Caveat, Context
from caveats.denial import Code, Denial
from caveats.money import Amount, format_micros, parse_micros, parse_money
from caveats.registry import parse

__all__ = ["Amount", "Caveat", "Code", "Context", "Denial", "format_micros", "parse", "parse_micros", "parse_money"]
