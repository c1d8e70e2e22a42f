"""Frames in bulk: what every capture reader yields, a chunk at a time, as numpy columns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # python-can is imported late: see firmware_agent.decode.startup
    import can

#: How many malformed line numbers a reader remembers for the report.
MALFORMED_EXAMPLES = 5


@dataclass
class FrameBatch:
    """Consecutive frames of a capture, one numpy column per field, in capture order.

    `channel` holds indices into `channels` (the names as the reader gives them: `can0`, `0`, ...).
    `data` is a zero-padded byte matrix; row i holds `length[i]` payload bytes.
    """

    timestamp: np.ndarray  # float64 seconds
    channel: np.ndarray  # int32 index into `channels`
    channels: list[str]
    arbitration_id: np.ndarray  # uint32
    is_extended: np.ndarray  # bool
    is_fd: np.ndarray  # bool
    is_remote: np.ndarray  # bool
    is_error: np.ndarray  # bool
    length: np.ndarray  # int16 number of payload bytes
    data: np.ndarray  # uint8 (rows x width)
    #: bool: CAN FD frames sent with a bit-rate switch (BRS); None when the reader sees no such flag
    bitrate_switch: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.timestamp)

    def message(self, row: int) -> can.Message:
        """Row `row` as a python-can message (for tests and the per-frame path)."""
        import can

        return can.Message(
            timestamp=float(self.timestamp[row]),
            channel=self.channels[self.channel[row]],
            arbitration_id=int(self.arbitration_id[row]),
            is_extended_id=bool(self.is_extended[row]),
            is_fd=bool(self.is_fd[row]),
            is_remote_frame=bool(self.is_remote[row]),
            is_error_frame=bool(self.is_error[row]),
            data=bytes(self.data[row, : self.length[row]]),
            bitrate_switch=bool(self.bitrate_switch[row]) if self.bitrate_switch is not None else False,
            check=False,
        )

    def messages(self) -> Iterator[can.Message]:
        """Every row as a python-can message, in order (the per-frame path: replay, `profile learn`)."""
        for row in range(len(self.timestamp)):
            yield self.message(row)


@dataclass
class ReadStats:
    """What a reader skipped: malformed lines (count and the first few line numbers)."""

    malformed: int = 0
    malformed_lines: list[int] = field(default_factory=list)

    def add_malformed(self, line_number: int) -> None:
        """Count one malformed line, remembering its number if it is among the first few."""
        self.malformed += 1
        if len(self.malformed_lines) < MALFORMED_EXAMPLES:
            self.malformed_lines.append(line_number)


def channel_name(channel: object) -> str:
    """A reader's channel (int, str or None) as the name `--dbc CHANNEL=FILE` binds to."""
    return "" if channel is None else str(channel)


def batch_from_messages(messages: Sequence[can.Message]) -> FrameBatch:
    """Pack python-can messages into a `FrameBatch`."""
    count = len(messages)
    names: dict[str, int] = {}
    channel = np.empty(count, np.int32)
    width = max((len(m.data) for m in messages), default=0)
    data = np.zeros((count, max(width, 1)), np.uint8)
    for row, message in enumerate(messages):
        name = channel_name(message.channel)
        channel[row] = names.setdefault(name, len(names))
        if message.data:
            data[row, : len(message.data)] = np.frombuffer(bytes(message.data), np.uint8)
    return FrameBatch(
        timestamp=np.fromiter((m.timestamp for m in messages), np.float64, count),
        channel=channel,
        channels=list(names),
        arbitration_id=np.fromiter((m.arbitration_id for m in messages), np.uint32, count),
        is_extended=np.fromiter((m.is_extended_id for m in messages), bool, count),
        is_fd=np.fromiter((m.is_fd for m in messages), bool, count),
        is_remote=np.fromiter((m.is_remote_frame for m in messages), bool, count),
        is_error=np.fromiter((m.is_error_frame for m in messages), bool, count),
        length=np.fromiter((len(m.data) for m in messages), np.int16, count),
        data=data,
        bitrate_switch=np.fromiter((m.bitrate_switch for m in messages), bool, count),
    )


def chunked(messages: Iterable[can.Message], chunk_size: int) -> Iterable[FrameBatch]:
    """Group a stream of python-can messages into batches of at most `chunk_size` frames."""
    pending: list[can.Message] = []
    for message in messages:
        pending.append(message)
        if len(pending) >= chunk_size:
            yield batch_from_messages(pending)
            pending = []
    if pending:
        yield batch_from_messages(pending)


def concatenate(batches: Sequence[FrameBatch]) -> FrameBatch:
    """One batch holding `batches` in order (channel indices renumbered onto one list of names)."""
    if len(batches) == 1:
        return batches[0]
    names: list[str] = []
    channels = []
    for batch in batches:
        mapping = np.array([_index(names, name) for name in batch.channels] or [0], np.int32)
        channels.append(mapping[batch.channel])
    width = max(batch.data.shape[1] for batch in batches)
    data = np.zeros((sum(len(batch) for batch in batches), width), np.uint8)
    start = 0
    for batch in batches:
        data[start : start + len(batch), : batch.data.shape[1]] = batch.data
        start += len(batch)
    return FrameBatch(
        timestamp=np.concatenate([batch.timestamp for batch in batches]),
        channel=np.concatenate(channels),
        channels=names,
        arbitration_id=np.concatenate([batch.arbitration_id for batch in batches]),
        is_extended=np.concatenate([batch.is_extended for batch in batches]),
        is_fd=np.concatenate([batch.is_fd for batch in batches]),
        is_remote=np.concatenate([batch.is_remote for batch in batches]),
        is_error=np.concatenate([batch.is_error for batch in batches]),
        length=np.concatenate([batch.length for batch in batches]),
        data=data,
        bitrate_switch=_concatenate_optional([batch.bitrate_switch for batch in batches], batches),
    )


def _concatenate_optional(parts: list[np.ndarray | None], batches: Sequence[FrameBatch]) -> np.ndarray | None:
    if all(part is None for part in parts):
        return None
    return np.concatenate(
        [
            np.zeros(len(batch), bool) if part is None else part
            for part, batch in zip(parts, batches, strict=True)
        ]
    )


def _index(names: list[str], name: str) -> int:
    if name not in names:
        names.append(name)
    return names.index(name)


def rebatched(batches: Iterable[FrameBatch], min_frames: int) -> Iterable[FrameBatch]:
    """Join consecutive small batches until each holds at least `min_frames` (the last may hold fewer)."""
    pending: list[FrameBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += len(batch)
        if count >= min_frames:
            yield concatenate(pending)
            pending, count = [], 0
    if pending:
        yield concatenate(pending)
