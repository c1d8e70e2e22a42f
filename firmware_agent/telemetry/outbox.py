"""The durable outbox: signed batches in SQLite from commit until the broker's PUBACK.

One database file under the state directory, WAL journal, `synchronous=FULL`: when `commit()` returns, the
batch and its sequence number are on disk and survive `kill -9` and power loss. `seq` comes from the
`meta` table and is advanced in the same transaction that stores the batch, so it is never reused, even
after acknowledged rows are deleted or the process dies mid-commit.

Size: everything the outbox keeps on disk (database, write-ahead log, `-shm` index and a small reserve
file) stays below `max_bytes` and below a share of the file system, re-planned before every commit from
the free space (`telemetry/disk.py` explains the split and why deletes keep working on a full disk). The
database part is enforced with SQLite's `max_page_count`. When a write fails with `database or disk is
full` (the bound or a real full disk), rows are evicted and the commit retried:

1. dead letters, oldest first (they will never be delivered);
2. then queued batches by priority, lowest first, oldest first within a priority;
3. a batch only ever displaces batches of its own priority or lower: a high-priority batch is evicted only
   to make room for another high-priority batch (last resort), and a low-priority batch that finds only
   higher-priority rows is rejected rather than evicting them.

A batch that cannot fit even then (or is larger than the budget's `max_batch`) is rejected: `commit()`
raises `BatchRejectedError` and `rejected` counts it; its sequence number is not consumed. Every count is
persisted in `meta` with the change it counts, so they survive restarts and can be reported in telemetry;
a count whose own write failed (the disk was full) is kept in memory and written with the next
transaction that succeeds.

Message size: the broker may limit the size of a packet (MQTT 5 Maximum Packet Size). The uploader passes
the limit on (`set_message_limit`, persisted in `meta` so that the next start knows it before connecting);
a batch whose sealed message exceeds it is split before it is stored (`telemetry/sizing.py`: halves by
time, each with its own `seq`; `split` counts the splits), and a batch stored before the limit was known is
split when the uploader finds it too large (`refit(seq)`: the first part keeps the batch's `seq`, which was
never published). What cannot be split and still does not fit is dead-lettered and counted (`oversize`,
also in `dead_lettered`). `committed` counts sequence numbers given out, so `committed = acknowledged +
evicted + dead_lettered + pending`.

A batch evicted while the uploader has it in flight (`published(seq)`) may still be delivered: paho holds
its own copy. It is recorded in `evicted_in_flight` instead of being counted: a later PUBACK counts it as
acknowledged, and only when the copy is gone for good (the outbox is closed or reopened) does it count as
evicted. So no batch is both delivered and counted as lost.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

from firmware_agent.errors import UserError
from firmware_agent.telemetry.cose import MalformedMessageError, unverified_payload
from firmware_agent.telemetry.disk import (
    DISK_SHARE,
    PAGE_SIZE,
    Budget,
    FreeSpace,
    Reserve,
    free_space,
    plan_budget,
)
from firmware_agent.telemetry.payload import PayloadError, decode_payload
from firmware_agent.telemetry.sizing import batch_of_payload, split_batch
from firmware_agent.values import Batch

log = logging.getLogger(__name__)

#: The persisted counters, in report order.
COUNTERS = (
    "committed",
    "acknowledged",
    "evicted",
    "evicted_bytes",
    "dead_lettered",
    "disk_full",
    "rejected",
    "split",
    "oversize",
)
#: `meta` keys that are not counters.
_META_SETTINGS = ("next_seq", "message_limit")
#: Dead letters kept for inspection; older ones are dropped first.
MAX_DEAD_LETTERS = 1000
#: Smallest useful bound: schema pages plus room for a few batches.
MIN_BYTES = 64 * 1024
#: SQLite's primary result code for "database or disk is full" (`sqlite3.SQLITE_FULL` from Python 3.11).
_SQLITE_FULL = 13

Seal = Callable[[Batch, int], bytes]
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY, priority INTEGER NOT NULL, created REAL NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_eviction ON outbox (priority, seq);
CREATE TABLE IF NOT EXISTS dead_letter (
    seq INTEGER PRIMARY KEY, reason TEXT NOT NULL, failed REAL NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS evicted_in_flight (seq INTEGER PRIMARY KEY, bytes INTEGER NOT NULL);
"""


