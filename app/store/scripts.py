"""The one table of Lua scripts: each is lib.lua + its body, loaded once, run by EVALSHA (reloaded on NOSCRIPT)."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError

from app.store.base import IDEMPOTENCY_TTL_MS, MAX_OPEN_HOLDS, PURGE_STEP, SETTLED_HOLD_TTL_MS

NAMES = ("decide", "lookup", "hold", "revoke", "inspect")


# Every expiry is decided in the scripts against the caller's now_ms (lib.lua `live`); Redis's own TTLs only
# collect the garbage, this long after a record's end. Redis judges a TTL by its own clock, so a TTL at the exact
# end would delete a budget counter, answer or revocation mark early whenever Redis's clock runs ahead of the
# verifiers' (a budget deleted early lets a token overspend). 24 h covers any skew a host has in practice,
# a clock set to local time instead of UTC (up to 14 h) included; the cost is old answers and marks kept a day
# longer.
GC_SLACK_MS = 24 * 3600 * 1000

_CONSTANTS = {
    "IDEMPOTENCY_TTL_MS": IDEMPOTENCY_TTL_MS,
    "SETTLED_HOLD_TTL_MS": SETTLED_HOLD_TTL_MS,
    "GC_SLACK_MS": GC_SLACK_MS,
    "MAX_OPEN_HOLDS": MAX_OPEN_HOLDS,
    "PURGE_STEP": PURGE_STEP,
}


def _source(name: str) -> str:
    """The constants (one definition, here and in base.py), lib.lua, then the script."""
    lua = resources.files("app.store") / "lua"
    constants = "".join(f"local {key} = {value}\n" for key, value in _CONSTANTS.items())
    return constants + (lua / "lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class Script:
    def __init__(self, name: str) -> None:
        self.name = name
        self.source = _source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, client: Redis | RedisCluster, base_key: str, *args: str | int) -> Any:
        try:
            return await client.evalsha(self.sha, 1, base_key, *args)
        except NoScriptError:
            # The script did not run (a restarted or failed-over Redis lost its cache): loading it is safe.
            await client.script_load(self.source)
            return await client.evalsha(self.sha, 1, base_key, *args)


SCRIPTS = {name: Script(name) for name in NAMES}
