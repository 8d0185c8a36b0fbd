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
        # µs for bare, pymac, fresh, recur, cached; then ours/bare and pymac/ours for fresh, recur, cached
        assert re.search(rf"^ +{size}(?: +{NUMBER}){{5}}$", out, re.M), out
        assert re.search(rf"^ +{size}(?: +{NUMBER}x){{3}}  \|(?: +{NUMBER}x){{3}}$", out, re.M), out
        # fresh really is fresh: no caveat text was found in the parse memo while it was timed
        assert re.search(rf"^ +{size}  fresh +0\.00%   recur +100\.00%$", out, re.M), out


def test_every_variant_accepts_the_bench_tokens(bench: dict[str, Any]) -> None:
    """The floor and pymacaroons verify the same tokens ours allows, so all three time the same work."""
    us, hits = bench["measure"](20, 2, 1)
    assert set(us) == {"bare", "pymac", "fresh", "recur", "cached"}
    assert all(t > 0 for t in us.values())
    assert hits == {"fresh": 0.0, "recur": 1.0}


def test_fresh_tokens_share_no_caveat_text(bench: dict[str, Any]) -> None:
    texts = [bench["caveat_texts"](20, n) for n in range(1, 30)]
    assert len({t for token in texts for t in token}) == 20 * len(texts)
