"""Wide csv output (`--format csv --wide`): one row per decoded frame, one column per signal.

Columns: `time` (ISO-8601 UTC, microseconds, `Z`), `timestamp` (float seconds), `channel`, `message`,
then `MESSAGE.Signal [unit]` for every signal of the messages that can appear (the databases' messages,
narrowed by `--message`/`--signal`), grouped by message, so that a row fills only its message's columns.

With `resample` (`--resample SECONDS`): one row per point of a time grid (multiples of SECONDS from
the first frame's time, rounded down, to the last frame) with every column; each holds the signal's
last value at or before the grid time ("last value held", no interpolation), empty before its first
frame. The grid follows capture order, which candump, ASC and BLF keep in time order.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from typing import TextIO

import numpy as np
from cantools.database.can import Message

from firmware_agent.decode.records import column_values, in_capture_order
from firmware_agent.decode.vectorised import DecodedGroup, SignalColumn
from firmware_agent.io.csv import csv_field


def iso_times(seconds: np.ndarray) -> list[str]:
    """ISO-8601 UTC text with microseconds for epoch seconds (`2018-08-02T16:14:47.000018Z`)."""
    micros = np.round(np.asarray(seconds, np.float64) * 1e6).astype(np.int64)
    return [text + "Z" for text in np.datetime_as_string(micros.astype("datetime64[us]"), unit="us").tolist()]


def wide_columns(
    messages: Iterable[Message], message_filter: set[str] | None, signal_filter: set[str] | None
) -> list[tuple[str, str, str]]:
    """(message, signal, unit) per column, message by message, each message once."""
    columns: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for message in sorted(messages, key=lambda m: (m.frame_id, m.name)):
        if message.name in seen or (message_filter is not None and message.name not in message_filter):
            continue
        seen.add(message.name)
        for signal in message.signals:
            if signal_filter is not None and not (
                signal.name in signal_filter or f"{message.name}.{signal.name}" in signal_filter
            ):
                continue
            columns.append((message.name, signal.name, signal.unit or ""))
    return columns


class WideCsvWriter:
    """One row per frame (or per grid time with `resample`), one column per signal."""

    def __init__(
        self, stream: TextIO, columns: list[tuple[str, str, str]], resample: float | None = None
    ) -> None:
        if resample is not None and not (resample > 0 and math.isfinite(resample)):
            raise ValueError("resample must be a positive number of seconds")
        self.stream = stream
        self.columns = columns
        self.resample = resample
        self.index = {(message, signal): position for position, (message, signal, _) in enumerate(columns)}
        names = [f"{message}.{signal}" + (f" [{unit}]" if unit else "") for message, signal, unit in columns]
        head = ["time", "timestamp"] + ([] if resample else ["channel", "message"])
        csv.writer(stream, lineterminator="\n").writerow(head + names)
        self._last = [""] * len(columns)
        self._last_time = np.full(len(columns), -np.inf)
        self._next_grid: float | None = None
        self.late = 0  # frames older than the last grid row already written (resample only)

    def write(self, groups: list[DecodedGroup]) -> None:
        """Write one batch."""
        if self.resample is not None:
            self._write_resampled(groups)
            return
        texts = [self._group_rows(group) for group in groups]
        self.stream.writelines(in_capture_order(groups, texts))

    def _group_rows(self, group: DecodedGroup) -> list[str]:
        positions = [self.index.get((group.message.name, name)) for name in group.signals]
        kept = [
            (position, column)
            for position, column in zip(positions, group.signals.values(), strict=True)
            if position is not None
        ]
        if not kept:
            return ["" for _ in range(len(group.rows))]
        kept.sort(key=lambda item: item[0])
        start, end = kept[0][0], kept[-1][0]
        cells = [[""] * len(group.rows) for _ in range(end - start + 1)]
        for position, column in kept:
            cells[position - start] = _texts(column)
        before = "," * start
        after = "," * (len(self.columns) - 1 - end)
        prefix = f",{csv_field(group.channel)},{csv_field(group.message.name)},{before}"
        times = iso_times(group.timestamp)
        stamps = group.timestamp.tolist()
        return [
            f"{time},{stamp!r}{prefix}{','.join(values)}{after}\n"
            for time, stamp, *values in zip(times, stamps, *cells, strict=True)
        ]

    def _write_resampled(self, groups: list[DecodedGroup]) -> None:
        if not groups:
            return
        step = self.resample
        assert step is not None
        first = min(float(group.timestamp.min()) for group in groups)
        last = max(float(group.timestamp.max()) for group in groups)
        if self._next_grid is None:
            self._next_grid = math.floor(first / step) * step
        written_up_to = self._next_grid - step
        self.late += sum(int(np.count_nonzero(group.timestamp < written_up_to)) for group in groups)
        count = math.floor((last - self._next_grid) / step + 1e-9) + 1
        grid = np.empty(0) if count <= 0 else np.round(self._next_grid + step * np.arange(count), 6)
        table = np.empty((len(grid), len(self.columns)), dtype=object)
        table[:] = self._last
        for group in groups:
            for name, column in group.signals.items():
                position = self.index.get((group.message.name, name))
                if position is None:
                    continue
                stamps = group.timestamp
                texts = np.array(_texts(column), dtype=object)
                if column.present is not None:
                    stamps, texts = stamps[column.present], texts[column.present]
                if not len(stamps):
                    continue
                if np.any(stamps[1:] < stamps[:-1]):
                    order = np.argsort(stamps, kind="stable")
                    stamps, texts = stamps[order], texts[order]
                at = np.searchsorted(stamps, grid, side="right") - 1
                held = (at >= 0) & (stamps[np.maximum(at, 0)] >= self._last_time[position])
                table[held, position] = texts[at[held]]
                if stamps[-1] >= self._last_time[position]:
                    self._last[position] = texts[-1]
                    self._last_time[position] = stamps[-1]
        times = iso_times(grid)
        self.stream.writelines(
            f"{time},{stamp!r},{','.join(row)}\n"
            for time, stamp, row in zip(times, grid.tolist(), table.tolist(), strict=True)
        )
        if count > 0:
            self._next_grid = float(grid[-1]) + step

    def flush(self) -> None:
        """Hand what is written to the reader now (live input)."""
        self.stream.flush()

    def close(self) -> None:
        """Flush the stream."""
        self.stream.flush()


def _texts(column: SignalColumn) -> list[str]:
    """Each row's csv cell: the value-table name or the number; empty where the signal is absent."""
    return ["" if value is None else csv_field(str(value)) for value in column_values(column)]
