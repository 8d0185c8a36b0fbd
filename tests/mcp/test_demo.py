"""scripts/demo end to end: its exit code says every expected allow and deny happened."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_every_expected_allow_and_deny() -> None:
    done = subprocess.run([str(ROOT / "scripts" / "demo")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "every call was allowed or denied as expected" in out
    assert "researcher -> intern, offline: refused" in out
    for denial in ("tool_not_allowed", "arg_mismatch", "budget_exceeded", "invalid_token"):
        assert f"agentcaps denied {denial}: " in out
    assert "allowed, charged 2.50 USD at every hop: paid 2.5 USD to books" in out
    tree = out[out.index("budget tree") :].splitlines()[1:4]
    assert [line.split() for line in tree] == [
        ["orchestrator", "4.52", "/", "10.00", "USD"],
        ["researcher", "0.01", "/", "2.00", "USD"],
        ["buyer", "4.50", "/", "5.00", "USD"],
    ]
    assert "Traceback" not in done.stderr
