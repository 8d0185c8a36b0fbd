"""Schemathesis drives every operation of /schema with generated requests: no input may produce a 500."""

from __future__ import annotations

import atexit
import shutil
import tempfile

import schemathesis
from hypothesis import HealthCheck, settings

from app.api.app import create_app
from app.config import Settings
from app.store.memory import MemoryStore

# The schema is loaded at import, before any fixture: the data dir is made here and removed at exit.
_data_dir = tempfile.mkdtemp(prefix="agentcaps-fuzz-")
atexit.register(shutil.rmtree, _data_dir, True)
_settings = Settings.from_env({"AGENTCAPS_DATA_DIR": _data_dir})
schema = schemathesis.openapi.from_asgi("/schema", create_app(_settings, store=MemoryStore()))


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case: schemathesis.Case) -> None:
    # With the admin key, generated mint and revoke requests get past authentication into the handlers.
    response = case.call(headers={"Authorization": f"Bearer {_settings.admin_keys[0]}"})
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
