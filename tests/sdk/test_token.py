"""The offline SDK Token: views of a token without its key, and attenuation that refuses to widen."""

from __future__ import annotations

import pytest

from app.sdk import Token, TokenError
from app.token.keys import KeyRing, new_key_entry
from app.token.mint import mint
from app.token.verifier import Verifier
from caveats.base import Context
from caveats.money import Amount, parse_money

NOW = 1_800_000_000  # a fixed clock: 2027-01-15
RING = KeyRing(new_key_entry())


def root(*caveats: str) -> Token:
    token, _ = mint(RING, "http://agentcaps.test", ["delegate = orchestrator", *caveats])
    return Token.parse(token)


def test_views_show_hops_holder_caveats_and_identity() -> None:
    parent = root("budget <= 10.00 USD", "tools in search,pay", "depth <= 2")
    child = parent.attenuate(to="researcher", budget="2.00 USD", tools=["search"], max_depth=0, now=NOW)
    assert child.holder == "researcher" and child.delegation == ["orchestrator", "researcher"]
    assert [(h.hop, h.agent) for h in child.hops] == [(0, "orchestrator"), (1, "researcher")]
    assert child.hops[1].caveats == ["delegate = researcher", "tools in search", "budget <= 2.00 USD", "depth <= 0"]
    assert child.caveats[:4] == parent.caveats
    assert child.token_id == parent.token_id and child.key_id == parent.key_id
    assert str(Token.parse(str(child) + "\n")) == str(child)


def test_attenuated_tokens_verify_with_the_key_and_narrow() -> None:
    parent = root("budget <= 10.00 USD", "tools in search,pay")
    child = parent.attenuate(to="buyer", budget="5 USD", tools=["pay"], args={"amount": "<= 3"}, now=NOW)
    chain = Verifier(RING).verify(str(child))
    analysis = chain.analysis
    ok = Context(NOW, "pay", None, parse_money("1 USD"), {"amount": 3}, len(analysis.delegation))
    assert analysis.evaluate(ok) is None
    too_much = Context(NOW, "pay", None, parse_money("1 USD"), {"amount": 4}, len(analysis.delegation))
    assert analysis.evaluate(too_much) is not None
    search = Context(NOW, "search", None, None, {}, len(analysis.delegation))
    assert analysis.evaluate(search) is not None  # the parent allowed it, the child does not


def test_limits_are_the_tightest_of_each_kind() -> None:
    token = root(
        "budget <= 10.00 USD",
        "cost <= 1 USD",
        "tools in search,fetch,gh.*",
        "audience in a,b",
        "expires < 2027-06-01T00:00:00Z",
        "depth <= 3",
        "rate <= 100/1h",
    ).attenuate(
        to="r",
        budget="4 USD",
        cost_cap="0.5 USD",
        tools=["gh.issues", "search"],
        audience=["b"],
        expires_at="2027-03-01T00:00:00Z",
        max_depth=1,
        now=NOW,
    )
    limits = token.limits
    assert limits.budgets == {"USD": "4.00"} and limits.cost_caps == {"USD": "0.50"}
    assert limits.tools == ["search", "gh.issues"] and limits.audience == ["b"]
    assert limits.expires_at == "2027-03-01T00:00:00Z"
    assert limits.delegations_left == 1  # 3 allowed after hop 0, one used; 1 allowed after hop 1
    assert limits.rates == ["rate <= 100/1h"]


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"budget": "10.01 USD"}, "more than the 10.00 USD"),
        ({"budget": "1 EUR"}, "limits are in USD"),
        ({"cost_cap": "2 USD"}, "more than the 1.00 USD"),
        ({"tools": ["search", "shell"]}, "tools shell are not within"),
        ({"tools": ["gh.*"]}, "not within"),
        ({"audience": ["c"]}, "audience c is not within"),
        ({"expires_at": NOW - 1}, "already past"),
        ({"expires_at": "2027-01-15T08:00:00+01:00"}, "expires_at: time must be RFC 3339"),
        ({"expires_in": 0}, "positive"),
        ({"expires_in": 10, "expires_at": NOW + 10}, "not both"),
        ({"rate": "1/1y"}, "rate: rate must"),
        ({"caveats": ["budget <= ５ USD"]}, "caveats[0]"),
        ({"args": {"amount": "~ 3"}}, "args.amount"),
        ({}, "nothing to add"),
        ({"tools": "search"}, "tools: give a list of names"),
        ({"audience": "a"}, "audience: give a list of names"),
        ({"to": "bad name"}, "to: delegate must name one agent"),
        ({"approval_tools": "pay"}, "approval_tools: give a list of names"),
        ({"approval_tools": []}, "approval_tools: give at least one name"),
        ({"approval_tools": ["*"]}, "approval_tools: approval tools must be comma-separated names"),
        ({"approval_tools": ["pay,wire"]}, "approval_tools: 'pay,wire' is not one name"),
        ({"approval_above": "1 usd"}, "approval_above: expected an amount and a currency"),
        ({"approval_above": "1.1234567 USD"}, "approval_above: amount must be digits"),
        ({"approval_above": Amount("USD", -1)}, "approval_above: "),
    ],
)
def test_attenuation_refuses_what_could_never_hold_or_looks_like_widening(kwargs: dict[str, object], why: str) -> None:
    token = root("budget <= 10.00 USD", "cost <= 1 USD", "tools in search,gh.issues", "audience in a,b")
    with pytest.raises(TokenError, match=why.replace("[", r"\[").replace("]", r"\]")):
        token.attenuate(now=NOW, **kwargs)  # type: ignore[arg-type]


