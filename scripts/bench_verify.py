"""Verify cost per token size: ours (first sight, seen before), pymacaroons, and a bare HMAC-chain floor.

One run, same machine, same kind of tokens. For 1, 5, 10 and 20 caveats it prints µs per verify, then ratios:

- `bare`    the floor, written here: base64 decode, the V2 fields, the root key and HMAC chain with
            `hmac.digest`, a constant-time compare, and a trivial look at each caveat (is its key known).
            No strictness, no limits, no analysis.
- `pymac`   `Macaroon.deserialize` + a `pymacaroons.Verifier` whose one `satisfy_general` callback does the
            same trivial look (built once and reused, which flatters it).
- `fresh`   ours, first sight of a token whose caveat texts were never seen either: every text is unique
            to its token and the parse memo is emptied before each round.
- `minted`  ours, first sight of a token as a tool server meets them all day: freshly minted or attenuated,
            so its expiry instants are new (each mint sets its own), while agent names, tools, audiences,
            budgets and rates recur across tokens.
- `recur`   ours, first sight of a token (new token id: new chain, new analysis) whose caveat texts other
            tokens already carried (`delegate = researcher`, the same budget...), so parsing is remembered.
- `cached`  ours, a token seen before.

"Ours" is the whole stateless decision of one call, as the service makes it before the counter store:
`Verifier.verify(token)` (decode, limits, HMAC chain, prefix ids, analysis), a Context with tool, audience,
cost and args, then `analysis.evaluate(ctx)`, every caveat of which holds. Every variant, ours included,
derives the per-token root key from the master key inside the timed loop. Each figure is the best of
`--rounds` rounds over `--tokens` distinct tokens, the variants taking turns within a round; other load on
the machine only makes figures worse.

    .venv/bin/python scripts/bench_verify.py [--tokens 400] [--rounds 7] [--sizes 1,5,10,20]
"""

from __future__ import annotations

import argparse
import base64
import gc
import hmac
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pymacaroons

from app.token import codec
from app.token.keys import KeyRing
from app.token.mint import mint
from app.token.verifier import Verifier
from caveats import Amount, Context
from caveats.chain import forget_intersections
from caveats.registry import forget

SIZES = (1, 5, 10, 20)
LOCATION = "https://agentcaps.example"
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
KNOWN = frozenset({"delegate", "expires", "tools", "audience", "budget", "cost", "rate", "depth"})
ROOT_TAG = b"agentcaps/root/v1\x00"
MINTED_NEW = frozenset({"expires"})  # what differs between tokens minted under one policy
Verify = Callable[[str, dict[str, bytes]], bool]


def caveat_texts(size: int, n: int, new: frozenset[str] | None = None) -> list[str]:
    """A realistic chain of `size` caveats over three hops; `n` > 0 makes texts unique to token `n`: those
    of the caveat keys in `new`, or all of them."""
    if new is not None:
        recurring = caveat_texts(size, 0)
        unique = caveat_texts(size, n)
        return [u if u.split(" ", 1)[0] in new else r for u, r in zip(unique, recurring, strict=True)]
    u = f"-{n}" if n else ""
    exp = 1_798_761_600 + n  # 2027-01-01, one second later per token
    d = 2 * (n % 499)  # depth is at most 1000: texts recur every 499 tokens, long evicted by then

    def instant(seconds: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))

    texts = [
        f"delegate = orchestrator{u}",
        f"expires < {instant(exp)}",
        f"tools in search,fetch,github{u}.*",
        f"audience in search-srv,payments-srv{u}",
        f"budget <= 10.{n % 1_000_000:06d} USD",
        f"cost <= 0.5{n % 100_000:05d} USD",
        f"rate <= {1000 + n % 99_000}/1h",
        f"depth <= {3 + d}",
        f"delegate = researcher{u}",
        f"budget <= 2.{n % 1_000_000:06d} USD",
        f"tools in search,fetch{u}",
        f"expires < {instant(exp - 3600)}",
        f"arg.amount <= {500 + n}",
        f"depth <= {2 + d}",
        f"delegate = summarizer{u}",
        f"tools in search,x{u}",
        f"budget <= 1.{n % 1_000_000:06d} USD",
        f"cost <= 0.1{n % 100_000:05d} USD",
        f"arg.currency in USD,EUR{u.replace('-', 'X')}",
        f"rate <= {10 + n % 99_000}/1m",
    ]
    if size > len(texts):
        raise SystemExit(f"sizes up to {len(texts)} caveats")
    return texts[:size]


