"""The one table of Lua scripts: each is lib.lua + its body, loaded once, run by EVALSHA (reloaded on NOSCRIPT),
and the key layout they share."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib import resources
from typing import Any

from app.store.base import (
    APPROVAL_INDEX_SIZE,
    APPROVAL_KEPT_MS,
    IDEMPOTENCY_TTL_MS,
    KEEP_A_WEEK,
    MADE_UP_ID_TTL_MS,
    MAX_APPROVALS,
    MAX_CHAINS_SEEN,
    MAX_OPEN_HOLDS,
    PURGE_STEP,
    SETTLED_HOLD_TTL_MS,
)
from app.store.wire import Arg, Command

# Every expiry is decided in the scripts against the caller's now_ms (lib.lua `live`); Redis's own TTLs only
# collect the garbage, this long after a record's end. Redis judges a TTL by its own clock, so a TTL at the exact
# end would delete a budget counter, answer or revocation mark early whenever Redis's clock runs ahead of the
# verifiers' (a budget deleted early lets a token overspend). 24 h covers any skew a host has in practice,
# a clock set to local time instead of UTC (up to 14 h) included; the cost is old answers and marks kept a day
# longer.
GC_SLACK_MS = 24 * 3600 * 1000

_CONSTANTS = {
    "IDEMPOTENCY_TTL_MS": IDEMPOTENCY_TTL_MS,
    "MADE_UP_ID_TTL_MS": MADE_UP_ID_TTL_MS,
    "SETTLED_HOLD_TTL_MS": SETTLED_HOLD_TTL_MS,
    "GC_SLACK_MS": GC_SLACK_MS,
    "MAX_OPEN_HOLDS": MAX_OPEN_HOLDS,
    "PURGE_STEP": PURGE_STEP,
    "MAX_APPROVALS": MAX_APPROVALS,
    "APPROVAL_KEPT_MS": APPROVAL_KEPT_MS,
    "APPROVAL_INDEX_SIZE": APPROVAL_INDEX_SIZE,
    "MAX_CHAINS_SEEN": MAX_CHAINS_SEEN,
    # a script that is not given the store's AuditPolicy (lib.lua audit_policy) trims by the default one
    "AUDIT_RETENTION_MS": KEEP_A_WEEK.retention_ms,
    "AUDIT_MAX_EVENTS": KEEP_A_WEEK.max_events,
}


def _source(name: str) -> str:
    """The constants (one definition, here and in base.py), lib.lua, then the script."""
    lua = resources.files("app.store") / "lua"
    constants = "".join(f"local {key} = {value}\n" for key, value in _CONSTANTS.items())
    return constants + (lua / "lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def base_key(token_id: str) -> str:
    """Every key of one root shares the hash tag `{token id}`: one slot, so one script can touch them all."""
    return f"ac:{{{token_id}}}"


def fence_key(token_id: str) -> str:
    """Declared by every call on a cluster and never written: it keeps a script off a root whose slot is half-moved
    (app/store/redis_cluster.py)."""
    return base_key(token_id) + ":fence"


def _never(reply: Any) -> bool:
    return False


class Script:
    """One script, in two sources: as is for one Redis, and with a `#!lua` shebang for a cluster, which makes
    Redis 7 refuse a key of another slot than the declared ones inside the script.

    `grants(reply)`: whether the reply grants something that a lost write could take back (a denial never does);
    with AGENTCAPS_REDIS_WAIT such a reply counts only once replicas have the write.
    """

    def __init__(self, name: str, writes: bool = False, grants: Callable[[Any], bool] = _never) -> None:
        self.name = name
        self.writes = writes
        self.grants = grants
        body = _source(name)
        self._sources = {False: body, True: "#!lua\n" + body}
        self._shas = {cluster: hashlib.sha1(text.encode()).hexdigest() for cluster, text in self._sources.items()}

    def source(self, cluster: bool) -> str:
        return self._sources[cluster]

    def sha(self, cluster: bool) -> str:
        return self._shas[cluster]

    def command(self, token_id: str, args: tuple[Arg, ...], cluster: bool) -> Command:
        """The one way a script is called: the root's base key (and on a cluster its fence) declared, then the
        script's arguments. One Redis has no slot to guard, and the fence would cost every call a key."""
        if cluster:
            return ("EVALSHA", self._shas[True], 2, base_key(token_id), fence_key(token_id), *args)
        return ("EVALSHA", self._shas[False], 1, base_key(token_id), *args)


SCRIPTS = {
    script.name: script
    for script in (
        Script("decide", writes=True, grants=lambda reply: isinstance(reply, str) and reply.startswith("allowed,")),
        # a settle or release that happened; {'error', ...} changed nothing
        Script("hold", writes=True, grants=lambda reply: not (isinstance(reply, list) and reply[:1] == ["error"])),
        Script("revoke", writes=True, grants=lambda reply: True),
        Script("lookup"),
        Script("inspect"),
        Script("approvals"),
        Script("approve", writes=True, grants=lambda reply: not (isinstance(reply, list) and reply[:1] == ["error"])),
        Script("index", writes=True),
        Script("record", writes=True),  # an event records what happened: it grants nothing
        Script("audit"),
    )
}
