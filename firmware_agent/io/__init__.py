"""Capture files in and decoded records out, one module per format (python-can's `can/io` layout).

Readers, all yielding `FrameBatch`es (`frames.py`) in capture order: `candump_log.py` (candump `-L`,
vectorised: the hot path), `candump_console.py` (candump console output), `mf4.py` (MF4 bus logging in
bulk, with numpy: `mdf4_blocks.py` parses the blocks), `python_can.py` (ASC, BLF, TRC, CSV, SQLite,
through python-can's own readers). Writers of decoded frames (`writer.py`'s
`RecordWriter`): `jsonl.py`, `csv.py`, `parquet.py`. The simulator writes captures with python-can's
writers (`sim/outputs.py`).

`open_capture(path)` works out the format from the content (magic bytes, the shape of the first lines)
and falls back to the file extension; `-` reads candump output or a candump `-L` log from stdin. This is
the one format detection of the project: `decode` and the `replay:` source both go through it.
"""

from __future__ import annotations

import gzip
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from firmware_agent.errors import UserError
from firmware_agent.io.frames import FrameBatch, ReadStats

#: Frames per batch for the readers that do not read in byte blocks.
DEFAULT_CHUNK_SIZE = 200_000

_EXTENSIONS = {
    ".log": "candump -L",
    ".asc": "ASC",
    ".blf": "BLF",
    ".trc": "TRC",
    ".csv": "CSV",
    ".mf4": "MF4",
    ".db": "SQLite",
}
_CANDUMP_LOG = re.compile(rb"^\s*\(\s*\d+(?:\.\d+)?\)\s+\S+\s+[0-9A-Fa-f]{1,8}#", re.M)
_ASC = re.compile(rb"^\s*(?:date |base (?:hex|dec)|internal events logged|Begin Triggerblock)", re.M | re.I)
_TRC = re.compile(rb"^;\s*(?:\$FILEVERSION|Start time|-{3,}|#{3,})", re.M)
_CSV = re.compile(rb"^timestamp,arbitration_id", re.M)
_HEAD_BYTES = 64 << 10

FORMATS = ("candump -L", "candump output", "ASC", "BLF", "TRC", "CSV", "SQLite", "MF4")


def sniff_format(head: bytes, name: str) -> str | None:
    """The capture format of a file that starts with `head` (decompressed), or None if unknown."""
    if head.startswith(b"LOGG"):
        return "BLF"
    if head.startswith((b"MDF     ", b"UnFinMF ")):
        return "MF4"
    if head.startswith(b"SQLite format 3\0"):
        return "SQLite"
    if b"\0" in head[:4096]:
        return None
    first = next((line for line in head.splitlines() if line.strip()), b"")
    if _CANDUMP_LOG.match(first):
        return "candump -L"
    if _CSV.match(first):
        return "CSV"
    if _TRC.search(head[:4096]):
        return "TRC"
    if _ASC.search(head[:4096]):
        return "ASC"
    from firmware_agent.io.candump_console import SNIFF

    if SNIFF.match(first):
        return "candump output"
    return None


@dataclass
class Capture:
    """An opened capture: its format, its batches, what was skipped, and how far reading has got."""

    name: str
    format_name: str
    size: int | None
    stats: ReadStats = field(default_factory=ReadStats)
    _batches: Iterator[FrameBatch] | None = None
    _raw: BinaryIO | None = None
    #: for a reader that takes the file whole (MF4): the share of its frames handed out so far
    _fraction_done: Callable[[], float] | None = None

    def __iter__(self) -> Iterator[FrameBatch]:
        assert self._batches is not None
        try:
            yield from self._batches
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            # a .gz cut short or corrupted after its head: one line, like a broken head (`_gzip_head`)
            raise UserError(f"{self.name}: broken gzip file ({exc})") from None
        except OSError as exc:
            raise UserError(f"{self.name}: cannot read the capture: {exc.strerror or exc}") from None
        finally:
            self.close()

    def position(self) -> int | None:
        """Bytes of the file read so far, when known."""
        if self._fraction_done is not None and self.size is not None:
            return round(self.size * self._fraction_done())
        if self._raw is None or self._raw.closed:
            return None
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Close the underlying file."""
        if self._raw is not None and self._raw is not getattr(sys.stdin, "buffer", None):
            self._raw.close()


def capture_extension(path: Path) -> bool:
    """True when the file's extension (under a `.gz`) is one of a capture format's."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] in _EXTENSIONS


