"""`agentcaps serve` (app/api/server.py): a store URL the app would refuse, or a port it cannot listen on, stops it
before the banner; a store that does not answer is a warning; a signal stops it with nothing left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.api import server
from app.api.metrics import MULTIPROC_DIR
from app.cli import main
from app.config import Settings
from app.errors import ConfigError
from tests.keys import ADMIN_KEY
from tests.processes import RedisServer, free_port, wait_until

BAD_STORES = [
    ("foo://x", "unsupported store"),
    ("redis://127.0.0.1:notaport/0", "AGENTCAPS_STORE"),
    ("redis+cluster://nohostport", "host:port"),
]


@pytest.fixture
def no_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """uvicorn.run is never reached with a bad store; if it were, record it instead of listening. serve() and
    the CLI write AGENTCAPS_HOST/PORT into os.environ for the workers: set here so that monkeypatch undoes it."""
    monkeypatch.setenv("AGENTCAPS_HOST", "127.0.0.1")
    monkeypatch.setenv("AGENTCAPS_PORT", str(free_port()))  # serve checks that it could listen there
    ran: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: ran.append(args))
    return ran


@pytest.mark.parametrize(("store", "says"), BAD_STORES, ids=["unknown-scheme", "bad-port", "bad-cluster"])
def test_serve_refuses_a_bad_store_url_before_the_banner(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_uvicorn: list[object],
    store: str,
    says: str,
) -> None:
    monkeypatch.setenv("AGENTCAPS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AGENTCAPS_STORE", store)
    assert main(["serve"]) == 2
    out, err = capsys.readouterr()
    assert "listening" not in out and out == ""
    assert err.startswith("agentcaps serve: ") and says in err, err
    assert no_uvicorn == []


def test_serve_checks_the_store_and_then_listens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_uvicorn: list[object]
) -> None:
    env = {"AGENTCAPS_DATA_DIR": str(tmp_path), "AGENTCAPS_PORT": str(free_port())}
    server.serve(Settings.from_env(env | {"AGENTCAPS_STORE": "redis://127.0.0.1:1/0"}))  # a Redis that is down
    out, err = capsys.readouterr()
    assert "agentcaps listening on" in out and "is not ready" in err  # warned, and serves all the same
    assert len(no_uvicorn) == 1
    with pytest.raises(ConfigError, match="unsupported store"):
        server.serve(Settings.from_env(env | {"AGENTCAPS_STORE": "foo://x"}))
    assert capsys.readouterr().out == ""


def test_the_store_url_never_prints_its_password(tmp_path: Path) -> None:
    for url, shown in [
        ("redis://:hunter2@db:6379/0", "redis://:***@db:6379/0"),
        ("redis://agent:hunter2@db:6379/0?password=hunter2&db=1", "redis://agent:***@db:6379/0?password=***&db=1"),
        ("redis+cluster://agent:hunter2@h1:7000,h2:7001", "redis+cluster://agent:***@h1:7000,h2:7001"),
        ("redis://db:6379/0", "redis://db:6379/0"),
    ]:
        assert server.without_password(url) == shown
        settings = Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path), "AGENTCAPS_STORE": url})
        assert f"(store {shown}, 1 worker)" in server.banner(settings, 1)


# -- start-up checks of a real `serve`: where it listens, whether its store answers ---------------------------


def test_a_port_in_use_is_one_line_that_says_what_to_do_and_no_banner(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "serve"],
            env=serve_env(tmp_path, "memory://", port),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr  # a configuration error, like every setting refused at start
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"agentcaps serve: cannot listen on 127.0.0.1:{port}: the address is already in use")
    assert "--port or AGENTCAPS_PORT" in line


def test_a_port_a_stopped_server_left_in_time_wait_is_free() -> None:
    """A serve stopped a moment ago leaves its closed connections in TIME_WAIT; uvicorn binds over them
    (SO_REUSEADDR), so the check must not call that port busy."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn listens
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the server's side closes first: it is the one left in TIME_WAIT
            client.recv(1)
    server.check_port("127.0.0.1", port)


