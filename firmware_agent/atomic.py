"""Write a file so that a crash or power cut leaves either the old content or the new, never a mix.

The one atomic write of the project (state files, keys, profiles, models, the DBC cache, health). The data
goes to a temporary file with a unique name in the same folder (two writers of one file never share it),
is flushed to the device (`fsync`), renamed over the target, and the folder itself is fsynced so that the
rename survives a power cut (ext4 and f2fs on an SD card otherwise may forget it). The temporary file gets
its final mode before any byte is written, so a secret is never readable by others, not even for an
instant. `durable=False` keeps the atomic rename but skips both fsyncs, for files rewritten every second
whose loss in a power cut costs nothing (the health summary): fsync there would only wear the SD card.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace `path` with `data` atomically (and durably unless `durable=False`); the file ends up with
    permissions `mode`. Raises `OSError` (the target is then untouched and no temporary file is left)."""
    path = Path(path)
    # The temporary name stays a str: pathlib on Python 3.12.0-3.12.6 interns every part of a path it
    # parses, for good, and a new unique name per write (health.json: every second) grew the daemon by
    # about 100 bytes per write, 9 MB a day (cpython#121780; `tests/unit/test_atomic.py`).
    descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, mode)  # mkstemp creates 0600; make it exactly `mode`
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        if durable:
            os.fsync(descriptor)
    except BaseException:
        os.close(descriptor)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(descriptor)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_directory(path.parent)


def fsync_directory(folder: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable; a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems (and Windows) refuse fsync on a folder; the rename is done regardless
    finally:
        os.close(descriptor)
