"""app.mcp.sdk is the one door to the mcp SDK: an SDK update that moves a name breaks there, and only there."""

from __future__ import annotations

import ast
from pathlib import Path

import app.mcp.sdk

ROOT = Path(__file__).resolve().parents[2]


def _sdk_modules(tree: ast.Module) -> list[str]:
    names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0]
    return [name for name in names if name.split(".")[0] in ("mcp", "mcp_types")]


def test_every_name_app_mcp_takes_from_the_sdk_is_there() -> None:
    missing = [name for name in app.mcp.sdk.__all__ if not hasattr(app.mcp.sdk, name)]
    assert missing == []
    assert sorted(app.mcp.sdk.__all__) == sorted(set(app.mcp.sdk.__all__))


def test_no_other_module_imports_the_sdk() -> None:
    """Before: guard, relay, listen, gateway and example_server imported ten mcp modules, some private."""
    door = ROOT / "app" / "mcp" / "sdk.py"
    sources = [p for folder in ("app", "caveats") for p in (ROOT / folder).rglob("*.py") if p != door]
    importers = {str(p.relative_to(ROOT)): found for p in sources if (found := _sdk_modules(ast.parse(p.read_text())))}
    assert importers == {}
    assert _sdk_modules(ast.parse(door.read_text()))  # (the scan does see imports)
