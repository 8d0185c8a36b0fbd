"""RedisStore(ClusterRunner) on a real 3+3 cluster: the same answers as the single-Redis store, and the guards that
keep one root's keys on one node (slot check, migration fence), NOSCRIPT reloads, WAIT, readiness."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import secrets
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis

from app.errors import ConfigError, Conflict, NotFound, StoreUnavailable
from app.store import open_store
from app.store.base import MAX_OPEN_HOLDS, PURGE_STEP, ROOT, Attempt, BudgetSpec, RateSpec
from app.store.redis import RedisStore
from app.store.redis_cluster import ClusterRunner, WaitPolicy, parse_cluster_url
from app.store.runner import NodeRunner
from app.store.scripts import SCRIPTS, base_key, fence_key
from tests.cluster.conftest import flush
from tests.processes import Cluster, RedisServer

USD = 1_000_000


def now_ms() -> int:
    return int(time.time() * 1000)


def charge(token_id: str, cost: int = USD, limit: int = 100 * USD, **fields: Any) -> Attempt:
    return Attempt(
        token_id,
        fields.pop("now", now_ms()),
        secrets.token_hex(16),
        ("h0",),
        budgets=(BudgetSpec("h0", limit, True, 0),),
        cost=cost,
        currency="USD",
        **fields,
    )


def token_on(cluster: Cluster, port: int, avoid: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    """A token id whose slot the master on `port` serves."""
    with cluster.client(port) as c:
        while True:
            tid = secrets.token_hex(16)
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", base_key(tid)))
            if slot not in avoid and cluster.node_of_slot(slot) == port:
                return tid


def runner(store: RedisStore) -> ClusterRunner:
    assert isinstance(store.runner, ClusterRunner)
    return store.runner


@pytest.fixture
async def store(cluster: Cluster) -> AsyncIterator[RedisStore]:
    s = RedisStore(ClusterRunner(cluster.url, 1.0))
    yield s
    await s.close()


# -- configuration -----------------------------------------------------------------------------------------------


def test_cluster_urls_parse_into_startup_nodes() -> None:
    assert parse_cluster_url("redis+cluster://10.0.0.1:7000,redis-1.redis:7001") == (
        [("10.0.0.1", 7000), ("redis-1.redis", 7001)],
        None,
        None,
    )
    assert parse_cluster_url("redis+cluster://app:s%40cret@h:1") == ([("h", 1)], "app", "s@cret")
    for bad in ("redis+cluster://", "redis+cluster://h", "redis+cluster://h:0", "redis://h:1", "redis+cluster://h:x"):
        with pytest.raises(ConfigError):
            parse_cluster_url(bad)


def test_wait_policy_is_replicas_and_milliseconds() -> None:
    assert WaitPolicy.parse("") is None
    assert WaitPolicy.parse("0") is None
    assert WaitPolicy.parse("1") == WaitPolicy(1, 100)
    assert WaitPolicy.parse("2:250") == WaitPolicy(2, 250)
    for bad in ("x", "1:", "1:x", "-1", "1:0"):
        with pytest.raises(ConfigError):
            WaitPolicy.parse(bad)


def test_open_store_picks_the_cluster_store_and_refuses_wait_elsewhere() -> None:
    store = open_store("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", 1.0, wait="1:50")
    assert isinstance(store, RedisStore) and runner(store).wait == WaitPolicy(1, 50)
    with pytest.raises(ConfigError, match="only supported with"):
        open_store("redis://127.0.0.1:6379/0", 1.0, wait="1")


# -- the same semantics as one Redis -----------------------------------------------------------------------------


async def test_a_random_session_answers_exactly_as_the_single_redis_store(
    cluster: Cluster, single_redis: RedisServer
) -> None:
    """Differential: one seeded sequence of decisions, holds, revocations and reads on both stores."""
    flush(cluster)
    redis.Redis(port=single_redis.port).flushall()
    single = RedisStore(NodeRunner(single_redis.url, 2.0))
    clustered = RedisStore(ClusterRunner(cluster.url, 2.0))
    rng = random.Random(20261128)
    roots = [secrets.token_hex(16) for _ in range(12)]
    holds: list[str] = []
    now = now_ms()
    seen: Counter[str] = Counter()

    async def both(op: Callable[[Any], Any]) -> Any:
        results = []
        for s in (single, clustered):
            try:
                results.append(repr(await op(s)))
            except (NotFound, Conflict, ValueError) as e:
                results.append(type(e).__name__)
        assert results[0] == results[1], (op, results)
        seen[results[0].split("(", 1)[0] + results[0].partition("status=")[2].split(",")[0]] += 1
        return results[0]

    try:
        for _ in range(600):
            now += rng.randrange(20, 300)  # faster than the wall clock: Redis' own TTLs never decide anything here
            tid = rng.choice(roots)
            chain = ("c0", "c1", "c2")[: rng.randrange(1, 4)]
            kind = rng.random()
            if kind < 0.55:
                budgets = tuple(
                    BudgetSpec(p, rng.choice((3, 5, 8)) * USD, rng.random() < 0.9, 0) for p in chain[: rng.randrange(4)]
                )
                rates = (RateSpec(chain[0], 2, 10_000),) if rng.random() < 0.3 else ()
                request_id = f"r{rng.randrange(6)}" if rng.random() < 0.2 else None
                mode = "hold" if rng.random() < 0.3 else "charge"
                cost = rng.randrange(0 if mode == "charge" else 1, 3) * USD // 2  # see test_a_zero_cost_hold...
                d = Attempt(
                    tid,
                    now,
                    secrets.token_hex(16),
                    chain,
                    rates,
                    budgets,
                    cost,
                    "USD",
                    mode,  # type: ignore[arg-type]
                    rng.choice((400, 1500, 5000)),
                    request_id,
                    f"{chain}{budgets}{cost}{mode}" if request_id else "",
                )
                answer = await both(lambda s, d=d: s.decide(d))
                if "hold_id='" in answer:
                    holds.append(answer.split("hold_id='")[1].split("'")[0])
            elif kind < 0.75 and holds:
                hold_id = rng.choice(holds)
                amount = rng.choice((None, 0, USD // 2, 10 * USD))
                action = rng.random()
                if action < 0.4:
                    await both(lambda s, h=hold_id, a=amount, n=now: s.settle(h, a, n))
                elif action < 0.8:
                    await both(lambda s, h=hold_id, n=now: s.release(h, n))
                else:
                    ttl = rng.choice((300, 2000, 8000))
                    await both(lambda s, h=hold_id, t=ttl, n=now: s.extend(h, t, n))
            elif kind < 0.78:
                prefix, until = rng.choice(("c1", "c2", "c2", ROOT)), rng.choice((0, now + 3_600_000))
                await both(lambda s, t=tid, p=prefix, u=until: s.revoke(t, p, u))
            elif kind < 0.9:
                await both(lambda s, t=tid, c=chain, n=now: s.inspect(t, c, c, n))
            else:
                request_id = f"r{rng.randrange(6)}"
                await both(lambda s, t=tid, r=request_id: s.lookup(t, r, "x"))
    finally:
        await single.close()
        await clustered.close()
    for outcome in ("'allowed'", "'budget_exceeded'", "'rate_limited'", "'revoked'", "'conflict'"):
        assert seen["Outcome" + outcome] >= 3, seen  # the session went down every path
    for other in ("HoldState", "Inspection", "NotFound", "Conflict", "None"):
        assert seen[other] >= 3, seen
    # Every key the session wrote carries its root's hash tag (or an operator's index's pseudo-root, which other
    # tests on this cluster write), and none is the fence.
    tags = [*roots, "audit", "approvals"]
    for port in cluster.masters():
        with cluster.client(port) as c:
            for key in c.scan_iter():
                assert any(key.startswith(base_key(t) + ":") for t in tags), key
                assert not key.endswith(":fence"), key


async def test_a_zero_cost_hold_can_be_released_and_expire(store: RedisStore) -> None:
    tid = secrets.token_hex(16)
    now = now_ms()
    held = await store.decide(charge(tid, 0, mode="hold", hold_ttl_ms=100, now=now))
    assert held.hold_id is not None
    assert (await store.release(held.hold_id, now + 1)).state == "released"
    await store.decide(charge(tid, 0, mode="hold", hold_ttl_ms=100, now=now))
    assert (await store.decide(charge(tid, USD, now=now + 1000))).status == "allowed"


async def test_holds_are_bounded_on_a_cluster_as_on_one_redis(store: RedisStore) -> None:
    """The cap on open holds, and expired holds released PURGE_STEP per script, each script on the root's node."""
    tid = secrets.token_hex(16)
    now = now_ms()
    budgets = tuple(BudgetSpec(f"b{i}", 100 * USD, True, 0) for i in range(16))

    def hold(cost: int, at: int = now) -> Attempt:
        return Attempt(
            tid,
            at,
            secrets.token_hex(16),
            ("h0",),
            budgets=budgets,
            cost=cost,
            currency="USD",
            mode="hold",
            hold_ttl_ms=1000,
        )

    for start in range(0, MAX_OPEN_HOLDS, 1000):
        made = await asyncio.gather(*(store.decide(hold(i % 2)) for i in range(start, start + 1000)))
        assert {o.status for o in made} == {"allowed"}
    over = await store.decide(hold(1))
    assert (over.status, over.index, over.retry_after_ms) == ("rate_limited", -1, 1000)
    scripts: list[int] = []
    run = store._run

    async def counted(name: str, token_id: str, *args: str | int) -> Any:
        reply = await run(name, token_id, *args)
        scripts.append(int(await runner(store).cluster.zcard(base_key(tid) + ":holds")))
        return reply

    store._run = counted  # type: ignore[method-assign]
    out = await store.decide(
        Attempt(tid, now + 1000, secrets.token_hex(16), ("h0",), budgets=budgets, cost=100 * USD, currency="USD")
    )
    assert (out.status, out.balances) == ("allowed", [(100 * USD, 0)] * 16)
    steps = [a - b for a, b in itertools.pairwise([MAX_OPEN_HOLDS, *scripts])]
    assert scripts[-1] == 0 and max(steps) <= PURGE_STEP and len(steps) > MAX_OPEN_HOLDS // PURGE_STEP, steps


