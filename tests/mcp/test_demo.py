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
    for denial in ("tool_not_allowed", "arg_mismatch", "budget_exceeded", "invalid_token", "approval_denied"):
        assert f"agentcaps denied {denial}: " in out
    # The buyer's payments over 1.00 USD wait in the gateway while the orchestrator decides with its own token.
    lines = out.splitlines()
    books = lines.index(next(line for line in lines if "pay(amount=2.5, to='books')" in line))
    assert "(pay 2.50 USD by buyer); orchestrator approved it" in lines[books + 1]
    assert "allowed, charged 2.50 USD at every hop: paid 2.5 USD to books" in lines[books + 2]
    casino = lines.index(next(line for line in lines if "pay(amount=2, to='casino')" in line))
    assert lines[casino + 1].endswith("orchestrator denied it: 'casino is not one of our vendors'")
    assert "agentcaps denied approval_denied: " in lines[casino + 2]
    assert "by orchestrator (hop 0): casino is not one of our vendors" in lines[casino + 2]
    maps = lines.index(next(line for line in lines if "pay(amount=2, to='maps')" in line))
    assert "orchestrator approved it" in lines[maps + 1] and "paid 2 USD to maps" in lines[maps + 2]
    tree = out[out.index("budget tree") :].splitlines()[1:4]
    assert [line.split() for line in tree] == [
        ["orchestrator", "4.52", "/", "10.00", "USD"],
        ["researcher", "0.01", "/", "2.00", "USD"],
        ["buyer", "4.50", "/", "5.00", "USD"],
    ]
    assert "Traceback" not in done.stderr
