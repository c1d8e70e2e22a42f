"""ASAM MDF 4.x files read with the standard library and numpy: the blocks that bus logging needs.

Every block starts with a 24-byte header (`##XX`, 4 reserved bytes, uint64 length, uint64 link count),
then its links (uint64 file offsets, 0 for none), then its data. What is read here:

- `##ID` (64 bytes at offset 0): `MDF     ` or `UnFinMF ` (unfinalised: CANedge loggers write those),
  the version (4.00 to 4.2x) and, from 4.10, the unfinalised flags: cycle counts not updated (counted
  from the records instead), the last `##DT` block's length not updated (it runs to the next block or
  the end of the file).
- `##HD` header: the first data group, the start time (ns since 1970, time zone and DST offsets, flags).
- `##DG` data group: its channel groups, its data, the record id size (0: sorted, one channel group;
  1, 2, 4 or 8: unsorted, every record prefixed by its channel group's record id).
- `##CG` channel group: record id, cycle count, flags (VLSD, bus event), record and invalidation bytes,
  acquisition name and `##SI` source (type, bus type, name).
- `##CN` channel: type (fixed, VLSD, master, virtual master, virtual data), data type, byte and bit offset,
  bit count, flags, invalidation bit, `##TX`/`##MD` name, `##CC` conversion, data link (the signal data of
  a VLSD channel: `##SD` blocks or a VLSD channel group), and a composition (a structure's members, as
  CANedge's `CAN_DataFrame` with `.ID`, `.IDE`, `.DLC`, `.DataLength`, `.DataBytes`, `.BusChannel`, ...).
- `##CC` conversions applied to values: identity, linear, rational, value-to-value tables with and
  without interpolation, range-to-value (the numeric ones; text conversions are not supported).
- Data: `##DT`/`##SD` blocks, `##DZ` (zlib deflate, and transposed deflate), `##DL` lists (chained) and
  the `##HL` header list in front of them.

Not supported (`Mdf4Unsupported`, which names the feature): MDF 3, zstd/LZ4 `##DZ` (MDF 4.2), column
storage (`##LD`/`##DV`/`##DI`), remote masters, channel arrays and nested structures in the values read,
text conversions of the values read, an unfinalised data list.

Values follow what asammdf computes (its `MDF.get(..., raw=False)`): integers are read little or big
endian from `ceil((bit offset + bit count) / 8)` bytes, shifted and masked; conversions use the same
numpy expressions in the same order, so converted times are the same float64 values to the bit.

The records of an unsorted data group are found by walking them in order (where a record starts
depends on the id of the one before), in a tight Python loop that only appends each record's start:
9 to 12 ms for the 150 k records of CSS's J1939 sample. The alternatives measured on that file were
slower: pointer jumping over every byte that could start a record (0.1 to 0.27 s, because misaligned
chains run parallel to the true one and survive pruning), `re.findall` over an alternation of record
shapes (23 to 43 ms), and chasing a numpy-built next-record table at C level through
`array.extend(takewhile(..., map(table.__getitem__, chain)))` (20 ms, plus 65 ms to build the table).
Everything after the walk, the fields of every record, is numpy.
"""

from __future__ import annotations

import mmap
import re
import struct
import zlib
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# channel types (cn_type)
CN_FIXED = 0
CN_VLSD = 1
CN_MASTER = 2
CN_VIRTUAL_MASTER = 3
CN_VIRTUAL = 6
MASTER_TYPES = (CN_MASTER, CN_VIRTUAL_MASTER)
# data types (cn_data_type)
DT_UINT_LE, DT_UINT_BE, DT_INT_LE, DT_INT_BE, DT_FLOAT_LE, DT_FLOAT_BE = range(6)
DT_BYTES = 10
_SIGNED = (DT_INT_LE, DT_INT_BE)
_BIG_ENDIAN = (DT_UINT_BE, DT_INT_BE, DT_FLOAT_BE)
# flags
CG_VLSD = 0x1
CG_BUS_EVENT = 0x2
CG_REMOTE_MASTER = 0x8
CN_ALL_INVALID = 0x1
CN_INVALIDATION_PRESENT = 0x2
HD_LOCAL_TIME = 0x1
UNFIN_CYCLE_COUNTS = 0x1
UNFIN_LAST_DT_LENGTH = 0x4
UNFIN_LAST_DL = 0x10
# conversion types (cc_type)
CC_IDENTITY, CC_LINEAR, CC_RATIONAL, CC_ALGEBRAIC, CC_TABLE_INTERPOLATED, CC_TABLE, CC_RANGE_TABLE = range(7)
_CC_NAMES = {
    7: "value to text",
    8: "range to text",
    9: "text to value",
    10: "text to text",
    11: "bitfield text",
}