def context() -> Context:
    return Context(NOW, "search", "search-srv", Amount("USD", 50_000), {"amount": 100, "currency": "USD"})


# -- the floor ------------------------------------------------------------------------------------------------
def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _known(caveat: str) -> bool:
    return caveat.split(" ", 1)[0] in KNOWN or caveat.startswith("arg.")


def _root_key(masters: dict[str, bytes], identifier: bytes, location: bytes) -> bytes:
    _, kid, tid = identifier.split(b":")
    return hmac.digest(masters[kid.decode()], ROOT_TAG + bytes.fromhex(tid.decode()) + b"\x00" + location, "sha256")


def bare_verify(token: str, masters: dict[str, bytes]) -> bool:
    """The least a verifier must do: decode, read the V2 fields, run the chain, compare, glance at each caveat."""
    data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    fields: list[bytes] = []
    pos = 1
    while pos < len(data):
        kind = data[pos]
        pos += 1
        if kind:  # EOS carries nothing
            length, pos = _uvarint(data, pos)
            fields.append(data[pos : pos + length])
            pos += length
    location, identifier, caveats, signature = fields[0], fields[1], fields[2:-1], fields[-1]
    derived = hmac.digest(b"macaroons-key-generator", _root_key(masters, identifier, location), "sha256")
    sig = hmac.digest(derived, identifier, "sha256")
    for caveat in caveats:
        sig = hmac.digest(sig, caveat, "sha256")
    return hmac.compare_digest(sig, signature) and all(_known(c.decode()) for c in caveats)


# -- pymacaroons ----------------------------------------------------------------------------------------------
def pymacaroons_verify() -> Verify:
    verifier = pymacaroons.Verifier()
    verifier.satisfy_general(_known)

    def verify(token: str, masters: dict[str, bytes]) -> bool:
        m = pymacaroons.Macaroon.deserialize(token)
        return bool(verifier.verify(m, _root_key(masters, m.identifier_bytes, m.location.encode())))

    return verify


# -- timing ---------------------------------------------------------------------------------------------------
class Variant(NamedTuple):
    prepare: Callable[[], object]  # untimed, before each of its rounds
    run: Callable[[], int]  # timed; returns how many verifies it made


