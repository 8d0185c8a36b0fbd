"""Run the service under uvicorn. Workers are separate processes that build their app from the environment."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import re
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import msgspec
import uvicorn
from litestar import Litestar

from app.api.app import create_app
from app.api.metrics import MULTIPROC_DIR
from app.config import ADMIN_KEY_FILE, Settings
from app.errors import ConfigError
from app.store import open_store


class JsonFormatter(logging.Formatter):
    """One JSON object per line; messages never carry secrets (Settings keeps them out of repr)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def configure_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=os.environ.get("AGENTCAPS_LOG_LEVEL", "INFO"), handlers=[handler], force=True)


def app_from_env() -> Litestar:
    """The uvicorn factory: every worker reads the same AGENTCAPS_* settings (and data-dir keys)."""
    configure_logging()
    app = create_app(Settings.from_env())
    tune_collector()
    return app


# The youngest generation is collected after this many new containers (Python's default: 700). A verify allocates
# dozens, nearly all freed by reference counting: at the default the collector ran every ~20 requests.
YOUNG_THRESHOLD = 7000


def tune_collector() -> None:
    """Everything built by now (modules, settings, the app) lives as long as the process: freeze it, so that a full
    collection no longer walks it. Under load, full collections over it paused the process 17-34 ms about once a
    second, most of the p99 at 80 % of peak (scripts/bench_http.py, docs/operations.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def store_line(settings: Settings) -> str:
    """The store, and for the embedded ones what survives a restart."""
    if settings.store == "local://":
        fsync = settings.fsync or "everysec"
        return (
            f"local:// in {settings.data_dir}, fsync {fsync}: counters, holds, revocations and answers survive "
            "a restart"
        )
    if settings.store == "memory://":
        return "memory://: every counter is forgotten on exit"
    return without_password(settings.store)


def without_password(url: str) -> str:
    """A store URL fit to print: `redis://user:***@host:6379/0`, and `password=***` in its query."""
    scheme, sep, rest = url.partition("://")
    address, slash, path = rest.partition("/")
    userinfo, at, hosts = address.rpartition("@")
    if at and ":" in userinfo:
        address = f"{userinfo.partition(':')[0]}:***@{hosts}"
    return re.sub(r"([?&]password=)[^&]*", r"\1***", f"{scheme}{sep}{address}{slash}{path}")


def banner(settings: Settings, workers: int) -> str:
    """What a newcomer sees on start: where it listens, where the admin key is, what to try next."""
    url = f"http://{settings.host}:{settings.port}"
    admin = (
        f"$(cat {settings.data_dir / ADMIN_KEY_FILE})"
        if "AGENTCAPS_ADMIN_KEYS" not in os.environ
        else "$AGENTCAPS_ADMIN_KEY  # one of AGENTCAPS_ADMIN_KEYS"
    )
    return f"""agentcaps listening on {url} (store {store_line(settings)}, {workers} worker{"s" if workers > 1 else ""})
Try, in another shell:
  ADMIN={admin}
  curl -s {url}/v1/tokens -H "Authorization: Bearer $ADMIN" \\
    -d '{{"subject":"orchestrator","budget":{{"amount":"10.00","currency":"USD"}},"tools":["search"],"max_depth":2}}'
  curl -s {url}/v1/verify \\
    -d '{{"token":"<token from above>","tool":"search","cost":{{"amount":"0.05","currency":"USD"}}}}'
  .venv/bin/agentcaps --help      # the CLI does the same in words (README, "Try it"; docs/cli.md)
API schema: {url}/schema   metrics: {url}/metrics   stop: Ctrl-C"""


def check_port(host: str, port: int) -> None:
    """Refuse, before the banner, an address serve cannot listen on: a port in use would otherwise print the whole
    banner and then fail inside uvicorn. A bind test, with the options uvicorn binds with (SO_REUSEADDR, so a port
    left in TIME_WAIT by a serve just stopped is not mistaken for one in use)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"cannot listen on {where}: the address is already in use (another agentcaps serve?). "
                "Stop what holds it, or pick another port with --port or AGENTCAPS_PORT."
            ) from None
        why = e.strerror or str(e)
        raise ConfigError(
            f"cannot listen on {where}: {why}. Check --host or AGENTCAPS_HOST, and --port or AGENTCAPS_PORT."
        ) from None