def test_no_delegation_past_the_depth_limit_but_restrictions_still_may_be_added() -> None:
    leaf = root("depth <= 1").attenuate(to="a", now=NOW)
    with pytest.raises(TokenError, match="no further delegation"):
        leaf.attenuate(to="b", now=NOW)
    assert leaf.attenuate(tools=["search"], now=NOW).holder == "a"


def test_a_token_that_already_denies_everything_is_not_attenuated() -> None:
    with pytest.raises(TokenError, match="already denies"):
        root("frobnicate = 1").attenuate(tools=["x"], now=NOW)
    with pytest.raises(TokenError, match="expired"):
        root("expires < 2020-01-01T00:00:00Z").attenuate(tools=["x"], now=NOW)


@pytest.mark.parametrize(
    "text", ["", "not a token", "AgEV", "a" * 20000, "AgEVaHR0cDovL2V4YW1wbGUub3JnLwIFa2V5aWQAAAYg"]
)
def test_parse_refuses_what_is_not_an_agentcaps_token(text: str) -> None:
    with pytest.raises(TokenError, match="not an agentcaps token"):
        Token.parse(text)


def test_denies_now_previews_the_stateless_caveats() -> None:
    token = root("tools in search", "expires < 2027-01-16T00:00:00Z")
    assert token.denies_now("search", now=NOW) is None
    assert token.denies_now("pay", now=NOW).startswith("tool_not_allowed")  # type: ignore[union-attr]
    assert token.denies_now("search", now=NOW + 86400).startswith("expired")  # type: ignore[union-attr]


def test_attenuation_never_makes_a_token_the_verifier_would_refuse() -> None:
    token = root()
    long_names = ",".join(f"{i}" + "t" * 120 for i in range(9))  # a valid caveat of about 1.1 KiB
    with pytest.raises(TokenError, match="at most 1024 bytes"):
        token.attenuate(caveats=[f"tools in {long_names}"], now=NOW)
    big = token.attenuate(caveats=["arg.x = " + "a" * 250] * 45, now=NOW)  # about 15 KiB serialized
    with pytest.raises(TokenError, match="over 16 KiB"):
        big.attenuate(caveats=["arg.y = " + "b" * 250] * 5, now=NOW)
    assert Verifier(RING).verify(str(big)).analysis.texts[-1].startswith("arg.x = ")


def test_attenuation_refuses_more_budget_or_rate_caveats_than_a_token_may_carry() -> None:
    """At most 16 budgets and 8 rates in a chain: the 17th budget is refused offline, hop by hop or at once."""
    token = root("budget <= 10.00 USD", "rate <= 100/1h")
    for _ in range(15):
        token = token.attenuate(budget="10 USD", now=NOW)
    assert len(Verifier(RING).verify(str(token)).analysis.budgets) == 16
    with pytest.raises(TokenError, match="at most 16 budget caveats, this one has 17"):
        token.attenuate(budget="1 USD", now=NOW)
    with pytest.raises(TokenError, match="at most 8 rate caveats, this one has 9"):
        root("rate <= 100/1h").attenuate(caveats=["rate <= 10/1m"] * 8, now=NOW)


def test_approval_caveats_are_added_shown_and_never_deny() -> None:
    parent = root("budget <= 10.00 USD", "tools in search,pay,wire.*")
    child = parent.attenuate(to="buyer", approval_tools=["pay", "wire.*"], approval_above="1.00 USD", now=NOW)
    assert child.caveats[-3:] == ["delegate = buyer", "approval in pay,wire.*", "approval > 1.00 USD"]
    assert child.hops[1].caveats == child.caveats[-3:]
    assert child.limits.approvals == ["approval in pay,wire.*", "approval > 1.00 USD"]
    assert parent.limits.approvals == []
    # Waiting for a human is not a denial: offline, every call the chain allows is still allowed.
    assert child.denies_every_call(now=NOW) is None and child.denies_now("pay", now=NOW) is None
    assert child.attenuate(tools=["pay"], now=NOW).limits.approvals == child.limits.approvals
    analysis = Verifier(RING).verify(str(child)).analysis
    hops = len(analysis.delegation)
    gate = analysis.approval(Context(NOW, "wire.sepa", None, None, {}, hops))
    assert gate is not None and (gate.index, gate.hop, gate.caveat) == (4, 1, "approval in pay,wire.*")
    gate = analysis.approval(Context(NOW, "search", None, parse_money("1.01 USD"), {}, hops))
    assert gate is not None and (gate.index, gate.hop) == (5, 1)
    assert analysis.approval(Context(NOW, "search", None, parse_money("1 USD"), {}, hops)) is None


def test_approval_above_takes_an_amount_or_its_text() -> None:
    token = root("budget <= 10.00 USD")
    by_text = token.attenuate(approval_above="2.5 EUR", now=NOW)  # another currency than the budget: still narrows
    by_amount = token.attenuate(approval_above=parse_money("2.5 EUR"), now=NOW)
    assert by_text.caveats[-1] == "approval > 2.5 EUR" and by_amount.caveats[-1] == "approval > 2.50 EUR"


def test_the_package_exports() -> None:
    import app.sdk

    # What users import: a change here is a change of the SDK's public surface, made on purpose.
    assert sorted(app.sdk.__all__) == ["ApiError", "AsyncClient", "Client", "Hop", "Limits", "Token", "TokenError"]
    assert all(getattr(app.sdk, name) for name in app.sdk.__all__)