class OutboxError(UserError):
    """The outbox database cannot be opened (path, permissions, file system, not a database)."""


class BatchRejectedError(Exception):
    """The batch could not be stored even after eviction; it is counted under `rejected`."""


class OutboxFullError(Exception):
    """A write the outbox must do (recording an acknowledgement) failed for lack of disk space, even after
    giving back its reserve; the caller keeps what it wanted to record and tries again later."""


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


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return bool(code & 0xFF == _SQLITE_FULL)
    return "is full" in str(exc)


class Outbox:
    """Signed batches, stored until acknowledged. Thread-safe; one `Outbox` per database file.

    `seal(batch, seq)` turns a batch into the bytes to store and publish (see `BatchSealer`); it runs inside
    the commit transaction, after `seq` is known. `free_space(directory)` says how many bytes the file
    system still has (statvfs; tests pass a smaller disk).
    """

    def __init__(
        self,
        path: Path,
        seal: Seal,
        max_bytes: int = 64 * 1024 * 1024,
        free_space: FreeSpace = free_space,
    ) -> None:
        if max_bytes < MIN_BYTES:
            raise ValueError(f"outbox max_bytes {max_bytes} is below the minimum {MIN_BYTES}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._seal = seal
        self._free_space = free_space
        self._last_size = 0  # bytes of the batch being committed, for eviction after a full error
        self._closed = False
        self._lock = threading.RLock()
        self._unsaved: dict[str, int] = {}  # counts whose own write failed, written with the next one
        self._transaction_has_unsaved = False
        self._in_flight: set[int] = set()
        self._evicted_in_flight = 0
        self._condition: str | None = None
        self._applied: Budget | None = None
        self.reserve = Reserve(self.path.with_name(self.path.name + "-reserve"))
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"{self.path}: cannot open the outbox: {exc}") from exc
        try:
            self._open()
        except sqlite3.Error as exc:
            # A full disk: the -shm index or the first WAL frames need room. Give back the reserve, retry.
            if not self.reserve.release():
                self._db.close()
                raise OutboxError(f"{self.path}: cannot open the outbox: {exc}") from exc
            try:
                self._open()
            except sqlite3.Error as again:
                self._db.close()
                raise OutboxError(f"{self.path}: cannot open the outbox: {again}") from again
        except OSError as exc:
            self._db.close()
            raise OutboxError(f"{self.path}: cannot open the outbox: {exc}") from exc
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        self._message_limit: int | None = meta.get("message_limit")
        self._counters = {key: value for key, value in meta.items() if key not in _META_SETTINGS}
        self._settle_evicted_in_flight()

    # --- schema, budget and transactions -----------------------------------------------------------

    def _open(self) -> None:
        self._db.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # only takes effect on a new file
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise OutboxError(
                f"{self.path}: the file system does not support SQLite WAL (journal mode {mode})"
            )
        self._db.execute("PRAGMA synchronous = FULL")
        # Debian's SQLite is built with SECURE_DELETE: every freed page is zeroed *through the WAL*, so
        # deleting an acknowledged 80 KB batch wrote 80 KB of zeros first, and on a full disk nothing could
        # be deleted at all. FAST zeroes deleted content inside b-tree pages only (no extra I/O) and leaves
        # freed overflow pages as they are until reused; the data was in the outbox anyway.
        self._db.execute("PRAGMA secure_delete = FAST")
        self._applied = None
        self._replan()
        with self._transaction():
            self._create_schema()

    def _create_schema(self) -> None:
        for statement in filter(str.strip, _SCHEMA.split(";")):
            self._db.execute(statement)
        self._db.executemany(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?, 0)",
            [("next_seq",)] + [(c,) for c in COUNTERS],
        )

    def _used(self) -> int:
        used = self.reserve.held()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                used += self.path.with_name(self.path.name + suffix).stat().st_size
        return used

    def budget(self) -> Budget:
        """The bound as of now: `max_bytes` or a share of what the file system can hold, the smaller."""
        try:
            available = self._free_space(self.path.parent)
        except OSError:
            available = self.max_bytes
        return plan_budget(self.max_bytes, available, self._used())

    def _replan(self) -> Budget:
        """Follow the file system's free space: apply the budget's limits and keep the reserve."""
        budget = self.budget()
        if budget != self._applied:
            self._db.execute(f"PRAGMA max_page_count = {budget.db_pages}")
            self._db.execute(f"PRAGMA wal_autocheckpoint = {budget.checkpoint_pages}")
            self._db.execute(f"PRAGMA journal_size_limit = {budget.wal_bytes}")
            self._applied = budget
        try:
            available = self._free_space(self.path.parent)
        except OSError:
            available = 0
        self.reserve.ensure(budget.reserve_bytes, available)
        return budget

    def _transaction(self) -> _Transaction:
        self._transaction_has_unsaved = False
        return _Transaction(self._db)

    def _bump(self, **deltas: int) -> None:
        """Add to persisted counters inside the caller's transaction (with any count not yet written)."""
        if not self._transaction_has_unsaved:
            self._transaction_has_unsaved = True
            for key, delta in self._unsaved.items():
                deltas[key] = deltas.get(key, 0) + delta
        for key, delta in deltas.items():
            if delta:
                self._db.execute("UPDATE meta SET value = value + ? WHERE key = ?", (delta, key))

    def _apply(self, **deltas: int) -> None:
        """Mirror persisted counter changes in memory once their transaction has committed."""
        if self._transaction_has_unsaved:
            self._unsaved.clear()  # already in `_counters`; now also on disk
        for key, delta in deltas.items():
            self._counters[key] = self._counters.get(key, 0) + delta

    def _write(self, action: Callable[[], _T]) -> _T:
        """Run a write transaction; on a full disk give back the reserve once and retry."""
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not _is_full(exc) or not self.reserve.release():
                raise
            self._set_condition("disk full: the outbox gave back its reserve to keep deleting")
            return action()

    def _set_condition(self, condition: str | None) -> None:
        """Remember why the outbox is degraded (None: it is not); one log line per change."""
        if condition == self._condition:
            return
        if condition is None:
            log.info("outbox: %s: room again, no more evictions", self.path)
        else:
            log.warning("outbox: %s: %s", self.path, condition)
        self._condition = condition

    @property
    def condition(self) -> str | None:
        """Why the outbox is degraded (full and evicting, rejecting, cannot record acknowledgements)."""
        return self._condition

    # --- the producer side -------------------------------------------------------------------------

    def commit(self, batch: Batch) -> int:
        """Seal and store `batch` durably; return its sequence number (of its first part, when it had to be
        split to fit the broker's message limit).

        Evicts per the module's policy when full; raises `BatchRejectedError` when the batch cannot fit.
        """
        with self._lock:
            try:
                return self._commit_part(batch)
            except _OversizeError as exc:
                halves = split_batch(batch)
                if halves is None:
                    return self._dead_letter_oversize(batch, exc.size)
                self._count_outside_transaction(split=1)
                first = self.commit(halves[0])
                self.commit(halves[1])
                return first

    def _commit_part(self, batch: Batch) -> int:
        with self._lock:
            budget = self._replan()
            evictions = 0
            checkpointed = used_reserve = False
            releases = self.reserve.releases
            while True:
                try:
                    seq = self._try_commit(batch, budget.max_batch)
                except _TooLargeError as exc:
                    self._reject(
                        f"batch of {exc.size} bytes (priority {batch.priority}) does not fit in the outbox: "
                        f"at most {budget.max_batch} bytes pass through its WAL ({budget.total} bytes in all)"
                    )
                except sqlite3.OperationalError as exc:
                    if not _is_full(exc):
                        raise
                    needed = max(self._last_size, PAGE_SIZE)
                    if not checkpointed:
                        # A WAL that cannot grow on a full disk is restarted from its start (no new
                        # space) by the first write after a complete checkpoint: try that first.
                        checkpointed = True
                        self._checkpoint()
                        continue
                else:
                    if evictions == 0 and self._condition is not None and self._has_room(budget):
                        self._set_condition(None)
                    return seq
                try:
                    evicted = bool(self._write(functools.partial(self._evict, needed, batch.priority)))
                except sqlite3.OperationalError as exc:
                    if not _is_full(exc):
                        raise
                    evicted = False  # a real full disk with no room even to delete: give up on this batch
                evictions += 1
                if not evicted and not used_reserve:
                    # nothing left to evict, the file system is full: the reserve (given back here or
                    # while counting this eviction) lets this batch in
                    used_reserve = True
                    if self.reserve.release() or self.reserve.releases > releases:
                        self._set_condition("disk full: the outbox gave back its reserve")
                        continue
                if not evicted:
                    self._reject(
                        f"batch of {needed} bytes (priority {batch.priority}) does not fit in the outbox "
                        f"({budget.total} bytes of at most {self.max_bytes}) even after eviction"
                    )
                self._set_condition(
                    f"full (max_bytes {self.max_bytes} or {DISK_SHARE:.0%} of the file system, the smaller): "
                    "evicting the oldest batches of the lowest priority"
                )

    def _has_room(self, budget: Budget) -> bool:
        """A quarter of the database's bound is free again (hysteresis: one log line per change)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return bool(budget.db_pages - pages + free >= budget.db_pages // 4)

    def _reject(self, reason: str) -> NoReturn:
        self._count_outside_transaction(rejected=1)
        self._set_condition(f"rejecting batches: {reason}")
        raise BatchRejectedError(reason)

    def _try_commit(self, batch: Batch, max_batch: int) -> int:
        self._last_size = 0
        with self._transaction():
            seq = self._db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]
            data = self._seal(batch, seq)
            self._last_size = len(data)
            if self._message_limit is not None and len(data) > self._message_limit:
                raise _OversizeError(len(data))
            if len(data) > max_batch:
                raise _TooLargeError(len(data))
            self._db.execute(
                "INSERT INTO outbox (seq, priority, created, data) VALUES (?, ?, ?, ?)",
                (seq, batch.priority, time.time(), data),
            )
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
            self._bump(committed=1)
        self._apply(committed=1)
        return int(seq)

    # --- the broker's message limit ------------------------------------------------------------------

    @property
    def message_limit(self) -> int | None:
        """The largest signed message the broker accepts (None: no limit known)."""
        return self._message_limit

    def set_message_limit(self, limit: int | None) -> None:
        """Split batches whose signed message exceeds `limit` bytes from now on (None: no limit)."""
        with self._lock:
            if limit == self._message_limit:
                return
            self._message_limit = limit
            if limit is None:
                log.info("outbox: %s: the broker states no message size limit", self.path)
            else:
                log.info("outbox: %s: batches above %d bytes are split to fit the broker", self.path, limit)
            try:
                with self._transaction():
                    if limit is None:
                        self._db.execute("DELETE FROM meta WHERE key = 'message_limit'")
                    else:
                        self._db.execute(
                            "INSERT OR REPLACE INTO meta (key, value) VALUES ('message_limit', ?)", (limit,)
                        )
            except sqlite3.OperationalError as exc:
                if not _is_full(exc):
                    raise
                # kept in memory; the uploader sets it again on every connection

    def refit(self, seq: int) -> int:
        """Split pending batch `seq` if its message exceeds the limit; how many batches now stand for it.

        For batches stored before the limit was known. The parts replace it in one transaction: the first
        keeps `seq` (never published: the uploader calls this before publishing), the others get new
        numbers. Parts that cannot fit, or a message that is not a telemetry batch, are dead-lettered.
        Raises `OutboxFullError` when the disk is too full to store the parts.
        """
        with self._lock:
            try:
                return int(self._write(functools.partial(self._refit, seq)))
            except sqlite3.OperationalError as exc:
                if not _is_full(exc):
                    raise
                raise OutboxFullError(f"{self.path}: disk full: cannot split batch {seq}") from exc

    def _refit(self, seq: int) -> int:
        limit = self._message_limit
        with self._transaction():
            row = self._db.execute("SELECT priority, data FROM outbox WHERE seq = ?", (seq,)).fetchone()
            if row is None or limit is None or len(row[1]) <= limit:
                return 0 if row is None else 1
            priority, data = row
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            try:
                queue = [batch_of_payload(decode_payload(unverified_payload(data)), priority)]
            except (MalformedMessageError, PayloadError) as exc:
                self._store_dead_letter(seq, f"{self._oversize_reason(len(data))} ({exc})", data)
                queue = []
                stored, splits, oversize = 0, 0, 1
            else:
                stored, splits, oversize = self._store_parts(queue, seq, priority, limit)
            deltas = {"split": splits, "committed": splits, "oversize": oversize, "dead_lettered": oversize}
            self._bump(**deltas)
        self._apply(**deltas)
        if oversize:
            log.warning(
                "outbox: %s: batch %d: %d part(s) above the broker's limit of %d bytes dead-lettered",
                self.path,
                seq,
                oversize,
                limit,
            )
        return stored

    def _store_parts(self, queue: list[Batch], seq: int, priority: int, limit: int) -> tuple[int, int, int]:
        """Seal and store `queue`'s batches, halving what does not fit; the first keeps `seq`. Inside the
        caller's transaction. Returns (stored, splits, dead-lettered)."""
        next_seq = self._db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]
        number: int | None = seq
        stored = splits = oversize = 0
        while queue:
            part = queue.pop(0)
            if number is None:
                number = next_seq
                next_seq += 1
            sealed = self._seal(part, number)
            if len(sealed) > limit:
                halves = split_batch(part)
                if halves is not None:
                    splits += 1
                    queue[0:0] = halves
                    continue  # `number` is still free: the first half takes it
                self._store_dead_letter(number, self._oversize_reason(len(sealed)), sealed)
                oversize += 1
            else:
                self._db.execute(
                    "INSERT INTO outbox (seq, priority, created, data) VALUES (?, ?, ?, ?)",
                    (number, priority, time.time(), sealed),
                )
                stored += 1
            number = None
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (next_seq,))
        return stored, splits, oversize

    def _oversize_reason(self, size: int) -> str:
        limit = self._message_limit
        return f"oversize: {size} bytes, above the broker's limit of {limit}, and cannot be split"

    def _store_dead_letter(self, seq: int, reason: str, data: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO dead_letter (seq, reason, failed, data) VALUES (?, ?, ?, ?)",
            (seq, reason, time.time(), data),
        )
        self._prune_dead_letters()

    def _prune_dead_letters(self) -> None:
        self._db.execute(
            "DELETE FROM dead_letter WHERE seq NOT IN "
            "(SELECT seq FROM dead_letter ORDER BY seq DESC LIMIT ?)",
            (MAX_DEAD_LETTERS,),
        )

    def _dead_letter_oversize(self, batch: Batch, size: int) -> int:
        """A batch (part) that cannot be split and does not fit the broker: dead-lettered, counted, logged."""

        def store() -> int:
            with self._transaction():
                seq = self._db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]
                data = self._seal(batch, seq)
                self._store_dead_letter(seq, self._oversize_reason(len(data)), data)
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
                self._bump(committed=1, dead_lettered=1, oversize=1)
            self._apply(committed=1, dead_lettered=1, oversize=1)
            return int(seq)

        seq = self._write(store)
        log.warning("outbox: %s: batch %d dead-lettered: %s", self.path, seq, self._oversize_reason(size))
        return seq

    def _evict(self, needed: int, priority: int) -> bool:
        """Delete rows worth at least `needed` bytes that `priority` may displace; False if none could go."""
        evicted = evicted_bytes = 0
        held: list[int] = []
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
                if row[0] in self._in_flight:
                    # paho still holds a copy: counted when we know whether it arrived
                    self._db.execute("INSERT OR REPLACE INTO evicted_in_flight VALUES (?, ?)", row)
                    held.append(row[0])
                else:
                    evicted += 1
                    evicted_bytes += row[1]
            self._bump(evicted=evicted, evicted_bytes=evicted_bytes)
        self._apply(disk_full=1, evicted=evicted, evicted_bytes=evicted_bytes)
        self._in_flight.difference_update(held)
        self._evicted_in_flight += len(held)
        if freed:
            self._checkpoint()
        return freed > 0

    def _checkpoint(self) -> None:
        """Move the WAL into the database now (not TRUNCATE: the WAL file's room is kept for deletes)."""
        with contextlib.suppress(sqlite3.OperationalError):  # else the next automatic checkpoint does it
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _count_outside_transaction(self, **deltas: int) -> None:
        for key, delta in deltas.items():
            self._unsaved[key] = self._unsaved.get(key, 0) + delta
            self._counters[key] = self._counters.get(key, 0) + delta
        try:
            with self._transaction():
                self._bump()
        except sqlite3.OperationalError:
            return  # still full: `_unsaved` is written by the next transaction that works
        self._apply()

    # --- the uploader side -------------------------------------------------------------------------

    def pending(self, limit: int, after_seq: int = -1) -> list[PendingBatch]:
        """Up to `limit` unacknowledged batches with `seq > after_seq`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, priority, data FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [PendingBatch(seq, priority, data) for seq, priority, data in rows]

    def published(self, seq: int) -> None:
        """The uploader handed batch `seq` to the MQTT client, which keeps a copy until the PUBACK."""
        with self._lock:
            self._in_flight.add(seq)

    def pending_count(self) -> int:
        """Number of batches waiting for acknowledgement (evicted ones still in flight included)."""
        with self._lock:
            return (
                int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]) + self._evicted_in_flight
            )

    def acknowledge(self, seq: int) -> bool:
        """Delete batch `seq` after the broker's PUBACK; False if it was not there (evicted, or acked)."""
        return self.acknowledge_many([seq]) == 1

    def acknowledge_many(self, seqs: Iterable[int]) -> int:
        """Delete several acknowledged batches in one transaction (one fsync); how many were there.

        A batch evicted while in flight counts as acknowledged after all. Raises `OutboxFullError` when the
        disk is too full to record it even after giving back the reserve.
        """
        seqs = list(seqs)
        with self._lock:
            try:
                deleted, late = self._write(functools.partial(self._acknowledge, seqs))
            except sqlite3.OperationalError as exc:
                if not _is_full(exc):
                    raise
                self._set_condition("disk full: acknowledgements cannot be recorded")
                raise OutboxFullError(
                    f"{self.path}: disk full: cannot record {len(seqs)} acknowledgements"
                ) from exc
            self._in_flight.difference_update(seqs)
            self._evicted_in_flight -= late
            return int(deleted + late)

    def _acknowledge(self, seqs: list[int]) -> tuple[int, int]:
        with self._transaction():
            deleted = sum(
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount for seq in seqs
            )
            late = 0
            if self._evicted_in_flight and deleted < len(seqs):
                late = sum(
                    self._db.execute("DELETE FROM evicted_in_flight WHERE seq = ?", (seq,)).rowcount
                    for seq in seqs
                )
            self._bump(acknowledged=deleted + late)
        self._apply(acknowledged=deleted + late)
        return deleted, late

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
                late = self._db.execute("DELETE FROM evicted_in_flight WHERE seq = ?", (seq,)).rowcount
                self._prune_dead_letters()
                self._bump(dead_lettered=moved + late)
            self._apply(dead_lettered=moved + late)
            self._in_flight.discard(seq)
            self._evicted_in_flight -= late
            return moved + late > 0

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, reason, failed, data FROM dead_letter ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def _settle_evicted_in_flight(self) -> None:
        """Batches evicted while in flight whose MQTT copy is gone (closing, or a previous run): evicted."""
        try:
            with self._transaction():
                count, size = self._db.execute(
                    "SELECT count(*), coalesce(sum(bytes), 0) FROM evicted_in_flight"
                ).fetchone()
                if not count:
                    return
                self._db.execute("DELETE FROM evicted_in_flight")
                self._bump(evicted=count, evicted_bytes=size)
        except sqlite3.OperationalError:
            return  # a full disk: settled at the next open
        self._apply(evicted=count, evicted_bytes=size)
        self._evicted_in_flight = 0

    # --- reporting and lifetime --------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """The persisted counters (see `COUNTERS`), as of the last completed transaction, and
        `evicted_in_flight`: evicted batches that may still arrive (not yet counted either way)."""
        with self._lock:
            counts = {key: self._counters.get(key, 0) for key in COUNTERS}
            counts["evicted_in_flight"] = self._evicted_in_flight
            return counts

    def next_seq(self) -> int:
        """The sequence number the next committed batch will get."""
        with self._lock:
            return int(self._db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0])

    def close(self) -> None:
        """Settle in-flight evictions, checkpoint the WAL, close the database; closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._settle_evicted_in_flight()
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as exc:
                log.warning(
                    "outbox: %s: checkpoint at close failed (%s); the WAL is replayed at next open",
                    self.path,
                    exc,
                )
            finally:
                self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _OversizeError(Exception):
    """Raised inside the commit transaction (rolling it back): the sealed batch exceeds the message limit."""

    def __init__(self, size: int) -> None:
        super().__init__(f"batch of {size} bytes")
        self.size = size


class _TooLargeError(Exception):
    """Raised inside the commit transaction (rolling it back): the sealed batch exceeds `max_batch`."""

    def __init__(self, size: int) -> None:
        super().__init__(f"batch of {size} bytes")
        self.size = size


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
