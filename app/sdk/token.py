"""Token: a serialized token read offline (no key) — its hops, caveats and effective limits — and attenuated.

Nothing here is verified: the signature needs the service's key. Views are what the token *claims*; the
service decides. Attenuation only appends caveats (the HMAC chain allows nothing else) and refuses requests
that could never be satisfied or that look like widening, so a mistake is caught before a token is handed on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import msgspec

from app.errors import InvalidToken, TokenError
from app.token import codec
from app.token.identifier import unverified_identifier
from app.token.mint import attenuate
from caveats.audience import Audience
from caveats.base import Context
from caveats.build import restriction_caveats
from caveats.chain import Analysis, analyse, covers
from caveats.cost import Cost
from caveats.depth import Depth
from caveats.expires import format_instant, parse_instant
from caveats.grammar import CaveatSyntaxError
from caveats.money import Amount, format_micros, parse_money


class Hop(msgspec.Struct):
    hop: int
    agent: str | None
    caveats: list[str]


class Limits(msgspec.Struct, omit_defaults=True):
    """The tightest of each kind across the whole chain (all caveats hold at once)."""

    budgets: dict[str, str] = {}  # currency -> the smallest budget in it
    cost_caps: dict[str, str] = {}
    tools: list[str] | None = None  # None: any tool
    audience: list[str] | None = None
    expires_at: str | None = None
    delegations_left: int | None = None  # None: unlimited
    rates: list[str] = []
    # Every approval caveat, in chain order: none is tighter than another, as each holds its own calls; the first
    # one a call matches names who may approve it.
    approvals: list[str] = []


class Token:
    def __init__(self, text: str) -> None:
        try:
            raw = codec.decode(text)
            self.key_id, self.token_id = unverified_identifier(raw.identifier)
        except InvalidToken as e:
            raise TokenError(f"not an agentcaps token: {e}") from None
        self._text = text
        self.location = raw.location.decode("utf-8", errors="replace")
        self.analysis: Analysis = analyse(raw.caveats)

    @classmethod
    def parse(cls, text: str) -> Token:
        return cls(text.strip())

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Token(token_id={self.token_id!r}, holder={self.holder!r}, caveats={len(self.caveats)})"

    # -- offline views --------------------------------------------------------------------------------
    @property
    def caveats(self) -> list[str]:
        return list(self.analysis.texts)

    @property
    def holder(self) -> str | None:
        return self.analysis.holder

    @property
    def delegation(self) -> list[str]:
        return list(self.analysis.delegation)

    @property
    def hops(self) -> list[Hop]:
        a = self.analysis
        hops: list[Hop] = []
        for text, hop in zip(a.texts, a.hops, strict=True):
            if not hops or hops[-1].hop != hop:
                hops.append(Hop(hop, a.delegation[hop] if hop < len(a.delegation) else None, []))
            hops[-1].caveats.append(text)
        return hops

    def _tightest(self) -> tuple[dict[str, int], dict[str, int]]:
        """(budgets, cost caps): the smallest of each currency, in micro-units."""
        budgets: dict[str, int] = {}
        caps: dict[str, int] = {}
        limits = [(budgets, b.parsed.limit) for b in self.analysis.budgets]
        limits += [(caps, p.cap) for p in self.analysis.parsed if isinstance(p, Cost)]
        for table, amount in limits:
            table[amount.currency] = min(table.get(amount.currency, amount.micros), amount.micros)
        return budgets, caps

    @property
    def limits(self) -> Limits:
        a = self.analysis
        budgets, caps = self._tightest()
        audience: tuple[str, ...] | None = None
        left: int | None = None
        ctx_hops = len(a.delegation)
        for parsed, hop in zip(a.parsed, a.hops, strict=True):
            if isinstance(parsed, Audience):
                audience = parsed.names if audience is None else tuple(n for n in audience if n in parsed.names)
            elif isinstance(parsed, Depth):
                remaining = parsed.limit - (ctx_hops - (hop + 1))
                left = remaining if left is None else min(left, remaining)
        return Limits(
            budgets={c: format_micros(m) for c, m in budgets.items()},
            cost_caps={c: format_micros(m) for c, m in caps.items()},
            tools=list(a.tools) if a.tools is not None else None,
            audience=list(audience) if audience is not None else None,
            expires_at=format_instant(a.expires_at) if a.expires_at is not None else None,
            delegations_left=left,
            rates=[r.caveat for r in a.rates],
            approvals=[g.caveat for g in a.gates],
        )

    # -- attenuation ----------------------------------------------------------------------------------
    def attenuate(
        self,
        *,
        to: str | None = None,
        budget: Amount | str | None = None,
        cost_cap: Amount | str | None = None,
        tools: Iterable[str] | None = None,
        audience: Iterable[str] | None = None,
        expires_in: int | None = None,
        expires_at: int | str | None = None,
        max_depth: int | None = None,
        rate: str | None = None,
        args: Mapping[str, str] | None = None,
        approval_tools: Iterable[str] | None = None,
        approval_above: Amount | str | None = None,
        caveats: Iterable[str] | None = None,
        now: float | None = None,
    ) -> Token:
        """A new token with `delegate = <to>` (if given) first, then these restrictions. Offline, no key.

        `approval_tools` (`["pay", "wire.*"]`) and `approval_above` (`"1.00 USD"`, or an Amount) make those calls
        wait for a human's approval, given by someone holding this token (the one attenuated) or one above it."""
        now_s = int(time.time() if now is None else now)
        deadline = self._deadline(expires_in, expires_at, now_s)
        for name, names in (("tools", tools), ("audience", audience), ("approval_tools", approval_tools)):
            if isinstance(names, str):  # list("search") would be s,e,a,r,c,h
                raise TokenError(f"{name}: give a list of names, like [{names!r}]")
        tools = list(tools) if tools is not None else None
        audience = list(audience) if audience is not None else None
        self._refuse_widening(to, budget, cost_cap, tools, audience, now_s)
        try:
            texts = restriction_caveats(
                to=to,
                budget=budget,
                cost_cap=cost_cap,
                tools=tools,
                audience=audience,
                expires_at=deadline,
                max_depth=max_depth,
                rate=rate,
                args=args,
                approval_tools=approval_tools,
                approval_above=approval_above,
                caveats=caveats,
            )
        except ValueError as e:
            raise TokenError(str(e)) from None
        if not texts:
            raise TokenError("nothing to add: give at least one restriction or `to`")
        try:
            return Token(attenuate(self._text, texts))
        except (ValueError, InvalidToken) as e:
            raise TokenError(str(e)) from None

    @staticmethod
    def _deadline(expires_in: int | None, expires_at: int | str | None, now: int) -> int | None:
        if expires_in is not None and expires_at is not None:
            raise TokenError("give expires_in or expires_at, not both")
        if expires_in is not None:
            if expires_in <= 0:
                raise TokenError(f"expires_in must be a positive number of seconds, got {expires_in}")
            return now + expires_in
        if isinstance(expires_at, str):
            try:
                expires_at = parse_instant(expires_at)
            except CaveatSyntaxError as e:
                raise TokenError(f"expires_at: {e}") from None
        if expires_at is not None and expires_at <= now:
            raise TokenError(f"expires_at {format_instant(expires_at)} is already past")
        return expires_at

    def _refuse_widening(
        self,
        to: str | None,
        budget: Amount | str | None,
        cost_cap: Amount | str | None,
        tools: list[str] | None,
        audience: list[str] | None,
        now: int,
    ) -> None:
        """Refuse what could never be satisfied or looks like widening; the chain would deny it anyway. An approval
        caveat needs nothing here: it only adds a human's yes to calls the chain allows, so it never widens."""
        a = self.analysis
        limits = self.limits
        if a.expires_at is not None and a.expires_at <= now:
            raise TokenError(f"this token expired at {format_instant(a.expires_at)}")
        if a.static_denial is not None:
            raise TokenError(f"this token already denies every call: {a.static_denial.reason}")
        if to is not None:
            left = limits.delegations_left
            if left is not None and left <= 0:
                raise TokenError(f"this token allows no further delegation, so it cannot be handed to {to!r}")
        budgets, caps = self._tightest()
        for name, value, current in (("budget", budget, budgets), ("cost_cap", cost_cap, caps)):
            if value is None:
                continue
            amount = self._money(name, value)
            if current and amount.currency not in current:
                raise TokenError(
                    f"{name}: the token's limits are in {','.join(sorted(current))}; a {amount.currency} {name} "
                    "would deny every costed call"
                )
            if amount.micros > current.get(amount.currency, amount.micros):
                raise TokenError(
                    f"{name}: {amount} is more than the {format_micros(current[amount.currency])} {amount.currency} "
                    "this token already allows; attenuation can only narrow"
                )
        if tools is not None and a.tools is not None:
            outside = [t for t in tools if not any(covers(p, t) for p in a.tools)]
            if outside:
                raise TokenError(f"tools {','.join(outside)} are not within this token's {','.join(a.tools)}")
        if audience is not None and limits.audience is not None:
            outside = [n for n in audience if n not in limits.audience]
            if outside:
                raise TokenError(f"audience {','.join(outside)} is not within this token's {','.join(limits.audience)}")

    @staticmethod
    def _money(name: str, value: Amount | str) -> Amount:
        if isinstance(value, Amount):
            return value
        try:
            return parse_money(value)
        except CaveatSyntaxError as e:
            raise TokenError(f"{name}: {e}") from None

    def denies_now(self, tool: str, now: float | None = None) -> str | None:
        """Offline preview: why the stateless caveats would deny `tool` right now (budgets are not known here)."""
        ctx = Context(int(time.time() if now is None else now), tool, None, None, {}, len(self.analysis.delegation))
        denial = self.analysis.evaluate(ctx)
        return None if denial is None else f"{denial.code}: {denial.reason}"

    def denies_every_call(self, now: float | None = None) -> str | None:
        """Offline: why this token denies every call whatever it asks (expired, a caveat that does not parse)."""
        a = self.analysis
        if a.expires_at is not None and a.expires_at <= (time.time() if now is None else now):
            return f"expired at {format_instant(a.expires_at)}"
        return None if a.static_denial is None else f"{a.static_denial.code}: {a.static_denial.reason}"
