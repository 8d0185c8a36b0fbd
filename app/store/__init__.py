"""Counter stores, chosen by URL scheme (SPEC §5)."""

from __future__ import annotations

from app.errors import ConfigError
from app.store.base import Store


def open_store(url: str, timeout: float = 1.0) -> Store:
    scheme = url.partition("://")[0]
    if url == "memory://":
        from app.store.memory import MemoryStore

        return MemoryStore()
    if scheme in ("redis", "rediss"):
        from app.store.redis import RedisStore

        return RedisStore(url, timeout)
    raise ConfigError(f"AGENTCAPS_STORE: unsupported store {url!r}; use memory://, redis://host:port/db or rediss://")
