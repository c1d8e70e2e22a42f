"""Write a file so that a crash or power cut leaves either the old content or the new, never a mix.

The data goes to a temporary file in the same folder, is flushed to the device (`fsync`), renamed over the
target, and the folder itself is fsynced so that the rename survives a power cut (ext4 and f2fs on an SD
card otherwise may forget it). The temporary file gets its final mode before any byte is written, so a
secret is never readable by others, not even for an instant.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically and durably; the file ends up with permissions `mode`."""
    tmp = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(descriptor, mode)  # O_CREAT's mode is filtered by the umask and ignored if tmp existed
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    except BaseException:
        os.close(descriptor)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(descriptor)
    os.replace(tmp, path)
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
