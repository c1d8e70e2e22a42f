"""Capture formats read through python-can's own readers: ASC (also .gz), BLF, TRC, CSV, SQLite.

(MF4 is read by `mf4.py`; `_mf4_module` loads python-can's MF4 support, with asammdf, for its writer.)
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from firmware_agent.errors import UserError
from firmware_agent.io.frames import FrameBatch, ReadStats, chunked

#: format name -> (python-can module, reader class, opens a text stream)
FORMATS: dict[str, tuple[str, str, bool]] = {
    "ASC": ("can.io.asc", "ASCReader", True),
    "BLF": ("can.io.blf", "BLFReader", False),
    "TRC": ("can.io.trc", "TRCReader", True),
    "CSV": ("can.io.csv", "CSVReader", True),
    "SQLite": ("can.io.sqlite", "SqliteReader", False),
}


class PythonCanReader:
    """Batches of frames from one of python-can's file readers."""

    def __init__(
        self,
        format_name: str,
        path: Path,
        stream: BinaryIO | None,
        chunk_size: int,
        stats: ReadStats | None = None,
        strict: bool = False,
    ) -> None:
        self.format_name = format_name
        self.path = path
        self._stream = stream
        self._chunk_size = chunk_size
        self.stats = stats if stats is not None else ReadStats()
        self.strict = strict
        self.bytes_read = 0

    def _reader(self) -> Any:
        module_name, class_name, text = FORMATS[self.format_name]
        module = importlib.import_module(module_name)
        reader_class = getattr(module, class_name)
        if self.format_name == "SQLite":
            return reader_class(str(self.path))
        if self.format_name == "ASC":
            return self._asc_reader(reader_class)
        if self._stream is not None:
            return reader_class(io.TextIOWrapper(self._stream, "utf-8", "replace") if text else self._stream)
        return reader_class(str(self.path))

    def _asc_reader(self, reader_class: type) -> Any:
        """python-can's ASCReader, but a frame line it cannot parse is skipped and counted, not fatal."""
        raw = self._stream if self._stream is not None else open(self.path, "rb")  # noqa: SIM115
        lines = _CountingLines(io.TextIOWrapper(raw, "utf-8", "replace"))
        owner = self

        class SkippingASCReader(reader_class):
            def _process_classic_can_frame(self, line: str, kwargs: dict[str, Any]) -> Any:
                return owner._parse_or_skip(super()._process_classic_can_frame, line, kwargs, lines.number)

            def _process_fd_can_frame(self, line: str, kwargs: dict[str, Any]) -> Any:
                return owner._parse_or_skip(super()._process_fd_can_frame, line, kwargs, lines.number)

        return SkippingASCReader(lines)

    def _parse_or_skip(self, parse: Any, line: str, kwargs: dict[str, Any], number: int) -> Any:
        try:
            return parse(line, kwargs)
        except (ValueError, IndexError) as exc:
            if self.strict:
                raise UserError(f"{self.path}:{number}: malformed ASC frame line ({exc})") from exc
            self.stats.add_malformed(number)
            return None

    def __iter__(self) -> Iterator[FrameBatch]:
        try:
            reader = self._reader()
            yield from chunked(reader, self._chunk_size)
        except UserError:
            raise
        except Exception as exc:  # python-can raises anything from struct.error to IndexError on bad files
            raise UserError(
                f"{self.path}: cannot read as {self.format_name}: {exc or type(exc).__name__}"
            ) from exc


def _mf4_module(module: Any) -> Any:
    """python-can's `can.io.mf4` with its asammdf support loaded (for `MF4Writer`)."""
    if getattr(module, "asammdf", None) is not None:
        return module
    try:
        importlib.import_module("asammdf")
    except ImportError:
        raise UserError("python-can's MF4 support needs asammdf: pip install 'firmware-agent[mf4]'") from None
    # python-can was imported while asammdf was hidden to keep start-up fast; load its MF4 support now.
    return importlib.reload(module)


class _CountingLines:
    """A text stream whose line iteration counts the lines handed out (for error line numbers)."""

    def __init__(self, stream: io.TextIOWrapper) -> None:
        self._stream = stream
        self.number = 0

    def __iter__(self) -> Iterator[str]:
        for line in self._stream:
            self.number += 1
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
