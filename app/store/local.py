"""`local://`: the embedded default store — MemoryStore's semantics, kept durable in the data dir.

What is kept: every atomic step of MemoryStore that may change its state (one step of a decide or an inspect,
a settle, release, extend or revoke) is journaled as the call itself, its name and arguments in msgpack, in the
order the steps ran. Every input is an argument (now_ms, call_id: nothing reads a clock or draws a random
number) and MemoryStore is deterministic, so running the journal again on the last snapshot rebuilds exactly the
state those steps left: expired holds purged at the same steps, the same hold ids, the same remembered answers.
A step that raised is journaled too (it may have purged before it raised) and raises again on replay. A new
state-changing store method is made durable by one line in STEPS.

Files in the data dir: `store.db`, SQLite in WAL mode, with a `snapshot` (one row: MemoryStore.dump()) and a
`journal` (one row per group commit: the steps of that batch), both zlib-compressed; `store.lock`, held with an
exclusive flock while a store is open, so that a second process on the same data dir is refused instead of
splitting the counters.

A writer thread takes whatever steps have gathered since its last commit and writes them as one transaction
(group commit, off the event loop; SQLite releases the GIL while it writes). AGENTCAPS_FSYNC:
- `everysec` (the default): a call is answered without waiting. The writer hands a batch to the OS every
  GROUP_COMMIT (a tenth of a second), so a killed process loses at most the steps of the last tenth or so; the
  WAL is fsynced at least once a second, so a power loss loses at most the last second. A call waits for the
  disk only when the batch it joins has already waited a second (a stalled disk), so the loss stays within it.
- `always`: a call is answered only once the transaction holding its steps is fsynced. Steps that come in
  meanwhile share the next fsync.
Compaction: every COMPACT_EVERY steps and at close, a snapshot replaces the journal in one transaction.

A crash in the middle of a commit leaves a torn WAL tail, which SQLite discards on the next open: a batch is
there whole or not at all, and a call was answered (with `always`) only after its batch was whole on disk. A
file that SQLite or the decoder cannot read stops the start with a message naming the file (fail closed): to
start empty would silently give every budget back.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import os
import sqlite3
import threading
import time
import typing
import zlib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec

from app.errors import ConfigError, StoreUnavailable
from app.store.base import (
    KEEP_A_WEEK,
    Approval,
    Attempt,
    AuditPolicy,
    ChainSeen,
    HoldState,
    Inspection,
    Outcome,
    RateSpec,
    Store,
    refuse_bad_ttl,
    refuse_negative,
    stepwise,
)
from app.store.memory import MemoryStore

DB_FILE = "store.db"
LOCK_FILE = "store.lock"
FSYNC_MODES = ("everysec", "always")
FSYNC_WINDOW = 1.0  # seconds of answered steps a crash may lose with `everysec`
# With `everysec`, the writer commits at most this often: each commit costs the process a fixed share of CPU and
# GIL, so fewer, larger ones keep verify as fast as on memory://. A kill -9 loses about this much, at most.
GROUP_COMMIT = 0.1
COMPACT_EVERY = 100_000  # steps journaled between two snapshots: bounds the replay at start to about a second
FORMAT = 1  # of the snapshot and the journal; another one is refused at start, not misread

# MemoryStore's atomic steps (none awaits inside), by journal name. Each is replayed with the same arguments.
STEPS: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {
    "decide": MemoryStore._decide_step,
    "inspect": MemoryStore._inspect_step,
    "settle": MemoryStore.settle,
    "release": MemoryStore.release,
    "extend": MemoryStore.extend,
    "revoke": MemoryStore.revoke,
    "decide_approval": MemoryStore.decide_approval,
    "record": MemoryStore.record,
}


def _arguments(name: str, step: Callable[..., Any]) -> Any:
    """A step's arguments as the journal decodes them: an array-like Struct from the step's annotations, so that
    an entry journaled before a step took a new argument (one with a default, at the end) still decodes."""
    hints = typing.get_type_hints(step)
    hints.pop("return", None)
    parameters = inspect.signature(step).parameters
    fields = [
        (arg, hint) if parameters[arg].default is inspect.Parameter.empty else (arg, hint, parameters[arg].default)
        for arg, hint in hints.items()
    ]
    return msgspec.defstruct(f"{name}_arguments", fields, array_like=True)


_ARGUMENTS = {name: msgspec.msgpack.Decoder(_arguments(name, step)) for name, step in STEPS.items()}
_encode = msgspec.msgpack.Encoder().encode
_decode_batch = msgspec.msgpack.Decoder(list[tuple[str, msgspec.Raw]]).decode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), format INTEGER NOT NULL, state BLOB);
CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, format INTEGER NOT NULL, steps BLOB NOT NULL);
"""


