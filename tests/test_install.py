"""What a first `scripts/run` shows: the editable install that scripts/lib.sh makes is quiet and complete."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_editable_install_prints_no_setuptools_warning_and_imports_the_packages(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # This venv's pip (scripts/lib.sh upgrades it first): older pips hide the build backend's warnings.
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-e", str(ROOT)]
    done = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    where = subprocess.run(
        [python, "-c", "from importlib.util import find_spec as f; print(f('app').origin, f('caveats').origin)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the checkout: the install itself must make the packages importable
        check=True,
    )  # found, not imported: this venv has no dependencies
    assert where.stdout.split() == [str(ROOT / "app" / "__init__.py"), str(ROOT / "caveats" / "__init__.py")]
