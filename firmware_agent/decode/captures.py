"""Decoding whole captures: read batches (in a background thread), decode, filter, write, count.

The reader runs one batch ahead in a thread: numpy and pyarrow release the GIL for their heavy loops,
so parsing the next block overlaps decoding and writing this one on a two-core machine. At most two
batches wait in the queue, which with the readers' block size keeps memory bounded however long the
capture is.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from firmware_agent.decode.catalog import BusBitrate, Catalog
from firmware_agent.decode.compiled import SKIP_INVALID_VALUE, SKIP_TOO_SHORT, SKIP_UNDEFINED_MUX, SKIP_UNPACK
from firmware_agent.decode.summary import Summary
from firmware_agent.decode.vectorised import DecodedGroup, Skipped, VectorDecoder
from firmware_agent.errors import UserError
from firmware_agent.io import open_capture
from firmware_agent.io.frames import FrameBatch, rebatched
from firmware_agent.io.writer import RecordWriter

T = TypeVar("T")
#: Skips that `--strict` turns into errors (unknown IDs, remote and error frames stay counted).
_SKIPS_FATAL_WHEN_STRICT = {SKIP_TOO_SHORT, SKIP_UNDEFINED_MUX, SKIP_UNPACK, SKIP_INVALID_VALUE}


@dataclass
class DecodeOptions:
    """What `firmware-agent decode` was asked to do (everything but the input and output)."""

    decode_choices: bool = True
    messages: set[str] | None = None
    signals: set[str] | None = None
    strict: bool = False
    #: frames per decoded batch; bounds memory (about 100 bytes per frame in flight)
    batch_frames: int = 200_000
    progress: Callable[[str, int | None, int | None, int], None] | None = None
    malformed: list[str] = field(default_factory=list)
    #: one per capture read, filled by `decode_captures`
    reports: list[CaptureReport] = field(default_factory=list)
    #: (bitrate, bus_bitrate, interval) for each capture's own `Summary` (rates and bus load per capture)
    summary_settings: tuple[int | None, Callable[[str], BusBitrate | None] | None, float | None] = (
        None,
        None,
        None,
    )


@dataclass
class CaptureReport:
    """What one capture held and what of it decoded, per channel (for the never-silent checks)."""

    name: str
    frames: Counter[str] = field(default_factory=Counter)
    decoded: Counter[str] = field(default_factory=Counter)
    #: this capture's own counts, rates and bus load (several captures: one table each)
    summary: Summary = field(default_factory=Summary)

    def count(self, batch: FrameBatch, groups: list[DecodedGroup]) -> None:
        """Account for one batch."""
        per_code = np.bincount(batch.channel, minlength=len(batch.channels)).tolist()
        for name, frames in zip(batch.channels, per_code, strict=False):
            if frames:
                self.frames[name] += frames
        for group in groups:
            self.decoded[group.channel] += len(group.rows)


def decode_captures(
    paths: Iterable[str],
    catalog: Catalog,
    options: DecodeOptions,
    writer: RecordWriter | None,
    summary: Summary,
) -> None:
    """Decode each capture in turn into `writer` (None: count only) and `summary`."""
    decoder = VectorDecoder(catalog, options.decode_choices, options.messages)
    for path in paths:
        capture = open_capture(path, strict=options.strict)
        bitrate, bus_bitrate, interval = options.summary_settings
        report = CaptureReport(capture.name, summary=Summary(bitrate, bus_bitrate, interval=interval))
        options.reports.append(report)
        frames_before = 0
        # a pipe (`candump -L can0 | decode -`) is decoded block by block as lines arrive, each batch's
        # records flushed at once; files are joined into large batches (fewer per-message steps)
        live = path == "-"
        batches = capture if live else rebatched(capture, options.batch_frames)
        flush = getattr(writer, "flush", None) if live else None
        for batch in _prefetch(batches):
            result = decoder.decode(batch)
            if options.strict:
                _fail_on_decode_errors(capture.name, batch, result.skipped, frames_before)
            summary.add(batch, result)
            report.summary.add(batch, result)
            report.count(batch, result.groups)
            if writer is not None:
                writer.write(_select_signals(result.groups, options.signals))
                if flush is not None:
                    flush()
            frames_before += len(batch)
            if options.progress is not None:
                options.progress(capture.name, capture.position(), capture.size, frames_before)
        stats = capture.stats
        if stats.malformed:
            lines = ", ".join(str(n) for n in stats.malformed_lines)
            more = ", ..." if stats.malformed > len(stats.malformed_lines) else ""
            options.malformed.append(
                f"{capture.name}: skipped {stats.malformed:,} malformed line(s) (line {lines}{more})"
            )


def _fail_on_decode_errors(name: str, batch: FrameBatch, skipped: list[Skipped], frames_before: int) -> None:
    for skip in skipped:
        if skip.reason in _SKIPS_FATAL_WHEN_STRICT:
            frame = batch.message(skip.first_row)
            raise UserError(
                f"{name}: frame {frames_before + skip.first_row + 1} ({frame.channel} "
                f"0x{frame.arbitration_id:X} {skip.message} at {frame.timestamp:.6f}): {skip.reason}"
            )


def _select_signals(groups: list[DecodedGroup], signals: set[str] | None) -> list[DecodedGroup]:
    if signals is None:
        return groups
    selected = []
    for group in groups:
        kept = {
            name: column
            for name, column in group.signals.items()
            if name in signals or f"{group.message.name}.{name}" in signals
        }
        if kept:
            selected.append(
                DecodedGroup(
                    group.message, group.channel, group.arbitration_id, group.rows, group.timestamp, kept
                )
            )
    return selected


def _prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate `items` in a background thread, at most `depth` ahead; its exceptions re-raise here."""
    pending: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        pending.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            pending.put(("done", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            pending.put(("error", exc))

    thread = threading.Thread(target=produce, name="capture-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = pending.get()
            if kind == "done":
                return
            if kind == "error":
                assert isinstance(value, BaseException)
                raise value
            yield value  # type: ignore[misc]
    finally:
        stop.set()
