"""How much of its file system the outbox may use, and a reserve that lets it delete on a full disk.

A car computer's state partition is small and shared. The outbox must stay below `max_bytes` *and* below a
share of what the file system can hold, counting everything SQLite keeps on disk: the database file, the
write-ahead log (which grows by up to `wal_autocheckpoint` pages plus one transaction between checkpoints)
and the shared-memory index. `plan_budget()` splits one total into those parts; the outbox re-plans on
every commit, so the bound follows the free space (another process filling the disk shrinks it).

Why deleting can fail on a full disk, and what avoids it (SQLite 3.40, WAL mode): a DELETE writes the
changed b-tree pages to the WAL. After a complete checkpoint the next writer restarts the WAL at its start
and overwrites the frames in place (PASSIVE/FULL/RESTART never shrink the file; only TRUNCATE and
`journal_size_limit` do). So once the WAL file exists at its working size, deletes and eviction need no new
disk space. The WAL is kept at that size (`journal_size_limit` = its share), never truncated while the
agent runs. What is left, a WAL truncated at the last clean close or a `-shm` file to create on a full
disk, is covered by a small reserve file next to the database that the outbox deletes when a write fails
with `SQLITE_FULL` and makes again once there is room.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PAGE_SIZE = 4096
#: Share of the file system (free space plus what the outbox holds) the outbox may use; the rest is for
#: the health file, the campaign files and whoever else writes there.
DISK_SHARE = 0.8
#: The WAL's share of the total, and its limits: 8 pages at least, 2 MiB at most (256 pages between
#: automatic checkpoints, SQLite's own default was 1000).
WAL_SHARE = 0.25
MIN_WAL_BYTES = 8 * PAGE_SIZE
MAX_WAL_BYTES = 512 * PAGE_SIZE
#: The `-shm` index: one 32 KiB region covers a WAL of up to 4096 frames, far more than ours.
SHM_BYTES = 32 * 1024
#: The reserve file: an eighth of the total, at most 512 KiB; on a 2 MiB disk that is room for the `-shm`
#: index and one 60 KB batch through the WAL after a restart on a completely full disk.
MAX_RESERVE_BYTES = 512 * 1024
#: Smallest database: the schema's pages plus a few rows.
MIN_DB_PAGES = 8

#: `free_space(directory) -> bytes` an unprivileged writer may still use there.
FreeSpace = Callable[[Path], int]


def free_space(directory: Path) -> int:
    """Bytes still available to unprivileged writers on the file system of `directory` (statvfs)."""
    stat = os.statvfs(directory)
    return int(stat.f_bavail) * int(stat.f_frsize)


@dataclass(frozen=True)
class Budget:
    """How one total is split. `total` = database + WAL + shm + reserve, all counted."""

    total: int
    db_pages: int  # SQLite `max_page_count`
    wal_bytes: int  # `journal_size_limit`: the WAL file is kept at up to this size
    checkpoint_pages: int  # `wal_autocheckpoint`
    reserve_bytes: int
    max_batch: int  # a larger sealed batch could not go through the WAL within the bound: rejected

    @property
    def db_bytes(self) -> int:
        return self.db_pages * PAGE_SIZE


def plan_budget(max_bytes: int, available: int, used: int) -> Budget:
    """The split for an outbox limited to `max_bytes` that holds `used` bytes on a file system with
    `available` bytes free: the total is `max_bytes` or `DISK_SHARE` of what it could hold, the smaller."""
    total = min(max_bytes, int(DISK_SHARE * (max(available, 0) + max(used, 0))))
    reserve = min(MAX_RESERVE_BYTES, total // 8) // PAGE_SIZE * PAGE_SIZE
    wal = min(MAX_WAL_BYTES, max(MIN_WAL_BYTES, int(total * WAL_SHARE))) // PAGE_SIZE * PAGE_SIZE
    wal_pages = wal // PAGE_SIZE
    checkpoint_pages = max(1, wal_pages // 4)
    db_pages = max(MIN_DB_PAGES, (total - wal - reserve - SHM_BYTES) // PAGE_SIZE)
    # A transaction adds its pages to a WAL that may already hold `checkpoint_pages`; the b-tree, index
    # and meta pages of an insert come on top of the batch's own overflow pages.
    max_batch = max(PAGE_SIZE, (wal_pages - checkpoint_pages - 3) * PAGE_SIZE)
    return Budget(total, db_pages, wal, checkpoint_pages, reserve, max_batch)


class Reserve:
    """A file of `size` bytes kept beside the database, given back to the file system when SQLite needs
    room to delete (`release()`), made again when there is room (`ensure()`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.releases = 0

    def held(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def ensure(self, size: int, available: int) -> bool:
        """Make the reserve `size` bytes if the file system has room for it and as much again."""
        held = self.held()
        if held >= size or size <= 0:
            return True
        if available < 2 * (size - held):
            return False
        try:
            with self.path.open("ab") as stream:
                # Real bytes, not a hole: a sparse file would reserve nothing on tmpfs or ext4.
                stream.write(b"\0" * (size - held))
                stream.flush()
                os.fsync(stream.fileno())
        except OSError:
            self.release()
            return False
        return True

    def release(self) -> bool:
        """Give the reserve back; True if there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError:
            return False
        self.releases += 1
        return True