def best(rounds: int, variants: dict[str, Variant]) -> dict[str, float]:
    """µs per verify by variant, the best of `rounds` rounds. The variants take turns within each round, so
    a slow spell of a shared machine falls on all of them alike rather than on whichever ran then."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, variant in variants.items():
            variant.prepare()
            gc.collect()
            start = time.perf_counter_ns()
            count = variant.run()
            times[name].append((time.perf_counter_ns() - start) / count / 1000)
    return {name: min(t) for name, t in times.items()}


def nothing() -> None:
    pass


def forget_caveats() -> None:
    """Empty what a verifier remembers about caveat texts: parsed caveats and tool-list intersections."""
    forget()
    forget_intersections()


def distinct_texts(tokens: Sequence[str]) -> tuple[int, int]:
    """(distinct caveat texts, caveats) over `tokens`: fresh tokens share none, recurring ones all."""
    every = [c for token in tokens for c in codec.decode(token).caveats]
    return len(set(every)), len(every)


def decide(verifier: Verifier, token: str, ctx: Context) -> None:
    """One call's stateless decision, as the service makes it: verify, build the call's Context, evaluate."""
    analysis = verifier.verify(token).analysis
    call = Context(ctx.now, ctx.tool, ctx.audience, ctx.cost, ctx.args, len(analysis.delegation))
    if analysis.evaluate(call) is not None:
        raise AssertionError("the bench's calls must be allowed")


def ours_first_sight(ring: KeyRing, tokens: Sequence[str], known: str | None) -> Variant:
    """Each round starts with a parse memo that knows the caveat texts of token `known` (other tokens carried
    them before), or none."""
    ctx = context()
    # The round's verifier outlives its timing: it is let go in the next prepare, untimed. Freeing it frees every
    # chain it remembered (~0.8 us a token of 10 caveats), which a service, whose verifier lives as long as it
    # does, never pays per call; nor did this bench before 7b2c7c3, whose lru_cache over the bound method made a
    # cycle that the untimed gc.collect() broke.
    held: list[Verifier] = []

    def prepare() -> None:
        held.clear()
        forget_caveats()
        if known is not None:
            decide(Verifier(ring), known, ctx)

    def run() -> int:
        verifier = Verifier(ring)  # an empty token cache: every token is seen for the first time
        held.append(verifier)
        for token in tokens:
            decide(verifier, token, ctx)
        return len(tokens)

    return Variant(prepare, run)


def ours_cached(ring: KeyRing, token: str, repeat: int) -> Variant:
    verifier = Verifier(ring)
    ctx = context()
    decide(verifier, token, ctx)

    def run() -> int:
        for _ in range(repeat):
            decide(verifier, token, ctx)
        return repeat

    return Variant(nothing, run)


def floor(verify: Verify, masters: dict[str, bytes], tokens: Sequence[str]) -> Variant:
    def run() -> int:
        for token in tokens:
            if not verify(token, masters):
                raise AssertionError("the bench's tokens must verify")
        return len(tokens)

    return Variant(nothing, run)


def measure(size: int, count: int, rounds: int) -> tuple[dict[str, float], dict[str, tuple[int, int]]]:
    """(µs per verify by variant, distinct caveat texts over the tokens of each first-sight variant)."""
    masters = {"k1": secrets.token_bytes(32)}
    ring = KeyRing(masters)
    fresh = [mint(ring, LOCATION, caveat_texts(size, n + 1))[0] for n in range(count)]
    minted = [mint(ring, LOCATION, caveat_texts(size, n + 1, MINTED_NEW))[0] for n in range(count)]
    recurring = [mint(ring, LOCATION, caveat_texts(size, 0))[0] for _ in range(count)]
    us = best(
        rounds,
        {
            "bare": floor(bare_verify, masters, recurring),
            "pymac": floor(pymacaroons_verify(), masters, recurring),
            "fresh": ours_first_sight(ring, fresh, known=None),
            "minted": ours_first_sight(ring, minted, known=recurring[0]),
            "recur": ours_first_sight(ring, recurring, known=recurring[0]),
            "cached": ours_cached(ring, recurring[0], count),
        },
    )
    return us, {"fresh": distinct_texts(fresh), "minted": distinct_texts(minted), "recur": distinct_texts(recurring)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Verify cost per token size: ours, pymacaroons, a bare chain.")
    parser.add_argument("--tokens", type=int, default=400, help="distinct tokens per size and round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per figure; the best is shown")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="caveat counts, comma-separated")
    args = parser.parse_args(argv)
    results = {int(s): measure(int(s), args.tokens, args.rounds) for s in args.sizes.split(",")}
    ours = ("fresh", "minted", "recur", "cached")

    print(f"µs per verify, best of {args.rounds} rounds of {args.tokens} tokens (Python {sys.version.split()[0]})")
    print(f"{'caveats':>8}" + "".join(f"{k:>9}" for k in ("bare", "pymac", *ours)))
    for size, (us, _) in results.items():
        print(f"{size:>8}" + "".join(f"{us[k]:>9.2f}" for k in ("bare", "pymac", *ours)))

    print("\nratios: ours / bare (first sight: target <= 1.3x) | pymacaroons / ours (first sight ~3x, cached >= 25x)")
    print(f"{'caveats':>8}" + "".join(f"{k:>9}" for k in ours) + "  |" + "".join(f"{k:>9}" for k in ours))
    for size, (us, _) in results.items():
        over_bare = "".join(f"{us[k] / us['bare']:>8.2f}x" for k in ours)
        faster = "".join(f"{us['pymac'] / us[k]:>8.1f}x" for k in ours)
        print(f"{size:>8}{over_bare}  |{faster}")

    print("\ndistinct caveat texts / caveats (each round starts with a memo that knows only recur's texts)")
    for size, (_, texts) in results.items():
        print(f"{size:>8}" + "".join(f"  {k} {texts[k][0]:>6}/{texts[k][1]:<6}" for k in texts))


if __name__ == "__main__":
    main()