_HEADER = struct.Struct("<4s4xQQ")
_ZIP_NAMES = {2: "zstd", 3: "transposed zstd", 4: "LZ4", 5: "transposed LZ4"}


class Mdf4Error(Exception):
    """The file is not MF4 or is broken: a message of one line, without the file name."""


class Mdf4Unsupported(Mdf4Error):
    """A valid MF4 file that uses a feature this reader does not implement (the message names it)."""


@dataclass
class Conversion:
    """A `##CC` numeric conversion: its type and its parameters (`cc_val`)."""

    kind: int
    values: tuple[float, ...]

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """The physical values of `raw`, computed as asammdf's `ChannelConversion.convert` does."""
        values = self.values
        if self.kind == CC_IDENTITY:
            return raw
        if self.kind == CC_LINEAR:
            offset, factor = values[0], values[1]
            if (factor, offset) == (1, 0):
                return raw
            converted = raw * factor
            if offset:
                converted += offset
            return converted
        if self.kind == CC_RATIONAL:
            p1, p2, p3, p4, p5, p6 = values[:6]
            if (p1, p3, p4, p5) == (0, 0, 0, 0):
                return raw * (p2 / p6) if p2 != p6 else raw
            if (p2, p3, p4, p6) == (0, 0, 0, 0):
                return raw * (p1 / p5) if p1 != p5 else raw
            return (p1 * raw**2 + p2 * raw + p3) / (p4 * raw**2 + p5 * raw + p6)
        if self.kind in (CC_TABLE_INTERPOLATED, CC_TABLE):
            pairs = np.array(values[: len(values) // 2 * 2], np.float64).reshape(-1, 2)
            keys, phys = pairs[:, 0], pairs[:, 1]
            if self.kind == CC_TABLE_INTERPOLATED:
                return np.asarray(np.interp(raw, keys, phys))
            upper = np.searchsorted(keys, raw)
            upper[upper >= len(keys)] = len(keys) - 1
            lower = upper - 1
            lower[lower < 0] = 0
            nearer_lower = np.abs(raw - keys[upper]) >= np.abs(raw - keys[lower])
            return np.where(nearer_lower, phys[lower], phys[upper])
        if self.kind == CC_RANGE_TABLE:
            count = (len(values) - 1) // 3
            triples = np.array(values[: count * 3], np.float64).reshape(-1, 3)
            lower_keys, upper_keys, phys = triples[:, 0], triples[:, 1], triples[:, 2]
            first = np.searchsorted(lower_keys, raw, side="right") - 1
            if raw.dtype.kind == "f":
                second = np.searchsorted(upper_keys, raw, side="right")
            else:
                second = np.searchsorted(upper_keys, raw, side="right") - 1
            converted = np.full(len(raw), values[-1], phys.dtype)
            same = first == second
            converted[same] = phys[first[same]]
            return converted
        raise Mdf4Unsupported(f"{conversion_name(self.kind)} conversion")


def conversion_name(kind: int) -> str:
    """A conversion type as the standard names it."""
    return _CC_NAMES.get(kind, "algebraic" if kind == CC_ALGEBRAIC else f"type {kind}")


@dataclass
class Source:
    """A `##SI` source: where a channel group's values come from."""

    name: str
    source_type: int
    bus_type: int


@dataclass
class Channel:
    """A `##CN` channel; `components` holds a structure's members (None when it is not a structure)."""

    name: str
    channel_type: int
    sync_type: int
    data_type: int
    bit_offset: int
    byte_offset: int
    bit_count: int
    flags: int
    invalidation_bit: int
    conversion: Conversion | None
    data_link: int
    components: list[Channel] | None = None
    #: a composition this reader does not read (a channel array, `##CA`)
    array: bool = False


@dataclass
class ChannelGroup:
    """A `##CG` channel group (asammdf's "group"; `index` is its number there)."""

    index: int
    address: int
    record_id: int
    cycle_count: int
    flags: int
    data_bytes: int
    invalidation_bytes: int
    acquisition_name: str
    source: Source | None
    first_channel: int

    @property
    def record_size(self) -> int:
        """Bytes of a record after its record id: values and invalidation bits."""
        return self.data_bytes + self.invalidation_bytes


@dataclass
class DataGroup:
    """A `##DG` data group: its channel groups share one data stream."""

    address: int
    record_id_size: int
    data_link: int
    channel_groups: list[ChannelGroup]


@dataclass
class Records:
    """The records of one channel group.

    `rows` holds fixed-length records (count x record size, uint8). A VLSD channel group's records are
    variable-length items instead: `item_offset` (where each item sits in the group's signal data, the
    offset its VLSD channel stores), and `item_start`/`item_length` locate its bytes in `buffer`.
    """

    rows: np.ndarray
    item_offset: np.ndarray | None = None
    item_start: np.ndarray | None = None
    item_length: np.ndarray | None = None
    buffer: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows) if self.item_offset is None else len(self.item_offset)


@dataclass
class Header:
    """The `##HD` start time."""

    start_ns: int
    tz_offset_min: int
    dst_offset_min: int
    time_flags: int

    def start_timestamp(self) -> float:
        """The start as POSIX seconds, as asammdf's `header.start_time.timestamp()` gives it.

        That goes through a `datetime` (microseconds); with the local-time flag the stored time is taken
        as the machine's local time, as asammdf (and python-can's MF4 writer, which sets it) do.
        """
        seconds = self.start_ns / 10**9
        try:
            if self.time_flags & HD_LOCAL_TIME:
                zone = timezone.utc
            else:
                zone = timezone(timedelta(minutes=self.tz_offset_min + self.dst_offset_min))
            try:
                start = datetime.fromtimestamp(seconds, zone)
            except (OverflowError, OSError, ValueError):
                start = datetime.fromtimestamp(0, zone) + timedelta(seconds=seconds)
            if self.time_flags & HD_LOCAL_TIME:
                start = start.replace(tzinfo=None)
            return start.timestamp()
        except (OverflowError, OSError, ValueError) as exc:
            raise Mdf4Error(f"the ##HD start time cannot be read: {exc} (corrupt file)") from None


@dataclass
class _Signal:
    """Where the items a VLSD channel points at are: an `##SD` stream, or a VLSD channel group."""

    stream: np.ndarray | None = None
    records: Records | None = None


class Mdf4File:
    """An MDF 4.x file opened for reading its blocks (`close()` when done)."""

    def __init__(self, source: Path | bytes) -> None:
        """Open `source`: a file (memory-mapped), or the bytes of one (a decompressed `.mf4.gz`)."""
        self._texts: dict[int, str] = {}
        self._conversions: dict[int, Conversion | None] = {}
        self._sources: dict[int, Source | None] = {}
        self._addresses: list[int] = []
        self._file: BinaryIO | None = None
        self._map: mmap.mmap | bytes | None = None
        try:
            if isinstance(source, bytes):
                self._map = source
                self.size = len(source)
            else:
                self._file = open(source, "rb")  # noqa: SIM115  # closed by close()
                self.size = self._file.seek(0, 2)
            if self.size < 64 + 24:
                raise Mdf4Error(f"too short for an MF4 file ({self.size} bytes)")
            if self._file is not None:
                self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            self._read_identification()
        except BaseException:
            self.close()
            raise

    def _read_identification(self) -> None:
        identification = self.map[:64]
        if identification[:8] not in (b"MDF     ", b"UnFinMF "):
            raise Mdf4Error("not an MF4 file (no MDF identification block)")
        found = re.fullmatch(rb"([0-9])\.([0-9]{2})[ \0]*", identification[8:16])
        if found is None:
            raise Mdf4Error("not an MF4 file (no MDF version in the identification block)")
        self.version = int(found.group(1)) * 100 + int(found.group(2))
        if self.version < 400:
            raise Mdf4Unsupported(f"MDF version {self.version / 100:.2f} (only 4.x is read)")
        if self.version >= 500:
            raise Mdf4Error(f"MDF version {self.version / 100:.2f} is not MF4 (4.x)")
        self.unfinalised = struct.unpack_from("<H", identification, 60)[0] if self.version >= 410 else 0
        if self.unfinalised & UNFIN_LAST_DL:
            raise Mdf4Unsupported("unfinalised data list (the last ##DL block is not updated)")
        _, links, data = self._block(64, (b"##HD",), links=1, data=13)
        start_ns, tz_offset, dst_offset, time_flags = struct.unpack_from("<QhhB", data)
        self.header = Header(start_ns, tz_offset, dst_offset, time_flags)
        self._first_data_group = links[0]

    @property
    def map(self) -> mmap.mmap | bytes:
        """The file's bytes."""
        assert self._map is not None
        return self._map

    def close(self) -> None:
        """Release the file."""
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        self._map = None
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> Mdf4File:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- blocks -------------------------------------------------------------------------------------

    def _block(
        self, address: int, kinds: tuple[bytes, ...], links: int = 0, data: int = 0
    ) -> tuple[bytes, tuple[int, ...], bytes]:
        """The block at `address`: its id, links and data; raises `Mdf4Error` when it is not one of
        `kinds`, does not fit in the file, or has fewer than `links` links or `data` bytes of data."""
        ident, length, count = self._block_header(address, kinds)
        if length < 24 + 8 * count or count < links or length - 24 - 8 * count < data:
            raise Mdf4Error(f"{ident.decode('latin-1')} block at 0x{address:X} is malformed (corrupt file)")
        found = struct.unpack_from(f"<{count}Q", self.map, address + 24)
        return ident, found, self.map[address + 24 + 8 * count : address + length]

    def _block_header(self, address: int, kinds: tuple[bytes, ...]) -> tuple[bytes, int, int]:
        names = " or ".join(kind.decode() for kind in kinds)
        if address % 8 or address < 64 or address + 24 > self.size:
            raise Mdf4Error(f"link to a {names} block at 0x{address:X} points outside the file (truncated?)")
        ident, length, count = _HEADER.unpack_from(self.map, address)
        if ident not in kinds:
            if ident in (b"##LD", b"##DV", b"##DI", b"##RD", b"##RV", b"##RI"):
                raise Mdf4Unsupported(f"{ident.decode()} blocks (MDF 4.2 column storage or reduction)")
            if ident == b"##CA" and b"##CN" in kinds:
                raise Mdf4Unsupported("channel arrays (##CA)")
            raise Mdf4Error(f"expected a {names} block at 0x{address:X}, found {ident!r} (corrupt file)")
        if address + length > self.size and not (ident == b"##DT" and self.unfinalised):
            raise Mdf4Error(
                f"{ident.decode()} block at 0x{address:X} runs past the end of the file"
                f" ({address + length:,} > {self.size:,} bytes): truncated?"
            )
        self._addresses.append(address)
        return ident, length, count

    def _text(self, address: int) -> str:
        if not address:
            return ""
        text = self._texts.get(address)
        if text is None:
            ident, _, data = self._block(address, (b"##TX", b"##MD"))
            text = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            if ident == b"##MD":  # XML: the name is its <TX> element
                found = re.search(r"<TX>(.*?)</TX>", text, re.S)
                text = found.group(1) if found else text
            self._texts[address] = text = text.strip()
        return text

    def _conversion(self, address: int) -> Conversion | None:
        if not address:
            return None
        if address not in self._conversions:
            _, _, data = self._block(address, (b"##CC",), data=8)
            kind, _precision, _flags, _refs, count = struct.unpack_from("<BBHHH", data)
            if kind in (CC_IDENTITY, CC_LINEAR, CC_RATIONAL, CC_TABLE_INTERPOLATED, CC_TABLE, CC_RANGE_TABLE):
                if len(data) < 24 + 8 * count:
                    raise Mdf4Error(f"##CC block at 0x{address:X} is malformed")
                values = struct.unpack_from(f"<{count}d", data, 24)
            else:
                values = ()  # text conversions: raise only if a value read needs it
            self._conversions[address] = Conversion(kind, values)
        return self._conversions[address]

    def _source(self, address: int) -> Source | None:
        if not address:
            return None
        if address not in self._sources:
            _, links, data = self._block(address, (b"##SI",), links=1, data=2)
            source_type, bus_type = struct.unpack_from("<BB", data)
            self._sources[address] = Source(self._text(links[0]), source_type, bus_type)
        return self._sources[address]

    def data_groups(self) -> list[DataGroup]:
        """Every data group with its channel groups (their channels are read by `channels`)."""
        groups: list[DataGroup] = []
        index = 0
        address = self._first_data_group
        seen: set[int] = set()
        while address:
            if address in seen:
                raise Mdf4Error(f"the ##DG chain loops at 0x{address:X} (corrupt file)")
            seen.add(address)
            _, links, data = self._block(address, (b"##DG",), links=3, data=1)
            record_id_size = data[0]
            if record_id_size not in (0, 1, 2, 4, 8):
                raise Mdf4Error(f"##DG block at 0x{address:X}: record id size {record_id_size} (corrupt)")
            channel_groups: list[ChannelGroup] = []
            cg_address = links[1]
            while cg_address:
                if cg_address in seen:
                    raise Mdf4Error(f"the ##CG chain loops at 0x{cg_address:X} (corrupt file)")
                seen.add(cg_address)
                _, cg_links, cg_data = self._block(cg_address, (b"##CG",), links=4, data=32)
                record_id, cycles, flags, _separator, data_bytes, inval_bytes = struct.unpack_from(
                    "<QQHH4xII", cg_data
                )
                channel_groups.append(
                    ChannelGroup(
                        index=index,
                        address=cg_address,
                        record_id=record_id,
                        cycle_count=cycles,
                        flags=flags,
                        data_bytes=data_bytes,
                        invalidation_bytes=inval_bytes,
                        acquisition_name=self._text(cg_links[2]),
                        source=self._source(cg_links[3]),
                        first_channel=cg_links[1],
                    )
                )
                index += 1
                cg_address = cg_links[0]
            if not record_id_size and len(channel_groups) > 1:
                raise Mdf4Error(f"##DG block at 0x{address:X}: several channel groups but no record ids")
            groups.append(DataGroup(address, record_id_size, links[2], channel_groups))
            address = links[0]
        return groups

    def channels(self, group: ChannelGroup) -> list[Channel]:
        """The channel group's channels in file order (a structure's members under `components`)."""
        return self._channel_chain(group.first_channel, 0, set())

    def _channel_chain(self, address: int, depth: int, seen: set[int]) -> list[Channel]:
        if depth > 8:
            raise Mdf4Unsupported("structures nested more than 8 deep")
        channels: list[Channel] = []
        while address:
            if address in seen:
                raise Mdf4Error(f"the ##CN chain loops at 0x{address:X} (corrupt file)")
            seen.add(address)
            _, links, data = self._block(address, (b"##CN",), links=6, data=24)
            (
                channel_type,
                sync_type,
                data_type,
                bit_offset,
                byte_offset,
                bit_count,
                flags,
                invalidation_bit,
            ) = struct.unpack_from("<BBBBIIII", data)
            channel = Channel(
                name=self._text(links[2]),
                channel_type=channel_type,
                sync_type=sync_type,
                data_type=data_type,
                bit_offset=bit_offset,
                byte_offset=byte_offset,
                bit_count=bit_count,
                flags=flags,
                invalidation_bit=invalidation_bit,
                conversion=self._conversion(links[4]),
                data_link=links[5],
            )
            composition = links[1]
            if composition:
                ident, _, _ = self._block_header(composition, (b"##CN", b"##CA"))
                if ident == b"##CN":
                    channel.components = self._channel_chain(composition, depth + 1, seen)
                else:
                    channel.array = True
            channels.append(channel)
            address = links[0]
        return channels

    # --- data ---------------------------------------------------------------------------------------

    def data(self, address: int, open_ended: bool = False) -> bytes:
        """The payload of a data block or list (`##DT`, `##SD`, `##DZ`, `##DL`, `##HL`), uncompressed.

        `open_ended`: the data of a data group in an unfinalised file, whose last `##DT` block's length
        was not updated: it runs to the next block read or to the end of the file (as asammdf reads it).
        """
        if not address:
            return b""
        pieces = list(self._data_pieces(address, depth=0))
        if open_ended and self.unfinalised & UNFIN_LAST_DT_LENGTH and pieces:
            last_address = pieces[-1][0]
            if last_address is not None:
                following = [found for found in self._addresses if found > last_address]
                end = min(following) if following else self.size
                pieces[-1] = (last_address, self.map[last_address + 24 : end])
        if len(pieces) == 1:
            return pieces[0][1]
        return b"".join(payload for _, payload in pieces)

    def _data_pieces(self, address: int, depth: int) -> Iterator[tuple[int | None, bytes]]:
        """(address of an uncompressed `##DT`/`##SD` block or None, payload) for each block in order."""
        if depth > 2:
            raise Mdf4Error(f"data lists nested too deep at 0x{address:X} (corrupt file)")
        ident, length, count = self._block_header(address, (b"##DT", b"##SD", b"##DZ", b"##DL", b"##HL"))
        if ident in (b"##DT", b"##SD"):
            end = min(address + length, self.size)
            yield address, self.map[address + 24 + 8 * count : end]
        elif ident == b"##DZ":
            yield None, self._unzip(address)
        elif ident == b"##HL":
            _, links, _ = self._block(address, (b"##HL",), links=1)
            yield from self._data_pieces(links[0], depth + 1)
        else:
            seen: set[int] = set()
            while address:
                if address in seen:
                    raise Mdf4Error(f"the ##DL chain loops at 0x{address:X} (corrupt file)")
                seen.add(address)
                _, links, data = self._block(address, (b"##DL",), links=1, data=8)
                blocks = struct.unpack_from("<B3xI", data)[1]
                for block in links[1 : 1 + blocks]:
                    if block:
                        yield from self._data_pieces(block, depth + 1)
                address = links[0]

    def _unzip(self, address: int) -> bytes:
        _, _, data = self._block(address, (b"##DZ",), data=24)
        zip_type, parameter, original_size, zipped_size = struct.unpack_from("<2xB1xIQQ", data)
        if zip_type not in (0, 1):
            raise Mdf4Unsupported(f"{_ZIP_NAMES.get(zip_type, f'type {zip_type}')} compressed ##DZ blocks")
        if 24 + zipped_size > len(data):
            raise Mdf4Error(f"##DZ block at 0x{address:X} is shorter than its compressed data: truncated?")
        inflater = zlib.decompressobj()
        try:  # never more than the block says it holds (a corrupt length cannot fill the memory)
            unzipped = inflater.decompress(data[24 : 24 + zipped_size], max(original_size, 1))
        except zlib.error as exc:
            raise Mdf4Error(f"##DZ block at 0x{address:X}: {exc} (corrupt file)") from None
        if len(unzipped) != original_size or not inflater.eof:
            raise Mdf4Error(
                f"##DZ block at 0x{address:X} holds {len(unzipped):,} bytes, not {original_size:,} (corrupt)"
            )
        if zip_type == 1 and parameter > 1:
            unzipped = untranspose(unzipped, parameter)
        return unzipped

    # --- records ------------------------------------------------------------------------------------

    def records(self, group: DataGroup) -> dict[int, Records]:
        """The records of each channel group of `group`, by record id (the only group's id if sorted)."""
        data = self.data(group.data_link, open_ended=True)
        buffer = np.frombuffer(data, np.uint8)
        if not group.record_id_size:
            if not group.channel_groups:
                return {}
            channel_group = group.channel_groups[0]
            size = channel_group.record_size
            if channel_group.flags & CG_VLSD or not size:
                raise Mdf4Error(f"##CG block at 0x{channel_group.address:X}: a VLSD group without record ids")
            count = len(buffer) // size
            if not self.unfinalised & UNFIN_CYCLE_COUNTS:
                count = min(count, channel_group.cycle_count)
            return {channel_group.record_id: Records(buffer[: count * size].reshape(count, size))}
        sizes = {
            cg.record_id: (None if cg.flags & CG_VLSD or not cg.record_size else cg.record_size)
            for cg in group.channel_groups
        }
        starts, stop = walk_records(data, group.record_id_size, sizes)
        if stop < len(data) and not self.unfinalised and np.any(buffer[stop:]):
            raise Mdf4Error(
                f"data group at 0x{group.address:X}: no record can start at byte {stop:,} of its"
                f" {len(data):,} bytes of data (an unknown record id or a cut record; corrupt file)"
            )
        positions = np.frombuffer(starts, np.int64) if len(starts) else np.zeros(0, np.int64)
        width = group.record_id_size
        if width == 1:
            ids = buffer[positions].astype(np.uint64)
        else:
            ids = _unaligned(buffer, f"<u{width}")[positions].astype(np.uint64)
        found: dict[int, Records] = {}
        for record_id, record_size in sizes.items():
            mine = positions[ids == record_id] + width
            if record_size is not None:
                found[record_id] = Records(_rows(buffer, mine, record_size))
            else:
                lengths = _unaligned(buffer, "<u4")[mine].astype(np.int64)
                offsets = np.zeros(len(mine), np.int64)
                np.cumsum(lengths[:-1] + 4, out=offsets[1:])
                found[record_id] = Records(
                    np.zeros((len(mine), 0), np.uint8), offsets, mine + 4, lengths, buffer
                )
        return found

    def signal(self, channel: Channel, records: Mapping[int, Records], groups: list[ChannelGroup]) -> _Signal:
        """Where the items of the VLSD channel `channel` are: its `##SD` data, or its VLSD channel group."""
        if not channel.data_link:
            raise Mdf4Error(f"VLSD channel {channel.name!r} has no signal data (corrupt file)")
        ident, _, _ = self._block_header(
            channel.data_link, (b"##SD", b"##DZ", b"##DL", b"##HL", b"##CG", b"##DT")
        )
        if ident == b"##CG":
            for group in groups:
                if group.address == channel.data_link:
                    return _Signal(records=records.get(group.record_id))
            raise Mdf4Error(f"VLSD channel {channel.name!r} points at a channel group of another data group")
        return _Signal(stream=np.frombuffer(self.data(channel.data_link), np.uint8))


def walk_records(data: bytes, id_size: int, sizes: Mapping[int, int | None]) -> tuple[array[int], int]:
    """The start of every record of an unsorted data stream, in order, and where the walk stopped.

    `sizes`: record id -> bytes after the id, or None for a VLSD channel group (a uint32 length, then
    that many bytes). As asammdf does, the walk stops at an unknown record id or at a record that does not
    fit in the data (the end of an unfinalised file). While every fixed-length record fits, the inner loop
    only looks its length up (about 70 ns a record); VLSD records and the last bytes take the careful path.
    The starts are 8-byte integers in an `array` (a list would hold an int object per record).
    """
    end = len(data)
    position = 0
    starts = array("q")
    add = starts.append
    if id_size == 1:
        steps = [0] * 256  # 0: unknown id, -1: VLSD, else 1 + record bytes
        for record_id, size in sizes.items():
            if record_id < 256:
                steps[record_id] = -1 if size is None else 1 + size
        safe = end - max(max(steps), 1)  # below it, any fixed-length record fits
        while True:
            while position < safe:
                step = steps[data[position]]
                if step <= 0:
                    break
                add(position)
                position += step
            if position + 1 >= end:
                break
            step = steps[data[position]]
            if step <= 0:
                if not step or position + 5 > end:
                    break
                step = 5 + int.from_bytes(data[position + 1 : position + 5], "little")
            if position + step > end:
                break
            add(position)
            position += step
        return starts, position
    known = {record_id: (-1 if size is None else id_size + size) for record_id, size in sizes.items()}
    while position + id_size < end:
        step = known.get(int.from_bytes(data[position : position + id_size], "little"), 0)
        if step <= 0:
            if not step or position + id_size + 4 > end:
                break
            step = id_size + 4 + int.from_bytes(data[position + id_size : position + id_size + 4], "little")
        if position + step > end:
            break
        add(position)
        position += step
    return starts, position


def untranspose(data: bytes, columns: int) -> bytes:
    """Undo a `##DZ` transposition: the first `columns` x `lines` bytes were stored column by column
    (byte 0 of every record, then byte 1, ...); the bytes after the whole lines were left as they were."""
    lines = len(data) // columns
    matrix = lines * columns
    stored = np.frombuffer(data, np.uint8, matrix).reshape(columns, lines)
    records: bytes = stored.T.tobytes()
    return records + data[matrix:]


def _unaligned(buffer: np.ndarray, dtype: str) -> np.ndarray:
    """`dtype` values starting at every byte of `buffer` (an unaligned strided view, no copy)."""
    size = np.dtype(dtype).itemsize
    count = max(len(buffer) - size + 1, 0)
    view: np.ndarray = np.ndarray((count,), dtype, buffer=buffer, offset=0, strides=(1,))
    return view


def _rows(buffer: np.ndarray, starts: np.ndarray, size: int) -> np.ndarray:
    """The `size` bytes at each of `starts` as a (len(starts) x size) matrix (a copy)."""
    if not size or not len(starts):
        return np.zeros((len(starts), size), np.uint8)
    return np.asarray(sliding_window_view(buffer, size)[starts])


@dataclass
class Columns:
    """The values of channels over a channel group's records (`rows`), as asammdf's `get` gives them."""

    rows: np.ndarray
    group: ChannelGroup
    signals: dict[int, _Signal] = field(default_factory=dict)

    def raw(self, channel: Channel) -> np.ndarray:
        """Raw values of a fixed-length, virtual or master channel (no conversion)."""
        count = len(self.rows)
        if channel.channel_type in (CN_VIRTUAL, CN_VIRTUAL_MASTER):
            return np.arange(count, dtype=np.min_scalar_type(max(self.group.cycle_count, count)))
        if channel.channel_type not in (CN_FIXED, CN_MASTER, CN_VLSD):
            raise Mdf4Unsupported(f"channel type {channel.channel_type} ({channel.name})")
        if channel.components is not None or channel.array:
            raise Mdf4Unsupported(f"nested structure or array {channel.name!r}")
        total_bits = channel.bit_offset + channel.bit_count
        size = (total_bits + 7) // 8
        start = channel.byte_offset
        if start + size > self.group.data_bytes + self.group.invalidation_bytes or not channel.bit_count:
            raise Mdf4Error(f"channel {channel.name!r} lies outside its record (corrupt file)")
        if channel.channel_type == CN_VLSD:  # the offset of the item in the signal data
            return self._integer(channel, start, size, big_endian=False, signed=False)
        if channel.data_type == DT_BYTES:
            return np.ascontiguousarray(self.rows[:, start : start + channel.bit_count // 8])
        if channel.data_type in (DT_FLOAT_LE, DT_FLOAT_BE):
            if channel.bit_offset or channel.bit_count not in (32, 64):
                raise Mdf4Unsupported(f"a {channel.bit_count}-bit float at bit {channel.bit_offset}")
            order = ">" if channel.data_type == DT_FLOAT_BE else "<"
            chunk = np.ascontiguousarray(self.rows[:, start : start + size])
            return chunk.view(f"{order}f{size}").reshape(count)
        if channel.data_type not in (DT_UINT_LE, DT_UINT_BE, DT_INT_LE, DT_INT_BE):
            raise Mdf4Unsupported(f"data type {channel.data_type} ({channel.name})")
        return self._integer(
            channel, start, size, channel.data_type in _BIG_ENDIAN, channel.data_type in _SIGNED
        )

    def _integer(self, channel: Channel, start: int, size: int, big_endian: bool, signed: bool) -> np.ndarray:
        if size > 8:
            raise Mdf4Unsupported(f"integers wider than 64 bits ({channel.name})")
        count = len(self.rows)
        chunk = self.rows[:, start : start + size]
        if big_endian:
            chunk = chunk[:, ::-1]
        padded = np.zeros((count, 8), np.uint8)
        padded[:, :size] = chunk
        values = padded.view("<u8").reshape(count)
        if channel.bit_offset:
            values >>= np.uint64(channel.bit_offset)
        if channel.bit_count < 64:
            values &= np.uint64((1 << channel.bit_count) - 1)
        if not signed:
            return values
        if channel.bit_count == 64:
            return values.view(np.int64)
        sign = 1 << (channel.bit_count - 1)
        signed_values: np.ndarray = (values ^ np.uint64(sign)).view(np.int64) - np.int64(sign)
        return signed_values

    def value(self, channel: Channel) -> np.ndarray:
        """Physical values (conversion applied) of a fixed-length, virtual or master channel."""
        if channel.flags & (CN_ALL_INVALID | CN_INVALIDATION_PRESENT):
            raise Mdf4Unsupported(f"invalidation bits on structure member {channel.name!r}")
        raw = self.raw(channel)
        if channel.conversion is None or channel.data_type == DT_BYTES:
            return raw
        converted: np.ndarray = channel.conversion.apply(raw)
        return converted

    def invalid(self, channel: Channel) -> np.ndarray | None:
        """Records whose invalidation bit for `channel` is set (None: every record is valid)."""
        if channel.flags & CN_ALL_INVALID:
            raise Mdf4Unsupported(f"'all values invalid' flag on {channel.name!r}")
        if not channel.flags & CN_INVALIDATION_PRESENT:
            return None
        byte = self.group.data_bytes + channel.invalidation_bit // 8
        if byte >= self.rows.shape[1]:
            raise Mdf4Error(f"invalidation bit of {channel.name!r} lies outside its record (corrupt file)")
        bits: np.ndarray = (self.rows[:, byte] >> (channel.invalidation_bit % 8)) & 1 == 1
        return bits

    def variable_bytes(self, channel: Channel, signal: _Signal, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """A VLSD byte-array channel's items as a zero-padded matrix, and each item's length; an item
        longer than `limit` bytes is an error (a corrupt length must not allocate rows x gigabytes)."""
        if channel.data_type != DT_BYTES:
            raise Mdf4Unsupported(f"VLSD channel {channel.name!r} of data type {channel.data_type}")
        offsets = self.raw(channel).astype(np.int64)
        if signal.records is not None:
            items = signal.records
            assert items.item_offset is not None and items.item_start is not None
            assert items.item_length is not None and items.buffer is not None
            index = np.searchsorted(items.item_offset, offsets)
            if len(offsets) and (
                index.max() >= len(items.item_offset) or np.any(items.item_offset[index] != offsets)
            ):
                raise Mdf4Error(f"VLSD channel {channel.name!r}: an offset that starts no item (corrupt)")
            buffer, starts, lengths = items.buffer, items.item_start[index], items.item_length[index]
        else:
            buffer = signal.stream if signal.stream is not None else np.zeros(0, np.uint8)
            if len(offsets) and (offsets.min() < 0 or offsets.max() + 4 > len(buffer)):
                raise Mdf4Error(f"VLSD channel {channel.name!r}: an offset past its signal data (truncated?)")
            lengths = _unaligned(buffer, "<u4")[offsets].astype(np.int64)
            starts = offsets + 4
            if len(offsets) and np.any(starts + lengths > len(buffer)):
                raise Mdf4Error(f"VLSD channel {channel.name!r}: an item past its signal data (truncated?)")
        width = int(lengths.max()) if len(lengths) else 0
        if width > limit:
            raise Mdf4Error(f"VLSD channel {channel.name!r}: an item of {width:,} bytes (corrupt file)")
        matrix = np.zeros((len(starts), width), np.uint8)
        if width:
            fits = starts + width <= len(buffer)
            matrix[fits] = sliding_window_view(buffer, width)[starts[fits]]
            for row in np.flatnonzero(~fits).tolist():  # the last few items of the data
                start = int(starts[row])
                tail = buffer[start : start + width]
                matrix[row, : len(tail)] = tail
            matrix[np.arange(width) >= lengths[:, None]] = 0
        return matrix, lengths
