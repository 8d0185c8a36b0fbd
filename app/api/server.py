"""Run the service under uvicorn. Workers are separate processes that build their app from the environment."""

from __future__ import annotations

import logging
import os

import msgspec
import uvicorn
from litestar import Litestar

from app.api.app import create_app
from app.config import Settings
from app.errors import ConfigError


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
    return create_app(Settings.from_env())


def serve(settings: Settings, workers: int = 1) -> None:
    if workers > 1 and settings.store == "memory://":
        raise ConfigError(
            "--workers > 1 needs a shared counter store: memory:// would split budgets and rate counters "
            "between processes. Use AGENTCAPS_STORE=redis://... or run one worker."
        )
    os.environ.setdefault("AGENTCAPS_HOST", settings.host)
    os.environ.setdefault("AGENTCAPS_PORT", str(settings.port))
    uvicorn.run(
        "app.api.server:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