def _pack(data: bytes) -> bytes:
    """Steps repeat their token and prefix ids: compressed, a batch is about 20 times smaller, and SQLite's
    work (and the GIL it takes from the event loop) grows with the bytes written. zlib works without the GIL."""
    return zlib.compress(data, 1)


def run_now(step: Coroutine[Any, Any, Any]) -> Any:
    """Run a MemoryStore step to its end without the event loop: it never awaits, so nothing can run between
    the step and its journal entry."""
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    step.close()
    raise RuntimeError("a MemoryStore step awaited; it must stay atomic")


def lock_data_dir(data_dir: Path) -> int:
    """An exclusive lock on the data dir, held until close (or until the process dies, even by SIGKILL)."""
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(
            f"AGENTCAPS_DATA_DIR {data_dir} is in use by another agentcaps process (pid {holder}): one local:// "
            "store serves one process. Stop that one, or give this one another AGENTCAPS_DATA_DIR"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class LocalStore(Store):
    def __init__(self, data_dir: Path, fsync: str = "everysec", audit: AuditPolicy = KEEP_A_WEEK) -> None:
        if fsync not in FSYNC_MODES:
            raise ConfigError(f"AGENTCAPS_FSYNC must be everysec or always, got {fsync!r}")
        self.always = fsync == "always"
        self.path = data_dir / DB_FILE
        self.memory = MemoryStore(audit)
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = lock_data_dir(data_dir)
        try:
            self._db = self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise
        try:
            self._since_snapshot = self._load()
        except BaseException:  # a failed start leaves no file open and the data dir free
            self._db.close()
            os.close(self._lock_fd)
            raise
        self._cond = threading.Condition()
        self._queue: list[msgspec.Raw | bytes] = []  # encoded steps, and snapshots that cover the steps before
        self._queued_at = 0.0  # monotonic time the oldest queued step came in
        self._appended = 0  # steps journaled since start (event-loop side)
        self._durable = 0  # of those, how many are committed (writer side; read under the condition)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # calls waiting for their steps to be durable
        self.failure: str | None = None
        self._closing = self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="agentcaps-local-store", daemon=True)
        self._writer.start()

    # -- start: open, load the snapshot, replay the journal -------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        if not self.path.exists():  # created private: the -wal and -shm files take the same mode
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:  # not a file SQLite can open: a directory, no permission
            raise ConfigError(self._damaged(e)) from None
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {'FULL' if self.always else 'NORMAL'}")
            db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            db.close()
            raise ConfigError(self._damaged(e)) from None
        return db

    def _damaged(self, why: object) -> str:
        return (
            f"the local:// store {self.path} cannot be read ({why}). Nothing was changed. Restore it from a "
            "backup, or move it (with its -wal file) away to start with empty counters: every budget, hold and "
            "revocation in it would be forgotten"
        )

    def _load(self) -> int:
        """Restore the snapshot and replay the journal after it; answers how many steps were replayed."""
        replayed = 0
        try:
            row = self._db.execute("SELECT format, state FROM snapshot WHERE id = 1").fetchone()
            if row is not None:
                self._check_format(row[0])
                self.memory.load(zlib.decompress(row[1]))
            for format_, steps in self._db.execute("SELECT format, steps FROM journal ORDER BY seq"):
                self._check_format(format_)
                for name, raw in _decode_batch(zlib.decompress(steps)):
                    args = msgspec.structs.astuple(_ARGUMENTS[name].decode(raw))
                    with contextlib.suppress(Exception):  # it raised the same way when it first ran
                        run_now(STEPS[name](self.memory, *args))
                    replayed += 1
        except (sqlite3.Error, zlib.error, msgspec.DecodeError, KeyError) as e:
            raise ConfigError(self._damaged(e)) from None
        return replayed

    def _check_format(self, found: int) -> None:
        if found != FORMAT:
            raise ConfigError(self._damaged(f"format {found}, this version reads format {FORMAT}"))

    # -- the Store interface: each call is MemoryStore's, journaled ---------------------------------------------
    async def decide(self, d: Attempt) -> Outcome:
        outcome: Outcome = await stepwise(lambda: self._async_step("decide", d))
        await self._wait_durable()
        return outcome

    async def lookup(
        self, token_id: str, request_id: str, fingerprint: str, now_ms: int | None = None
    ) -> Outcome | None:
        self._check_open()
        return await self.memory.lookup(token_id, request_id, fingerprint, now_ms)  # reads only

    async def settle(self, hold_id: str, amount: int | None, now_ms: int, verifier: str = "") -> HoldState:
        refuse_negative(amount)  # refused as every store refuses it, before the journal sees it
        state: HoldState = self._step("settle", hold_id, amount, now_ms, verifier)
        await self._wait_durable()
        return state

    async def release(self, hold_id: str, now_ms: int, verifier: str = "") -> HoldState:
        state: HoldState = self._step("release", hold_id, now_ms, verifier)
        await self._wait_durable()
        return state

    async def extend(self, hold_id: str, ttl_ms: int, now_ms: int, verifier: str = "") -> HoldState:
        refuse_bad_ttl(ttl_ms)
        state: HoldState = self._step("extend", hold_id, ttl_ms, now_ms, verifier)
        await self._wait_durable()
        return state

    async def revoke(self, token_id: str, prefix: str, expires_at_ms: int, now_ms: int = 0, event: str = "") -> None:
        self._step("revoke", token_id, prefix, expires_at_ms, now_ms, event)
        await self._wait_durable()

    async def record(self, token_id: str, now_ms: int, event: str, chain: ChainSeen | None = None) -> None:
        self._step("record", token_id, now_ms, event, chain)
        await self._wait_durable()

    async def audit_events(
        self, token_id: str | None, before: str | None, after: str | None, limit: int
    ) -> list[tuple[str, int, str]]:
        self._check_open()
        return await self.memory.audit_events(token_id, before, after, limit)  # reads only

    async def chains_seen(self, token_id: str) -> list[ChainSeen]:
        self._check_open()
        return await self.memory.chains_seen(token_id)  # reads only

    async def inspect(
        self,
        token_id: str,
        revocation: tuple[str, ...],
        budgets: tuple[str, ...],
        now_ms: int,
        rates: tuple[RateSpec, ...] = (),
    ) -> Inspection:
        # Inspect changes nothing a call sees, but its steps purge expired holds: journaled like the rest.
        return await stepwise(lambda: self._async_step("inspect", token_id, revocation, budgets, now_ms, rates))

    async def approvals_of(self, token_id: str | None, now_ms: int) -> list[Approval]:
        self._check_open()
        return await self.memory.approvals_of(token_id, now_ms)  # reads only

    async def approval(self, approval_id: str, now_ms: int) -> Approval | None:
        self._check_open()
        return await self.memory.approval(approval_id, now_ms)  # reads only

    async def decide_approval(
        self,
        approval_id: str,
        approve: bool,
        approver: str | None,
        decided_by: str,
        reason: str,
        now_ms: int,
        ttl_ms: int,
    ) -> Approval:
        args = (approval_id, approve, approver, decided_by, reason, now_ms, ttl_ms)
        approval: Approval = self._step("decide_approval", *args)
        await self._wait_durable()
        return approval

    async def ready(self) -> str | None:
        if self._closed:
            return "the local:// store is closed"
        return self.failure

    # -- journaling ---------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.failure is not None:
            raise StoreUnavailable(self.failure)
        if self._closed:
            raise StoreUnavailable("the local:// store is closed")

    def _step(self, name: str, *args: Any) -> Any:
        """Run one MemoryStore step and queue its journal entry, with nothing in between. Every argument is
        passed, defaults too: the replay must not depend on what the defaults are then."""
        self._check_open()
        try:  # encoded first: a step that cannot be journaled must not run
            entry = msgspec.Raw(_encode((name, args)))
        except (msgspec.EncodeError, OverflowError, TypeError) as e:
            raise ValueError(f"{name}: an argument cannot be stored ({e})") from None
        try:
            return run_now(STEPS[name](self.memory, *args))
        finally:
            self._append(entry)

    async def _async_step(self, name: str, *args: Any) -> Any:
        return self._step(name, *args)

    def _append(self, item: msgspec.Raw | bytes) -> None:
        with self._cond:
            if not self._queue:
                self._queued_at = time.monotonic()
                self._cond.notify()
            self._queue.append(item)
        if isinstance(item, msgspec.Raw):
            self._appended += 1
            self._since_snapshot += 1
            if self._since_snapshot >= COMPACT_EVERY:
                self._snapshot()

    def _snapshot(self) -> None:
        """Queue MemoryStore's state as it is now, after every step queued before: the writer then drops
        those steps' journal and keeps this instead, in one transaction."""
        self._since_snapshot = 0
        self._append(self.memory.dump())

    async def _wait_durable(self) -> None:
        """With `always`, until every step journaled so far is committed and fsynced; with `everysec`, only
        when the writer is a whole window behind."""
        target = self._appended
        if not self.always:
            queued_at = self._queued_at
            if not self._queue or time.monotonic() - queued_at < FSYNC_WINDOW:
                return
        with self._cond:
            if self.failure is not None:
                raise StoreUnavailable(self.failure)
            if self._durable >= target:
                return
            future = asyncio.get_running_loop().create_future()
            self._waiters.append((target, future))
        await future

    def _wake(self) -> None:
        """On an event loop: answer its calls whose steps are now durable (or all of them if writes fail)."""
        loop = asyncio.get_running_loop()
        with self._cond:
            durable, failure = self._durable, self.failure
            done = [(t, f) for t, f in self._waiters if f.get_loop() is loop and (failure or t <= durable)]
            self._waiters = [waiter for waiter in self._waiters if waiter not in done]
        for _, future in done:
            if future.done():
                continue
            if failure is None:
                future.set_result(None)
            else:
                future.set_exception(StoreUnavailable(failure))

    # -- the writer thread -------------------------------------------------------------------------------------
    def _write_loop(self) -> None:
        synced_at = time.monotonic()
        unsynced = False
        while True:
            with self._cond:
                if not self._queue and not self._closing:
                    self._cond.wait(FSYNC_WINDOW if unsynced else None)
                batch, self._queue = self._queue, []
                closing = self._closing
            if batch and self.failure is None:
                started = time.monotonic()
                try:
                    self._commit(batch)
                    unsynced = not self.always
                except Exception as e:  # sqlite3.Error, OSError, anything: fail closed, never lose steps in silence
                    self.failure = f"the local:// store could not write {self.path}: {e}"
                if not self.always and not closing:  # let steps gather: a few large commits cost the loop less
                    time.sleep(max(0.0, GROUP_COMMIT - (time.monotonic() - started)))
            if unsynced and (time.monotonic() - synced_at >= FSYNC_WINDOW or closing):
                try:  # syncs the WAL, then copies it into the database file
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as e:
                    self.failure = f"the local:// store could not sync {self.path}: {e}"
                synced_at, unsynced = time.monotonic(), False
            if batch or self.failure is not None:
                with self._cond:
                    if self.failure is None:
                        self._durable += sum(isinstance(item, msgspec.Raw) for item in batch)
                    loops = {future.get_loop() for _, future in self._waiters}
                for loop in loops:
                    with contextlib.suppress(RuntimeError):  # a loop closed meanwhile has no one left to answer
                        loop.call_soon_threadsafe(self._wake)
            if closing and not batch:
                return

    def _commit(self, batch: list[msgspec.Raw | bytes]) -> None:
        """One transaction: the last snapshot of the batch replaces the journal (it covers every step before
        it, in this batch and earlier ones); the steps after it become one journal row."""
        cut = max((i for i, item in enumerate(batch) if isinstance(item, bytes)), default=-1)
        snapshot, steps = batch[cut] if cut >= 0 else None, batch[cut + 1 :]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(snapshot, bytes):
                self._db.execute("DELETE FROM journal")
                self._db.execute("INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?)", (FORMAT, _pack(snapshot)))
            if steps:
                self._db.execute("INSERT INTO journal (format, steps) VALUES (?, ?)", (FORMAT, _pack(_encode(steps))))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Answer no more calls, snapshot what the journal holds, let the writer finish, and unlock."""
        if self._closed:
            return
        if self._since_snapshot and self.failure is None:
            self._snapshot()
        self._closed = True
        with self._cond:
            self._closing = True
            self._cond.notify()
        await asyncio.to_thread(self._writer.join)
        self._wake()  # those of this loop; the writer has woken the others
        self._db.close()
        os.close(self._lock_fd)