# -- one slot per script -----------------------------------------------------------------------------------------


def test_a_lua_shebang_makes_redis_refuse_a_key_of_another_slot_on_the_same_node(cluster: Cluster) -> None:
    port = cluster.masters()[0]
    mine = token_on(cluster, port)
    with cluster.client(port) as c:
        other = token_on(cluster, port, avoid={int(c.execute_command("CLUSTER", "KEYSLOT", base_key(mine)))})
        body = f"return redis.call('GET', '{base_key(other)}:b:x')"
        # Without a shebang Redis 7.0 lets a script read any key its node serves: a bug would go unnoticed.
        assert c.eval(body, 2, base_key(mine), fence_key(mine)) is None
        with pytest.raises(redis.ResponseError, match="do not hash to the same slot"):
            c.eval("#!lua\n" + body, 2, base_key(mine), fence_key(mine))
    assert all(s.source(cluster=True).startswith("#!lua\n") for s in SCRIPTS.values())


async def test_no_script_runs_on_a_root_while_its_slot_migrates(cluster: Cluster, store: RedisStore) -> None:
    """The fence: during MIGRATING/IMPORTING, Redis answers ASK then TRYAGAIN instead of running the script on a
    node that holds only part of the root (or none of it); the call waits, then is 503, and nothing is written."""
    source, target = cluster.masters()[:2]
    tid = token_on(cluster, source)
    assert (await store.decide(charge(tid, 5 * USD))).balances == [(5 * USD, 0)]
    src, dst = cluster.client(source), cluster.client(target)
    slot = int(src.execute_command("CLUSTER", "KEYSLOT", base_key(tid)))
    src_id, dst_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER", "MYID")
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="TryAgainError"):
            await store.decide(charge(tid, USD))
        assert time.monotonic() - started < 1.5  # the store timeout, not TTL-exhausted redirect storms
        # Nothing ran on the target (see test_a_single_declared_key_would_run_on_an_empty_view for why not).
        assert dst.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        # Move the keys while the store keeps being refused, then finish the migration.
        for key in src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target, key, 0, 5000)
    finally:
        for port in cluster.masters():
            with cluster.client(port) as c:
                c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        src.close()
        dst.close()
    # The client learns the new owner from MOVED and the charge before the migration is still there.
    assert (await store.decide(charge(tid, USD))).balances == [(6 * USD, 0)]
    assert cluster.node_of_slot(slot) == target


