"""A real Redis Cluster for the session (scripts/redis-cluster: 3 masters + 3 replicas on loopback), started only
when a test asks for it, and a private single Redis to compare with. Both are stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.processes import RedisServer, Service, free_port, wait_until

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


def mint(service: Service, **fields: Any) -> tuple[str, str]:
    """(token, token id) of a new root minted over HTTP."""
    body = {"subject": "orchestrator", **fields}
    r = httpx.post(service.url + "/v1/tokens", json=body, headers=service.admin(), timeout=5)
    assert r.status_code == 201, r.text
    return str(r.json()["token"]), str(r.json()["token_id"])


def spent(url: str, token: str) -> list[str]:
    r = httpx.post(url + "/v1/inspect", json={"token": token}, timeout=5)
    assert r.status_code == 200, r.text
    return [b["spent"] for b in r.json()["budgets"]]


@dataclass
class Answer:
    at: float  # time.monotonic() when the answer arrived
    root: int  # index into the token list
    status: int
    code: str | None


class Load:
    """Concurrent spends of 1 USD from a thread of its own (asyncio + httpx), until stopped; every answer kept.

    `body(root, n)` may add fields to the n-th request (e.g. a request_id). A root that answered
    budget_exceeded is left alone from then on (`exhausted`).
    """

    def __init__(
        self,
        urls: list[str],
        tokens: list[str],
        concurrency: int = 16,
        body: Callable[[int, int], dict[str, Any]] | None = None,
    ) -> None:
        self.urls, self.tokens, self.concurrency = urls, tokens, concurrency
        self.body = body or (lambda root, n: {})
        self.exhausted: set[int] = set()
        self.answers: list[Answer] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.errors: list[BaseException] = []

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the load did not stop"
        assert not self.errors, self.errors

    def allowed(self, since: float = 0.0) -> int:
        return sum(1 for a in list(self.answers) if a.status == 200 and a.at >= since)

    async def _run(self) -> None:
        counter = iter(range(1 << 62))
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=self.concurrency)) as client:

            async def worker(w: int) -> None:
                while not self.stopping.is_set():
                    n = next(counter)
                    root = n % len(self.tokens)
                    if root in self.exhausted:
                        if len(self.exhausted) == len(self.tokens):
                            await asyncio.sleep(0.01)
                        continue
                    body = {"token": self.tokens[root], "tool": "search", "cost": {"amount": "1", "currency": "USD"}}
                    url = self.urls[n % len(self.urls)] + "/v1/verify"
                    try:
                        r = await client.post(url, json=body | self.body(root, n))
                    except httpx.HTTPError as e:  # the service itself must never drop a request
                        self.errors.append(e)
                        return
                    code = r.json().get("code") if r.status_code != 200 else None
                    self.answers.append(Answer(time.monotonic(), root, r.status_code, code))
                    if code == "budget_exceeded":
                        self.exhausted.add(root)

            await asyncio.gather(*(worker(w) for w in range(self.concurrency)))
