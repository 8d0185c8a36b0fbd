"""The HTTP contract suite's fixtures: one in-process app per test over each counter store, a hand-driven clock.

Every test that takes `api` runs three times: over `memory://`, over `local://` in a fresh data dir, and over the
real Redis on 127.0.0.1:6379, in a database of its own that is flushed before and after each test. Several runs of
this folder can share the Redis (engineers and CI in one checkout): each pytest session claims a free database among
AGENTCAPS_TEST_API_REDIS_DBS (default 12,11,10,9,8,7) with a lock key, so no run flushes another's counters.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from litestar import Litestar
from litestar.testing import TestClient

from app.api.app import create_app
from app.config import Settings
from app.store.base import Store
from app.store.local import LocalStore
from app.store.memory import MemoryStore
from app.store.redis import RedisStore
from app.store.runner import NodeRunner

REDIS_BASE = "redis://127.0.0.1:6379"
REDIS_DBS = [int(n) for n in os.environ.get("AGENTCAPS_TEST_API_REDIS_DBS", "12,11,10,9,8,7").split(",")]
LOCK_KEY = "agentcaps-test-api:lock"  # the only key the suite itself writes; never an app key (those start ac:)
LOCK_TTL = 600
LOCATION = "http://agentcaps.test"


class Clock:
    """The app's clock: starts at a whole second near the wall clock (Redis key TTLs stay sane) and only
    moves when a test moves it."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def padded(token: str) -> str:
    """The same token with the `=` padding that the wire format lets decoders accept."""
    return token + "=" * (-len(token) % 4)


