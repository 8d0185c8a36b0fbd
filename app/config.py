"""Settings from AGENTCAPS_* (SPEC §5), built once at start-up. Secrets are kept out of repr and logs.

Without AGENTCAPS_MASTER_KEYS / AGENTCAPS_ADMIN_KEYS, keys are generated once into AGENTCAPS_DATA_DIR
(files `master_keys` and `admin_key`, mode 0600) so the embedded default works on first start.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import ConfigError
from app.token.keys import KeyRing, new_key_entry

MASTER_KEYS_FILE = "master_keys"
ADMIN_KEY_FILE = "admin_key"
_VERIFIER_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}):(\S{16,})")


@dataclass(frozen=True)
class Settings:
    store: str = "local://"
    data_dir: Path = Path(".agentcaps")
    host: str = "127.0.0.1"
    port: int = 8470
    location: str = ""
    ring: KeyRing = field(default_factory=lambda: KeyRing(new_key_entry()), repr=False)
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    verifier_keys: Mapping[str, str] = field(default_factory=dict, repr=False)  # key -> audience name
    store_timeout: float = 1.0
    redis_wait: str = ""  # AGENTCAPS_REDIS_WAIT, `<replicas>[:timeout_ms]` (Redis Cluster only)
    fsync: str = ""  # AGENTCAPS_FSYNC, everysec (when unset) or always (local:// only)

    @property
    def public_location(self) -> str:
        return self.location or f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("AGENTCAPS_DATA_DIR", ".agentcaps"))
        port_text = env.get("AGENTCAPS_PORT", "8470")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"AGENTCAPS_PORT must be a port number, got {port_text!r}")
        timeout_text = env.get("AGENTCAPS_STORE_TIMEOUT", "1.0")
        try:
            timeout = float(timeout_text)
        except ValueError:
            raise ConfigError(f"AGENTCAPS_STORE_TIMEOUT must be seconds, got {timeout_text!r}") from None
        fsync = env.get("AGENTCAPS_FSYNC", "")
        if fsync not in ("", "everysec", "always"):
            raise ConfigError(f"AGENTCAPS_FSYNC must be everysec (the default) or always, got {fsync!r}")
        values: dict[str, object] = {
            "store": env.get("AGENTCAPS_STORE", "local://"),
            "data_dir": data_dir,
            "host": env.get("AGENTCAPS_HOST", "127.0.0.1"),
            "port": int(port_text),
            "location": env.get("AGENTCAPS_LOCATION", ""),
            "store_timeout": timeout,
            "redis_wait": env.get("AGENTCAPS_REDIS_WAIT", ""),
            "fsync": fsync,
        }
        values.update(overrides)
        master = env.get("AGENTCAPS_MASTER_KEYS")
        values["ring"] = KeyRing.parse(master) if master else load_or_create_ring(data_dir)
        admin = env.get("AGENTCAPS_ADMIN_KEYS")
        values["admin_keys"] = (
            tuple(k for k in admin.split(",") if k) if admin else (load_or_create_admin_key(data_dir),)
        )
        values["verifier_keys"] = parse_verifier_keys(env.get("AGENTCAPS_VERIFIER_KEYS", ""))
        return cls(**values)  # type: ignore[arg-type]


def parse_verifier_keys(text: str) -> dict[str, str]:
    """`search-srv:KEY1,payments-srv:KEY2` -> {KEY1: "search-srv", ...} (errors never echo a key)."""
    keys: dict[str, str] = {}
    for n, item in enumerate(i for i in text.split(",") if i.strip()):
        m = _VERIFIER_RE.fullmatch(item.strip())
        if m is None:
            raise ConfigError(f"AGENTCAPS_VERIFIER_KEYS entry {n + 1}: expected name:key with a key of 16+ characters")
        keys[m.group(2)] = m.group(1)
    return keys


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.chmod(path, 0o600)


def load_or_create_ring(data_dir: Path) -> KeyRing:
    path = data_dir / MASTER_KEYS_FILE
    if path.exists():
        return KeyRing.parse(path.read_text())
    ring = KeyRing(new_key_entry())
    _write_secret(path, ring.serialize())
    return ring


def save_ring(data_dir: Path, ring: KeyRing) -> None:
    _write_secret(data_dir / MASTER_KEYS_FILE, ring.serialize())


def load_or_create_admin_key(data_dir: Path) -> str:
    path = data_dir / ADMIN_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    key = "ak_" + secrets.token_urlsafe(32)
    _write_secret(path, key)
    return key
