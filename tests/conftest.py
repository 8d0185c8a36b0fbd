"""Fixtures shared by every test folder: real processes (see tests/processes.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.token.keys import KeyRing
from tests.processes import RedisServer, Service, free_port, start_service


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: scripts/test installs it")
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.kill()


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[object]:
    started: list[Service] = []

    def make(store: str, workers: int = 1, ring: KeyRing | None = None) -> Service:
        service = start_service(store, tmp_path, workers, ring)
        started.append(service)
        return service

    yield make
    for service in started:
        service.process.terminate()
        try:
            service.process.wait(10)
        except subprocess.TimeoutExpired:
            service.process.kill()