class Api:
    """A TestClient with the admin key at hand and one-line helpers for the calls every test makes."""

    def __init__(
        self,
        client: TestClient[Litestar],
        settings: Settings,
        clock: Clock,
        store: Store,
        redis_client: redis.Redis | None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.clock = clock
        self.store = store
        self.redis = redis_client
        self.admin = {"Authorization": f"Bearer {settings.admin_keys[0]}"}

    @property
    def app(self) -> Litestar:
        return self.client.app

    def post(
        self, path: str, body: Any = None, *, content: bytes | str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        if content is not None:
            return self.client.post(
                path, content=content, headers={"content-type": "application/json", **(headers or {})}
            )
        return self.client.post(path, json=body, headers=headers)

    def mint_response(self, **body: Any) -> httpx.Response:
        body.setdefault("subject", "orchestrator")
        return self.post("/v1/tokens", body, headers=self.admin)

    def mint(self, **body: Any) -> dict[str, Any]:
        r = self.mint_response(**body)
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out

    def token(self, **body: Any) -> str:
        token: str = self.mint(**body)["token"]
        return token

    def verify(
        self, token: str, tool: str = "search", headers: dict[str, str] | None = None, **fields: Any
    ) -> httpx.Response:
        return self.post("/v1/verify", {"token": token, "tool": tool, **fields}, headers=headers)

    def allowed(self, token: str, tool: str = "search", **fields: Any) -> dict[str, Any]:
        r = self.verify(token, tool, **fields)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert body["allowed"] is True
        return body

    def denied(self, token: str, code: str, tool: str = "search", status: int = 403, **fields: Any) -> dict[str, Any]:
        r = self.verify(token, tool, **fields)
        assert r.status_code == status, r.text
        body: dict[str, Any] = r.json()
        assert body["allowed"] is False
        assert body["code"] == code, body
        # docs/api.md: `caveat` and `hop` come together, and the reason names both in plain words.
        assert ("caveat" in body) == ("hop" in body), body
        if "caveat" in body:
            assert body["caveat"] in body["reason"] and f"hop {body['hop']}" in body["reason"], body
        return body

    def budgets(self, token: str) -> list[dict[str, Any]]:
        r = self.post("/v1/inspect", {"token": token})
        assert r.status_code == 200, r.text
        views: list[dict[str, Any]] = r.json()["budgets"]
        return views

    def spent(self, token: str) -> list[str]:
        return [b["spent"] for b in self.budgets(token)]

    def settle(self, hold_id: str, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
        if body is None:
            return self.client.post(f"/v1/holds/{hold_id}/settle", headers=headers)
        return self.post(f"/v1/holds/{hold_id}/settle", body, headers=headers)

    def release(self, hold_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post(f"/v1/holds/{hold_id}/release", headers=headers)

    def dbsize(self) -> int:
        """Keys in the test's Redis database (0 for the memory store, which has no such count)."""
        if self.redis is None:
            return 0
        return int(self.redis.dbsize()) - int(self.redis.exists(LOCK_KEY))  # type: ignore[arg-type]

    def snapshot(self) -> Any:
        """Everything the counter store holds, comparable before and after a request."""
        if self.redis is None:
            memory = self.store.memory if isinstance(self.store, LocalStore) else self.store
            assert isinstance(memory, MemoryStore)
            # `calls` only paces the store's housekeeping sweep; it is not counter state.
            return repr(sorted((k, v) for k, v in vars(memory).items() if k != "calls"))
        state = {}
        for key in sorted(k for k in self.redis.scan_iter() if k != LOCK_KEY):
            kind = self.redis.type(key)
            if kind == "hash":
                value: Any = self.redis.hgetall(key)
            elif kind == "zset":
                value = self.redis.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":  # the audit log
                value = self.redis.xrange(key)
            else:
                value = self.redis.get(key)
            state[key] = (kind, value)
        return state


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database this session has to itself, claimed with SET NX on a lock key and given back at the end."""
    owner = secrets.token_hex(8)
    for db in REDIS_DBS:
        url = f"{REDIS_BASE}/{db}"
        with redis.Redis.from_url(url, decode_responses=True, socket_timeout=2) as client:
            try:
                claimed = client.set(LOCK_KEY, owner, nx=True, ex=LOCK_TTL)
            except redis.RedisError as e:  # pragma: no cover - the suite's contract is a real Redis
                pytest.fail(f"no Redis at {REDIS_BASE} ({e}); run: source scripts/lib.sh && ensure_redis")
        if claimed:
            break
    else:  # pragma: no cover
        pytest.fail(f"every Redis database in {REDIS_DBS} is claimed by another run of tests/api")
    yield url
    with redis.Redis.from_url(url, decode_responses=True, socket_timeout=2) as client:
        if client.get(LOCK_KEY) == owner:
            client.flushdb()  # takes the lock with it


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=2)
    owner = client.get(LOCK_KEY)

    def flush() -> None:
        client.flushdb()
        client.set(LOCK_KEY, owner or "", ex=LOCK_TTL)  # flushed with the rest: put back, renewed

    flush()
    yield client
    flush()
    client.close()


def make_settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path), "AGENTCAPS_LOCATION": LOCATION, **env})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(params=["memory", "local", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


ApiFactory = Callable[..., Api]


@pytest.fixture
def make_api(store_kind: str, clock: Clock, request: pytest.FixtureRequest) -> Iterator[ApiFactory]:
    """Build apps over this test's store kind; each has a fresh store, all share the clock and the Redis db.

    Apps built in one test share the Redis database on purpose: a second app with another key ring plays a
    restarted or re-configured service over the same counters. Each local:// app has a data dir of its own.
    """
    redis_client = request.getfixturevalue("redis_client") if store_kind == "redis" else None
    url = request.getfixturevalue("redis_url") if store_kind == "redis" else ""
    opened: list[TestClient[Litestar]] = []

    def build(settings: Settings) -> Api:
        store: Store = MemoryStore()
        if store_kind == "redis":
            store = RedisStore(NodeRunner(url, 1.0))
        elif store_kind == "local":
            store = LocalStore(request.getfixturevalue("tmp_path") / f"local-{len(opened)}")
        client = TestClient(create_app(settings, store=store, clock=clock))
        client.__enter__()
        opened.append(client)
        return Api(client, settings, clock, store, redis_client)

    yield build
    for client in reversed(opened):
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: ApiFactory, settings: Settings) -> Api:
    return make_api(settings)
