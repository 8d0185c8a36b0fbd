"""The cluster tests' helpers, and a private single Redis to compare with (stopped at the end). The session's Redis
Cluster (`cluster`) is in tests/conftest.py: the store contract suite runs on it too.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.schemas import Allowed
from app.sdk import ApiError, AsyncClient, Client
from tests.processes import Cluster, RedisServer, Service, free_port


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
    """Concurrent spends of `cost` through the SDK's AsyncClient, from a thread of its own, until stopped.

    The SDK resends a 503 with the request_id it names (`retry_for` seconds at most), as any SDK user's calls
    are. `answers` keeps every HTTP answer, resends included, so the 503s show; `acknowledged` counts per root the
    calls answered allowed (a replayed answer is the same call: one charge); `given_up` keeps (root, request_id)
    of the calls still 503 at the SDK's deadline, for the test to resend later. A root that answered
    budget_exceeded is left alone from then on (`exhausted`).
    """

    def __init__(
        self, urls: list[str], tokens: list[str], concurrency: int = 16, cost: str = "1 USD", retry_for: float = 10
    ) -> None:
        self.urls, self.tokens, self.concurrency, self.cost, self.retry_for = urls, tokens, concurrency, cost, retry_for
        self.root_of = {token: i for i, token in enumerate(tokens)}
        self.exhausted: set[int] = set()
        self.answers: list[Answer] = []
        self.acknowledged: Counter[int] = Counter()
        self.given_up: list[tuple[int, str]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.errors: list[BaseException | str] = []

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the load did not stop"
        assert not self.errors, self.errors[:3]

    def allowed(self, since: float = 0.0) -> int:
        return sum(1 for a in list(self.answers) if a.status == 200 and a.at >= since)

    def resend_given_up(self, url: str) -> None:
        """Resend each call the SDK gave up on, with its request_id, as a caller would once the store is back."""
        with Client(url, retry_for=30) as client:
            for root, request_id in self.given_up:
                decision = client.verify(self.tokens[root], "search", cost=self.cost, request_id=request_id)
                if isinstance(decision, Allowed):
                    self.acknowledged[root] += 1
                else:
                    assert decision.code == "budget_exceeded", decision
        self.given_up.clear()

    async def _run(self) -> None:
        counter = iter(range(1 << 62))

        async def record(response: httpx.Response) -> None:
            code = None
            if response.status_code != 200:
                await response.aread()
                code = response.json().get("code")
            root = self.root_of[json.loads(response.request.content)["token"]]
            self.answers.append(Answer(time.monotonic(), root, response.status_code, code))

        clients = [AsyncClient(url, retry_for=self.retry_for) for url in self.urls]
        for client in clients:
            client.http.event_hooks["response"] = [record]

        async def worker(w: int) -> None:
            # Roots of its own: a root whose calls the SDK is resending holds up only its own workers, as a
            # caller's, and the roots of healthy masters keep being asked all along.
            mine = range(w % len(self.tokens), len(self.tokens), self.concurrency)
            while not self.stopping.is_set():
                n = next(counter)
                root = mine[n % len(mine)]
                if root in self.exhausted:
                    if set(mine) <= self.exhausted:
                        await asyncio.sleep(0.01)
                    continue
                try:
                    decision = await clients[n % len(clients)].verify(self.tokens[root], "search", cost=self.cost)
                except ApiError as e:
                    if e.status == 503 and e.request_id is not None:
                        self.given_up.append((root, e.request_id))
                        continue
                    self.errors.append(e)
                    return
                except httpx.HTTPError as e:  # the service itself must never drop a request
                    self.errors.append(e)
                    return
                if isinstance(decision, Allowed):
                    self.acknowledged[root] += 1
                elif decision.code == "budget_exceeded":
                    self.exhausted.add(root)
                else:
                    self.errors.append(f"unexpected denial {decision.code}: {decision.reason}")
                    return

        try:
            await asyncio.gather(*(worker(w) for w in range(self.concurrency)))
        finally:
            for client in clients:
                await client.aclose()