def check_store(settings: Settings) -> str | None:
    """Refuse, before the banner, a store URL that create_app would refuse in every worker. Opening local:// takes
    the data dir's lock and reads its files, so a data dir in use or damaged is refused here too. A store that
    does not answer (a Redis down or unreachable) is no reason to refuse, since it may come back: its reason is
    returned for a warning, and /readyz says not ready until it answers."""
    try:
        store = open_store(
            settings.store, settings.store_timeout, settings.redis_wait, settings.data_dir, settings.fsync
        )
    except ValueError as e:  # redis-py's URL parser; its messages carry no password
        raise ConfigError(f"AGENTCAPS_STORE: {e}") from None

    async def ask() -> str | None:
        try:
            return await store.ready()
        finally:
            await store.close()

    return asyncio.run(ask())


def serve(settings: Settings, workers: int = 1) -> None:
    if workers > 1 and settings.store in ("local://", "memory://"):
        raise ConfigError(
            f"--workers > 1 needs a shared counter store: {settings.store} serves one process, and more would "
            "split budgets and rate counters between them. Use AGENTCAPS_STORE=redis://... or run one worker."
        )
    check_port(settings.host, settings.port)
    not_ready = check_store(settings)
    os.environ.setdefault("AGENTCAPS_HOST", settings.host)
    os.environ.setdefault("AGENTCAPS_PORT", str(settings.port))
    print(banner(settings, workers), flush=True)
    if not_ready is not None:
        print(
            f"agentcaps serve: warning: the store {without_password(settings.store)} is not ready ({not_ready}); "
            "serving anyway: /readyz answers 503 until it is, and calls it cannot decide are 503 store_unavailable",
            file=sys.stderr,
            flush=True,
        )
    with _stops_by_signal(), _shared_metrics(workers):
        uvicorn.run(
            "app.api.server:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level="warning",
            access_log=False,
            server_header=False,
            # Live audit streams never end by themselves: a stop waits this long for them, then closes them.
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )


# The signals that stop `serve`. Left to their default action, they end the process at once, and every `with`
# and `finally` on the way out (the metrics directory among them) is skipped: uvicorn, once it has shut down
# gracefully, raises the signal it caught again, so that the process ends as that signal says.
# Only those uvicorn handles itself while it serves (its supervisor takes SIGHUP to restart the workers too): a
# handler of ours that raised inside its event loop would be logged as a transport error, not stop anything.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACEFUL_SHUTDOWN_S = 5


class _Stop(BaseException):
    """A stop signal, raised where the main thread is, so that everything on the way out runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    for sig in STOP_SIGNALS:  # a second signal must not cut the clean-up short
        signal.signal(sig, signal.SIG_IGN)
    raise _Stop(signum)


@contextmanager
def _stops_by_signal() -> Iterator[None]:
    """Turn stop signals into _Stop while serving; once everything has been cleaned up, end the process by that
    signal as before (a supervisor still sees 'terminated by SIGTERM', and Ctrl-C prints no traceback)."""
    previous = {sig: signal.signal(sig, _raise_stop) for sig in STOP_SIGNALS}
    try:
        yield
    except _Stop as stop:
        signal.signal(stop.signum, signal.SIG_DFL)
        signal.raise_signal(stop.signum)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """With several workers, a fresh directory where every worker keeps its metrics (see app.api.metrics),
    removed when serve ends, however it ends. One worker keeps them in memory: no directory at all."""
    if workers <= 1:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="agentcaps-metrics-") as metrics_dir:
        # The workers, spawned from this environment, find the directory there.
        os.environ[MULTIPROC_DIR] = metrics_dir
        try:
            yield
        finally:
            os.environ.pop(MULTIPROC_DIR, None)
