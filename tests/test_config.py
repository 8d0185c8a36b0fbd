"""Keys at start-up: key files another user could have written are refused, as ssh refuses them, and admin and
verifier keys shorter than 32 characters are refused; each refusal is one line naming the file or variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import ADMIN_KEY_FILE, MASTER_KEYS_FILE, Settings
from app.errors import ConfigError
from tests.keys import ADMIN_KEY, VERIFIER_KEY

SHORT = "s3cret-but-only-31-characters-x"
assert len(SHORT) == 31


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path), **env})


def refused(tmp_path: Path, **env: str) -> str:
    with pytest.raises(ConfigError) as e:
        settings(tmp_path, **env)
    message = str(e.value)
    assert "\n" not in message and SHORT not in message
    return message


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AGENTCAPS_ADMIN_KEYS": SHORT}, "AGENTCAPS_ADMIN_KEYS entry 1"),
        ({"AGENTCAPS_ADMIN_KEYS": f"{ADMIN_KEY},{SHORT}"}, "AGENTCAPS_ADMIN_KEYS entry 2"),
        ({"AGENTCAPS_VERIFIER_KEYS": f"search-srv:{SHORT}"}, "AGENTCAPS_VERIFIER_KEYS entry 1 (search-srv)"),
        ({"AGENTCAPS_VERIFIER_KEYS": f"a:{VERIFIER_KEY},b:{SHORT}"}, "AGENTCAPS_VERIFIER_KEYS entry 2 (b)"),
    ],
    ids=["admin", "second-admin", "verifier", "second-verifier"],
)
def test_admin_and_verifier_keys_under_32_characters_are_refused(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    assert refused(tmp_path, **env) == f"{named}: a key needs at least 32 characters"


def test_keys_of_32_characters_are_taken(tmp_path: Path) -> None:
    key = SHORT + "y"
    got = settings(tmp_path, AGENTCAPS_ADMIN_KEYS=key, AGENTCAPS_VERIFIER_KEYS=f"search-srv:{key}")
    assert got.admin_keys == (key,) and dict(got.verifier_keys) == {key: "search-srv"}


def test_a_bad_master_key_names_its_variable(tmp_path: Path) -> None:
    message = refused(tmp_path, AGENTCAPS_MASTER_KEYS="k1:c2hvcnQ")
    assert message == "AGENTCAPS_MASTER_KEYS: master key 'k1': needs at least 32 bytes"


# -- key files in the data dir ---------------------------------------------------------------------------------


def generated(tmp_path: Path) -> Settings:
    """First start: the service writes its master keys and admin key, mode 0600."""
    first = settings(tmp_path)
    for name in (MASTER_KEYS_FILE, ADMIN_KEY_FILE):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    return first


@pytest.mark.parametrize("name", [MASTER_KEYS_FILE, ADMIN_KEY_FILE])
@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666, 0o660])
def test_a_group_or_world_writable_key_file_is_refused(tmp_path: Path, name: str, mode: int) -> None:
    first = generated(tmp_path)
    path = tmp_path / name
    path.chmod(mode)
    message = refused(tmp_path)
    assert message.startswith(f"{path}: group- or world-writable (mode {mode:04o})"), message
    assert f"chmod 600 {path}" in message
    assert first.admin_keys[0] not in message
    path.chmod(0o640)  # readable by the group is not writable: taken, as ssh would not for a private key
    again = settings(tmp_path)
    assert again.admin_keys == first.admin_keys and again.ring.serialize() == first.ring.serialize()


@pytest.mark.parametrize("name", [MASTER_KEYS_FILE, ADMIN_KEY_FILE])
def test_a_key_file_owned_by_another_user_is_refused(tmp_path: Path, name: str) -> None:
    generated(tmp_path)
    path = tmp_path / name
    if os.geteuid() == 0:
        os.chown(path, 4242, -1)
    else:  # only root can give a file away: the data dir's entry then names a file of someone else's
        path.unlink()
        path.symlink_to(
            next(p for p in (Path("/etc/hostname"), Path("/etc/passwd")) if p.stat().st_uid != os.geteuid())
        )
    message = refused(tmp_path)
    assert message.startswith(f"{path}: owned by uid "), message
    assert f"not by the service's user (uid {os.geteuid()})" in message


def test_a_short_admin_key_in_its_file_is_refused(tmp_path: Path) -> None:
    generated(tmp_path)
    path = tmp_path / ADMIN_KEY_FILE
    path.write_text(SHORT + "\n")
    assert refused(tmp_path) == f"{path}: a key needs at least 32 characters"


def test_a_malformed_master_keys_file_is_named(tmp_path: Path) -> None:
    generated(tmp_path)
    path = tmp_path / MASTER_KEYS_FILE
    path.write_text("not a key\n")
    assert refused(tmp_path).startswith(f"{path}: master key 1: expected kid:base64url-key")


def test_keys_rotate_refuses_a_writable_master_keys_file(tmp_path: Path) -> None:
    generated(tmp_path)
    path = tmp_path / MASTER_KEYS_FILE
    path.chmod(0o666)
    before = path.read_text()
    env = {**os.environ, "AGENTCAPS_DATA_DIR": str(tmp_path)}
    env.pop("AGENTCAPS_MASTER_KEYS", None)
    done = run_cli(env, "keys", "rotate")
    assert done.returncode == 2 and done.stderr.startswith(f"agentcaps keys: {path}: group- or world-writable")
    assert path.read_text() == before


def run_cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("fault", ["writable-admin-key", "short-admin-key", "short-verifier-key"])
def test_serve_exits_with_one_line_naming_the_culprit(tmp_path: Path, fault: str) -> None:
    """The real `agentcaps serve` refuses before it listens: exit code 2, one line, no traceback."""
    generated(tmp_path)
    env = {**os.environ, "AGENTCAPS_DATA_DIR": str(tmp_path), "AGENTCAPS_PORT": "1"}
    for name in ("AGENTCAPS_MASTER_KEYS", "AGENTCAPS_ADMIN_KEYS", "AGENTCAPS_VERIFIER_KEYS"):
        env.pop(name, None)
    if fault == "writable-admin-key":
        (tmp_path / ADMIN_KEY_FILE).chmod(0o666)
        expected = f"{tmp_path / ADMIN_KEY_FILE}: group- or world-writable"
    elif fault == "short-admin-key":
        env["AGENTCAPS_ADMIN_KEYS"] = SHORT
        expected = "AGENTCAPS_ADMIN_KEYS entry 1: a key needs at least 32 characters"
    else:
        env["AGENTCAPS_VERIFIER_KEYS"] = f"search-srv:{SHORT}"
        expected = "AGENTCAPS_VERIFIER_KEYS entry 1 (search-srv): a key needs at least 32 characters"
    done = run_cli(env, "serve")
    assert done.returncode == 2, done
    assert done.stderr.startswith(f"agentcaps serve: {expected}"), done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr and SHORT not in done.stderr
    assert done.stdout == ""  # refused before the banner


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "64MB", "", "²", "12345678"])
def test_a_cache_size_that_is_not_a_whole_number_of_mib_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"^AGENTCAPS_CACHE_MB must be a whole number of MiB"):
        settings(tmp_path, AGENTCAPS_CACHE_MB=value)


def test_the_cache_size_defaults_to_64_mib(tmp_path: Path) -> None:
    assert settings(tmp_path).cache_mb == 64 and settings(tmp_path, AGENTCAPS_CACHE_MB="8").cache_mb == 8


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AGENTCAPS_APPROVAL_TTL", "0"),
        ("AGENTCAPS_APPROVAL_TTL", "604801"),
        ("AGENTCAPS_APPROVAL_TTL", "15m"),
        ("AGENTCAPS_APPROVAL_WEBHOOK", "ftp://hooks.example"),
        ("AGENTCAPS_APPROVAL_WEBHOOK", "https://a b"),
        ("AGENTCAPS_AUDIT_RETENTION", "7"),
        ("AGENTCAPS_AUDIT_RETENTION", "0d"),
        ("AGENTCAPS_AUDIT_RETENTION", "3651d"),
        ("AGENTCAPS_AUDIT_RETENTION", "1w"),
        ("AGENTCAPS_AUDIT_MAX_EVENTS", "0"),
        ("AGENTCAPS_AUDIT_MAX_EVENTS", "1e6"),
        ("AGENTCAPS_AUDIT_ARGS", "some"),
    ],
)
def test_bad_approval_and_audit_settings_are_refused_by_name(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path), name: value})


def test_approval_and_audit_settings_and_their_defaults(tmp_path: Path) -> None:
    default = Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path)})
    assert (default.approval_ttl, default.approval_webhook, default.audit_args) == (900, "", "full")
    assert (default.audit.retention_ms, default.audit.max_events) == (7 * 86400 * 1000, 1_000_000)
    env = {
        "AGENTCAPS_DATA_DIR": str(tmp_path),
        "AGENTCAPS_APPROVAL_TTL": "60",
        "AGENTCAPS_APPROVAL_WEBHOOK": "https://hooks.example/agentcaps",
        "AGENTCAPS_AUDIT_RETENTION": "12h",
        "AGENTCAPS_AUDIT_MAX_EVENTS": "5000",
        "AGENTCAPS_AUDIT_ARGS": "none",
    }
    given = Settings.from_env(env)
    assert (given.approval_ttl, given.approval_webhook, given.audit_args) == (
        60,
        env["AGENTCAPS_APPROVAL_WEBHOOK"],
        "none",
    )
    assert (given.audit.retention_ms, given.audit.max_events) == (12 * 3600 * 1000, 5000)
