"""A real Redis Cluster for the session (scripts/redis-cluster: 3 masters + 3 replicas on loopback), started only
when a test asks for it, and a private single Redis to compare with. Both are stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.system.conftest import RedisServer, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "redis-cluster"
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
        return redis.Redis(port=port, decode_responses=True, socket_timeout=5)

    def node_of_slot(self, slot: int) -> int:
        """The port of the master that serves `slot` now."""
        with self.client(self.ports[0]) as c:
            for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise AssertionError(f"slot {slot} is not covered")

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
    return subprocess.run([str(SCRIPT), *args], check=True, capture_output=True, text=True, timeout=180).stdout.strip()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: scripts/test installs it")
    directory = tmp_path_factory.mktemp("redis-cluster")
    url = run_script("start", "--dir", str(directory), "--node-timeout", str(NODE_TIMEOUT_MS))
    try:
        yield Cluster(url, directory)
    finally:
        run_script("stop", "--dir", str(directory))


@pytest.fixture(scope="session")
def single_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One plain Redis of this session's own, for comparisons with the cluster."""
    server = RedisServer(free_port(), tmp_path_factory.mktemp("single-redis"))
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.process.terminate()
        server.process.wait(10)


def flush(cluster: Cluster) -> None:
    for port in cluster.masters():
        with cluster.client(port) as c:
            c.flushall()
