"""A cache of parsed databases, so that each decode does not parse the same DBC files again.

Parsing the RAV4's two DBCs takes cantools about 0.12 s, a tenth of decoding a million frames;
unpickling the parsed `Database` takes 0.01 s. Entries live in `$XDG_CACHE_HOME/firmware-agent/dbc/`
(`~/.cache/...` by default), one file per database file, named by a hash of its resolved path and
keyed by that path, its size and modification time (ns), the cantools and Python versions, and
`CACHE_VERSION`. Any change to the file or an upgrade misses the cache, parses again and replaces the
entry; the warnings the first parse gave (loaded with `strict=False`) are stored with the database and
shown again on every hit.

Pickle runs code on load, so entries are read only from a folder this user created (mode 0700) and
only when the file is this user's and writable by no one else; anything unreadable, of another key or
stale is ignored and rewritten. `FIRMWARE_AGENT_NO_CACHE=1` turns the cache off. Disk use is bounded:
one entry (about 100-200 kB for a large DBC) per database path, at most `MAX_ENTRIES`; writing one more
deletes the least recently written.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware_agent.atomic import write_atomic

#: Bump when what is pickled changes shape.
CACHE_VERSION = 1
#: Entries kept; the oldest written go first.
MAX_ENTRIES = 64

Loader = Callable[[Path, Callable[[str], None]], Any]


def cache_folder() -> Path | None:
    """Where entries live, or None when caching is turned off."""
    if os.environ.get("FIRMWARE_AGENT_NO_CACHE"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "firmware-agent" / "dbc"


def load_cached(path: Path, load: Loader, warn: Callable[[str], None] | None) -> Any:
    """`load(path, warn)` through the cache: parsed once per file version, warnings replayed on hits."""
    folder = cache_folder()
    key = _key(path) if folder is not None else None
    if folder is None or key is None:
        return load(path, warn or _ignore)
    entry = folder / (hashlib.sha256(str(key[1]).encode()).hexdigest()[:32] + ".pickle")
    cached = _read(entry, key)
    if cached is not None:
        warnings, database = cached
    else:
        warnings = []
        database = load(path, warnings.append)
        _write(folder, entry, (key, warnings, database))
    if warn is not None:
        for line in warnings:
            warn(line)
    return database


def _ignore(line: str) -> None:
    del line


def _key(path: Path) -> tuple[object, ...] | None:
    import cantools

    try:
        resolved = path.resolve()
        info = resolved.stat()
    except OSError:
        return None  # the loader reports it
    version = getattr(cantools, "__version__", "?")
    return (CACHE_VERSION, str(resolved), info.st_size, info.st_mtime_ns, version, sys.version_info[:2])


def _read(entry: Path, key: tuple[object, ...]) -> tuple[list[str], Any] | None:
    try:
        with entry.open("rb") as source:
            info = os.fstat(source.fileno())
            if not _private(info) or not _private(entry.parent.stat()):
                return None
            stored_key, warnings, database = pickle.load(source)
    except Exception:  # missing, truncated, or from an incompatible version: parse again
        return None
    if stored_key != key:
        return None
    return warnings, database


def _private(info: os.stat_result) -> bool:
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _write(folder: Path, entry: Path, value: tuple[object, ...]) -> None:
    """Write atomically (a reader sees the old entry or the new one); failures only lose the cache."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(entry, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), 0o600)
        entries = sorted(folder.glob("*.pickle"), key=lambda path: path.stat().st_mtime_ns)
        for old in entries[: max(0, len(entries) - MAX_ENTRIES)]:
            old.unlink(missing_ok=True)
    except (OSError, pickle.PicklingError, RecursionError, TypeError, AttributeError):
        pass