def test_a_single_declared_key_would_run_on_an_empty_view(cluster: Cluster) -> None:
    """Why the fence exists (Redis 7.0 behaviour): ASKING + one missing declared key runs the script on the
    importing node even though the root's keys are still on the source."""
    source, target = cluster.masters()[:2]
    tid = token_on(cluster, source)
    src, dst = cluster.client(source), cluster.client(target)
    src.hset(base_key(tid) + ":b:h0", "s", 5)
    slot = int(src.execute_command("CLUSTER", "KEYSLOT", base_key(tid)))
    src_id, dst_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER", "MYID")
    read = "return redis.call('HGET', KEYS[1] .. ':b:h0', 's') or 'nothing'"
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    try:
        with pytest.raises(redis.exceptions.AskError):
            src.eval(read, 1, base_key(tid))
        pipe = dst.pipeline(transaction=False)
        pipe.execute_command("ASKING")
        pipe.eval(read, 1, base_key(tid))
        pipe.execute_command("ASKING")
        pipe.eval(read, 2, base_key(tid), fence_key(tid))
        one_key, two_keys = pipe.execute(raise_on_error=False)[1::2]
        assert one_key == "nothing"  # the budget reads as never spent
        assert isinstance(two_keys, redis.exceptions.TryAgainError)
    finally:
        src.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        src.delete(base_key(tid) + ":b:h0")
        src.close()
        dst.close()


