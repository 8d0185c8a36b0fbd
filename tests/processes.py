"""Real processes for tests: a Redis server of the test's own (so it can be killed), a Redis Cluster
(scripts/redis-cluster) and `serve` processes.

The fixtures that use them live in tests/conftest.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

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


CLUSTER_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "redis-cluster"
NODE_TIMEOUT_MS = 1000  # how long a dead master goes unnoticed: short, so a failover test stays short


@dataclass
class Cluster:
    url: str
    directory: Path

    @property
    def ports(self) -> list[int]:
        ports: list[int] = json.loads((self.directory / "cluster.json").read_text())["ports"]
        return ports

    def client(self, port: int) -> redis.Redis:
        # No retries: redis-py's default backs off for seconds on a refused connection, and a killed node's port
        # refuses; a test that polls the cluster during a failover must see it as it is.
        return redis.Redis(port=port, decode_responses=True, socket_timeout=5, retry=Retry(NoBackoff(), 0))

    def node_of_slot(self, slot: int) -> int:
        """The port of the master that serves `slot` now."""
        with self.client(self.ports[0]) as c:
            for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise AssertionError(f"slot {slot} is not covered")

    def node_of_key(self, key: str) -> redis.Redis:
        """A client of the master that holds `key` now (a test that reads a root's keys directly)."""
        return self.client(self.node_of_slot(key_slot(key.encode())))

    def replica_of(self, master: int) -> int:
        """The port of the replica of the master on `master`."""
        with self.client(master) as c:
            for _, _, (_, port, *_), *replicas in c.execute_command("CLUSTER", "SLOTS"):
                if int(port) == master and replicas:
                    return int(replicas[0][1])
        raise AssertionError(f"the master on {master} has no replica")

    def masters(self) -> list[int]:
        out = []
        for port in self.ports:
            with self.client(port) as c:
                try:
                    if c.info("replication")["role"] == "master":
                        out.append(port)
                except redis.ConnectionError:
                    continue
        return out

    def pid(self, port: int) -> int:
        return int((self.directory / f"node-{port}" / "redis.pid").read_text())

    def kill(self, port: int) -> None:
        """SIGKILL a node: no AOF flush, no goodbye to the cluster, like a crashed host."""
        os.kill(self.pid(port), signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{self.pid(port)}").exists(), what=f"node {port} to die")

    def start(self) -> None:
        """Bring back any node that is down (as a replica of whoever took its slots) and wait until all is synced."""
        run_script("start", "--dir", str(self.directory))

    def wait_healthy(self) -> None:
        def ok() -> bool:
            for port in self.ports:
                with self.client(port) as c:
                    if c.execute_command("CLUSTER", "INFO").find("cluster_state:ok") < 0:
                        return False
            return True

        wait_until(ok, timeout=30, what="cluster_state:ok on every node")


def run_script(*args: str) -> str:
    return subprocess.run(
        [str(CLUSTER_SCRIPT), *args], check=True, capture_output=True, text=True, timeout=180
    ).stdout.strip()


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
