"""Counter stores, chosen by URL scheme (SPEC §5)."""

from __future__ import annotations

from app.errors import ConfigError
from app.store.base import Store


def open_store(url: str, timeout: float = 1.0, wait: str = "") -> Store:
    """`wait` is AGENTCAPS_REDIS_WAIT (`<replicas>[:timeout_ms]`), Settings.redis_wait."""
    scheme = url.partition("://")[0]
    if wait and scheme != "redis+cluster":
        raise ConfigError("AGENTCAPS_REDIS_WAIT is only supported with AGENTCAPS_STORE=redis+cluster://...")
    if url == "memory://":
        from app.store.memory import MemoryStore

        return MemoryStore()
    if scheme in ("redis", "rediss"):
        from app.store.redis import RedisStore

        return RedisStore(url, timeout)
    if scheme == "redis+cluster":
        from app.store.redis_cluster import RedisClusterStore, WaitPolicy

        return RedisClusterStore(url, timeout, WaitPolicy.parse(wait))
    raise ConfigError(
        f"AGENTCAPS_STORE: unsupported store {url!r}; use memory://, redis://host:port/db, rediss:// "
        "or redis+cluster://host:port[,host:port...]"
    )