# -- failures that prove the script did not run are retried --------------------------------------------------------


async def test_an_empty_script_cache_is_reloaded_once_per_node(cluster: Cluster, store: RedisStore) -> None:
    roots = [secrets.token_hex(16) for _ in range(60)]
    await asyncio.gather(*(store.decide(charge(t)) for t in roots))
    for port in cluster.masters():
        with cluster.client(port) as c:
            c.script_flush()
    outcomes = await asyncio.gather(*(store.decide(charge(t)) for t in roots))
    assert {o.status for o in outcomes} == {"allowed"}
    assert {o.balances[0][0] for o in outcomes} == {2 * USD}


async def test_a_stale_slot_map_follows_moved(cluster: Cluster, store: RedisStore) -> None:
    tid = secrets.token_hex(16)
    await store.decide(charge(tid))
    manager = runner(store).cluster.nodes_manager
    slot = runner(store).cluster.keyslot(base_key(tid))
    right = manager.slots_cache[slot]
    wrong = next(n for n in runner(store).cluster.get_primaries() if n is not right[0])
    manager.slots_cache[slot] = [wrong]
    assert (await store.decide(charge(tid))).balances == [(2 * USD, 0)]
    assert manager.slots_cache[slot][0].name == right[0].name


# -- WAIT ----------------------------------------------------------------------------------------------------------


