"""Fail closed: every way Redis can fail or refuse is StoreUnavailable, never an allow, and the store recovers.

fakeredis runs Lua only with `lupa`, which is not a dependency, so faults come from a small TCP proxy between
the store and the real Redis instead: the scripts that run are the real ones. The proxy forwards the connection
handshake as it is and does to script calls what `mode` says. A Redis of the test's own is killed with SIGKILL
under load and restarted on its append-only file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis

from app.errors import StoreUnavailable
from app.store.base import Outcome, Store
from app.store.redis import RedisStore
from app.store.runner import NodeRunner
from app.store.scripts import base_key
from tests.processes import RedisServer, free_port
from tests.proxy import Proxy
from tests.store.conftest import REDIS_URL, T0, budget, decision, tid


@pytest.fixture
async def proxied(proxy: Proxy) -> AsyncIterator[RedisStore]:
    s = RedisStore(NodeRunner(proxy.url, timeout=0.2))
    yield s
    await s.close()


async def charge(store: Store, root: str | None = None, request_id: str | None = None) -> Outcome:
    return await store.decide(decision(root or tid(), 1, budgets=(budget("b", 10),), request_id=request_id))


async def spent(root: str) -> int:
    """What the real Redis holds for root, read past the proxy."""
    direct = RedisStore(NodeRunner(REDIS_URL))
    try:
        return (await direct.inspect(root, (), ("b",), T0)).balances[0][0]
    finally:
        await direct.close()


async def test_connection_refused_is_unavailable_then_recovers(proxy: Proxy, proxied: RedisStore) -> None:
    root = tid()
    assert (await charge(proxied, root)).status == "allowed"
    await proxy.stop()
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            await charge(proxied, root)
    assert await proxied.ready() is not None
    await proxy.start()  # the same port answers again: no restart of the store needed
    assert (await charge(proxied, root)).balances == [(2, 0)]
    assert await proxied.ready() is None


async def test_nothing_listening_is_unavailable() -> None:
    store = RedisStore(NodeRunner(f"redis://127.0.0.1:{free_port()}/5", timeout=0.2))
    try:
        with pytest.raises(StoreUnavailable):
            await charge(store)
        assert "unreachable" in (await store.ready() or "")
    finally:
        await store.close()


async def test_a_reply_past_the_timeout_is_unavailable_and_a_retry_replays(proxy: Proxy, proxied: RedisStore) -> None:
    root = tid()
    assert (await charge(proxied)).status == "allowed"
    proxy.mode = "stall"
    started = asyncio.get_running_loop().time()
    with pytest.raises(StoreUnavailable):
        await charge(proxied, root, request_id="r")
    assert asyncio.get_running_loop().time() - started < 1.0
    proxy.mode = "forward"
    # The script ran, only its reply was late: the retry with the same request id is the first answer.
    retry = await charge(proxied, root, request_id="r")
    assert (retry.status, retry.replayed, retry.balances) == ("allowed", True, [(1, 0)])
    assert await spent(root) == 1


async def test_a_reply_late_but_within_the_timeout_is_a_decision(proxy: Proxy, proxied: RedisStore) -> None:
    root = tid()
    assert (await charge(proxied)).status == "allowed"  # the connection and its handshake, at full speed
    proxy.mode, proxy.delay = "slow", 0.1  # half the store's 0.2 s timeout
    outcomes = [await charge(proxied, root) for _ in range(12)]  # one after the other: each reply 0.1 s late
    assert sorted(o.status for o in outcomes) == ["allowed"] * 10 + ["budget_exceeded"] * 2
    assert await spent(root) == 10


async def test_the_timeout_bounds_the_whole_call_a_slow_handshake_included(proxy: Proxy, proxied: RedisStore) -> None:
    """Connecting, its handshake and the script's reply share the store's 0.2 s: each reply 0.1 s late adds up."""
    proxy.mode, proxy.delay = "slow", 0.1
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StoreUnavailable):
        await charge(proxied)
    assert loop.time() - started < 0.2 + 0.15
    proxy.mode = "forward"
    assert (await charge(proxied)).status == "allowed"


async def test_a_server_that_accepts_and_never_answers_is_unavailable_in_time() -> None:
    """A black hole: TCP connects, the connection handshake (or the script call) never gets a reply."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStore(NodeRunner(f"redis://127.0.0.1:{port}/5", timeout=0.2))
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(*(charge(store) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert loop.time() - started < 1.5
        assert await store.ready() is not None
    finally:
        await store.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_callers_that_give_up_leave_no_reply_for_the_next_caller(proxy: Proxy, proxied: RedisStore) -> None:
    """Callers cancelled while their replies are on the way: each later call still gets its own reply."""
    root, levels = tid(), (budget("b", 1000),)
    proxy.mode, proxy.delay = "slow", 0.1
    for _ in range(3):
        gave_up = [asyncio.ensure_future(proxied.decide(decision(root, 1, budgets=levels))) for _ in range(10)]
        await asyncio.sleep(0.03)
        for call in gave_up:
            call.cancel()
        await asyncio.gather(*gave_up, return_exceptions=True)
    proxy.mode = "forward"
    await asyncio.sleep(0.15)  # the given-up calls ran (their replies had nowhere to go)
    before = await spent(root)
    assert before == 30
    for i in range(1, 6):  # one at a time: each reply is exactly this call's
        out = await proxied.decide(decision(root, 1, budgets=levels, request_id=f"r{i}", fingerprint="f"))
        assert (out.status, out.replayed, out.balances) == ("allowed", False, [(before + i, 0)])


@pytest.mark.parametrize("mode", ["drop", "lose", "truncate"])
async def test_a_connection_cut_mid_request_is_unavailable_then_recovers(
    proxy: Proxy, proxied: RedisStore, mode: str
) -> None:
    root = tid()
    assert (await charge(proxied)).status == "allowed"  # a pooled connection, then it breaks under the call
    proxy.mode = mode
    with pytest.raises(StoreUnavailable):
        await charge(proxied, root, request_id="r")
    proxy.mode = "forward"
    retry = await charge(proxied, root, request_id="r")
    ran = mode != "drop"  # drop never passed the call on; lose and truncate did
    assert (retry.status, retry.replayed, await spent(root)) == ("allowed", ran, 1)


ERRORS = [
    b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n",
    b"-LOADING Redis is loading the dataset in memory\r\n",
    b"-READONLY You can't write against a read only replica.\r\n",
    b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
    b"-CLUSTERDOWN The cluster is down\r\n",
    b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
    b"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
    b"-NOSCRIPT No matching script. Please use EVAL.\r\n",  # forever: reloading must not loop
    b"-ERR something unexpected\r\n",
]


@pytest.mark.parametrize("line", ERRORS, ids=lambda line: line.split()[0][1:].decode())
async def test_redis_errors_are_unavailable_never_allowed(proxy: Proxy, proxied: RedisStore, line: bytes) -> None:
    root = tid()
    held = await proxied.decide(decision(root, 2, budgets=(budget("b", 10),), mode="hold"))
    assert held.hold_id is not None
    proxy.mode, proxy.reply = "error", line
    results = await asyncio.gather(*(charge(proxied, root) for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    for call in (
        lambda: charge(proxied, root),
        lambda: proxied.lookup(root, "r", "f"),
        lambda: proxied.settle(held.hold_id, 1, T0),  # type: ignore[arg-type]
        lambda: proxied.release(held.hold_id, T0),  # type: ignore[arg-type]
        lambda: proxied.extend(held.hold_id, 60_000, T0),  # type: ignore[arg-type]
        lambda: proxied.revoke(root, "p0", 0),
        lambda: proxied.inspect(root, ("p0",), ("b",), T0),
    ):
        with pytest.raises(StoreUnavailable):
            await call()
    assert await proxied.ready() is not None
    proxy.mode = "forward"
    assert (await charge(proxied, root)).balances == [(1, 2)]  # nothing above was written; and it recovered
    assert await proxied.ready() is None


@pytest.mark.parametrize("mode", ["drop", "lose", "truncate"])
async def test_a_connection_cut_mid_settle_or_extend_is_unavailable_and_leaves_the_hold_whole(
    proxy: Proxy, proxied: RedisStore, mode: str
) -> None:
    """The hold script either ran whole (lose, truncate) or not at all (drop): the hold's end and the root's index
    of ends agree, the budget is exact, and the retry of the same call answers as a first call would have."""
    root, levels = tid(), (budget("b", 10),)
    ids = []
    for _ in range(2):
        held = await proxied.decide(decision(root, 4, budgets=levels, mode="hold", hold_ttl_ms=1000))
        assert held.hold_id is not None
        ids.append(held.hold_id)
    extended, settled = ids
    ran = mode != "drop"
    for call in (lambda: proxied.extend(extended, 5000, T0 + 500), lambda: proxied.settle(settled, 3, T0 + 500)):
        await proxied.inspect(root, (), ("b",), T0)  # a pooled connection, then it breaks under the call
        proxy.mode = mode
        with pytest.raises(StoreUnavailable):
            await call()
        proxy.mode = "forward"
    with redis.Redis.from_url(REDIS_URL, decode_responses=True) as direct:
        base = base_key(root)
        assert direct.hget(f"{base}:h:{extended}", "exp") == str(T0 + (5500 if ran else 1000))
        assert direct.zscore(f"{base}:holds", extended) == T0 + (5500 if ran else 1000)
        assert direct.zscore(f"{base}:holds", settled) == (None if ran else T0 + 1000)
    assert await spent(root) == (3 if ran else 0)
    assert (await proxied.extend(extended, 5000, T0 + 500)).expires_ms == T0 + 5500  # the retry: as asked
    assert (await proxied.settle(settled, 3, T0 + 500)).amount == 3  # charged once, whether it ran before or not
    assert (await proxied.inspect(root, (), ("b",), T0 + 5499)).balances == [(3, 4)]
    assert (await proxied.inspect(root, (), ("b",), T0 + 5500)).balances == [(3, 0)]


@pytest.mark.parametrize("line", [b"+OK\r\n", b":1\r\n"], ids=["simple-string", "integer"])
async def test_a_reply_of_the_wrong_shape_is_unavailable(proxy: Proxy, proxied: RedisStore, line: bytes) -> None:
    proxy.mode, proxy.reply = "error", line
    with pytest.raises(StoreUnavailable):
        await charge(proxied)


async def test_a_flushed_script_cache_is_reloaded_transparently(redis_server: RedisServer) -> None:
    """On a Redis of the test's own, so that SCRIPT FLUSH disturbs no other test."""
    store = RedisStore(NodeRunner(redis_server.url))
    direct = redis.Redis(port=redis_server.port)
    try:
        root = tid()
        levels = (budget("b", 100),)
        assert (await store.decide(decision(root, 4, budgets=levels))).status == "allowed"
        direct.script_flush()
        again = await store.decide(decision(root, 4, budgets=levels))
        assert (again.status, again.balances) == ("allowed", [(8, 0)])  # ran exactly once after the reload
        direct.script_flush()  # and a whole pipeline of calls that all meet NOSCRIPT: each runs exactly once
        outcomes = await asyncio.gather(*(store.decide(decision(root, 1, budgets=levels)) for _ in range(30)))
        assert [o.status for o in outcomes] == ["allowed"] * 30
        direct.script_flush()
        held = await store.decide(decision(root, 2, budgets=levels, mode="hold"))
        assert held.hold_id is not None
        direct.script_flush()
        assert (await store.settle(held.hold_id, 1, T0)).amount == 1
        direct.script_flush()
        assert (await store.inspect(root, (), ("b",), T0)).balances == [(39, 0)]
    finally:
        await store.close()
        direct.close()


async def test_sigkill_under_load_never_overspends_and_the_aof_keeps_every_acknowledged_charge(
    redis_server: RedisServer,
) -> None:
    """Redis with appendfsync always is killed while 16 callers spend; it restarts on the same AOF directory.

    A charge acknowledged before the kill is on disk. A call that failed is in doubt: its script may have run
    and been written just before the kill. Each call has a request id, so after the restart lookup() says which
    calls in doubt were charged, and the counter must be exactly the acknowledged plus those.
    """
    limit, kill_after = 400, 120
    store = RedisStore(NodeRunner(redis_server.url, timeout=0.5))
    root, levels = tid(), (budget("b", limit),)
    acknowledged: set[str] = set()
    in_doubt: set[str] = set()
    stop = asyncio.Event()

    async def spender(n: int) -> None:
        i = 0
        while not stop.is_set():
            rid, i = f"w{n}-{i}", i + 1
            try:
                out = await store.decide(decision(root, 1, budgets=levels, request_id=rid, fingerprint="f"))
            except StoreUnavailable:
                in_doubt.add(rid)
                await asyncio.sleep(0.01)
                continue
            assert out.status == "allowed", out  # the limit is never reached before the kill
            acknowledged.add(rid)

    spenders = [asyncio.create_task(spender(n)) for n in range(16)]
    try:
        while len(acknowledged) < kill_after:
            await asyncio.sleep(0.001)
        redis_server.kill()  # SIGKILL
        await asyncio.sleep(0.3)  # the callers meet a dead Redis for a while
        stop.set()
        await asyncio.gather(*spenders)
    finally:
        stop.set()
        for task in spenders:
            task.cancel()
        await asyncio.gather(*spenders, return_exceptions=True)
    assert in_doubt, "the kill did not happen under load"

    await asyncio.to_thread(redis_server.start)  # same port, same --dir: the AOF is replayed
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while (why := await store.ready()) is not None:  # LOADING while the AOF is replayed
            assert asyncio.get_running_loop().time() < deadline, why
            await asyncio.sleep(0.05)
        balance = (await store.inspect(root, (), ("b",), T0)).balances[0]  # the same store recovers by itself
        answers = {rid: await store.lookup(root, rid, "f") for rid in acknowledged | in_doubt}
        charged_in_doubt = {rid for rid in in_doubt if answers[rid] is not None}
        assert all(answers[rid] is not None and answers[rid].status == "allowed" for rid in acknowledged)  # type: ignore[union-attr]
        assert all(answers[rid].status == "allowed" for rid in charged_in_doubt)  # type: ignore[union-attr]
        assert balance == (len(acknowledged) + len(charged_in_doubt), 0)
        assert len(charged_in_doubt) <= 16  # at most the calls in flight at the kill
        # And what is left of the limit is exactly what can still be spent, not one unit more.
        left = limit - balance[0]
        outcomes = await asyncio.gather(*(store.decide(decision(root, 1, budgets=levels)) for _ in range(left + 20)))
        assert sum(o.status == "allowed" for o in outcomes) == left
        assert (await store.inspect(root, (), ("b",), T0)).balances == [(limit, 0)]
    finally:
        await store.close()


# -- ready() ----------------------------------------------------------------------------------------------


async def test_ready_refuses_a_redis_that_may_evict_counters(redis_server: RedisServer) -> None:
    store, direct = RedisStore(NodeRunner(redis_server.url)), redis.Redis(port=redis_server.port)
    try:
        assert await store.ready() is None
        direct.config_set("maxmemory-policy", "allkeys-lru")
        assert "allkeys-lru" in (await store.ready() or "")
        direct.config_set("maxmemory-policy", "noeviction")
        assert await store.ready() is None
    finally:
        await store.close()
        direct.close()


async def test_a_user_without_config_rights_still_decides_and_is_ready(redis_server: RedisServer) -> None:
    """Managed Redis (and least-privilege ACL users) often deny CONFIG: decide() needs only scripts, and ready()
    reads the policy from INFO memory."""
    direct = redis.Redis(port=redis_server.port)
    direct.acl_setuser("app", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-@admin", "-config"])
    store = RedisStore(NodeRunner(f"redis://app:pw@127.0.0.1:{redis_server.port}/0"))
    try:
        out = await store.decide(decision(tid(), 1, budgets=(budget("b", 10),)))
        assert (out.status, out.balances) == ("allowed", [(1, 0)])
        assert await store.ready() is None
        direct.config_set("maxmemory-policy", "volatile-lru")
        assert "volatile-lru" in (await store.ready() or "")
    finally:
        await store.close()
        direct.close()


async def test_a_user_denied_info_too_is_told_what_ready_could_not_check(redis_server: RedisServer) -> None:
    direct = redis.Redis(port=redis_server.port)
    commands = ["+@all", "-@admin", "-config", "-info"]
    direct.acl_setuser("app", enabled=True, passwords=["+pw"], keys=["*"], commands=commands)
    store = RedisStore(NodeRunner(f"redis://app:pw@127.0.0.1:{redis_server.port}/0"))
    try:
        assert (await store.decide(decision(tid(), 1, budgets=(budget("b", 10),)))).status == "allowed"
        why = await store.ready() or ""
        assert "maxmemory-policy could not be checked" in why and "NoPermissionError" in why, why
        assert "unreachable" not in why
    finally:
        await store.close()
        direct.close()


# -- close() ----------------------------------------------------------------------------------------------


async def test_close_with_calls_in_flight_answers_each_and_leaves_no_connection_open() -> None:
    """What is on the wire finishes; what is not yet sent is StoreUnavailable (never sent: nothing spent)."""
    runner = NodeRunner(REDIS_URL, timeout=0.5)
    store = RedisStore(runner)
    root = tid()
    assert await store.ready() is None
    calls = [asyncio.ensure_future(charge_big(store, root)) for _ in range(600)]  # more than one batch
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first batch is on the wire, the rest wait
    await store.close()
    results = await asyncio.gather(*calls, return_exceptions=True)
    allowed = sum(isinstance(r, Outcome) and r.status == "allowed" for r in results)
    unsent = sum(isinstance(r, StoreUnavailable) and "before the call was sent" in str(r) for r in results)
    assert allowed + unsent == len(calls), [r for r in results if not isinstance(r, Outcome | StoreUnavailable)]
    assert allowed > 0 and unsent > 0  # both kinds really happened
    assert await spent(root) == allowed  # an unsent call spent nothing
    with pytest.raises(StoreUnavailable, match="before the call was sent"):
        await charge_big(store, root)  # a call after close() is not sent either
    pool = runner.client.connection_pool  # redis-py's own (readiness), and the runner's (the pipelines)
    connections = [*pool._available_connections, *pool._in_use_connections]  # type: ignore[union-attr]
    connections += runner.connections._made
    try:
        assert runner.connections._made and not [c for c in connections if c.is_connected]
    finally:
        for c in connections:
            await c.disconnect()  # the test's own clean-up, so a leak is reported once, here


async def charge_big(store: Store, root: str) -> Outcome:
    return await store.decide(decision(root, 1, budgets=(budget("b", 10**6),)))
