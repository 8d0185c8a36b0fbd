"""The one table of Lua scripts: each is lib.lua + its body, loaded once, run by EVALSHA (reloaded on NOSCRIPT)."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError

NAMES = ("decide", "lookup", "hold", "revoke", "inspect")


def _source(name: str) -> str:
    lua = resources.files("app.store") / "lua"
    return (lua / "lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


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