async def test_with_wait_an_allow_is_given_only_once_replicas_have_the_write(cluster: Cluster) -> None:
    ok = RedisStore(ClusterRunner(cluster.url, 1.0, WaitPolicy(1, 500)))
    impossible = RedisStore(ClusterRunner(cluster.url, 1.0, WaitPolicy(2, 20)))  # each master has one replica
    try:
        tid = secrets.token_hex(16)
        assert (await ok.decide(charge(tid, limit=2 * USD))).status == "allowed"
        with pytest.raises(StoreUnavailable, match="fewer than 2 replica"):
            await impossible.decide(charge(tid, limit=2 * USD))
        # The unconfirmed charge still counts (never allow on doubt, never forget a charge that may stand) ...
        assert (await ok.inspect(tid, ("h0",), ("h0",), now_ms())).balances == [(2 * USD, 0)]
        # ... and a denial needs no replica: it grants nothing a failover could take back.
        assert (await impossible.decide(charge(tid, limit=2 * USD))).status == "budget_exceeded"
        with pytest.raises(StoreUnavailable):
            await impossible.revoke(tid, "h0", 0)
        other = secrets.token_hex(16)
        held = await ok.decide(charge(other, USD, mode="hold"))
        with pytest.raises(StoreUnavailable):  # a settle that a failover could undo is not confirmed either
            await impossible.settle(held.hold_id or "", USD, now_ms())
        with pytest.raises(NotFound):  # but an unknown hold is simply unknown
            await impossible.settle(f"{other}.{secrets.token_hex(16)}", None, now_ms())
    finally:
        await ok.close()
        await impossible.close()


async def test_with_wait_a_replay_is_given_only_once_replicas_have_the_first_answer(cluster: Cluster) -> None:
    """A verify answered 503 because no replica confirmed its charge is resent, maybe to another service process.
    The replay must wait for the replica too, or it would acknowledge a charge that a failover could still forget.
    WAIT is described as waiting for the writes of its own connection, and the replay, on another process's
    connection, writes nothing; Redis 7.0 still makes it wait until the replica has the first answer. Checked here,
    not assumed."""
    master = cluster.masters()[0]
    replica = cluster.replica_of(master)
    tid = token_on(cluster, master)
    first, other = (RedisStore(ClusterRunner(cluster.url, 1.0, WaitPolicy(1, 100))) for _ in range(2))
    call = charge(tid, request_id="r", fingerprint="f")
    os.kill(cluster.pid(replica), signal.SIGSTOP)  # the replica is there but confirms nothing
    try:
        with pytest.raises(StoreUnavailable, match="fewer than 1 replica"):
            await first.decide(call)
        with pytest.raises(StoreUnavailable, match="fewer than 1 replica"):
            await other.decide(call)  # the resend, on another process's connections
    finally:
        os.kill(cluster.pid(replica), signal.SIGCONT)
    try:
        replayed = await other.decide(call)  # the replica has it now: the replay is answered
        assert (replayed.status, replayed.replayed, replayed.balances) == ("allowed", True, [(USD, 0)])
    finally:
        await first.close()
        await other.close()


# -- close ---------------------------------------------------------------------------------------------------------


async def test_close_with_calls_in_flight_answers_each_and_leaves_no_connection_open(cluster: Cluster) -> None:
    """As on one Redis: the pipeline on the wire finishes, calls not yet sent are StoreUnavailable, nothing spent."""
    store = RedisStore(ClusterRunner(cluster.url, 1.0))
    tid = secrets.token_hex(16)
    assert (await store.decide(charge(tid, 0))).status == "allowed"  # connected, the script loaded on its node
    calls = [asyncio.ensure_future(store.decide(charge(tid, 1, 10**6 * USD))) for _ in range(600)]  # > one batch
    while not any(queue.in_flight and queue.pending for queue in runner(store).batcher.queues.values()):
        await asyncio.sleep(0)  # until the first pipelines are on their way and the rest wait
    await store.close()
    results = await asyncio.gather(*calls, return_exceptions=True)
    allowed = sum(not isinstance(r, BaseException) and r.status == "allowed" for r in results)
    unsent = sum(isinstance(r, StoreUnavailable) and "before the call was sent" in str(r) for r in results)
    assert allowed + unsent == len(calls), [r for r in results if isinstance(r, BaseException)][:3]
    assert allowed > 0 and unsent > 0
    with pytest.raises(StoreUnavailable, match="before the call was sent"):
        await store.decide(charge(tid, 1, 10**6 * USD))
    # redis-py's own (topology, readiness) and the runner's (the pipelines): none is left open
    connections = [c for node in runner(store).cluster.get_nodes() for c in node._connections]
    connections += runner(store).connections._made
    try:
        assert connections and not [c for c in connections if c.is_connected]
    finally:
        for c in connections:
            await c.disconnect()
    reader = RedisStore(ClusterRunner(cluster.url, 1.0))
    try:
        assert (await reader.inspect(tid, (), ("h0",), now_ms())).balances == [(allowed, 0)]
    finally:
        await reader.close()


