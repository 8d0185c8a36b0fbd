"""What a user installs: the editable install scripts/lib.sh makes is quiet, the package alone is the offline SDK,
and the server and MCP parts come as extras that say so when they are missing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

from app.cli import EXTRAS

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


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


def run_without(blocked: set[str], code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a Python where the given top-level modules cannot be imported, as if not installed."""
    prelude = f"import sys\nfor name in {sorted(blocked)!r}:\n    sys.modules[name] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=ROOT)


def test_the_offline_sdk_and_the_caveat_language_need_only_the_base_dependencies() -> None:
    base = {Requirement(r).name for r in PYPROJECT["project"]["dependencies"]}
    assert base == {"msgspec", "httpx"}
    code = """
from app.sdk import Client, Token
from app.token.keys import KeyRing, new_key_entry
from app.token.mint import mint
root, _ = mint(KeyRing(new_key_entry()), "http://x", ["delegate = orchestrator", "budget <= 10.00 USD"])
child = Token.parse(root).attenuate(to="researcher", budget="2.00 USD", tools=["search"])
print(child.holder, child.limits.tools)
Client("http://127.0.0.1:1").close()
"""
    done = run_without(EXTRAS["server"] | EXTRAS["mcp"] | {"pymacaroons"}, code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["researcher", "['search']"]


def test_each_part_names_its_extra_when_it_is_missing() -> None:
    serve = run_without(EXTRAS["server"], "from app.cli import main; raise SystemExit(main(['serve']))")
    assert serve.returncode == 2
    assert serve.stderr.strip().endswith("pip install 'agentcaps[server]'"), serve.stderr
    assert len(serve.stderr.strip().splitlines()) == 1, serve.stderr
    gateway = run_without(EXTRAS["mcp"], "from app.cli import main; raise SystemExit(main(['gateway', '--help']))")
    assert gateway.returncode == 2
    assert gateway.stderr.strip().endswith("pip install 'agentcaps[mcp]'"), gateway.stderr


def test_the_extras_bring_the_modules_the_cli_names() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    server = {Requirement(r).name for r in extras["server"]}
    assert {"litestar", "uvicorn", "redis", "hiredis", "prometheus-client"} == server
    assert {Requirement(r).name for r in extras["mcp"]} == {"mcp"}
    assert "agentcaps" in {Requirement(r).name for r in extras["dev"]}  # dev installs both parts


def test_the_wheel_carries_the_consoles_files_and_the_lua_scripts(tmp_path: Path) -> None:
    """The console is served from package data: a wheel without its HTML, CSS and JS would serve 500s."""
    source = tmp_path / "src"  # a copy: a build in the checkout would leave build/ there
    for folder in ("app", "caveats"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, source / file)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source)]
    done = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("agentcaps-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    console = {f"app/console/static/{name}" for name in ("index.html", "console.js", "console.css")}
    assert console <= names, sorted(console - names)
    assert "app/store/lua/decide.lua" in names
