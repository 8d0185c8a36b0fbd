"""One error tree: every exception of the service is in app/errors.py, under AgentcapsError, drawn in its docstring;
the names users catch stay importable where they always were."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import app.errors
import app.mcp
import app.sdk
from app.errors import AgentcapsError

ROOT = Path(__file__).resolve().parent.parent
ERRORS = {
    name: kind
    for name, kind in vars(app.errors).items()
    if inspect.isclass(kind) and issubclass(kind, BaseException) and kind.__module__ == "app.errors"
}


def test_no_module_of_app_defines_an_exception_of_its_own() -> None:
    elsewhere = []
    for path in sorted((ROOT / "app").glob("**/*.py")):
        if path.name == "errors.py" and path.parent.name == "app":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            # A BaseException (the server's _Stop) is a stop signal on its way out, not an error.
            bases = {ast.unparse(base) for base in node.bases} - {"BaseException"}
            if any(base.endswith(("Error", "Exception", *ERRORS)) for base in bases):
                elsewhere.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert elsewhere == []


def test_every_error_is_an_agentcaps_error_drawn_in_the_tree() -> None:
    doc = app.errors.__doc__ or ""
    assert len(ERRORS) >= 12
    for name, kind in ERRORS.items():
        assert issubclass(kind, AgentcapsError), name
        assert f"── {name} " in doc or name == "AgentcapsError", name


def test_the_errors_users_catch_are_where_they_were() -> None:
    assert app.sdk.ApiError is app.errors.ApiError
    assert app.sdk.TokenError is app.errors.TokenError
    assert app.mcp.CostError is app.errors.CostError
    # A bad request, a refused attenuation and an unreadable cost were ValueErrors, and callers catch them so.
    for kind in (app.errors.BadRequest, app.errors.TokenError, app.errors.CostError):
        assert issubclass(kind, ValueError)
