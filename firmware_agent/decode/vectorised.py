"""Batch decoding with numpy: every signal of a message decoded for all of its frames at once.

A `FrameBatch` is grouped by (channel, identifier); each group's payloads become a byte matrix; each
signal is a shift and a mask over one 64-bit word per row (the layout from `layout.py`, which replays
cantools' codec so results match `Message.decode` exactly); sign, float view, scale and offset are
applied to the whole column; value-table names are looked up afterwards. Multiplexed messages decode
the rows of each multiplexer value separately. Frames cantools would refuse (too short, undefined
multiplexer value, a layout it cannot unpack, NaN used as a value-table key) are dropped from the
group and reported in `BatchResult.skipped`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from cantools.database.can import Message

from firmware_agent.decode.catalog import Catalog
from firmware_agent.decode.compiled import (
    SKIP_CONTAINER,
    SKIP_ERROR_FRAME,
    SKIP_INVALID_VALUE,
    SKIP_REMOTE,
    SKIP_TOO_SHORT,
    SKIP_UNDEFINED_MUX,
    SKIP_UNKNOWN_ID,
    SKIP_UNPACK,
)
from firmware_agent.decode.layout import MessageLayout, NodeLayout, SignalLayout, message_layout
from firmware_agent.io.frames import FrameBatch


@dataclass
class SignalColumn:
    """One signal over a group's decoded rows.

    `values` are the physical values (int64, uint64, float64, or object for integers beyond 64 bits).
    With value-table names, `label` holds an index into `labels` per row (-1: no name, use the value).
    `present` is None when every row carries the signal, else a bool mask (multiplexed signals).
    """

    values: np.ndarray
    label: np.ndarray | None = None
    labels: list[str] = field(default_factory=list)
    present: np.ndarray | None = None


@dataclass
class DecodedGroup:
    """The decoded frames of one message seen with one identifier on one channel."""

    message: Message
    channel: str
    arbitration_id: int
    rows: np.ndarray  # positions in the batch, ascending
    timestamp: np.ndarray
    signals: dict[str, SignalColumn]


@dataclass
class Skipped:
    """Frames of one (channel, identifier) that were not decoded, and why."""

    channel: str
    arbitration_id: int
    is_extended: bool
    message: str | None
    reason: str
    count: int
    first_row: int  # position in the batch of the first such frame


@dataclass
class BatchResult:
    """What decoding one batch gave: decoded groups and skipped frames."""

    groups: list[DecodedGroup]
    skipped: list[Skipped]


class VectorDecoder:
    """Decode `FrameBatch`es through a `Catalog`; `messages` optionally limits which are decoded."""

    def __init__(
        self, catalog: Catalog, decode_choices: bool = True, messages: set[str] | None = None
    ) -> None:
        self.catalog = catalog
        self.decode_choices = decode_choices
        self.messages = messages
        self._layouts: dict[int, _CompiledLayout] = {}

    def decode(self, batch: FrameBatch) -> BatchResult:
        """Decode every frame of `batch` that the catalog knows and cantools would decode."""
        groups: list[DecodedGroup] = []
        skipped: list[Skipped] = []
        special = batch.is_remote | batch.is_error
        keys = (
            (batch.channel.astype(np.int64) << 33)
            | (batch.is_extended.astype(np.int64) << 32)
            | batch.arbitration_id.astype(np.int64)
        )
        keys = np.where(special, -1 - batch.is_error.astype(np.int64), keys)
        order = _group_order(keys, batch)
        sorted_keys = keys[order]
        bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
        for rows in np.split(order, bounds):
            if not len(rows):
                continue
            row = int(rows[0])
            channel = batch.channels[batch.channel[row]]
            frame_id = int(batch.arbitration_id[row])
            extended = bool(batch.is_extended[row])
            if special[row]:
                reason = SKIP_ERROR_FRAME if batch.is_error[row] else SKIP_REMOTE
                skipped.append(Skipped(channel, frame_id, extended, None, reason, len(rows), row))
                continue
            message = self.catalog.lookup(channel, frame_id, extended)
            if message is None:
                skipped.append(Skipped(channel, frame_id, extended, None, SKIP_UNKNOWN_ID, len(rows), row))
                continue
            if self.messages is not None and message.name not in self.messages:
                continue
            layout = self._layout(message)
            group, failures = layout.decode(batch, rows, self.decode_choices)
            for reason, (count, first) in failures.items():
                skipped.append(Skipped(channel, frame_id, extended, message.name, reason, count, first))
            if len(group.rows):
                groups.append(
                    DecodedGroup(
                        message, channel, frame_id, group.rows, batch.timestamp[group.rows], group.signals
                    )
                )
        return BatchResult(groups, skipped)

    def _layout(self, message: Message) -> _CompiledLayout:
        compiled = self._layouts.get(id(message))
        if compiled is None:
            compiled = self._layouts[id(message)] = _CompiledLayout(message_layout(message))
        return compiled


def _group_order(keys: np.ndarray, batch: FrameBatch) -> np.ndarray:
    """Row order sorted by `keys`, stable: each (channel, ID) group's rows stay in capture order.

    The usual batch (11-bit IDs, few channels, no remote or error frames) gets the same order from a
    16-bit key, which numpy sorts by radix (about 8x faster than sorting the 64-bit keys).
    """
    small = len(keys) and len(batch.channels) <= 32 and int(keys.min()) >= 0  # no remote/error frames
    if small and not batch.is_extended.any() and int(batch.arbitration_id.max()) < 2048:
        short_keys = (batch.channel.astype(np.uint16) << 11) | batch.arbitration_id.astype(np.uint16)
        return np.argsort(short_keys, kind="stable")
    return np.argsort(keys, kind="stable")


@dataclass
class _Group:
    rows: np.ndarray
    signals: dict[str, SignalColumn]


class _Words:
    """The payload rows of a group as 64-bit words, built on demand and kept per byte window."""

    def __init__(self, payload: np.ndarray) -> None:
        self.padded = max(8, payload.shape[1])
        self._bytes = {"le": payload, "be": payload[:, ::-1]}
        self._words: dict[tuple[str, int], np.ndarray] = {}

    def bits(self, integer: str, shift: int, length: int) -> np.ndarray:
        """`length` bits from bit `shift` of the payload read as a little/big-endian integer."""
        first = shift // 8
        last = (shift + length - 1) // 8
        if last - first >= 8:
            return self._wide_bits(integer, shift, length)
        start = min(first, self.padded - 8)
        word = self._word(integer, start)
        value: np.ndarray = word >> np.uint64(shift - 8 * start)
        if length < 64:
            value = value & np.uint64((1 << length) - 1)
        return value

    def _word(self, integer: str, start: int) -> np.ndarray:
        key = (integer, start)
        word = self._words.get(key)
        if word is None:
            source = self._bytes[integer]
            window = np.zeros((len(source), 8), np.uint8)
            available = source[:, start : start + 8]
            window[:, : available.shape[1]] = available
            word = self._words[key] = window.view("<u8").ravel()
        return word

    def _wide_bits(self, integer: str, shift: int, length: int) -> np.ndarray:
        # a 58..64-bit signal straddling nine bytes, or a CAN FD signal wider than 64 bits: rare enough for
        # Python integers. Wider than 64 bits stays an object array of Python ints, as cantools gives.
        source = self._bytes[integer]
        mask = (1 << length) - 1
        values = [(int.from_bytes(row.tobytes(), "little") >> shift) & mask for row in source]
        if length > 64:
            wide = np.empty(len(values), object)
            wide[:] = values
            return wide
        return np.array(values, np.uint64)


class _CompiledLayout:
    """A message layout plus the lookup tables the vectorised decoder needs for it."""

    def __init__(self, layout: MessageLayout) -> None:
        self.layout = layout
        self.order = _signal_order(layout.root)
        #: signal name -> (sorted value-table keys, their positions, their names)
        self._choice_tables: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}

    def decode(
        self, batch: FrameBatch, rows: np.ndarray, decode_choices: bool
    ) -> tuple[_Group, dict[str, tuple[int, int]]]:
        """Decode the batch rows `rows`; failures map a skip reason to (count, first row)."""
        length = self.layout.length
        failures: dict[str, tuple[int, int]] = {}
        if self.layout.container:
            failures[SKIP_CONTAINER] = (len(rows), int(rows[0]))
            return _Group(rows[:0], {}), failures
        short = batch.length[rows] < length
        if short.any():
            failures[SKIP_TOO_SHORT] = (int(short.sum()), int(rows[short][0]))
            rows = rows[~short]
        count = len(rows)
        payload = (
            batch.data[rows, :length] if batch.data.shape[1] >= length else _widen(batch.data[rows], length)
        )
        words = _Words(payload)
        failed = np.zeros(count, np.uint8)  # 0 ok, else index into _REASONS
        columns: dict[str, SignalColumn] = {}
        self._decode_node(self.layout.root, np.arange(count), words, decode_choices, columns, failed, count)
        all_kept = not failed.any()
        keep = failed == 0
        if not all_kept:
            for code in np.flatnonzero(np.bincount(failed[~keep])).tolist():  # np.unique imports numpy.ma
                hit = failed == code
                failures[_REASONS[code]] = (int(hit.sum()), int(rows[hit][0]))
        signals: dict[str, SignalColumn] = {}
        for name in self.order:
            column = columns.get(name)
            if column is None:
                continue
            if not all_kept:
                column = _select(column, keep)
            if column.present is not None and column.present.all():
                column.present = None
            if column.present is None or column.present.any():
                signals[name] = column
        return _Group(rows if all_kept else rows[keep], signals), failures

    def _decode_node(
        self,
        node: NodeLayout,
        index: np.ndarray,
        words: _Words,
        decode_choices: bool,
        columns: dict[str, SignalColumn],
        failed: np.ndarray,
        count: int,
    ) -> None:
        if node.unpack_fails:
            failed[index] = _REASON_CODES[SKIP_UNPACK]
            return
        everything = len(index) == count
        raws: dict[str, np.ndarray] = {}
        for signal in node.signals:
            raw = words.bits(signal.integer, signal.shift, signal.length)
            if not everything:
                raw = raw[index]
            number = _interpret(raw, signal)
            raws[signal.name] = number
            values = _scale(number, signal)
            label = labels = None
            if decode_choices and signal.choices:
                label, labels, invalid = self._labels(signal, number)
                if invalid is not None:
                    failed[index[invalid]] = _REASON_CODES[SKIP_INVALID_VALUE]
            _store(columns, signal.name, values, label, labels, index, everything, count)
        for mux in node.muxes:
            signal = next(s for s in node.signals if s.name == mux.signal)
            numbers, invalid = _mux_numbers(
                raws[mux.signal], signal, mux.choice_numbers if decode_choices else {}
            )
            if invalid is not None:
                failed[index[invalid]] = _REASON_CODES[SKIP_INVALID_VALUE]
            defined = np.zeros(len(index), bool)
            for value, child in mux.nodes.items():
                selected = numbers == value
                if selected.any():
                    defined |= selected
                    self._decode_node(child, index[selected], words, decode_choices, columns, failed, count)
            undefined = index[~defined & (failed[index] == 0)]
            failed[undefined] = _REASON_CODES[SKIP_UNDEFINED_MUX]

    def _labels(
        self, signal: SignalLayout, number: np.ndarray
    ) -> tuple[np.ndarray, list[str], np.ndarray | None]:
        table = self._choice_tables.get(signal.name)
        if table is None:
            items = sorted(signal.choices.items())
            keys = np.array([key for key, _ in items], np.float64 if signal.kind == "f" else np.int64)
            table = (keys, np.arange(len(items)), [str(choice) for _, choice in items])
            self._choice_tables[signal.name] = table
        keys, positions, names = table
        invalid = None
        if signal.kind == "f":
            finite = np.isfinite(number)
            if not finite.all():
                invalid = ~finite
            lookup = np.trunc(np.where(finite, number, 0.0))
        elif number.dtype == object:  # wider than 64 bits: look each value up in Python
            position = {key: index for index, key in enumerate(keys.tolist())}
            label = np.array([position.get(value, -1) for value in number.tolist()], np.int32)
            return label, names, invalid
        elif number.dtype == np.uint64:
            lookup = (
                number.astype(np.float64) if number.max(initial=0) >= 1 << 63 else number.astype(np.int64)
            )
        else:
            lookup = number
        slot = np.searchsorted(keys, lookup)
        slot = np.minimum(slot, len(keys) - 1)
        label = np.where(keys[slot] == lookup, positions[slot], -1).astype(np.int32)
        return label, names, invalid


_REASONS = ["", SKIP_UNPACK, SKIP_UNDEFINED_MUX, SKIP_INVALID_VALUE]
_REASON_CODES = {reason: code for code, reason in enumerate(_REASONS) if reason}


def _widen(data: np.ndarray, length: int) -> np.ndarray:
    wide = np.zeros((len(data), length), np.uint8)
    wide[:, : data.shape[1]] = data
    return wide


def _signal_order(node: NodeLayout) -> list[str]:
    # cantools' key order: a node's signals, then each multiplexer's child nodes
    order: list[str] = []
    for signal in node.signals:
        order.append(signal.name)
    for mux in node.muxes:
        for child in mux.nodes.values():
            for name in _signal_order(child):
                if name not in order:
                    order.append(name)
    return order


def _interpret(raw: np.ndarray, signal: SignalLayout) -> np.ndarray:
    """Raw bits (uint64) as the number cantools unpacks: unsigned, two's complement or IEEE float.

    Integers wider than 64 bits arrive and stay as an object array of Python ints."""
    length = signal.length
    if raw.dtype == object:
        if signal.kind != "s":
            return raw
        top = 1 << (length - 1)
        signed = np.empty(len(raw), object)
        signed[:] = [value - (top << 1) if value >= top else value for value in raw.tolist()]
        return signed
    if signal.kind == "f":
        if length == 64:
            return raw.view(np.float64)
        narrow = (
            raw.astype(np.uint32).view(np.float32) if length == 32 else raw.astype(np.uint16).view(np.float16)
        )
        with np.errstate(invalid="ignore"):  # NaN payloads widen to NaN, as struct.unpack gives
            return narrow.astype(np.float64)
    if signal.kind == "s":
        if length == 64:
            return raw.view(np.int64)
        extension = np.uint64(~((1 << length) - 1) & 0xFFFFFFFFFFFFFFFF)  # sign-extend through bit 63
        return np.where(raw >= np.uint64(1 << (length - 1)), raw | extension, raw).view(np.int64)
    return raw if length == 64 else raw.astype(np.int64)


def _scale(number: np.ndarray, signal: SignalLayout) -> np.ndarray:
    """Apply cantools' conversion: identity, exact integer `raw * scale + offset`, or the same in floats."""
    if signal.conversion == "identity":
        return number
    if number.dtype == object:  # wider than 64 bits: Python arithmetic, exactly as cantools does it
        if signal.conversion != "int":
            return np.array([value * signal.scale + signal.offset for value in number.tolist()], np.float64)
        scale, offset = int(signal.scale), int(signal.offset)
        scaled = np.empty(len(number), object)
        scaled[:] = [value * scale + offset for value in number.tolist()]
        return scaled
    if signal.conversion == "int":
        scale, offset = int(signal.scale), int(signal.offset)
        bound = (1 << signal.length) * abs(scale) + abs(offset)
        if bound < 1 << 62 and number.dtype != np.uint64:
            scaled_ints: np.ndarray = number * np.int64(scale) + np.int64(offset)
            return scaled_ints
        return np.array([int(value) * scale + offset for value in number.tolist()], dtype=object)
    return number.astype(np.float64) * float(signal.scale) + float(signal.offset)


