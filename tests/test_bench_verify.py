"""scripts/bench_verify.py end to end with tiny counts: it prints every figure and ratio, never judged on time."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench_verify.py"
NUMBER = r"\d+\.\d+"


@pytest.fixture(scope="module")
def bench() -> dict[str, Any]:
    return runpy.run_path(str(BENCH))


def test_prints_times_and_ratios_for_each_size(bench: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    bench["main"](["--tokens", "3", "--rounds", "1", "--sizes", "1,5"])
    out = capsys.readouterr().out
    for size in (1, 5):
        # µs for bare, pymac, fresh, minted, recur, cached; then ours/bare and pymac/ours for our four
        assert re.search(rf"^ +{size}(?: +{NUMBER}){{6}}$", out, re.M), out
        assert re.search(rf"^ +{size}(?: +{NUMBER}x){{4}}  \|(?: +{NUMBER}x){{4}}$", out, re.M), out
    # fresh really is fresh: 3 tokens, every caveat text distinct; minted ones differ in their expiry (the
    # second caveat) only; recurring ones share all their texts
    assert re.search(r"^ +1  fresh +3/3 +minted +1/3 +recur +1/3 *$", out, re.M), out
    assert re.search(r"^ +5  fresh +15/15 +minted +7/15 +recur +5/15 *$", out, re.M), out


def test_every_variant_accepts_the_bench_tokens(bench: dict[str, Any]) -> None:
    """The floor and pymacaroons verify the same tokens ours allows, so all three time the same work."""
    us, texts = bench["measure"](20, 2, 1)
    assert set(us) == {"bare", "pymac", "fresh", "minted", "recur", "cached"}
    assert all(t > 0 for t in us.values())
    assert texts == {"fresh": (40, 40), "minted": (22, 40), "recur": (20, 40)}


def test_a_fresh_round_starts_with_an_empty_parse_memo_and_a_recurring_one_knows_every_text(
    bench: dict[str, Any],
) -> None:
    from app.token.keys import KeyRing
    from caveats import registry

    ring = KeyRing({"k1": b"k" * 32})
    tokens = [bench["mint"](ring, bench["LOCATION"], bench["caveat_texts"](5, n))[0] for n in (0, 0)]
    registry.read(b"delegate = left-over")
    bench["ours_first_sight"](ring, tokens, known=None).prepare()
    assert len(registry._memo) == 0
    bench["ours_first_sight"](ring, tokens, known=tokens[0]).prepare()
    assert {text for text, _ in registry._memo._values.values()} == set(bench["caveat_texts"](5, 0))


def test_fresh_tokens_share_no_caveat_text(bench: dict[str, Any]) -> None:
    texts = [bench["caveat_texts"](20, n) for n in range(1, 30)]
    assert len({t for token in texts for t in token}) == 20 * len(texts)


def test_minted_tokens_share_all_but_their_expiry(bench: dict[str, Any]) -> None:
    recurring = bench["caveat_texts"](20, 0)
    for n in range(1, 30):
        minted = bench["caveat_texts"](20, n, bench["MINTED_NEW"])
        differ = [m for m, r in zip(minted, recurring, strict=True) if m != r]
        assert [t.split(" ")[0] for t in differ] == ["expires", "expires"], differ
