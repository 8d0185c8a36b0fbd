"""Settings from AGENTCAPS_* (docs/configuration.md), built once at start-up. Secrets are kept out of repr and logs.

Without AGENTCAPS_MASTER_KEYS / AGENTCAPS_ADMIN_KEYS, keys are generated once into AGENTCAPS_DATA_DIR
(files `master_keys` and `admin_key`, mode 0600) so the embedded default works on first start. A key file
that another user could have written is refused, as ssh refuses such a private key: whoever can write the
admin key can mint, and whoever can write the master keys can sign tokens. Admin and verifier keys are bearer
secrets of at least MIN_SECRET_CHARS characters. Every refusal is one ConfigError naming the file or variable.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from app.errors import ConfigError
from app.store.base import AuditPolicy
from app.token.keys import KeyRing, new_key_entry

MASTER_KEYS_FILE = "master_keys"
ADMIN_KEY_FILE = "admin_key"
T = TypeVar("T")
MIN_SECRET_CHARS = 32  # admin and verifier keys: guessing one must be out of reach
MAX_APPROVAL_TTL = 7 * 86400
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_VERIFIER_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}):(\S+)")


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
    cache_mb: int = 64  # AGENTCAPS_CACHE_MB: what the verifier's caches may hold in all (caveats.cache)
    approval_ttl: int = 900  # AGENTCAPS_APPROVAL_TTL: seconds an approval waits, and an approved one stays usable
    approval_webhook: str = ""  # AGENTCAPS_APPROVAL_WEBHOOK: where each new pending approval is POSTed
    audit_retention: int = 7 * 86400  # AGENTCAPS_AUDIT_RETENTION, in seconds: how long audit events are kept
    audit_max_events: int = 1_000_000  # AGENTCAPS_AUDIT_MAX_EVENTS: how many are kept at most
    audit_args: str = "full"  # AGENTCAPS_AUDIT_ARGS: full (cut at 4 KiB) or none

    @property
    def audit(self) -> AuditPolicy:
        return AuditPolicy(self.audit_retention * 1000, self.audit_max_events)

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
        cache_text = env.get("AGENTCAPS_CACHE_MB", "64")
        if not re.fullmatch(r"[1-9][0-9]{0,6}", cache_text):
            raise ConfigError(f"AGENTCAPS_CACHE_MB must be a whole number of MiB, 1 or more, got {cache_text!r}")
        ttl_text = env.get("AGENTCAPS_APPROVAL_TTL", "900")
        if not re.fullmatch(r"[1-9][0-9]{0,6}", ttl_text) or int(ttl_text) > MAX_APPROVAL_TTL:
            raise ConfigError(
                f"AGENTCAPS_APPROVAL_TTL must be whole seconds, 1 to {MAX_APPROVAL_TTL} (a week), got {ttl_text!r}"
            )
        webhook = env.get("AGENTCAPS_APPROVAL_WEBHOOK", "")
        if webhook and not re.fullmatch(r"https?://[^\s]+", webhook):
            raise ConfigError(f"AGENTCAPS_APPROVAL_WEBHOOK must be an http:// or https:// URL, got {webhook!r}")
        retention_text = env.get("AGENTCAPS_AUDIT_RETENTION", "7d")
        found = re.fullmatch(r"([1-9][0-9]{0,6})([smhd])", retention_text)
        if found is None or int(found[1]) * _UNIT[found[2]] > 3650 * 86400:
            raise ConfigError(
                f"AGENTCAPS_AUDIT_RETENTION must be a duration like 7d, 12h, 30m or 3600s (at most 10 years), got "
                f"{retention_text!r}"
            )
        max_text = env.get("AGENTCAPS_AUDIT_MAX_EVENTS", "1000000")
        if not re.fullmatch(r"[1-9][0-9]{0,9}", max_text):
            raise ConfigError(f"AGENTCAPS_AUDIT_MAX_EVENTS must be a whole number, 1 or more, got {max_text!r}")
        audit_args = env.get("AGENTCAPS_AUDIT_ARGS", "full")
        if audit_args not in ("full", "none"):
            raise ConfigError(f"AGENTCAPS_AUDIT_ARGS must be full or none, got {audit_args!r}")
        values: dict[str, object] = {
            "store": env.get("AGENTCAPS_STORE", "local://"),
            "data_dir": data_dir,
            "host": env.get("AGENTCAPS_HOST", "127.0.0.1"),
            "port": int(port_text),
            "location": env.get("AGENTCAPS_LOCATION", ""),
            "store_timeout": timeout,
            "redis_wait": env.get("AGENTCAPS_REDIS_WAIT", ""),
            "fsync": fsync,
            "cache_mb": int(cache_text),
            "approval_ttl": int(ttl_text),
            "approval_webhook": webhook,
            "audit_retention": int(found[1]) * _UNIT[found[2]],
            "audit_max_events": int(max_text),
            "audit_args": audit_args,
        }
        values.update(overrides)
        master = env.get("AGENTCAPS_MASTER_KEYS")
        values["ring"] = (
            _named("AGENTCAPS_MASTER_KEYS", KeyRing.parse, master) if master else load_or_create_ring(data_dir)
        )
        admin = env.get("AGENTCAPS_ADMIN_KEYS")
        values["admin_keys"] = parse_admin_keys(admin) if admin else (load_or_create_admin_key(data_dir),)
        values["verifier_keys"] = parse_verifier_keys(env.get("AGENTCAPS_VERIFIER_KEYS", ""))
        return cls(**values)  # type: ignore[arg-type]


def parse_admin_keys(text: str) -> tuple[str, ...]:
    """`KEY1,KEY2` as in AGENTCAPS_ADMIN_KEYS (errors never echo a key)."""
    keys = tuple(k for k in text.split(",") if k)
    for n, key in enumerate(keys, 1):
        _check_strength(key, f"AGENTCAPS_ADMIN_KEYS entry {n}")
    return keys


def parse_verifier_keys(text: str) -> dict[str, str]:
    """`search-srv:KEY1,payments-srv:KEY2` -> {KEY1: "search-srv", ...} (errors never echo a key)."""
    keys: dict[str, str] = {}
    for n, item in enumerate((i for i in text.split(",") if i.strip()), 1):
        m = _VERIFIER_RE.fullmatch(item.strip())
        if m is None:
            raise ConfigError(f"AGENTCAPS_VERIFIER_KEYS entry {n}: expected name:key")
        _check_strength(m.group(2), f"AGENTCAPS_VERIFIER_KEYS entry {n} ({m.group(1)})")
        keys[m.group(2)] = m.group(1)
    return keys


def _check_strength(key: str, where: str) -> None:
    if len(key) < MIN_SECRET_CHARS:
        raise ConfigError(f"{where}: a key needs at least {MIN_SECRET_CHARS} characters")


def _named(where: object, parse: Callable[[str], T], text: str) -> T:
    """parse(text), its ConfigError prefixed with where the text came from (a variable or a file)."""
    try:
        return parse(text)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def read_key_file(path: Path) -> str:
    """A key file's text, refused when it is not the service user's own, or group- or world-writable: another
    user could have put their key there (ssh refuses such key files for the same reason)."""
    with path.open("rb") as f:
        st = os.fstat(f.fileno())  # the file that was opened, not whatever the path names a moment later
        if st.st_uid != os.geteuid():
            raise ConfigError(
                f"{path}: owned by uid {st.st_uid}, not by the service's user (uid {os.geteuid()}); refusing a key "
                "file another user could have written"
            )
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ConfigError(
                f"{path}: group- or world-writable (mode {stat.S_IMODE(st.st_mode):04o}); refusing a key file "
                f"another user could have written: chmod 600 {path}"
            )
        try:
            return f.read().decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file") from None


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.chmod(path, 0o600)


def load_or_create_ring(data_dir: Path) -> KeyRing:
    path = data_dir / MASTER_KEYS_FILE
    if path.exists():
        return _named(path, KeyRing.parse, read_key_file(path))
    ring = KeyRing(new_key_entry())
    _write_secret(path, ring.serialize())
    return ring


def save_ring(data_dir: Path, ring: KeyRing) -> None:
    _write_secret(data_dir / MASTER_KEYS_FILE, ring.serialize())


def load_or_create_admin_key(data_dir: Path) -> str:
    path = data_dir / ADMIN_KEY_FILE
    if path.exists():
        key = read_key_file(path).strip()
        _check_strength(key, str(path))
        return key
    key = "ak_" + secrets.token_urlsafe(32)
    _write_secret(path, key)
    return key
