"""ASAM MF4 bus logging (CANedge) read in bulk: each channel group's records as numpy arrays.

python-can's `MF4Reader` asks asammdf for 1,000 records at a time and builds a `can.Message` per frame
(8.9 s for the 150 k frames of the CSS J1939 sample, against 1.1 s for asammdf's own bus-logging
extraction). Here each bus-event channel group's `CAN_DataFrame` (and `CAN_RemoteFrame`,
`CAN_ErrorFrame`) structure is fetched with one `MDF.get` per block of `chunk_size` records and turned
into `FrameBatch` columns directly. The groups python-can reads are the ones read here, and frames come
out in python-can's order: merged by timestamp, ties in group order (a stable sort of the groups'
records). A file with one populated group (what CANedge writes per frame type) streams block by block;
with several, their records are merged in memory (a CANedge file holds tens of MB).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from firmware_agent.errors import UserError
from firmware_agent.io.frames import FrameBatch, ReadStats, concatenate

_KINDS = ("CAN_DataFrame", "CAN_RemoteFrame", "CAN_ErrorFrame")


class Mf4Reader:
    """Batches of frames from an MF4 file's CAN bus-logging groups."""

    def __init__(self, path: Path, chunk_size: int, stats: ReadStats | None = None) -> None:
        self.path = path
        self.chunk_size = chunk_size
        self.stats = stats if stats is not None else ReadStats()

    def __iter__(self) -> Iterator[FrameBatch]:
        try:
            from asammdf import MDF
            from asammdf.blocks.source_utils import Source
            from asammdf.blocks.v4_constants import FLAG_CG_BUS_EVENT
        except ImportError:
            raise UserError("reading MF4 needs asammdf: pip install 'firmware-agent[mf4]'") from None
        try:
            mdf: Any = MDF(str(self.path))
        except Exception as exc:  # asammdf raises anything on a broken file
            raise UserError(f"{self.path}: cannot read as MF4: {exc or type(exc).__name__}") from exc
        try:
            start = mdf.header.start_time.timestamp()
            groups = []
            for index, group in enumerate(mdf.groups):
                channel_group = group.channel_group
                source = channel_group.acq_source
                if not channel_group.flags & FLAG_CG_BUS_EVENT or channel_group.cycles_nr == 0:
                    continue
                if source is None or not source.source_type & Source.SOURCE_BUS:
                    continue
                if source.bus_type != Source.BUS_TYPE_CAN:
                    continue
                names = {channel.name for channel in group.channels}
                kind = next((kind for kind in _KINDS if kind in names), None)
                if kind is not None:
                    groups.append((index, kind, int(channel_group.cycles_nr)))
            if len(groups) == 1:
                index, kind, count = groups[0]
                for offset in range(0, count, self.chunk_size):
                    yield _batch(mdf, index, kind, start, offset, self.chunk_size)
            elif groups:
                parts = [_batch(mdf, index, kind, start, 0, count) for index, kind, count in groups]
                merged = concatenate(parts)
                order = np.argsort(merged.timestamp, kind="stable")
                whole = _take(merged, order)
                for offset in range(0, len(whole), self.chunk_size):
                    yield _take(whole, np.arange(offset, min(offset + self.chunk_size, len(whole))))
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"{self.path}: cannot read as MF4: {exc or type(exc).__name__}") from exc
        finally:
            mdf.close()


def _batch(mdf: Any, index: int, kind: str, start: float, offset: int, count: int) -> FrameBatch:
    signal = mdf.get(kind, index, record_offset=offset, record_count=count, raw=False)
    records = signal.samples
    fields = set(records.dtype.names or ())
    rows = len(records)

    def column(name: str, default: Any, dtype: Any) -> np.ndarray:
        key = f"{kind}.{name}"
        return records[key].astype(dtype) if key in fields else np.full(rows, default, dtype)

    channel_numbers = column("BusChannel", -1, np.int64)
    names, codes = np.unique(channel_numbers, return_inverse=True)
    channels = ["" if number < 0 else str(int(number)) for number in names.tolist()]
    if f"{kind}.DataBytes" in fields and f"{kind}.DataLength" in fields:
        length = records[f"{kind}.DataLength"].astype(np.int16)
        data = np.ascontiguousarray(records[f"{kind}.DataBytes"], dtype=np.uint8).reshape(rows, -1)
        width = data.shape[1]
        if width:
            data = np.where(np.arange(width) < length[:, None], data, 0).astype(np.uint8)
        length = np.minimum(length, width).astype(np.int16)
    else:
        length = np.zeros(rows, np.int16)
        data = np.zeros((rows, 8), np.uint8)
    return FrameBatch(
        timestamp=signal.timestamps.astype(np.float64) + start,
        channel=codes.astype(np.int32).reshape(-1),
        channels=channels,
        arbitration_id=(column("ID", 0, np.int64) & 0x1FFFFFFF).astype(np.uint32),
        is_extended=column("IDE", 0, np.int64).astype(bool),
        is_fd=column("EDL", 0, np.int64).astype(bool),
        is_remote=np.full(rows, kind == "CAN_RemoteFrame", bool),
        is_error=np.full(rows, kind == "CAN_ErrorFrame", bool),
        length=length,
        data=data,
        bitrate_switch=column("BRS", 0, np.int64).astype(bool),
    )


def _take(batch: FrameBatch, rows: np.ndarray) -> FrameBatch:
    return FrameBatch(
        timestamp=batch.timestamp[rows],
        channel=batch.channel[rows],
        channels=batch.channels,
        arbitration_id=batch.arbitration_id[rows],
        is_extended=batch.is_extended[rows],
        is_fd=batch.is_fd[rows],
        is_remote=batch.is_remote[rows],
        is_error=batch.is_error[rows],
        length=batch.length[rows],
        data=batch.data[rows],
        bitrate_switch=None if batch.bitrate_switch is None else batch.bitrate_switch[rows],
    )
