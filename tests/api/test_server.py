"""`agentcaps serve` (app/api/server.py): a store URL the app would refuse stops it before the banner."""

from __future__ import annotations

from pathlib import Path

import pytest
import uvicorn

from app.api import server
from app.cli import main
from app.config import Settings
from app.errors import ConfigError

BAD_STORES = [
    ("foo://x", "unsupported store"),
    ("redis://127.0.0.1:notaport/0", "AGENTCAPS_STORE"),
    ("redis+cluster://nohostport", "host:port"),
]


@pytest.fixture
def no_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """uvicorn.run is never reached with a bad store; if it were, record it instead of listening. serve() and
    the CLI write AGENTCAPS_HOST/PORT into os.environ for the workers: set here so that monkeypatch undoes it."""
    monkeypatch.setenv("AGENTCAPS_HOST", "127.0.0.1")
    monkeypatch.setenv("AGENTCAPS_PORT", "18470")
    ran: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: ran.append(args))
    return ran


@pytest.mark.parametrize(("store", "says"), BAD_STORES, ids=["unknown-scheme", "bad-port", "bad-cluster"])
def test_serve_refuses_a_bad_store_url_before_the_banner(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_uvicorn: list[object],
    store: str,
    says: str,
) -> None:
    monkeypatch.setenv("AGENTCAPS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AGENTCAPS_STORE", store)
    assert main(["serve"]) == 2
    out, err = capsys.readouterr()
    assert "listening" not in out and out == ""
    assert err.startswith("agentcaps serve: ") and says in err, err
    assert no_uvicorn == []


def test_serve_checks_the_store_and_then_listens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_uvicorn: list[object]
) -> None:
    settings = Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path), "AGENTCAPS_STORE": "redis://127.0.0.1:1/0"})
    server.serve(settings)  # a valid URL is not connected to here: readyz tells whether the store answers
    assert "agentcaps listening on" in capsys.readouterr().out
    assert len(no_uvicorn) == 1
    with pytest.raises(ConfigError, match="unsupported store"):
        server.serve(Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path), "AGENTCAPS_STORE": "foo://x"}))
    assert capsys.readouterr().out == ""
