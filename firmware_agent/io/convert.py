"""Captures from one format to another: our readers in blocks in, python-can's writers out.

Reading goes through `open_capture` (the one format detection, the same malformed-line handling as
`decode`), a batch of at most `CONVERT_BATCH_FRAMES` frames at a time, so memory stays bounded however
long the capture is. Writing goes through python-can's own writers (`can.io`), so a converted file is
exactly what python-can (and the tools that read its files) expects.

Channels: candump logs name them (`can0`), ASC, BLF and TRC number them. A name ending in a number
keeps it (`can1` -> 1, as python-can's `channel2int` does); the vehicle's bus names take their place in
`BUS_NAMES` (the simulator's numbering, `sim/outputs.py`); other names the next free number. CSV has no
channel column (read from it, frames go to `can0`). python-can's TRC writer cannot write remote or error
frames: those are counted as not written instead of vanishing with only a logged warning. The output is
written under a temporary name and renamed at the end: a conversion that fails leaves no half-written
file behind.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_agent.errors import UserError
from firmware_agent.io import open_capture

#: Frames per block read and written (about 100 bytes each in flight).
CONVERT_BATCH_FRAMES = 50_000

#: output format name -> (python-can module, writer class, channels are numbers)
WRITERS: dict[str, tuple[str, str, bool]] = {
    "candump -L": ("can.io.canutils", "CanutilsLogWriter", False),
    "ASC": ("can.io.asc", "ASCWriter", True),
    "BLF": ("can.io.blf", "BLFWriter", True),
    "TRC": ("can.io.trc", "TRCWriter", True),
    "CSV": ("can.io.csv", "CSVWriter", False),
    "MF4": ("can.io.mf4", "MF4Writer", True),
}
#: `--format` names and file extensions -> output format name
FORMAT_NAMES: dict[str, str] = {
    "log": "candump -L",
    "candump": "candump -L",
    "asc": "ASC",
    "blf": "BLF",
    "trc": "TRC",
    "csv": "CSV",
    "mf4": "MF4",
}
EXTENSIONS = tuple(f".{name}" for name in FORMAT_NAMES if name != "candump")


@dataclass
class ConvertReport:
    """What a conversion wrote and skipped."""

    source: str
    target: Path
    format_name: str
    frames: int = 0
    malformed: int = 0
    malformed_lines: list[int] = field(default_factory=list)
    #: remote and error frames the output format cannot hold (TRC)
    unwritable: int = 0

    def summary_line(self) -> str:
        """The one line `convert` prints on stderr."""
        line = f"{self.source} -> {self.target} ({self.format_name}): {self.frames:,} frames written"
        if self.malformed:
            numbers = ", ".join(str(n) for n in self.malformed_lines)
            more = ", ..." if self.malformed > len(self.malformed_lines) else ""
            line = f"{line}, {self.malformed:,} malformed line(s) skipped (line {numbers}{more})"
        else:
            line = f"{line}, 0 malformed lines skipped"
        if self.unwritable:
            line += (
                f", {self.unwritable:,} remote/error frame(s) not written "
                f"({self.format_name} cannot hold them)"
            )
        return line


def output_format(target: Path, forced: str | None) -> str:
    """The output format: `forced` (a `--format` name) or from the target's extension."""
    if forced is not None:
        try:
            return FORMAT_NAMES[forced.lower()]
        except KeyError:
            raise UserError(
                f"--format {forced}: unknown capture format (use {', '.join(sorted(FORMAT_NAMES))})"
            ) from None
    extension = target.suffix.lower()
    if extension not in EXTENSIONS:
        shown = extension or "no extension"
        raise UserError(f"{target}: unknown output format ({shown}; use {', '.join(EXTENSIONS)} or --format)")
    return FORMAT_NAMES[extension[1:]]


def convert_capture(
    source: str,
    target: Path,
    format_name: str,
    strict: bool = False,
    progress: Callable[[str, int | None, int | None, int], None] | None = None,
) -> ConvertReport:
    """Convert `source` (any capture `open_capture` reads, `-` for stdin) into `target` as `format_name`."""
    if source != "-" and target.exists() and Path(source).resolve() == target.resolve():
        raise UserError(f"{target}: the output is the input; give another file name")
    if not target.parent.is_dir():
        raise UserError(f"{target}: folder {target.parent} does not exist")
    capture = open_capture(source, strict=strict, chunk_size=CONVERT_BATCH_FRAMES)
    writer_class = _writer_class(format_name)
    numbered = WRITERS[format_name][2]
    holds_all = format_name != "TRC"
    report = ConvertReport(capture.name, target, format_name)
    partial = target.with_name(f".{target.name}.partial")
    numbers: dict[str, int] = {}
    try:
        writer = _open_writer(writer_class, partial, target)
        try:
            for batch in capture:
                for message in batch.messages():
                    if not holds_all and (message.is_remote_frame or message.is_error_frame):
                        report.unwritable += 1
                        continue
                    if numbered:
                        message.channel = _channel_number(message.channel, numbers)
                    elif not message.channel:
                        message.channel = "can0"  # from CSV (no channel): a candump line needs one
                    writer.on_message_received(message)
                    report.frames += 1
                if progress is not None:
                    progress(capture.name, capture.position(), capture.size, report.frames)
        finally:
            writer.stop()
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    report.malformed = capture.stats.malformed
    report.malformed_lines = list(capture.stats.malformed_lines)
    return report


def _writer_class(format_name: str) -> Any:
    module_name, class_name, _ = WRITERS[format_name]
    module = importlib.import_module(module_name)
    if format_name == "MF4":
        from firmware_agent.io.python_can import _mf4_module

        try:
            module = _mf4_module(module)
        except UserError:
            raise UserError("writing MF4 needs asammdf: pip install 'firmware-agent[mf4]'") from None
    return getattr(module, class_name)


def _open_writer(writer_class: Any, partial: Path, target: Path) -> Any:
    try:
        return writer_class(str(partial))
    except OSError as exc:
        raise UserError(f"{target}: cannot write: {exc.strerror or exc}") from None


def _channel_number(channel: object, numbers: dict[str, int]) -> int:
    """The 0-based channel number a numbered format gets for a reader's channel name."""
    name = "" if channel is None else str(channel)
    number = numbers.get(name)
    if number is not None:
        return number
    from can.util import channel2int

    from firmware_agent.vehicle import BUS_NAMES

    found = channel2int(name) if name else 0  # no channel (CSV): the first
    if found is None:
        if name in BUS_NAMES:
            found = BUS_NAMES.index(name)
        else:
            taken = set(numbers.values())
            found = max([len(BUS_NAMES) - 1, *taken]) + 1
    numbers[name] = found
    return found
