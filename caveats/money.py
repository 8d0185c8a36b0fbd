"""Money: the only amount parser. Amounts are integer micro-units (10^-6) with a currency, never floats."""

from __future__ import annotations

import decimal
import re
from decimal import Decimal

import msgspec

from caveats.grammar import CaveatSyntaxError

MICROS = 1_000_000
AMOUNT = r"([0-9]{1,12})(?:\.([0-9]{1,6}))?"
AMOUNT_RE = re.compile(AMOUNT)
CURRENCY = r"[A-Z][A-Z0-9_]{1,15}"
CURRENCY_RE = re.compile(CURRENCY)
MONEY = rf"{AMOUNT} ({CURRENCY})"  # groups: whole, fraction, currency
_MONEY_RE = re.compile(r"([0-9.]+) ([A-Z0-9_]+)")


class Amount(msgspec.Struct, frozen=True, order=True):
    """An exact amount: `micros` millionths of one `currency` unit."""

    currency: str
    micros: int

    def __str__(self) -> str:
        return f"{format_micros(self.micros)} {self.currency}"


def parse_micros(text: str) -> int:
    """`12.50` -> 12_500_000. ASCII digits only, at most 12 before and 6 after the point."""
    m = AMOUNT_RE.fullmatch(text)
    if m is None:
        raise CaveatSyntaxError(
            f"amount must be digits with at most 12 before and 6 after the decimal point, got {text!r}"
        )
    return micros_of(m.group(1), m.group(2))


def micros_of(whole: str, fraction: str | None) -> int:
    """The micro-units of an amount's digits, already matched by AMOUNT."""
    return int(whole) * MICROS + (int(fraction.ljust(6, "0")) if fraction else 0)


def money_of(m: re.Match[str]) -> Amount:
    """The Amount a pattern spells whose only groups are MONEY's (one `groups()` beats three `group()`s)."""
    whole, fraction, currency = m.groups()
    return Amount(currency, micros_of(whole, fraction))


def parse_currency(text: str) -> str:
    if not CURRENCY_RE.fullmatch(text):
        raise CaveatSyntaxError(f"currency must be 2-16 of A-Z, 0-9, _ starting with a letter, got {text!r}")
    return text


def parse_money(text: str) -> Amount:
    """`5.00 USD` -> Amount("USD", 5_000_000)."""
    m = _MONEY_RE.fullmatch(text)
    if m is None:
        raise CaveatSyntaxError(f"expected an amount and a currency like '5.00 USD', got {text!r}")
    return Amount(parse_currency(m.group(2)), parse_micros(m.group(1)))


def format_micros(micros: int) -> str:
    """12_500_000 -> '12.50': at least two decimals, no trailing zeros beyond them."""
    if micros < 0:
        return "-" + format_micros(-micros)
    whole, frac = divmod(micros, MICROS)
    if frac % 10_000 == 0:  # whole cents, the common case: no zeros to strip
        return f"{whole}.{frac // 10_000:02d}"
    return f"{whole}.{frac:06d}".rstrip("0")


# Scaling in the thread's context rounded to 28 digits (12345678901234567890123.0000001 came back whole) and
# raised decimal.Overflow near Emax; this context is exact for every finite Decimal.
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[])
MAX_DIGITS = 30  # no amount has more whole digits; bounds the int built from a huge exponent


def decimal_to_micros(value: Decimal) -> int | None:
    """An exact Decimal as micro-units, or None if it has finer precision than a micro-unit, is not finite, or
    has more than MAX_DIGITS whole digits."""
    if not value.is_finite() or value.adjusted() >= MAX_DIGITS:
        return None
    scaled = value.scaleb(6, context=_EXACT)
    if scaled != scaled.to_integral_value(context=_EXACT):
        return None
    return int(scaled)