def detect_format(path: str) -> str:
    """The format `open_capture` would use for `path` (reads only the head; `-` is stdin)."""
    if path == "-":
        return "stdin"
    with _open_file(Path(path)) as raw:
        head = raw.read(_HEAD_BYTES)
        if head.startswith(b"\x1f\x8b"):
            head = _gzip_head(Path(path))
    return _format_of(Path(path), head)


def open_capture(path: str, strict: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Capture:
    """Open a capture file (or `-` for stdin) and pick its reader; raises `UserError` when it cannot."""
    from firmware_agent.io.candump_console import CandumpConsoleReader
    from firmware_agent.io.candump_log import CandumpLogReader
    from firmware_agent.io.python_can import PythonCanReader

    if path == "-":
        stream: BinaryIO = sys.stdin.buffer
        head = _read_head(stream)
        format_name = sniff_format(head, "stdin") or ("candump output" if not head.strip() else None)
        if format_name not in ("candump -L", "candump output"):
            raise UserError("stdin: expected candump output or a candump -L log")
        capture = Capture("stdin", format_name, None, _raw=None)
    else:
        file = Path(path)
        raw = _open_file(file)
        head = raw.read(_HEAD_BYTES)
        compressed = head.startswith(b"\x1f\x8b")
        if compressed:
            raw.seek(0)
            stream = gzip.open(raw)  # type: ignore[assignment]  # noqa: SIM115
            head = _read_head(stream)
        else:
            stream = raw
        format_name = _format_of(file, head)
        capture = Capture(str(file), format_name, file.stat().st_size, _raw=raw)
        if format_name not in ("candump -L", "candump output"):
            if not compressed:
                raw.seek(0)
            elif format_name != "MF4":  # the MF4 reader decompresses the file itself
                stream = gzip.open(file)  # type: ignore[assignment]  # noqa: SIM115
                head = b""
    if format_name == "candump -L":
        capture._batches = iter(CandumpLogReader(stream, capture.name, capture.stats, strict, head=head))
    elif format_name == "candump output":
        capture._batches = iter(CandumpConsoleReader(stream, capture.name, capture.stats, strict, head=head))
    elif format_name == "MF4":
        from firmware_agent.io.mf4 import Mf4Reader

        mf4 = Mf4Reader(Path(path), chunk_size, capture.stats, compressed)
        capture._batches, capture._fraction_done = iter(mf4), mf4.fraction_done
    else:
        reader_stream = stream if path != "-" and (compressed or format_name != "SQLite") else None
        capture._batches = iter(
            PythonCanReader(format_name, Path(path), reader_stream, chunk_size, capture.stats, strict)
        )
    return capture


def _open_file(path: Path) -> BinaryIO:
    try:
        if path.is_dir():
            raise UserError(f"{path}: is a directory, not a capture file")
        return open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None


def _read_head(stream: BinaryIO) -> bytes:
    read1 = getattr(stream, "read1", None)
    try:
        return read1(_HEAD_BYTES) if read1 is not None else stream.read(_HEAD_BYTES)
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read capture: {exc}") from None


def _gzip_head(path: Path) -> bytes:
    try:
        with gzip.open(path) as stream:
            return stream.read(_HEAD_BYTES)
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: broken gzip file ({exc})") from None


def _format_of(path: Path, head: bytes) -> str:
    found = sniff_format(head, str(path))
    if found is not None:
        return found
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    extension = suffixes[-1] if suffixes else ""
    if not head.strip() and extension in _EXTENSIONS:
        return _EXTENSIONS[extension]  # an empty capture: nothing to read either way
    if b"\0" in head[:4096] or _undecodable(head):
        raise UserError(
            f"{path}: binary file that is not a CAN capture this tool reads ({', '.join(FORMATS)})"
        )
    raise UserError(f"{path}: unknown capture format (expected one of {', '.join(FORMATS)})")


def _undecodable(head: bytes) -> bool:
    try:
        head[:4096].decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < 4090  # a multi-byte character cut at the end of the head is fine
    return False