def _mux_numbers(
    number: np.ndarray, signal: SignalLayout, choice_numbers: Mapping[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """The multiplexer number cantools derives per row (a choice's number, else int(scaled value))."""
    scaled = _scale(number, signal)
    invalid = None
    if scaled.dtype.kind == "f":
        finite = np.isfinite(scaled)
        if not finite.all():
            invalid = ~finite
        result = np.trunc(np.where(finite, scaled, 0.0)).astype(np.int64)
    else:
        result = scaled.astype(np.int64)
    if choice_numbers:
        raw = number if number.dtype.kind != "f" else np.trunc(np.where(np.isfinite(number), number, 0.0))
        for key, value in choice_numbers.items():
            result = np.where(raw == key, value, result)
    return result, invalid


def _store(
    columns: dict[str, SignalColumn],
    name: str,
    values: np.ndarray,
    label: np.ndarray | None,
    labels: list[str] | None,
    index: np.ndarray,
    everything: bool,
    count: int,
) -> None:
    if everything:
        columns[name] = SignalColumn(values, label, labels or [])
        return
    column = columns.get(name)
    if column is None:
        column = columns[name] = SignalColumn(
            np.zeros(count, values.dtype),
            None if label is None else np.full(count, -1, np.int32),
            labels or [],
            np.zeros(count, bool),
        )
    if column.values.dtype != values.dtype:
        column.values = column.values.astype(np.result_type(column.values, values))
    column.values[index] = values
    if label is not None and column.label is not None:
        column.label[index] = label
    assert column.present is not None
    column.present[index] = True


def _select(column: SignalColumn, keep: np.ndarray) -> SignalColumn:
    return SignalColumn(
        column.values[keep],
        None if column.label is None else column.label[keep],
        column.labels,
        None if column.present is None else column.present[keep],
    )
