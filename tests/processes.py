"""Real processes for tests: a Redis server of the test's own (so it can be killed) and `serve` processes.

The fixtures that use them live in tests/conftest.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.token.keys import KeyRing, new_key_entry
from tests.keys import ADMIN_KEY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: object, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


@dataclass
class RedisServer:
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close() is None, what="redis-server"
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@dataclass
class Service:
    url: str
    ring: KeyRing
    process: subprocess.Popen[bytes]

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}


def start_service(
    store: str, tmp: Path, workers: int = 1, ring: KeyRing | None = None, env: Mapping[str, str] | None = None
) -> Service:
    """The service in a process of its own; `env` adds to or overrides its configuration."""
    ring = ring or KeyRing(new_key_entry())
    port = free_port()
    env = {
        **os.environ,
        "AGENTCAPS_STORE": store,
        "AGENTCAPS_MASTER_KEYS": ring.serialize(),
        "AGENTCAPS_ADMIN_KEYS": ADMIN_KEY,
        "AGENTCAPS_DATA_DIR": str(tmp / f"data-{port}"),
        "AGENTCAPS_PORT": str(port),
        "AGENTCAPS_LOG_LEVEL": "ERROR",
        "AGENTCAPS_STORE_TIMEOUT": "0.5",
        **(env or {}),
    }
    code = f"from app.api.server import serve; from app.config import Settings; serve(Settings.from_env(), {workers})"
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(url + "/healthz", timeout=1).status_code == 200, what="the service")
    return Service(url, ring, process)
