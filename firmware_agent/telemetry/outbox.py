"""The durable outbox: signed batches in SQLite from commit until the broker's PUBACK.

One database file under the state directory, WAL journal, `synchronous=FULL`: when `commit()` returns, the
batch and its sequence number are on disk and survive `kill -9` and power loss. `seq` comes from the
`meta` table and is advanced in the same transaction that stores the batch, so it is never reused, even
after acknowledged rows are deleted or the process dies mid-commit.

Size is bounded with SQLite's `max_page_count` (`max_bytes / page_size`); the write-ahead log adds at most
about `WAL_AUTOCHECKPOINT_PAGES` pages between checkpoints. When a write fails with
`database or disk is full` (the bound or a real full disk), rows are evicted and the commit retried:

1. dead letters, oldest first (they will never be delivered);
2. then queued batches by priority, lowest first, oldest first within a priority;
3. a batch only ever displaces batches of its own priority or lower: a high-priority batch is evicted only
   to make room for another high-priority batch (last resort), and a low-priority batch that finds only
   higher-priority rows is rejected rather than evicting them.

A batch that cannot fit even then is rejected: `commit()` raises `BatchRejectedError` and `rejected`
counts it; its sequence number is not consumed. Every count is persisted in `meta` with the change it
counts, so they survive restarts and can be reported in telemetry.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from firmware_agent.errors import UserError
from firmware_agent.values import Batch

#: The persisted counters, in report order.
COUNTERS = ("committed", "acknowledged", "evicted", "evicted_bytes", "dead_lettered", "disk_full", "rejected")
#: Dead letters kept for inspection; older ones are dropped first.
MAX_DEAD_LETTERS = 1000
PAGE_SIZE = 4096
#: Pages the WAL may grow by between automatic checkpoints (1 MiB with 4 KiB pages).
WAL_AUTOCHECKPOINT_PAGES = 256
#: Smallest useful bound: schema pages plus room for a few batches.
MIN_BYTES = 64 * 1024
#: SQLite's primary result code for "database or disk is full" (`sqlite3.SQLITE_FULL` from Python 3.11).
_SQLITE_FULL = 13

Seal = Callable[[Batch, int], bytes]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY, priority INTEGER NOT NULL, created REAL NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_eviction ON outbox (priority, seq);
CREATE TABLE IF NOT EXISTS dead_letter (
    seq INTEGER PRIMARY KEY, reason TEXT NOT NULL, failed REAL NOT NULL, data BLOB NOT NULL);
"""


class OutboxError(UserError):
    """The outbox database cannot be opened (path, permissions, file system, not a database)."""


class BatchRejectedError(Exception):
    """The batch could not be stored even after eviction; it is counted under `rejected`."""


@dataclass(frozen=True)
class PendingBatch:
    """A committed batch waiting for the broker's acknowledgement."""

    seq: int
    priority: int
    data: bytes


@dataclass(frozen=True)
class DeadLetter:
    """A batch the broker refused for good, with the reason (e.g. `PUBACK 0x87 Not authorized`)."""

    seq: int
    reason: str
    failed: float
    data: bytes


