"""Logs are one JSON object per line, carry a request id, and never a token or key."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from litestar.testing import TestClient

from app.api.app import create_app
from app.api.server import JsonFormatter
from app.config import Settings
from app.store.memory import MemoryStore


def test_decisions_are_logged_as_json_with_a_request_id_and_without_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path)})
    with (
        TestClient(create_app(settings, store=MemoryStore())) as client,
        caplog.at_level(logging.DEBUG, logger="agentcaps.decisions"),
    ):
        minted = client.post(
            "/v1/tokens",
            json={"subject": "orch", "tools": ["search"]},
            headers={"Authorization": f"Bearer {settings.admin_keys[0]}"},
        ).json()
        client.post("/v1/verify", json={"token": minted["token"], "tool": "pay"})
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "agentcaps.decisions"]
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["code"] == "tool_not_allowed" and entry["tool"] == "pay" and entry["status"] == 403
    assert len(entry["request_id"]) == 16
    assert minted["token"] not in lines[0] and settings.admin_keys[0] not in lines[0]


def test_a_crash_is_logged_with_the_request_id_the_client_sees(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path)})
    app = create_app(settings, store=MemoryStore())

    async def boom(*args: object) -> None:
        raise RuntimeError("secret detail")

    app.state.authority.verify = boom
    with TestClient(app) as client, caplog.at_level(logging.ERROR, logger="agentcaps"):
        r = client.post("/v1/verify", json={"token": "x", "tool": "t"})
    assert r.status_code == 500 and "secret detail" not in r.text and "Traceback" not in r.text
    logged = json.loads(JsonFormatter().format(next(rec for rec in caplog.records if rec.levelno == logging.ERROR)))
    assert logged["request_id"] == r.json()["request_id"]
    assert "secret detail" in logged["exc"]
