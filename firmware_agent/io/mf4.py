"""ASAM MF4 bus logging (CANedge and others) read in bulk, with numpy only: the CAN frames as columns.

`mdf4_blocks.py` parses the file's blocks; here each CAN bus-event channel group's `CAN_DataFrame`
(or `CAN_RemoteFrame`, `CAN_ErrorFrame`) structure becomes `FrameBatch` columns: the structure's
members `ID`, `IDE`, `DLC`/`DataLength`, `DataBytes` (fixed, or variable length in a VLSD channel
group or `##SD` blocks), `BusChannel`, `EDL`, `BRS`, with their conversions, and the group's master
channel as the time, plus the file's start time.

The groups read are those python-can's `MF4Reader` reads (bus event flag, records, a CAN bus source),
and the frames come out in its order: merged by timestamp, ties in group order (a stable sort). The
values are those asammdf's `MDF.get(..., raw=False)` gives, which the previous reader of this module
(and python-can's) used: `tests/unit/test_mf4_native.py` compares every frame of both CSS samples and of
files python-can and asammdf write (DT, deflate and transposed-deflate DZ, DL/HL lists, sorted and
unsorted, fixed and VLSD data bytes). Importing asammdf (and pandas with it) took 0.2 to 0.4 s of a
0.6 s decode; this reader needs neither.

A file this reader does not support (`Mdf4Unsupported`: MDF 3, zstd/LZ4 blocks, column storage, ...) is
read through asammdf when it is installed (the `mf4` extra), else it is one line naming the feature. A
file that is not MF4, is cut short or is corrupt is one line too. The whole file is read into memory
(a CANedge file holds tens of MB), then handed out in batches of `chunk_size` frames.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from firmware_agent.errors import UserError
from firmware_agent.io.frames import FrameBatch, ReadStats, concatenate

_KINDS = ("CAN_DataFrame", "CAN_RemoteFrame", "CAN_ErrorFrame")
#: Data bytes of the longest CAN frame (CAN XL; CAN FD: 64): more is a corrupt file, not a frame
MAX_DATA_BYTES = 2048
#: `##SI` source type "bus" and bus type "CAN"
_SOURCE_BUS = 2
_BUS_TYPE_CAN = 2


class Mf4Reader:
    """Batches of frames from an MF4 file's CAN bus-logging groups."""

    def __init__(
        self, path: Path, chunk_size: int, stats: ReadStats | None = None, compressed: bool = False
    ) -> None:
        self.path = path
        self.chunk_size = chunk_size
        self.stats = stats if stats is not None else ReadStats()
        #: a gzipped MF4 (`.mf4.gz`): decompressed into memory first
        self.compressed = compressed
        self._handed_out = 0  # frames yielded
        self._total = 0  # frames in the file, once read

    def fraction_done(self) -> float:
        """The share of the file's frames handed out so far (0 until the file is read, 1 at the end)."""
        return self._handed_out / self._total if self._total else 0.0

    def __iter__(self) -> Iterator[FrameBatch]:
        from firmware_agent.io.mdf4_blocks import Mdf4Error, Mdf4Unsupported

        source: Path | bytes = self.path
        if self.compressed:
            with gzip.open(self.path) as stream:
                source = stream.read()
        try:
            frames = read_frames(source)
        except Mdf4Unsupported as exc:
            yield from self._through_asammdf(source, str(exc))
            return
        except Mdf4Error as exc:
            raise UserError(f"{self.path}: cannot read as MF4: {exc}") from None
        if frames is None:
            return
        self._total = len(frames)
        for offset in range(0, len(frames), self.chunk_size):
            chunk = _take(frames, slice(offset, offset + self.chunk_size))
            self._handed_out = offset + len(chunk)
            yield chunk

    def _through_asammdf(self, source: Path | bytes, feature: str) -> Iterator[FrameBatch]:
        try:
            import asammdf  # noqa: F401
        except ImportError:
            raise UserError(
                f"{self.path}: MF4 feature not supported by the built-in reader: {feature};"
                " install asammdf to read it (pip install 'firmware-agent[mf4]')"
            ) from None
        yield from AsammdfReader(self.path, self.chunk_size, self.stats, source)