def _is_full(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    return code == _SQLITE_FULL if code is not None else "is full" in str(exc)


class Outbox:
    """Signed batches, stored until acknowledged. Thread-safe; one `Outbox` per database file.

    `seal(batch, seq)` turns a batch into the bytes to store and publish (see `BatchSealer`); it runs inside
    the commit transaction, after `seq` is known.
    """

    def __init__(self, path: Path, seal: Seal, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_bytes < MIN_BYTES:
            raise ValueError(f"outbox max_bytes {max_bytes} is below the minimum {MIN_BYTES}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._seal = seal
        self._last_size = 0  # bytes of the batch being committed, for eviction after a full error
        self._closed = False
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._open(max_bytes)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"{self.path}: cannot open the outbox: {exc}") from exc
        self._counters = dict(
            self._db.execute("SELECT key, value FROM meta WHERE key != 'next_seq'").fetchall()
        )

    # --- schema and transactions -------------------------------------------------------------------

    def _open(self, max_bytes: int) -> None:
        self._db.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # only takes effect on a new file
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise OutboxError(
                f"{self.path}: the file system does not support SQLite WAL (journal mode {mode})"
            )
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        self._db.execute(f"PRAGMA journal_size_limit = {WAL_AUTOCHECKPOINT_PAGES * PAGE_SIZE}")
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        self._db.execute(f"PRAGMA max_page_count = {max_bytes // page_size}")
        with self._transaction():
            self._create_schema()

    def _create_schema(self) -> None:
        for statement in filter(str.strip, _SCHEMA.split(";")):
            self._db.execute(statement)
        self._db.executemany(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?, 0)",
            [("next_seq",)] + [(c,) for c in COUNTERS],
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _bump(self, **deltas: int) -> None:
        """Add to persisted counters inside the caller's transaction."""
        for key, delta in deltas.items():
            if delta:
                self._db.execute("UPDATE meta SET value = value + ? WHERE key = ?", (delta, key))

    def _apply(self, **deltas: int) -> None:
        """Mirror persisted counter changes in memory once their transaction has committed."""
        for key, delta in deltas.items():
            self._counters[key] = self._counters.get(key, 0) + delta

    # --- the producer side -------------------------------------------------------------------------

    def commit(self, batch: Batch) -> int:
        """Seal and store `batch` durably; return its sequence number.

        Evicts per the module's policy when full; raises `BatchRejectedError` when the batch cannot fit.
        """
        with self._lock:
            while True:
                try:
                    return self._try_commit(batch)
                except sqlite3.OperationalError as exc:
                    if not _is_full(exc):
                        raise
                    needed = max(self._last_size, PAGE_SIZE)
                try:
                    evicted = self._evict(needed, batch.priority)
                except sqlite3.OperationalError as exc:
                    if not _is_full(exc):
                        raise
                    evicted = False  # a real full disk with no room even to delete: give up on this batch
                if not evicted:
                    self._count_outside_transaction(rejected=1)
                    raise BatchRejectedError(
                        f"batch of {needed} bytes (priority {batch.priority}) does not fit in the outbox "
                        f"({self.max_bytes} bytes) even after eviction"
                    )

    def _try_commit(self, batch: Batch) -> int:
        self._last_size = 0
        with self._transaction():
            seq = self._db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]
            data = self._seal(batch, seq)
            self._last_size = len(data)
            self._db.execute(
                "INSERT INTO outbox (seq, priority, created, data) VALUES (?, ?, ?, ?)",
                (seq, batch.priority, time.time(), data),
            )
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
            self._bump(committed=1)
        self._apply(committed=1)
        return int(seq)

    def _evict(self, needed: int, priority: int) -> bool:
        """Delete rows worth at least `needed` bytes that `priority` may displace; False if none could go."""
        evicted = evicted_bytes = 0
        with self._transaction():
            self._bump(disk_full=1)
            freed = 0
            while freed < needed:
                row = self._db.execute(
                    "SELECT seq, length(data) FROM dead_letter ORDER BY seq LIMIT 1"
                ).fetchone()
                if row is not None:
                    self._db.execute("DELETE FROM dead_letter WHERE seq = ?", (row[0],))
                    freed += row[1]
                    continue
                row = self._db.execute(
                    "SELECT seq, length(data) FROM outbox WHERE priority <= ? ORDER BY priority, seq LIMIT 1",
                    (priority,),
                ).fetchone()
                if row is None:
                    break
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (row[0],))
                freed += row[1]
                evicted += 1
                evicted_bytes += row[1]
            self._bump(evicted=evicted, evicted_bytes=evicted_bytes)
        self._apply(disk_full=1, evicted=evicted, evicted_bytes=evicted_bytes)
        return freed > 0

    def _count_outside_transaction(self, **deltas: int) -> None:
        try:
            with self._transaction():
                self._bump(**deltas)
        except sqlite3.OperationalError:
            pass  # still full: this count lives in memory only (reported, but lost at restart)
        self._apply(**deltas)

    # --- the uploader side -------------------------------------------------------------------------

    def pending(self, limit: int, after_seq: int = -1) -> list[PendingBatch]:
        """Up to `limit` unacknowledged batches with `seq > after_seq`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, priority, data FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [PendingBatch(seq, priority, data) for seq, priority, data in rows]

    def pending_count(self) -> int:
        """Number of batches waiting for acknowledgement."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def acknowledge(self, seq: int) -> bool:
        """Delete batch `seq` after the broker's PUBACK; False if it was not there (evicted, or acked)."""
        return self.acknowledge_many([seq]) == 1

    def acknowledge_many(self, seqs: Iterable[int]) -> int:
        """Delete several acknowledged batches in one transaction (one fsync); how many were there."""
        with self._lock:
            with self._transaction():
                deleted = sum(
                    self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount for seq in seqs
                )
                self._bump(acknowledged=deleted)
            self._apply(acknowledged=deleted)
            return deleted

    def dead_letter(self, seq: int, reason: str) -> bool:
        """Move batch `seq` to the dead letters (a final refusal, never retried); False if not there."""
        with self._lock:
            with self._transaction():
                moved = self._db.execute(
                    "INSERT OR REPLACE INTO dead_letter (seq, reason, failed, data) "
                    "SELECT seq, ?, ?, data FROM outbox WHERE seq = ?",
                    (reason, time.time(), seq),
                ).rowcount
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                self._db.execute(
                    "DELETE FROM dead_letter WHERE seq NOT IN "
                    "(SELECT seq FROM dead_letter ORDER BY seq DESC LIMIT ?)",
                    (MAX_DEAD_LETTERS,),
                )
                self._bump(dead_lettered=moved)
            self._apply(dead_lettered=moved)
            return moved > 0

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, reason, failed, data FROM dead_letter ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        return [DeadLetter(*row) for row in rows]

    # --- reporting and lifetime --------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """The persisted counters (see `COUNTERS`), as of the last completed transaction."""
        with self._lock:
            return {key: self._counters.get(key, 0) for key in COUNTERS}

    def next_seq(self) -> int:
        """The sequence number the next committed batch will get."""
        with self._lock:
            return int(self._db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0])

    def close(self) -> None:
        """Checkpoint the WAL and close the database; closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        elif self._db.in_transaction:
            self._db.execute("ROLLBACK")