# -- readiness -----------------------------------------------------------------------------------------------------


async def ready_while_evicting(cluster: Cluster, store: RedisStore, port: int) -> str | None:
    """What ready() says while the node on `port` has an eviction policy (restored to noeviction after)."""
    with cluster.client(port) as c:
        c.config_set("maxmemory-policy", "allkeys-lru")
        try:
            return await store.ready()
        finally:
            c.config_set("maxmemory-policy", "noeviction")


async def test_readiness_needs_noeviction_on_every_node(cluster: Cluster, store: RedisStore) -> None:
    assert await store.ready() is None
    replica = next(p for p in cluster.ports if p not in cluster.masters())
    reason = await ready_while_evicting(cluster, store, replica)
    assert reason is not None and f"127.0.0.1:{replica}" in reason and "noeviction" in reason
    assert await store.ready() is None


async def test_readiness_checks_a_replica_that_joined_after_the_client_read_the_topology(
    cluster: Cluster, store: RedisStore
) -> None:
    """A fresh cluster's replicas appear in CLUSTER SLOTS seconds after its masters; a store made meanwhile did
    not know them, and ready() never checked their policy. Here the store forgets one, as such a store would."""
    assert await store.ready() is None
    replica = next(p for p in cluster.ports if p not in cluster.masters())
    await runner(store).cluster.nodes_manager.nodes_cache.pop(f"127.0.0.1:{replica}").disconnect()
    reason = await ready_while_evicting(cluster, store, replica)
    assert reason is not None and f"127.0.0.1:{replica}" in reason and "noeviction" in reason
    assert f"127.0.0.1:{replica}" in {node.name for node in runner(store).cluster.get_nodes()}
    assert await store.ready() is None


async def test_readiness_needs_no_config_rights(cluster: Cluster) -> None:
    """Least-privilege users (ACLs are per node): without CONFIG the policy comes from INFO memory; without INFO
    either, ready() says what it could not check, never that a cluster which answers is unreachable."""
    users = {"app-noconfig": ["-config"], "app-noinfo": ["-config", "-info"]}
    for port in cluster.ports:
        with cluster.client(port) as c:
            for user, denied in users.items():
                c.acl_setuser(user, enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-@admin", *denied])
    reasons = {}
    try:
        for user in users:
            store = RedisStore(ClusterRunner(cluster.url.replace("://", f"://{user}:pw@", 1), 1.0))
            try:
                assert (await store.decide(charge(secrets.token_hex(16)))).status == "allowed"
                reasons[user] = await store.ready()
            finally:
                await store.close()
    finally:
        for port in cluster.ports:
            with cluster.client(port) as c:
                c.acl_deluser(*users)
    assert reasons["app-noconfig"] is None
    why = reasons["app-noinfo"] or ""
    assert "maxmemory-policy could not be checked" in why and "unreachable" not in why, why


async def test_an_unreachable_cluster_is_503_and_not_ready() -> None:
    store = RedisStore(ClusterRunner("redis+cluster://127.0.0.1:1", 0.2))
    try:
        with pytest.raises(StoreUnavailable):
            await store.decide(charge(secrets.token_hex(16)))
        assert "unreachable" in (await store.ready() or "")
    finally:
        await store.close()