def test_a_redis_that_does_not_answer_is_one_warning_and_serve_starts_not_ready(tmp_path: Path) -> None:
    store = f"redis://:not-a-real-secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    port = free_port()
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        argv = [sys.executable, "-m", "app.cli", "serve"]
        process = subprocess.Popen(argv, env=serve_env(tmp_path, store, port), stdout=stdout, stderr=stderr)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(url + "/healthz", timeout=1).status_code == 200, what="serve")
        ready = httpx.get(url + "/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["status"] == "not ready"
    finally:
        process.terminate()
        process.wait(30)
    assert "agentcaps listening on" in out.read_text()
    [warning] = err.read_text().splitlines()
    assert warning.startswith(f"agentcaps serve: warning: the store redis://:***@127.0.0.1:{store.rsplit(':', 1)[1]}")
    assert "is not ready" in warning and "/readyz" in warning
    assert "not-a-real-secret" not in out.read_text() + warning


# -- a real `serve` stopped by a signal ----------------------------------------------------------------------


def metrics_dirs(tmp: Path) -> list[Path]:
    """What serve leaves in its TMPDIR of its own. Only its metrics directories: a worker still exiting may hold
    a temporary file of the runtime's for a moment (seen under load: an 8-character name, gone a moment later)."""
    return [p for p in tmp.iterdir() if p.name.startswith("agentcaps-metrics-")]


def serve_env(home: Path, store: str, port: int) -> dict[str, str]:
    """`serve`'s environment, its temporary files in `home`/tmp, a directory of the test's own."""
    (home / "tmp").mkdir(parents=True)
    env = {
        **os.environ,
        "TMPDIR": str(home / "tmp"),
        "AGENTCAPS_STORE": store,
        "AGENTCAPS_DATA_DIR": str(home / "data"),
        "AGENTCAPS_PORT": str(port),
        "AGENTCAPS_LOG_LEVEL": "ERROR",
        "AGENTCAPS_ADMIN_KEYS": ADMIN_KEY,
    }
    env.pop(MULTIPROC_DIR, None)
    return env


def serving(tmp_path: Path, store: str, workers: int) -> tuple[subprocess.Popen[str], str, Path]:
    """`agentcaps serve` in a process of its own, answering."""
    port = free_port()
    argv = [sys.executable, "-m", "app.cli", "serve", "--workers", str(workers)]
    env = serve_env(tmp_path, store, port)
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(url + "/healthz", timeout=1).status_code == 200, what="serve")
    return process, url, tmp_path / "tmp"


def stopped(process: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_one_worker_stopped_by_a_signal_leaves_no_metrics_directory(tmp_path: Path, signum: int) -> None:
    """One worker keeps its metrics in memory; the directory it once made for nothing outlived every SIGTERM."""
    process, url, tmp = serving(tmp_path, "memory://", 1)
    assert b"agentcaps_store_errors" in httpx.get(url + "/metrics", timeout=5).content
    code, err = stopped(process, signum)
    assert metrics_dirs(tmp) == []
    assert code == -signum, err  # still ends as the signal says, as uvicorn means it to
    assert "Traceback" not in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_workers_share_a_metrics_directory_that_every_stop_removes(
    tmp_path: Path, redis_server: RedisServer, signum: int
) -> None:
    process, url, tmp = serving(tmp_path, redis_server.url, 2)
    (shared,) = metrics_dirs(tmp)
    assert shared.name.startswith("agentcaps-metrics-")
    assert b"agentcaps_store_errors" in httpx.get(url + "/metrics", timeout=5).content
    _, err = stopped(process, signum)
    assert metrics_dirs(tmp) == [], err
    assert "Traceback" not in err


def test_a_serve_that_cannot_listen_or_is_stopped_while_starting_leaves_no_metrics_directory(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--workers", "2"],
            env=serve_env(tmp_path / "taken", redis_server.url, port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        _, err = process.communicate(timeout=60)
    # The port check refuses it before the directory is made; the test below covers uvicorn failing to bind
    assert process.returncode == 2 and metrics_dirs(tmp_path / "taken" / "tmp") == [], err
    # SIGTERM as soon as the banner is out: the directory exists, uvicorn's own handlers may not yet
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--workers", "2"],
        env=serve_env(tmp_path / "early", redis_server.url, free_port()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and "listening" in process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert metrics_dirs(tmp_path / "early" / "tmp") == [], err
    assert "Traceback" not in err


def test_a_port_taken_after_the_check_still_leaves_no_metrics_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another program may take the port between serve's check and uvicorn's bind: uvicorn then exits (3)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(MULTIPROC_DIR, raising=False)
    with pytest.raises(SystemExit), server._shared_metrics(2):
        assert len(metrics_dirs(tmp_path)) == 1
        raise SystemExit(3)
    assert metrics_dirs(tmp_path) == []


def test_a_worker_freezes_what_it_built_and_collects_young_objects_less_often(tmp_path: Path) -> None:
    """The worker factory leaves the collector tuned for serving (server.tune_collector): in a process of its own,
    since a frozen heap is never collected again."""
    probe = (
        "import gc\n"
        "from app.api.server import app_from_env, YOUNG_THRESHOLD\n"
        "before = gc.get_freeze_count()\n"
        "app_from_env()\n"
        "print(before, gc.get_freeze_count() > 10_000, gc.get_threshold()[0] == YOUNG_THRESHOLD)\n"
    )
    env = serve_env(tmp_path, "memory://", free_port())
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "True", "True"]
