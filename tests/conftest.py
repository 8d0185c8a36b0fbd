"""Fixtures shared by every test folder: real processes (see tests/processes.py) and the faulty proxy in front of
Redis (tests/proxy.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.token.keys import KeyRing
from tests.processes import NODE_TIMEOUT_MS, Cluster, RedisServer, Service, free_port, run_script, start_service
from tests.proxy import Proxy


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
async def proxy() -> AsyncIterator[Proxy]:
    """A proxy to the shared Redis, started on the test's event loop (its faults are set on it by the test)."""
    p = Proxy()
    await p.start()
    yield p
    await p.stop()


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


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The session's Redis Cluster (3 masters + 3 replicas), started when a test first asks for it."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: scripts/test installs it")
    directory = tmp_path_factory.mktemp("redis-cluster")
    url = run_script("start", "--dir", str(directory), "--node-timeout", str(NODE_TIMEOUT_MS))
    try:
        yield Cluster(url, directory)
    finally:
        run_script("stop", "--dir", str(directory))
