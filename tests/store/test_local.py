"""local:// beyond the shared contract: what survives a restart, what a crash leaves, and how it fails closed.

A crash is played in-process by copying the data dir's files while the store is open (with AGENTCAPS_FSYNC=always
every answered call is in them: exactly what `kill -9` leaves); tests/system/test_local_crash.py kills a real
`serve`.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
import time
import zlib
from pathlib import Path

import msgspec
import pytest

from app.errors import ConfigError, Conflict, NotFound, StoreUnavailable
from app.store import open_store
from app.store.base import ApprovalSpec, RateSpec
from app.store.local import DB_FILE, LocalStore
from app.store.memory import MemoryStore, _State
from tests.store.conftest import T0, USD, budget, decision, tid


def crash_copy(data_dir: Path, to: Path) -> Path:
    """The files a crash would leave right now: the database and its WAL, as they are on disk."""
    to.mkdir()
    for suffix in ("", "-wal"):
        source = data_dir / (DB_FILE + suffix)
        if source.exists():
            shutil.copyfile(source, to / (DB_FILE + suffix))
    return to


async def some_of_everything(store: LocalStore, root: str) -> dict[str, str]:
    """Charges, holds (open, settled, released, extended, expired), a revocation, a rate window, an answer."""
    levels = (budget("b0", 10 * USD), budget("b1", 5 * USD))
    rate = (RateSpec("r", 3, 60_000),)
    await store.decide(decision(root, 1 * USD, budgets=levels, rates=rate, request_id="rq", fingerprint="f"))
    kept = (await store.decide(decision(root, 1 * USD, budgets=levels, mode="hold"))).hold_id
    settled = (await store.decide(decision(root, 1 * USD, budgets=levels, mode="hold"))).hold_id
    released = (await store.decide(decision(root, 1 * USD, budgets=levels, mode="hold"))).hold_id
    short = (await store.decide(decision(root, 1 * USD, budgets=levels, mode="hold", hold_ttl_ms=1000))).hold_id
    assert kept and settled and released and short
    await store.settle(settled, USD // 2, T0 + 1)
    await store.release(released, T0 + 2)
    await store.extend(kept, 900_000, T0 + 3)
    await store.revoke(root, "p1", 0)
    other = tid()  # approvals: pending, approved, denied (the root above is revoked: nothing would be asked)
    asked = [
        (await store.decide(decision(other, 1, approval=ApprovalSpec(f"c{i}", ("p0",), 900_000, b"{}")))).approval
        for i in range(3)
    ]
    assert all(asked)
    await store.decide_approval(asked[1].id, True, "p0", "a (hop 0)", "", T0 + 4, 900_000)  # type: ignore[union-attr]
    await store.decide_approval(asked[2].id, False, None, "operator", "no", T0 + 4, 900_000)  # type: ignore[union-attr]
    return {"kept": kept, "settled": settled, "released": released, "short": short}


def test_a_snapshot_carries_every_field_of_the_memory_store() -> None:
    """A field added to MemoryStore and forgotten in its snapshot would be lost on every restart."""
    # `audit` is what the log keeps (configuration, from the settings at each start), not state.
    assert set(_State.__struct_fields__) == set(vars(MemoryStore())) - {"audit"}


async def test_a_journal_written_before_a_step_took_new_arguments_still_replays(tmp_path: Path) -> None:
    """revoke took now_ms and its audit event later; an entry journaled before (after a crash, not yet compacted)
    replays with their defaults instead of stopping the start."""
    root = tid()
    store = LocalStore(tmp_path)
    await store.close()
    raw = msgspec.msgpack.encode([("revoke", msgspec.Raw(msgspec.msgpack.encode((root, "p0", 0))))])
    db = sqlite3.connect(tmp_path / DB_FILE)
    db.execute("INSERT INTO journal (format, steps) VALUES (1, ?)", (zlib.compress(raw),))
    db.commit()
    db.close()
    store = LocalStore(tmp_path)
    try:
        assert (await store.inspect(root, ("p0",), (), T0)).revoked_index == 0
    finally:
        await store.close()


async def test_a_restart_keeps_budgets_holds_revocations_rates_and_answers(tmp_path: Path) -> None:
    root = tid()
    store = LocalStore(tmp_path)
    holds = await some_of_everything(store, root)
    before = repr(vars(store.memory))
    await store.close()

    store = LocalStore(tmp_path)
    try:
        assert repr(vars(store.memory)) == before
        levels = (budget("b0", 10 * USD), budget("b1", 5 * USD))
        # spent 1 + 0.5, held 1 (kept) + 1 (short, still open at T0 + 3)
        inspection = await store.inspect(root, ("p0", "p1"), ("b0", "b1"), T0 + 4, (RateSpec("r", 1, 60_000),))
        assert inspection.balances == [(1 * USD + USD // 2, 2 * USD)] * 2
        assert (inspection.revoked_index, inspection.full_rates) == (1, [0])
        replay = await store.decide(decision(root, 1 * USD, budgets=levels, request_id="rq", fingerprint="f"))
        assert replay.replayed and replay.balances == [(1 * USD, 0)] * 2
        assert (await store.settle(holds["settled"], USD // 2, T0 + 5)).state == "settled"
        with pytest.raises(Conflict):
            await store.settle(holds["released"], None, T0 + 5)
        with pytest.raises(NotFound):  # it ended at T0 + 1000, before the restart's calls
            await store.settle(holds["short"], None, T0 + 2000)
        # the extended hold outlives its first 300 s
        assert (await store.settle(holds["kept"], None, T0 + 400_000)).amount == 1 * USD
    finally:
        await store.close()


async def test_a_crash_keeps_every_answered_call_with_fsync_always(tmp_path: Path) -> None:
    root = tid()
    store = LocalStore(tmp_path / "live", "always")
    try:
        await some_of_everything(store, root)
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")
        live = repr(vars(store.memory))
    finally:
        await store.close()
    recovered = LocalStore(copy)
    try:
        assert repr(vars(recovered.memory)) == live
    finally:
        await recovered.close()


async def test_replay_rebuilds_the_same_state_when_purges_take_many_steps_between_other_calls(
    tmp_path: Path,
) -> None:
    """Expired holds are released 256 per step and other calls run between the steps: the journal records the
    steps in the order they ran, so the replayed store is the live one, purges and all."""
    rng = random.Random(7)
    roots = [tid() for _ in range(3)]
    levels = (budget("b", 10**9 * USD),)
    store = LocalStore(tmp_path / "live", "always")
    try:
        for root in roots:  # 600 short holds per root, ending at T0 + 1..600
            for i in range(600):
                await store.decide(decision(root, 1, budgets=levels, mode="hold", hold_ttl_ms=1 + i))
        calls = []
        for n in range(300):
            root, now = rng.choice(roots), T0 + 700 + n
            kind = rng.choice(["charge", "hold", "inspect"])
            if kind == "inspect":
                calls.append(store.inspect(root, ("p0",), ("b",), now))
            else:
                calls.append(store.decide(decision(root, 1, budgets=levels, mode=kind, now=now)))
        await asyncio.gather(*calls)  # the first call of each root needs three steps; others run in between
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")
        live = repr(vars(store.memory))
    finally:
        await store.close()
    recovered = LocalStore(copy)
    try:
        assert repr(vars(recovered.memory)) == live
        assert all(
            not recovered.memory.active.get(root) or min(recovered.memory.active[root].values()) > T0 + 600
            for root in roots
        )
    finally:
        await recovered.close()


async def test_a_torn_wal_tail_loses_only_the_unfinished_commit(tmp_path: Path) -> None:
    """A crash in the middle of a commit leaves part of it in the WAL: SQLite drops the torn transaction on
    open, so the store starts with every commit before it."""
    root = tid()
    levels = (budget("b", 100 * USD),)
    store = LocalStore(tmp_path / "live", "always")
    try:
        for _ in range(5):
            await store.decide(decision(root, USD, budgets=levels))
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")
    finally:
        await store.close()
    wal = copy / (DB_FILE + "-wal")
    wal.write_bytes(wal.read_bytes()[:-100])  # the last frame, the 5th charge's commit, half written
    recovered = LocalStore(copy)
    try:
        assert (await recovered.inspect(root, ("p0",), ("b",), T0)).balances == [(4 * USD, 0)]
    finally:
        await recovered.close()


async def test_a_damaged_database_stops_the_start_with_the_file_named_and_is_left_as_it_was(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.decide(decision(tid(), USD, budgets=(budget("b", 10 * USD),)))
    await store.close()
    path = tmp_path / DB_FILE
    damaged = b"this is not a database" + path.read_bytes()[22:]
    path.write_bytes(damaged)
    with pytest.raises(ConfigError, match=r"store\.db cannot be read .*move it .* away to start with empty"):
        LocalStore(tmp_path)
    assert path.read_bytes() == damaged
    LocalStore(tmp_path / "elsewhere").memory  # noqa: B018 - the lock was given back: no leak on failure
    with pytest.raises(ConfigError, match="cannot be read"):
        LocalStore(tmp_path)  # still refused, and not "in use": the failed open released the lock


async def test_an_unreadable_journal_row_stops_the_start(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "live", "always")
    await store.decide(decision(tid(), USD))
    copy = crash_copy(tmp_path / "live", tmp_path / "crashed")
    await store.close()
    with sqlite3.connect(copy / DB_FILE) as db:
        assert db.execute("UPDATE journal SET steps = x'c1c1c1'").rowcount == 1
    with pytest.raises(ConfigError, match="cannot be read"):
        LocalStore(copy)


async def test_a_second_store_on_the_same_data_dir_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = LocalStore(tmp_path)
    with pytest.raises(ConfigError, match=r"in use by another agentcaps process \(pid \d+\)"):
        LocalStore(tmp_path)
    await first.close()
    second = LocalStore(tmp_path)
    await second.close()


async def test_a_failed_write_fails_closed_from_then_on(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, "always")
    root = tid()
    await store.decide(decision(root, USD))
    store._db.close()  # every later write fails, as on a disk that went away
    with pytest.raises(StoreUnavailable, match="could not write"):
        await store.decide(decision(root, USD))
    with pytest.raises(StoreUnavailable, match="could not write"):
        await store.decide(decision(root, USD))
    assert "could not write" in (await store.ready() or "")
    store._db = sqlite3.connect(":memory:")  # so that close() has something to close
    await store.close()


def test_fsync_is_everysec_or_always_and_only_for_local(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AGENTCAPS_FSYNC must be everysec or always, got 'sometimes'"):
        LocalStore(tmp_path, "sometimes")
    with pytest.raises(ConfigError, match="AGENTCAPS_FSYNC is only for AGENTCAPS_STORE=local://"):
        open_store("memory://", fsync="always")
    assert not (tmp_path / DB_FILE).exists()


async def test_the_files_are_private_to_the_service_user(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    await store.decide(decision(tid(), USD))
    await store.close()
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "data" / DB_FILE).stat().st_mode & 0o777 == 0o600


async def test_always_answers_a_call_only_once_its_commit_is_done(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "live", "always")
    commit = store._commit
    store._commit = lambda batch: (time.sleep(0.3), commit(batch))[1]  # type: ignore[method-assign]
    root = tid()
    try:
        started = time.monotonic()
        await store.decide(decision(root, USD, budgets=(budget("b", 10 * USD),)))
        assert time.monotonic() - started >= 0.3
        copy = crash_copy(tmp_path / "live", tmp_path / "crashed")
    finally:
        await store.close()
    recovered = LocalStore(copy)
    try:
        assert (await recovered.inspect(root, ("p0",), ("b",), T0)).balances == [(USD, 0)]
    finally:
        await recovered.close()


async def test_everysec_answers_at_once_unless_the_disk_is_a_whole_second_behind(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, "everysec")
    commit = store._commit
    store._commit = lambda batch: (time.sleep(1.5), commit(batch))[1]  # type: ignore[method-assign]
    root = tid()
    try:
        started = time.monotonic()
        await store.decide(decision(root, USD))  # the writer takes it and stalls for 1.5 s
        assert time.monotonic() - started < 0.2
        await asyncio.sleep(0.1)
        await store.decide(decision(root, USD))  # queued behind the stalled commit, under a second old
        await asyncio.sleep(1.0)
        started = time.monotonic()
        await store.decide(decision(root, USD))  # its batch has waited over a second: this call waits for it
        assert time.monotonic() - started >= 0.3
    finally:
        await store.close()


async def test_a_call_whose_arguments_cannot_be_journaled_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """msgpack holds integers up to 2**64: a call past that is refused before it runs, and the store goes on."""
    root = tid()
    store = LocalStore(tmp_path, "always")
    try:
        with pytest.raises(ValueError, match=r"revoke: an argument cannot be stored"):
            await store.revoke(root, "p0", 2**70)
        assert (await store.inspect(root, ("p0",), (), T0)).revoked_index is None
        await store.revoke(root, "p0", 0)
        assert await store.ready() is None
    finally:
        await store.close()
    store = LocalStore(tmp_path)
    try:
        assert (await store.inspect(root, ("p0",), (), T0)).revoked_index == 0
    finally:
        await store.close()
