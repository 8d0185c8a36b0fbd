"""Properties under hostile changes (hypothesis): no edit of a token verifies, and attenuation only narrows."""

from __future__ import annotations

from decimal import Decimal

import msgspec
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.errors import InvalidToken
from app.token import codec
from app.token.mint import attenuate, mint
from app.token.verifier import VerifiedChain, Verifier
from caveats.base import Context
from caveats.chain import covers
from caveats.expires import format_instant
from caveats.money import Amount
from tests.token.forge import LOCATION, RING, b64

VERIFIER = Verifier(RING)
ROOT, _ = mint(RING, LOCATION, ["delegate = orchestrator", "budget <= 10.00 USD", "tools in search,pay,gh.*"])
CHILD = attenuate(ROOT, ["delegate = a", "budget <= 4 USD", "tools in search", "expires < 2030-01-01T00:00:00Z"])
BASES = (
    ROOT,
    CHILD,
    mint(RING, LOCATION, [])[0],  # no caveats at all
    mint(RING, "https://a.much.longer.location.test/with/a/path", ["arg.note = " + "x" * 200])[0],  # 2-byte lengths
)
for _base in BASES:
    VERIFIER.verify(_base)

EDITS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Characters an attacker might put into a token: the alphabet, padding, the standard alphabet, whitespace,
# look-alikes and anything else.
CHARS = st.one_of(
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ .\n\t\x00"),
    st.characters(),
)


def never_verifies(token: str) -> None:
    try:
        chain = VERIFIER.verify(token)
    except InvalidToken:
        return
    raise AssertionError(f"an edited token verified: {token!r} -> {chain.token_id}")


@EDITS
@given(st.sampled_from(BASES), st.data())
def test_any_character_change_is_invalid(base: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(base) - 1))
    c = data.draw(CHARS.filter(lambda c: c != base[i]))
    never_verifies(base[:i] + c + base[i + 1 :])


@EDITS
@given(st.sampled_from(BASES), st.data())
def test_any_bit_flip_of_a_character_is_invalid(base: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(base) - 1))
    bit = data.draw(st.integers(0, 15))
    never_verifies(base[:i] + chr(ord(base[i]) ^ (1 << bit)) + base[i + 1 :])


@EDITS
@given(st.sampled_from(BASES), st.data())
def test_any_character_removed_is_invalid(base: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(base) - 1))
    never_verifies(base[:i] + base[i + 1 :])


@EDITS
@given(st.sampled_from(BASES), st.data(), st.booleans())
def test_any_byte_change_of_the_decoded_token_is_invalid(base: str, data: st.DataObject, padded: bool) -> None:
    raw = bytearray(codec.b64decode(base))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[i]))
    token = b64(bytes(raw))
    never_verifies(token + "=" * (-len(token) % 4) if padded else token)


@EDITS
@given(st.sampled_from(BASES), st.data())
def test_any_bit_flip_of_the_decoded_token_is_invalid(base: str, data: st.DataObject) -> None:
    raw = bytearray(codec.b64decode(base))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    never_verifies(b64(bytes(raw)))


@EDITS
@given(st.sampled_from(BASES), st.data())
def test_any_byte_inserted_into_the_decoded_token_is_invalid(base: str, data: st.DataObject) -> None:
    raw = codec.b64decode(base)
    i = data.draw(st.integers(0, len(raw)))
    never_verifies(b64(raw[:i] + bytes([data.draw(st.integers(0, 255))]) + raw[i:]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 8), max_size=10))
def test_dropping_reordering_or_duplicating_caveats_never_verifies(order: list[int]) -> None:
    raw = codec.decode(CHILD)
    n = len(raw.caveats)
    indices = [i % n for i in order]
    assume(indices != list(range(n)))
    never_verifies(codec.encode(raw._replace(caveats=tuple(raw.caveats[i] for i in indices))))


