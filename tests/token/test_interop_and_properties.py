"""pymacaroons interop both ways, and properties of the chain under hostile changes (hypothesis)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymacaroons import Macaroon
from pymacaroons import Verifier as PyVerifier
from pymacaroons.exceptions import MacaroonInvalidSignatureException

from app.errors import InvalidToken
from app.token import codec
from app.token.keys import KeyRing, new_key_entry
from app.token.mint import attenuate, mint
from app.token.verifier import Verifier
from caveats.base import Context
from caveats.expires import format_instant
from caveats.money import Amount

RING = KeyRing(new_key_entry())
LOCATION = "http://agentcaps.test"
ROOT, ROOT_ID = mint(RING, LOCATION, ["delegate = orchestrator", "budget <= 10.00 USD", "tools in search,pay,gh.*"])
VERIFIER = Verifier(RING)
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_a_token_we_mint_verifies_in_pymacaroons_with_the_derived_root_key() -> None:
    child = attenuate(ROOT, ["delegate = researcher", "tools in search"])
    chain = VERIFIER.verify(child)
    root_key = RING.root_key(chain.key_id, bytes.fromhex(chain.token_id), LOCATION.encode())
    m = Macaroon.deserialize(child)
    checker = PyVerifier()
    checker.satisfy_general(lambda caveat: True)
    assert checker.verify(m, root_key)
    assert [c.caveat_id_bytes.decode() for c in m.first_party_caveats()] == list(chain.analysis.texts)
    wrong = PyVerifier()
    wrong.satisfy_general(lambda caveat: True)
    with pytest.raises(MacaroonInvalidSignatureException):
        wrong.verify(m, b"\x00" * 32)


def test_a_token_attenuated_by_pymacaroons_verifies_here() -> None:
    m = Macaroon.deserialize(ROOT)
    narrowed = m.add_first_party_caveat("delegate = buyer").add_first_party_caveat("tools in pay")
    chain = VERIFIER.verify(narrowed.serialize())
    assert chain.analysis.delegation == ("orchestrator", "buyer") and chain.analysis.tools == ("pay",)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@FAST
@given(st.data())
def test_any_single_character_change_is_invalid(data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(ROOT) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ ."
    c = data.draw(st.sampled_from([a for a in alphabet if a != ROOT[i]]))
    try:
        VERIFIER.verify(ROOT[:i] + c + ROOT[i + 1 :])
    except InvalidToken:
        return
    raise AssertionError(f"changing character {i} to {c!r} still verified")


@FAST
@given(st.data())
def test_any_bit_flip_of_the_decoded_bytes_is_invalid(data: st.DataObject) -> None:
    raw = bytearray(codec.b64decode(ROOT))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        VERIFIER.verify(b64(bytes(raw)))
    except InvalidToken:
        return
    raise AssertionError(f"flipping a bit of byte {i} still verified")


CHILD = attenuate(ROOT, ["delegate = a", "budget <= 4 USD", "tools in search", "expires < 2030-01-01T00:00:00Z"])


@FAST
@given(st.data())
def test_dropping_reordering_or_duplicating_caveats_never_verifies(data: st.DataObject) -> None:
    raw = codec.decode(CHILD)
    caveats = list(raw.caveats)
    how = data.draw(st.sampled_from(["drop", "swap", "duplicate"]))
    i = data.draw(st.integers(0, len(caveats) - 1))
    if how == "drop":
        del caveats[i]
    elif how == "duplicate":
        caveats.insert(i, caveats[i])
    else:
        j = data.draw(st.integers(0, len(caveats) - 1).filter(lambda j: caveats[j] != caveats[i]))
        caveats[i], caveats[j] = caveats[j], caveats[i]
    try:
        VERIFIER.verify(codec.encode(raw._replace(caveats=tuple(caveats))))
    except InvalidToken:
        return
    raise AssertionError(f"{how} at {i} still verified")


names = st.sampled_from(["search", "pay", "gh.issues", "gh.pulls", "fetch"])
caveat_texts = st.one_of(
    names.map(lambda n: f"delegate = {n}"),
    st.lists(st.sampled_from(["search", "pay", "gh.*", "gh.issues", "fetch"]), min_size=1, max_size=3, unique=True).map(
        lambda ts: "tools in " + ",".join(ts)
    ),
    st.integers(0, 20).map(lambda n: f"budget <= {n} USD"),
    st.integers(0, 20).map(lambda n: f"cost <= {n}.5 USD"),
    st.sampled_from(["EUR", "USD"]).map(lambda c: f"budget <= 5 {c}"),
    st.integers(1_700_000_000, 1_900_000_000).map(lambda t: "expires < " + format_instant(t)),
    st.integers(0, 10).map(lambda n: f"arg.amount <= {n}"),
    st.integers(0, 3).map(lambda n: f"depth <= {n}"),
    st.sampled_from(["audience in a,b", "audience in b", "frob = 1", "tools in ,"]),
)
calls = st.builds(
    lambda tool, now, cost, amount, aud: Context(now, tool, aud, cost, {"amount": amount}, 0),
    names,
    st.integers(1_700_000_000, 1_900_000_000),
    st.one_of(st.none(), st.builds(Amount, st.sampled_from(["USD", "EUR"]), st.integers(0, 30_000_000))),
    st.integers(0, 12),
    st.sampled_from([None, "a", "b"]),
)


def with_hops(call: Context, delegation: tuple[str, ...]) -> Context:
    return Context(call.now, call.tool, call.audience, call.cost, call.args, len(delegation))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(caveat_texts, min_size=1, max_size=4), min_size=1, max_size=4), calls)
def test_attenuation_never_allows_what_its_parent_denies(steps: list[list[str]], call: Context) -> None:
    token = ROOT
    for step in steps:
        parent = VERIFIER.verify(token)
        token = attenuate(token, step)
        child = VERIFIER.verify(token)
        # Each chain is judged with its own hop count: a child may add delegations, which only tightens depth.
        parent_denial = parent.analysis.evaluate(with_hops(call, parent.analysis.delegation))
        child_denial = child.analysis.evaluate(with_hops(call, child.analysis.delegation))
        if parent_denial is not None:
            assert child_denial is not None, (steps, call, parent_denial)
        # Every budget counter of the parent is a counter of the child too: same prefix, same limit.
        parent_budgets = {(parent.counter_prefix(b.index), b.limit) for b in parent.analysis.budgets}
        child_budgets = {(child.counter_prefix(b.index), b.limit) for b in child.analysis.budgets}
        assert parent_budgets <= child_budgets
