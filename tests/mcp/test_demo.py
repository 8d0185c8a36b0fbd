"""scripts/demo end to end: its exit code says every expected allow and deny happened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_every_expected_allow_and_deny() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every call was allowed or denied as expected" in done.stdout
    assert "orchestrator 4.51 / 10.00 USD" in done.stdout and "buyer        4.50 / 5.00 USD" in done.stdout
