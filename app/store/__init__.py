"""Counter stores, chosen by URL scheme (docs/configuration.md)."""

from __future__ import annotations

from pathlib import Path

from app.errors import ConfigError
from app.store.base import KEEP_A_WEEK, AuditPolicy, Store


def open_store(
    url: str,
    timeout: float = 1.0,
    wait: str = "",
    data_dir: Path = Path(".agentcaps"),
    fsync: str = "",
    audit: AuditPolicy = KEEP_A_WEEK,
) -> Store:
    """`wait` is AGENTCAPS_REDIS_WAIT (`<replicas>[:timeout_ms]`), Settings.redis_wait; `fsync` is
    AGENTCAPS_FSYNC ("" when unset), for local:// in `data_dir`; `audit`, what the audit log keeps."""
    scheme = url.partition("://")[0]
    if wait and scheme != "redis+cluster":
        raise ConfigError("AGENTCAPS_REDIS_WAIT is only supported with AGENTCAPS_STORE=redis+cluster://...")
    if fsync and url != "local://":
        raise ConfigError(
            "AGENTCAPS_FSYNC is only for AGENTCAPS_STORE=local://; a Redis store's durability is its own "
            "appendfsync setting"
        )
    if url == "local://":
        from app.store.local import LocalStore

        return LocalStore(data_dir, fsync or "everysec", audit)
    if url == "memory://":
        from app.store.memory import MemoryStore

        return MemoryStore(audit)
    if scheme in ("redis", "rediss"):
        from app.store.redis import RedisStore
        from app.store.runner import NodeRunner

        return RedisStore(NodeRunner(url, timeout), audit)
    if scheme == "redis+cluster":
        from app.store.redis import RedisStore
        from app.store.redis_cluster import ClusterRunner, WaitPolicy

        return RedisStore(ClusterRunner(url, timeout, WaitPolicy.parse(wait)), audit)
    raise ConfigError(
        f"AGENTCAPS_STORE: unsupported store {url!r}; use local://, memory://, redis://host:port/db, rediss:// "
        "or redis+cluster://host:port[,host:port...]"
    )