def read_frames(source: Path | bytes) -> FrameBatch | None:
    """Every CAN frame of an MF4 file in one batch, in python-can's order (None when it holds none).

    Raises `Mdf4Error` (broken or not MF4) and `Mdf4Unsupported` (a feature not read here).
    """
    from firmware_agent.io.mdf4_blocks import CG_BUS_EVENT, CG_REMOTE_MASTER, Mdf4File

    # conversions of a corrupt file can overflow: the values are what they are, without warnings on stderr
    with Mdf4File(source) as mdf, np.errstate(all="ignore"):
        start = mdf.header.start_timestamp()
        parts = []
        for data_group in mdf.data_groups():
            candidates = [
                group
                for group in data_group.channel_groups
                if group.flags & CG_BUS_EVENT
                and group.source is not None
                and group.source.source_type & _SOURCE_BUS
                and group.source.bus_type == _BUS_TYPE_CAN
            ]
            if not candidates:
                continue
            records = mdf.records(data_group)
            for group in candidates:
                rows = records.get(group.record_id)
                if rows is None or not len(rows) or rows.item_offset is not None:
                    continue
                if group.flags & CG_REMOTE_MASTER:
                    raise _unsupported("remote master channel groups (MDF 4.2)")
                batch = _group_frames(mdf, group, data_group.channel_groups, records, start)
                if batch is not None:
                    parts.append(batch)
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    merged = concatenate(parts)
    return _take(merged, np.argsort(merged.timestamp, kind="stable"))


def _unsupported(feature: str) -> Exception:
    from firmware_agent.io.mdf4_blocks import Mdf4Unsupported

    return Mdf4Unsupported(feature)


def _group_frames(mdf: Any, group: Any, siblings: list[Any], records: Any, start: float) -> FrameBatch | None:
    """The frames of one bus-event channel group (None when it holds no CAN frame structure)."""
    from firmware_agent.io.mdf4_blocks import CN_VLSD, MASTER_TYPES, Columns, Mdf4Error

    channels = mdf.channels(group)
    flat = list(_flatten(channels))
    names = {channel.name for channel in flat}
    kind = next((kind for kind in _KINDS if kind in names), None)
    if kind is None:
        return None
    structure = next(channel for channel in flat if channel.name == kind)
    if structure.array:
        raise _unsupported(f"channel array {kind}")
    members = {channel.name: channel for channel in reversed(structure.components or [])}
    columns = Columns(records[group.record_id].rows, group)
    rows = len(columns.rows)

    def column(name: str, default: int, dtype: Any) -> np.ndarray:
        member = members.get(f"{kind}.{name}")
        if member is None:
            return np.full(rows, default, dtype)
        if member.channel_type == CN_VLSD:
            raise _unsupported(f"variable-length {kind}.{name}")
        return np.asarray(columns.value(member)).astype(dtype)

    masters = [channel for channel in flat if channel.channel_type in MASTER_TYPES]  # asammdf: the last
    time = columns.value(masters[-1]) if masters else np.arange(rows, dtype=np.float64)
    timestamp = np.asarray(time).astype(np.float64) + start

    channel_numbers = column("BusChannel", -1, np.int64)
    payload = members.get(f"{kind}.DataBytes")
    if payload is not None and f"{kind}.DataLength" in members:
        length = column("DataLength", 0, np.int16)
        if payload.channel_type == CN_VLSD:
            signal = mdf.signal(payload, records, siblings)
            data, _ = columns.variable_bytes(payload, signal, MAX_DATA_BYTES)
        elif payload.bit_count > 8 * MAX_DATA_BYTES:
            size = payload.bit_count // 8
            raise Mdf4Error(f"{payload.name} of {size:,} bytes is no CAN frame (corrupt file)")
        else:
            data = np.asarray(columns.value(payload), np.uint8).reshape(rows, -1)
        width = data.shape[1]
        if width:  # the bytes past each frame's length are zero (our own writeable copy)
            data = np.require(data, np.uint8, ["C", "W", "O"])
            np.multiply(data, np.arange(width) < length[:, None], out=data)
        length = np.minimum(length, width).astype(np.int16)
    else:
        length = np.zeros(rows, np.int16)
        data = np.zeros((rows, 8), np.uint8)
    invalid = columns.invalid(structure)
    if invalid is not None:  # asammdf's get drops the records whose structure is marked invalid
        channel_numbers = channel_numbers[~invalid]
    numbers, codes = np.unique(channel_numbers, return_inverse=True)
    channels = ["" if number < 0 else str(int(number)) for number in numbers.tolist()]
    batch = _frame_batch(kind, column, timestamp, np.zeros(rows, np.int32), channels, length, data)
    if invalid is not None:
        batch = _take(batch, np.flatnonzero(~invalid))
    batch.channel = codes.astype(np.int32).reshape(-1)
    return batch


