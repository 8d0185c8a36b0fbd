"""README's "Try it" runs as pasted: its shell blocks in one shell, its Python block, against a service started the
way scripts/run starts it (a fresh directory, keys generated on first start). Only the port differs: a free one, in
the URLs and in AGENTCAPS_PORT, which the CLI reads as the service does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def try_it_blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Try it") :]
    section = section[: section.index("\n## ", 3)]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """`agentcaps serve` in a new directory, with no AGENTCAPS_* setting but the port: like a first scripts/run."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCAPS_")} | {"AGENTCAPS_PORT": str(port)}
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent)  # the checkout's venv, where the README expects it
    process = subprocess.Popen(
        [VENV_BIN / "agentcaps", "serve"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200, what="serve")
        yield tmp_path, port
    finally:
        process.terminate()
        process.wait(timeout=10)


def run(directory: Path, port: int, program: list[str], source: str) -> str:
    """The source as a file (read from stdin, the commands in it would read the rest of it as their input)."""
    script = directory / "pasted"
    script.write_text(source.replace("8470", str(port)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCAPS_")} | {"AGENTCAPS_PORT": str(port)}
    done = subprocess.run([*program, str(script)], capture_output=True, text=True, cwd=directory, env=env)
    assert done.returncode == 0 and not done.stderr, done.stdout + done.stderr
    return done.stdout


def test_the_shell_blocks_run_as_pasted(served: tuple[Path, int]) -> None:
    directory, port = served
    blocks = try_it_blocks("sh")
    assert len(blocks) == 2
    out = run(directory, port, ["bash"], "\n".join(blocks))
    lines = out.splitlines()
    assert any("hop 1: researcher" in line for line in lines), out
    assert any(line.startswith("allowed for researcher") for line in lines), out
    assert any(line.startswith("denied tool_not_allowed") for line in lines), out
    assert '"token_id"' in out and '"allowed":true' in out.replace(" ", ""), out


def test_the_python_block_runs_as_pasted(served: tuple[Path, int]) -> None:
    directory, port = served
    [block] = try_it_blocks("python")
    out = run(directory, port, [str(VENV_BIN / "python")], block)
    assert out.startswith("Allowed(allowed=True"), out
