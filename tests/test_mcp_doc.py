"""docs/mcp.md's examples stay true: its Python agent runs as pasted against a real service and a real gateway
(only the port differs: a free one); the desktop client configuration is options the gateway takes; the
--list-tools session is what the command prints."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.mcp.gateway import parser
from app.sdk import Token
from tests.processes import Service, start_service

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def blocks(section: str, language: str) -> list[str]:
    text = (ROOT / "docs" / "mcp.md").read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    fenced = re.findall(r"^```(\w*)\n(.*?)^```$", text[start : end if end > 0 else None], flags=re.DOTALL | re.M)
    return [body for lang, body in fenced if lang == language]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    service = start_service("memory://", tmp_path)
    yield service
    service.process.terminate()
    service.process.wait(10)


def test_the_python_agent_runs_as_pasted(service: Service, tmp_path: Path) -> None:
    body = {"subject": "orchestrator", "budget": {"amount": "10.00", "currency": "USD"}, "max_depth": 2}
    root = httpx.post(service.url + "/v1/tokens", headers=service.admin(), json=body, timeout=5).json()["token"]
    researcher = Token.parse(root).attenuate(to="researcher", budget="2.00 USD", tools=["search"])
    [source] = blocks("Connect an agent: where its token goes", "python")
    port = service.url.rsplit(":", 1)[1]
    script = tmp_path / "agent.py"
    script.write_text(source.replace("8470", port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCAPS_")}
    env |= {"PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", "RESEARCHER_TOKEN": str(researcher)}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["tools: ['search']", "search: ok - 3 results for 'MCP'"], done.stdout
    assert lines[2].startswith("pay: error - agentcaps denied tool_not_allowed: "), done.stdout
    spent = httpx.post(service.url + "/v1/inspect", json={"token": str(researcher)}, timeout=5).json()
    assert [b["spent"] for b in spent["budgets"]] == ["0.00", "0.00"]  # a real verify; search is free here


def test_the_desktop_client_configuration_is_options_the_gateway_takes() -> None:
    [config] = blocks("Connect an agent: where its token goes", "json")
    [server] = json.loads(config)["mcpServers"].values()
    assert Path(server["command"]).name == "agentcaps" and server["args"][0] == "gateway"
    args = parser().parse_args(server["args"][1:])
    assert shlex.split(args.upstream)[0] == "npx" and args.costs.endswith("costs.json")
    assert set(server["env"]) == {"AGENTCAPS_TOKEN", "AGENTCAPS_URL"}


def test_the_list_tools_session_is_what_the_command_prints(tmp_path: Path) -> None:
    [session] = [b for b in blocks("The cost file", "") if "--list-tools" in b]
    run, shown_file = session.split("$ cat costs.json\n")
    command, *listed = run.splitlines()
    argv = shlex.split(command.removeprefix("$ ").removesuffix(" > costs.json"))
    assert argv[:2] == ["agentcaps", "gateway"]
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == listed
    assert done.stdout == shown_file