def test_each_drop_swap_and_duplicate_of_one_caveat_never_verifies() -> None:
    raw = codec.decode(CHILD)
    n = len(raw.caveats)
    edits: list[list[int]] = [[j for j in range(n) if j != i] for i in range(n)]
    edits += [[*range(i), i, *range(i, n)] for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            order = list(range(n))
            order[i], order[j] = j, i
            edits.append(order)
    for order in edits:
        never_verifies(codec.encode(raw._replace(caveats=tuple(raw.caveats[i] for i in order))))


# --- attenuation only narrows -----------------------------------------------------------------------------------

NAMES = ["search", "pay", "gh.issues", "gh.pulls", "fetch"]
PATTERNS = ["search", "pay", "gh.*", "gh.issues", "fetch", "f*"]
T0 = 1_800_000_000
instants = st.integers(T0 - 10, T0 + 10)
amounts = st.sampled_from(["0", "0.5", "1", "2.25", "4", "10", "20", "0.000001"])
currencies = st.sampled_from(["USD", "EUR"])
caveat_texts = st.one_of(
    st.sampled_from([*NAMES, "researcher", "buyer"]).map(lambda n: f"delegate = {n}"),
    st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3, unique=True).map(lambda ts: "tools in " + ",".join(ts)),
    st.tuples(amounts, currencies).map(lambda a: f"budget <= {a[0]} {a[1]}"),
    st.tuples(amounts, currencies).map(lambda a: f"cost <= {a[0]} {a[1]}"),
    instants.map(lambda t: "expires < " + format_instant(t)),
    st.tuples(st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), st.integers(0, 10)).map(
        lambda a: f"arg.amount {a[0]} {a[1]}"
    ),
    st.lists(st.sampled_from(["usd", "eur", "gbp"]), min_size=1, max_size=2, unique=True).map(
        lambda cs: "arg.currency in " + ",".join(cs)
    ),
    st.sampled_from(["arg.repo = acme/web", "arg.repo != acme/web", "arg.meta.dry_run = true"]),
    st.integers(0, 3).map(lambda n: f"depth <= {n}"),
    st.sampled_from(["audience in a,b", "audience in b", "audience in c"]),
    st.integers(0, 5).map(lambda n: f"rate <= {n}/1m"),
    # Fail-closed texts: unknown keys, bad syntax, bad values.
    st.sampled_from(["frob = 1", "tools in ,", "budget <= 5 usd", "expires < 2030-01-01", "tools in search\n", "x"]),
)
calls = st.builds(
    lambda tool, now, cost, amount, currency, repo, dry_run, audience: Context(
        now,
        tool,
        audience,
        cost,
        {"amount": amount, "currency": currency, "repo": repo, "meta": {"dry_run": dry_run}},
    ),
    st.sampled_from(NAMES),
    instants,
    st.one_of(st.none(), st.builds(Amount, currencies, st.integers(0, 30_000_000))),
    st.one_of(st.integers(0, 12), st.sampled_from([Decimal("4.5"), "7", "x", None])),
    st.sampled_from(["usd", "eur", "gbp"]),
    st.sampled_from(["acme/web", "acme/api"]),
    st.booleans(),
    st.sampled_from([None, "a", "b"]),
)


def counters(chain: VerifiedChain) -> set[tuple[str, int, int, str, object]]:
    """Every budget and rate counter as the store keys it (prefix id) with what it limits."""
    a = chain.analysis
    out: set[tuple[str, int, int, str, object]] = set()
    for b in a.budgets:
        out.add((chain.counter_prefix(b.index), b.index, b.hop, b.caveat, b.parsed.limit))
    for r in a.rates:
        out.add((chain.counter_prefix(r.index), r.index, r.hop, r.caveat, (r.parsed.count, r.parsed.window)))
    return out


def variants(call: Context) -> list[Context]:
    """The drawn call and the same call for every tool and a few costs: each attenuation step is judged on all."""
    costs = [call.cost, None, Amount("USD", 1), Amount("EUR", 1), Amount("USD", 10_000_000)]
    return [call] + [msgspec.structs.replace(call, tool=t, cost=c) for t in NAMES for c in costs]


def with_hops(ctx: Context, chain: VerifiedChain) -> Context:
    """The call as the authority builds it for this chain (`hops` is the chain's own delegation count)."""
    return Context(ctx.now, ctx.tool, ctx.audience, ctx.cost, ctx.args, len(chain.analysis.delegation))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(caveat_texts, min_size=1, max_size=4), min_size=1, max_size=4), calls)
def test_attenuation_never_allows_what_its_parent_denies(steps: list[list[str]], call: Context) -> None:
    token = ROOT
    for step in steps:
        parent = VERIFIER.verify(token)
        token = attenuate(token, step)
        child = VERIFIER.verify(token)
        assert child.token_id == parent.token_id and child.key_id == parent.key_id
        assert child.prefixes[: len(parent.prefixes)] == parent.prefixes
        for ctx in variants(call):
            # One Context for parent and child, and each as the authority builds it (its own hop count).
            if parent.analysis.evaluate(ctx) is not None:
                assert child.analysis.evaluate(ctx) is not None, (steps, ctx)
            if parent.analysis.evaluate(with_hops(ctx, parent)) is not None:
                assert child.analysis.evaluate(with_hops(ctx, child)) is not None, (steps, ctx)
        # Every counter of the parent is a counter of the child, keyed by the same prefix id: a child can only
        # add counters, so the store charges it against everything its parent was charged against.
        assert counters(parent) <= counters(child)
        pa, ca = parent.analysis, child.analysis
        if pa.expires_at is not None:
            assert ca.expires_at is not None and ca.expires_at <= pa.expires_at
        if pa.tools is not None:
            assert ca.tools is not None and all(any(covers(p, c) for p in pa.tools) for c in ca.tools)
        assert ca.delegation[: len(pa.delegation)] == pa.delegation
