"""Every caveat kind's check against a frozen call, and the chain-level rules (depth, currency, first denial)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from caveats import Amount, Caveat, Code, Context, Denial, parse
from caveats.build import restriction_caveats
from caveats.chain import analyse, intersect

NOW = 1_800_000_000


def call(tool: str = "search", **kw: Any) -> Context:
    return Context(
        kw.pop("now", NOW), tool, kw.pop("audience", None), kw.pop("cost", None), kw.pop("args", {}), kw.pop("hops", 1)
    )


def usd(units: str) -> Amount:
    return Amount("USD", int(Decimal(units) * 1_000_000))


def check(text: str, ctx: Context, hop: int = 0) -> str | None:
    caveat = parse(text)
    assert isinstance(caveat, Caveat), caveat
    denial = caveat.check(ctx, hop)
    return None if denial is None else str(denial.code)


CASES = [
    ("expires < 2027-01-15T08:00:01Z", call(now=1_800_000_000), None),
    ("expires < 2027-01-15T08:00:00Z", call(now=1_800_000_000), "expired"),  # the instant itself is expired
    ("tools in search,gh.*", call("search"), None),
    ("tools in search,gh.*", call("gh.issues"), None),
    ("tools in search,gh.*", call("gh"), "tool_not_allowed"),
    ("tools in search,gh.*", call("searcher"), "tool_not_allowed"),
    ("tools in search*", call("searcher"), None),
    ("audience in a,b", call(audience="b"), None),
    ("audience in a,b", call(audience="c"), "audience_mismatch"),
    ("audience in a,b", call(audience=None), "audience_mismatch"),
    ("cost <= 0.50 USD", call(cost=usd("0.5")), None),
    ("cost <= 0.50 USD", call(cost=usd("0.500001")), "cost_cap_exceeded"),
    ("cost <= 0.50 USD", call(cost=Amount("EUR", 1)), "currency_mismatch"),
    ("cost <= 0.50 USD", call(cost=None), None),
    ("depth <= 1", call(hops=2), None),  # at hop 0: one delegation after the root's
    ("depth <= 1", call(hops=3), "depth_exceeded"),
    ("delegate = x", call(), None),
    ("budget <= 1 USD", call(cost=usd("5")), None),  # stateful: the store decides
    ("rate <= 0/1h", call(), None),  # stateful: the store decides
    ("arg.amount <= 3", call(args={"amount": 3}), None),
    ("arg.amount <= 3", call(args={"amount": Decimal("3.000001")}), "arg_mismatch"),
    ("arg.amount <= 0.3", call(args={"amount": Decimal("0.1") + Decimal("0.2")}), None),
    ("arg.amount < 0.3", call(args={"amount": Decimal("0.30")}), "arg_mismatch"),
    ("arg.amount >= -1", call(args={"amount": "-1"}), None),
    ("arg.amount > 2", call(args={"amount": "2.5"}), None),
    ("arg.amount > 2", call(args={"amount": "2,5"}), "arg_mismatch"),
    ("arg.amount <= 3", call(args={"amount": True}), "arg_mismatch"),  # booleans are never numbers
    ("arg.amount <= 3", call(args={}), "arg_mismatch"),
    ("arg.amount <= 3", call(args={"amount": None}), "arg_mismatch"),
    ("arg.amount <= 3", call(args={"amount": [1]}), "arg_mismatch"),
    ("arg.order.total <= 3", call(args={"order": {"total": 2}}), None),
    ("arg.order.total <= 3", call(args={"order": 2}), "arg_mismatch"),
    ("arg.repo = acme/web", call(args={"repo": "acme/web"}), None),
    ("arg.repo = acme/web", call(args={"repo": "acme/web2"}), "arg_mismatch"),
    ("arg.n = 7", call(args={"n": Decimal("7.0")}), None),
    ("arg.n = 7", call(args={"n": "7.0"}), "arg_mismatch"),  # strings compare as text for =
    ("arg.flag = true", call(args={"flag": True}), None),
    ("arg.flag = 1", call(args={"flag": True}), "arg_mismatch"),
    ("arg.repo != acme/secret", call(args={"repo": "acme/web"}), None),
    ("arg.repo != acme/secret", call(args={"repo": "acme/secret"}), "arg_mismatch"),
    ("arg.repo != acme/secret", call(args={}), "arg_mismatch"),  # missing denies, also for !=
    ("arg.repo != acme/secret", call(args={"repo": {"x": 1}}), "arg_mismatch"),
    ("arg.currency in usd,eur", call(args={"currency": "eur"}), None),
    ("arg.currency in usd,eur", call(args={"currency": "EUR"}), "arg_mismatch"),
]


@pytest.mark.parametrize(("text", "ctx", "code"), CASES, ids=[f"{t} | {c.tool} {c.args}" for t, c, _ in CASES])
def test_checks(text: str, ctx: Context, code: str | None) -> None:
    assert check(text, ctx) == code


def test_denials_name_the_caveat_and_hop_in_plain_words() -> None:
    denial = Denial(Code.TOOL_NOT_ALLOWED, "tool 'pay' is not in search").at("tools in search", 2)
    assert (denial.caveat, denial.hop) == ("tools in search", 2)
    assert denial.reason == "tool 'pay' is not in search (caveat 'tools in search' at hop 2)"


def chain(*texts: str) -> Any:
    return analyse([t.encode() for t in texts])


def test_hops_delegation_and_holder() -> None:
    a = chain("delegate = o", "budget <= 10 USD", "delegate = r", "tools in search", "delegate = z")
    assert a.hops == (0, 0, 1, 1, 2) and a.delegation == ("o", "r", "z") and a.holder == "z"


def test_the_first_failing_caveat_in_chain_order_is_reported() -> None:
    a = chain("delegate = o", "tools in pay", "frob = 1", "expires < 2020-01-01T00:00:00Z")
    denial = a.evaluate(call("search", hops=1))
    assert denial is not None and (denial.code, denial.caveat) == ("tool_not_allowed", "tools in pay")
    later = chain("delegate = o", "frob = 1", "tools in pay")
    denial = later.evaluate(call("search", hops=1))
    assert denial is not None and denial.code == "unknown_caveat"


def test_depth_counts_the_delegations_after_it() -> None:
    ok = chain("delegate = o", "depth <= 1", "delegate = a")
    assert ok.evaluate(call(hops=2)) is None
    too_deep = chain("delegate = o", "depth <= 1", "delegate = a", "delegate = b")
    denial = too_deep.evaluate(call(hops=3))
    assert denial is not None and (denial.code, denial.hop) == ("depth_exceeded", 0)


def test_every_budget_admits_only_its_own_currency() -> None:
    usd_only = chain("delegate = o", "budget <= 10 USD")
    assert usd_only.evaluate(call(cost=usd("1"))) is None
    eur = usd_only.evaluate(call(cost=Amount("EUR", 0)))
    assert eur is not None and eur.code == "currency_mismatch"
    widened = chain("delegate = o", "budget <= 10 USD", "delegate = a", "budget <= 1000 EUR")
    for cost in (usd("1"), Amount("EUR", 1)):
        denial = widened.evaluate(call(cost=cost, hops=2))
        assert denial is not None and denial.code == "currency_mismatch"
    assert widened.evaluate(call(hops=2)) is None  # a call without a cost is not a spend


@pytest.mark.parametrize(
    ("a", "b", "both"),
    [
        (("search", "gh.*"), ("gh.issues", "pay"), ("gh.issues",)),
        (("gh.*",), ("gh.is*",), ("gh.is*",)),
        (("a*",), ("b*",), ()),
        (("search",), ("search",), ("search",)),
    ],
)
def test_effective_tools_are_the_intersection(a: tuple[str, ...], b: tuple[str, ...], both: tuple[str, ...]) -> None:
    assert intersect(a, b) == both


def test_the_builder_emits_delegate_first_and_refuses_bad_fields() -> None:
    texts = restriction_caveats(
        to="r",
        budget="2.00 USD",
        tools=["search"],
        max_depth=0,
        args={"amount": "<= 3"},
        expires_at=NOW,
        rate="5/1m",
        cost_cap=usd("0.5"),
        audience=["a"],
        caveats=["depth <= 3"],
    )
    assert texts[0] == "delegate = r" and all(isinstance(parse(t), Caveat) for t in texts)
    assert "cost <= 0.50 USD" in texts and "expires < 2027-01-15T08:00:00Z" in texts
    for bad, field in (
        ({"budget": "2 usd"}, "budget"),
        ({"tools": ["a b"]}, "tools"),
        ({"rate": "x"}, "rate"),
        ({"args": {"a": "~ 1"}}, "args.a"),
        ({"caveats": ["nope"]}, "caveats[0]"),
        ({"max_depth": -1}, "max_depth"),
        ({"to": ""}, "to"),
    ):
        with pytest.raises(ValueError, match=f"^{field.replace('[', '.').replace(']', '.')}"):
            restriction_caveats(**bad)  # type: ignore[arg-type]
