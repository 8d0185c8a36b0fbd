"""`redis+cluster://host:port[,host:port...]`: ClusterRunner takes RedisStore's scripts to a Redis Cluster, routed by
hand.

Every key of one root shares the hash tag `{token id}` (app/store/scripts.py base_key), so each script runs on the
one node that owns that slot. Calls to the same node that arrive in the same event-loop turn go out as one
pipeline (app/store/batcher.py, keyed by node), sent on a connection to that node as on one Redis
(app/store/runner.py Connections). Routing is done here, not by redis-py's execute_command, for two reasons:

- Retries are explicit. A reply that proves the script did not run (NOSCRIPT, MOVED, ASK, TRYAGAIN, CLUSTERDOWN,
  LOADING) is retried, to the right node, until the store timeout; anything that leaves doubt (a lost connection,
  a timeout, a script error) is StoreUnavailable at once, because running the script again could charge twice.
- WAIT must follow the write on the same connection (it waits for *that client's* last write offset), so with
  AGENTCAPS_REDIS_WAIT a pipeline to a master ends with `WAIT replicas timeout`, one per pipeline.

Two guards keep a root's keys on one node for the whole script:

- Each script starts with `#!lua` (Script.source(cluster=True)): on a cluster node Redis 7 then refuses a command
  inside the script on a key of another slot than the declared ones ("Script attempted to access keys that do
  not hash to the same slot"), which scripts without a shebang silently allow on the same node.
- Each call declares a second key, the root's fence `ac:{id}:fence`, that no script ever writes. While the
  root's slot is migrating, Redis counts declared keys missing on the node: the source answers ASK and the
  target, with ASKING, TRYAGAIN ("multiple keys request during rehashing"), so no script runs on a half-moved
  root. With only the (never written) base key declared, the target would run the script on an empty view of a
  root whose keys are still on the source: spent would read 0. Scripts resume when the slot has moved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)

from app.errors import ConfigError, StoreUnavailable
from app.store.batcher import Answer, Batcher, not_sent
from app.store.runner import Connections, eviction_risk, unavailable
from app.store.scripts import Script, base_key
from app.store.wire import Arg, pack

log = logging.getLogger("agentcaps.store")

MAX_REDIRECTS = 16  # MOVED/ASK hops for one call before giving up: a loop means a broken cluster
BACKOFF_S = (0.005, 0.01, 0.02, 0.05, 0.1)  # before resending a call the cluster said to try again
REFRESH_GAP_S = 0.1


@dataclass(frozen=True)
class WaitPolicy:
    """AGENTCAPS_REDIS_WAIT=<replicas>[:timeout_ms]: a write counts only once that many replicas have it."""

    replicas: int
    timeout_ms: int = 100

    @classmethod
    def parse(cls, text: str) -> WaitPolicy | None:
        if not text:
            return None
        replicas, colon, timeout = text.partition(":")
        if not replicas.isdigit() or (colon and not timeout.isdigit()):
            raise ConfigError(f"AGENTCAPS_REDIS_WAIT must be <replicas>[:timeout_ms], got {text!r}")
        policy = cls(int(replicas), int(timeout) if timeout else cls.timeout_ms)
        if policy.replicas == 0:
            return None
        if policy.timeout_ms == 0:
            raise ConfigError("AGENTCAPS_REDIS_WAIT: a timeout of 0 would wait forever; give milliseconds")
        return policy


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """`redis+cluster://[user:password@]host:port[,host:port...]` -> startup nodes, username, password."""
    scheme, sep, rest = url.partition("://")
    if scheme != "redis+cluster" or not sep:
        raise ConfigError(f"not a redis+cluster:// URL: {url!r}")
    rest = rest.split("/", 1)[0].split("?", 1)[0]
    username = password = None
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        user, has_password, secret = userinfo.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if has_password else None)
    nodes = []
    for item in rest.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"AGENTCAPS_STORE: redis+cluster:// needs host:port[,host:port...], got {item!r}")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, username, password


_ASKING = pack(("ASKING",))


@dataclass
class _Call:
    command: bytes  # packed (wire.pack)
    asking: bool = False  # ASKING lets only the command right after it into an importing slot
    writes: bool = False  # with WAIT, the pipeline ends in one WAIT after its writes


class ClusterRunner:
    """Each call to the master of its root's slot, through one Batcher keyed by node; see the module docstring."""

    def __init__(self, url: str, timeout: float = 1.0, wait: WaitPolicy | None = None) -> None:
        self.timeout = timeout
        self.wait = wait
        nodes, username, password = parse_cluster_url(url)
        self.cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            require_full_coverage=False,  # a shard that is down must not stop the others: each root is in one
            username=username,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # redis-py's own retries resend after a lost reply: never
            decode_responses=True,
        )
        self.batcher: Batcher[ClusterNode, _Call] = Batcher(self._send)
        self.connections = Connections(timeout)
        self._initialized = False
        self._refresh: asyncio.Task[None] | None = None
        self._loading: dict[tuple[str, str], asyncio.Future[Any]] = {}

    async def _topology(self) -> None:
        if not self._initialized:
            try:
                await self.cluster.initialize()
            except (RedisError, RedisClusterException, OSError) as e:
                raise StoreUnavailable(f"counter store unreachable: {type(e).__name__}") from e
            self._initialized = True

    def _refresh_topology(self) -> None:
        """Re-read the slot map once (in the background): after a failover the old master's slots move."""
        if self.batcher.closed:
            return
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        try:
            await self.cluster.nodes_manager.initialize()
        except (RedisError, RedisClusterException, OSError) as e:
            log.warning("cluster topology refresh failed: %s", type(e).__name__)
        # A refresh recycles every pooled connection: at most one per REFRESH_GAP_S, however many calls fail.
        await asyncio.sleep(REFRESH_GAP_S)

    def _send(self, node: ClusterNode, batch: list[_Call], answer: Answer) -> Awaitable[None]:
        commands: list[bytes] = []
        positions = []
        for call in batch:
            if call.asking:
                commands.append(_ASKING)
            positions.append(len(commands))
            commands.append(call.command)
        wait_at = None
        if self.wait is not None and any(call.writes for call in batch):
            wait_at = len(commands)
            commands.append(pack(("WAIT", self.wait.replicas, self.wait.timeout_ms)))

        def each_call(replies: list[Any]) -> None:
            acked = None if wait_at is None else replies[wait_at]
            answer([(replies[at], acked) for at in positions])

        return self.connections.send(node.name, node.connection_class, node.connection_kwargs, commands, each_call)

    async def run(self, script: Script, token_id: str, args: tuple[Arg, ...]) -> Any:
        if self.batcher.closed:  # before _topology, which would open connections
            raise not_sent()
        await self._topology()
        command = pack(script.command(token_id, args, cluster=True))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        manager = self.cluster.nodes_manager
        slot = self.cluster.keyslot(base_key(token_id))
        ask: ClusterNode | None = None
        redirects = tries = 0
        while True:
            try:
                node = ask or manager.get_node_from_slot(slot)
            except RedisClusterException as e:
                self._refresh_topology()
                raise StoreUnavailable(f"counter store slot {slot} is not covered") from e
            try:  # (the reply or the error object for that command, the pipeline's WAIT reply or None)
                reply, acked = await self.batcher.submit(node, _Call(command, ask is not None, script.writes))
            except (RedisError, OSError) as e:
                self._refresh_topology()
                raise unavailable(e) from e
            ask = None
            if isinstance(reply, Exception):
                # Every branch that continues is a reply proving the script did not run: resending is safe.
                if isinstance(reply, NoScriptError):  # a new or failed-over master has an empty script cache
                    await self._load(node, script)
                    continue
                if isinstance(reply, MovedError):
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        raise StoreUnavailable("counter store keeps redirecting (MOVED)")
                    await manager.move_slot(reply)
                    continue
                if isinstance(reply, AskError):
                    redirects += 1
                    ask = manager.get_node(host=reply.host, port=reply.port)
                    if ask is None or redirects > MAX_REDIRECTS:
                        self._refresh_topology()
                        raise StoreUnavailable("counter store redirects to an unknown node (ASK)")
                    continue
                if isinstance(reply, TryAgainError | ClusterDownError | BusyLoadingError):
                    # TRYAGAIN: the slot is migrating; CLUSTERDOWN: a failover is under way; LOADING: a restart.
                    pause = BACKOFF_S[min(tries, len(BACKOFF_S) - 1)]
                    tries += 1
                    if loop.time() + pause > deadline:
                        raise StoreUnavailable(f"counter store busy: {type(reply).__name__}")
                    if isinstance(reply, ClusterDownError):
                        self._refresh_topology()
                    await asyncio.sleep(pause)
                    continue
                # A script error, OOM, a lost connection: it may have run, in part or whole.
                if not isinstance(reply, RedisError | OSError):
                    raise reply
                self._refresh_topology()
                raise unavailable(reply) from reply
            if script.writes and self.wait is not None and script.grants(reply) and not self._acknowledged(acked):
                # The write is on the master but maybe on no replica: a failover now could forget it.
                raise StoreUnavailable(f"the write reached fewer than {self.wait.replicas} replica(s) in time")
            return reply

    async def listener(self) -> Redis:
        await self._topology()
        node = self.cluster.get_random_node()
        kwargs = self.cluster.nodes_manager.connection_kwargs
        return Redis(
            host=node.host,
            port=int(node.port),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            socket_connect_timeout=self.timeout,
            decode_responses=True,
        )

    def _acknowledged(self, acked: Any) -> bool:
        assert self.wait is not None
        return isinstance(acked, int) and not isinstance(acked, bool) and acked >= self.wait.replicas

    async def _load(self, node: ClusterNode, script: Script) -> None:
        """SCRIPT LOAD once per node and script, however many calls met NOSCRIPT at once, through the batcher like
        every other command (so close() treats it as it treats them)."""
        key = (node.name, script.sha(cluster=True))
        loading = self._loading.get(key)
        if loading is None:
            load = _Call(pack(("SCRIPT", "LOAD", script.source(True))))
            loading = self._loading[key] = self.batcher.submit(node, load)
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        try:
            loaded, _ = await asyncio.shield(loading)
        except (RedisError, OSError) as e:
            self._refresh_topology()
            raise unavailable(e) from e
        if isinstance(loaded, RedisError | OSError):
            raise unavailable(loaded) from loaded

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        await self.batcher.close()  # SCRIPT LOADs on the wire included
        await self.connections.close()
        if self._refresh is not None:  # the cancelled refresh ends before the client closes
            await asyncio.gather(self._refresh, return_exceptions=True)
        await self.cluster.aclose()

    async def ready(self) -> str | None:
        try:
            await self._topology()
            primaries = self.cluster.get_primaries()
            for node in primaries:
                await node.execute_command("PING")
            state = await primaries[0].execute_command("CLUSTER", "INFO")
            if len(await _slot_nodes(primaries[0])) > len(self.cluster.get_nodes()):
                # A replica joined after the client read the topology: read it again (rare, so the pool this
                # recycles does not matter), or its policy would go unchecked until a failover.
                await self.cluster.nodes_manager.initialize()
            evicting = await _eviction_risk(self.cluster.get_nodes())
        except (StoreUnavailable, RedisError, OSError) as e:
            if self._initialized:
                self._refresh_topology()
            return f"counter store unreachable: {type(e).__name__}"
        text = state if isinstance(state, str) else ""
        if "cluster_state:ok" not in text:
            return "Redis Cluster state is not ok (slots uncovered or a failover under way)"
        return evicting


async def _slot_nodes(node: ClusterNode) -> set[Any]:
    """The ids of the masters and replicas CLUSTER SLOTS names: what the client learns its nodes from."""
    ranges = await node.execute_command("CLUSTER", "SLOTS")
    return {entry[2] for r in ranges for entry in r[2:] if len(entry) > 2}


async def _eviction_risk(nodes: Iterable[ClusterNode]) -> str | None:
    """eviction_risk of every node that answers (a down replica is not the readiness probe's business)."""
    for node in nodes:
        try:
            why = await eviction_risk(f"Redis node {node.name}", node.execute_command("INFO", "memory"))
        except (RedisError, OSError):
            if node.server_type == "primary":
                raise
            continue
        if why is not None:
            return why
    return None