def _flatten(channels: list[Any]) -> Iterator[Any]:
    """Channels depth first, a structure before its members (asammdf's order of a group's channels)."""
    for channel in channels:
        yield channel
        if channel.components:
            yield from _flatten(channel.components)


class AsammdfReader:
    """The same frames read through asammdf (`MDF.get` per block of records): for what the built-in
    reader does not support, when asammdf is installed."""

    def __init__(
        self, path: Path, chunk_size: int, stats: ReadStats | None = None, source: Path | bytes | None = None
    ) -> None:
        self.path = path
        self.chunk_size = chunk_size
        self.stats = stats if stats is not None else ReadStats()
        #: what to read: the file (default), or its bytes (a decompressed `.mf4.gz`)
        self.source = path if source is None else source

    def __iter__(self) -> Iterator[FrameBatch]:
        try:
            from asammdf import MDF
            from asammdf.blocks.source_utils import Source
            from asammdf.blocks.v4_constants import FLAG_CG_BUS_EVENT
        except ImportError:
            raise UserError("reading this MF4 needs asammdf: pip install 'firmware-agent[mf4]'") from None
        try:
            mdf: Any = MDF(io.BytesIO(self.source) if isinstance(self.source, bytes) else str(self.source))
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
                    yield _asammdf_batch(mdf, index, kind, start, offset, self.chunk_size)
            elif groups:
                parts = [_asammdf_batch(mdf, index, kind, start, 0, count) for index, kind, count in groups]
                merged = concatenate(parts)
                whole = _take(merged, np.argsort(merged.timestamp, kind="stable"))
                for offset in range(0, len(whole), self.chunk_size):
                    yield _take(whole, slice(offset, offset + self.chunk_size))
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"{self.path}: cannot read as MF4: {exc or type(exc).__name__}") from exc
        finally:
            mdf.close()


def _asammdf_batch(mdf: Any, index: int, kind: str, start: float, offset: int, count: int) -> FrameBatch:
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
    timestamp = signal.timestamps.astype(np.float64) + start
    return _frame_batch(kind, column, timestamp, codes.astype(np.int32).reshape(-1), channels, length, data)


def _frame_batch(
    kind: str,
    column: Callable[[str, Any, Any], np.ndarray],
    timestamp: np.ndarray,
    channel: np.ndarray,
    channels: list[str],
    length: np.ndarray,
    data: np.ndarray,
) -> FrameBatch:
    """Frames of a `kind` structure (`CAN_DataFrame`, ...) from its members, read by `column`."""
    rows = len(timestamp)
    return FrameBatch(
        timestamp=timestamp,
        channel=channel,
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


def _take(batch: FrameBatch, rows: np.ndarray | slice) -> FrameBatch:
    """Rows `rows` of `batch` (an index array: copies; a slice: views)."""
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
