"""`agentcaps gateway --list-tools`: what an operator runs to learn an upstream's tool names before writing the
cost file (through the gateway, a listing without a token is empty). Real gateway processes, real upstreams."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.mcp.costs import CostTable
from app.mcp.example_server import build
from tests.mcp.conftest import serve_http

EXAMPLE_SERVER = f"{sys.executable} -m app.mcp.example_server"


def list_tools(*upstream: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "app.cli", "gateway", *upstream, "--list-tools"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_it_prints_a_cost_file_with_every_tool_free_and_the_tools_described(tmp_path: Path) -> None:
    done = list_tools("--upstream", EXAMPLE_SERVER)
    assert done.returncode == 0, done.stderr
    skeleton = json.loads(done.stdout)  # stdout is the file alone: `--list-tools > costs.json`
    assert skeleton == {
        "search": {"amount": "0.00", "currency": "USD"},
        "pay": {"amount": "0.00", "currency": "USD"},
    }
    (tmp_path / "costs.json").write_text(done.stdout)
    CostTable.load(tmp_path / "costs.json")  # the gateway's --costs takes it as it is
    assert done.stderr.splitlines() == [
        "search  Search the web (pretend).",
        "pay     Pay someone (pretend). Refuses amounts over 1000.",
    ]


def test_it_lists_a_streamable_http_upstream_too() -> None:
    with serve_http(build().streamable_http_app()) as url:
        done = list_tools("--upstream-url", url)
    assert done.returncode == 0, done.stderr
    assert list(json.loads(done.stdout)) == ["search", "pay"]


def test_an_upstream_that_is_not_an_mcp_server_is_one_line_and_exit_1() -> None:
    done = list_tools("--upstream", f"{sys.executable} -c pass")  # exits at once, says nothing
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("agentcaps gateway: could not list the upstream's tools: "), line


def test_an_upstream_command_that_cannot_start_is_a_usage_error() -> None:
    done = list_tools("--upstream", "agentcaps-no-such-command")
    assert done.returncode == 2
    assert done.stderr.startswith("agentcaps gateway: ") and "agentcaps-no-such-command" in done.stderr
