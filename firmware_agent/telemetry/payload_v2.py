"""Payload version 2: the compact wire format (cellular bytes are the fleet's running cost).

Wire shape (byte for byte in `docs/telemetry-format.md`, with a test vector in
`tests/data/telemetry-v2-vector.json`)::

    {"v": 2, "vehicle": ID, "seq": N, "z": ZLIB(canonical CBOR of the body)}
    body = {"t0": EPOCH_SECONDS_FLOAT,
            "times": [[FIRST_DT_US, DIFF_US, ...], ...],            # time columns, shared by signals
            "signals": {NAME: [TIME_INDEX, [VALUE, ...]]             # plain: values as in version 1
                            | [TIME_INDEX, SCALE, OFFSET, [RAW_DIFF, ...]]},   # raw integers
            ? "events", ? "driver", ? "campaign", ? "counters"}     # exactly as in version 1

Where the bytes go (RAV4 capture, every signal, 1-second batches, measured by `bench/pipeline.py`): the
signals of one message share their timestamps, so each distinct time list is sent once, as differences in
microseconds; a numeric signal travels as the DBC's raw integers (differences again: counters step by
one, most signals barely move), its scale and offset once per batch; zlib then takes the repetition.
8.95 bytes per sample in version 1, about 1.2 here; the table of what else was tried is in
`docs/telemetry-format.md`.

Exactness: a raw column is used only when `raw * scale + offset` gives back every value to the bit (type
included: integer scale and offset give integers); anything else (no scale known, value-table names, a
NaN, a float signal) is sent plain, as version 1 sends it. Times decode to exactly what version 1 gives.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterable, Mapping
from itertools import accumulate
from operator import sub
from typing import Any

import cbor2

from firmware_agent.telemetry.driver_fields import driver_problem
from firmware_agent.telemetry.payload import (
    Payload,
    PayloadError,
    _decode_events,
    _earliest,
    _optional,
    _plain_values,
    batch_extras,
)
from firmware_agent.values import Batch, SignalValue

VERSION = 2
#: zlib level of the body: 6 (zlib's default) compresses within 1 % of 9 at half the time (measured).
ZLIB_LEVEL = 6
#: A receiver refuses a body that inflates beyond this (a zip bomb signed by a stolen key stays bounded).
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Raw integers are kept below 2**53 so that every receiver converts them to binary64 exactly.
MAX_RAW = 2**53

#: Sample name -> (scale, offset) of the DBC signal it comes from; see `scale_hints`.
ScaleHints = Mapping[str, tuple[int | float, int | float]]

_IDENTITY = (1, 0)


def scale_hints(messages: Iterable[Any], name_for: Any = None) -> dict[str, tuple[int | float, int | float]]:
    """Sample name -> (scale, offset) for every signal of `messages` (cantools `Message`s).

    `name_for(message, signal)` gives the sample name (the VSS path where mapped); `MESSAGE.Signal`
    without it. A name two messages give different conversions is left out: the encoder then sends it
    plain (or as integers when its values are integers), never wrongly.
    """
    hints: dict[str, tuple[int | float, int | float]] = {}
    conflicting: set[str] = set()
    for message in messages:
        for signal in message.signals:
            name = name_for(message.name, signal.name) if name_for else f"{message.name}.{signal.name}"
            hint = (signal.scale, signal.offset)
            known = hints.setdefault(name, hint)
            if known != hint or type(known[0]) is not type(hint[0]) or type(known[1]) is not type(hint[1]):
                conflicting.add(name)
    for name in conflicting:
        del hints[name]
    return hints


def _raw_integers(values: list[SignalValue], scale: Any, offset: Any) -> list[int] | None:
    """The raw integers of `values` under `scale` and `offset`, or None unless they give back every value.

    "Give back" is to the bit: the same type (integer scale and offset make integers, anything else
    floats), the same number, the same sign of zero.
    """
    numbers: list[Any] = values  # the type checks below make them all int or all float
    raws: list[int]
    if type(scale) is int and type(offset) is int:
        if scale == 0 or set(map(type, numbers)) != {int}:
            return None
        if scale == 1 and offset == 0:
            raws = numbers
        else:
            raws = [(value - offset) // scale for value in numbers]
            if [raw * scale + offset for raw in raws] != numbers:
                return None
    else:
        if scale == 0 or set(map(type, numbers)) != {float}:
            return None
        try:
            raws = [round((value - offset) / scale) for value in numbers]
        except (ValueError, OverflowError):  # NaN, infinity
            return None
        back = [raw * scale + offset for raw in raws]
        if back != numbers:
            return None
        if 0.0 in numbers:  # 0.0 == -0.0: compare the signs of the zeros too
            pairs = zip(back, numbers, strict=True)
            if any(math.copysign(1.0, b) != math.copysign(1.0, v) for b, v in pairs if v == 0.0):
                return None
    if max(raws) >= MAX_RAW or min(raws) <= -MAX_RAW:
        return None
    return raws


def _differences(numbers: list[int]) -> list[int]:
    """The first number, then each one's difference from the one before."""
    if not numbers:
        return []
    return [numbers[0], *map(sub, numbers[1:], numbers[:-1])]


class _TimeColumns:
    """The batch's distinct time lists, each once, as microsecond differences; signals point at them.

    The signals of one message share their timestamps: an equal list (compared in C) reuses its column.
    """

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.columns: list[list[int]] = []
        self._seen: dict[tuple[int, float, float], list[tuple[list[float], int]]] = {}

    def index_of(self, times: list[float]) -> int:
        key = (len(times), times[0], times[-1]) if times else (0, 0.0, 0.0)
        candidates = self._seen.setdefault(key, [])
        for known, index in candidates:
            if known is times or known == times:
                return index
        t0 = self.t0
        column = _differences([round((t - t0) * 1e6) for t in times])
        candidates.append((times, len(self.columns)))
        self.columns.append(column)
        return len(self.columns) - 1


def encode_payload_v2(
    batch: Batch,
    vehicle: str,
    seq: int,
    counters: Mapping[str, int] | None = None,
    scales: ScaleHints | None = None,
) -> bytes:
    """Encode `batch` as a version-2 payload; `scales` (`scale_hints`) lets numbers travel as raw integers.

    Without a hint, a signal whose values are all integers still travels as integers (scale 1, offset 0).
    """
    earliest = _earliest(batch)
    t0 = time.time() if earliest is None else earliest
    columns = _TimeColumns(t0)
    hints = scales or {}
    signals: dict[str, list[Any]] = {}
    for name, (times, values) in batch.samples.items():
        if len(times) != len(values):
            raise PayloadError(f"signal {name}: {len(times)} timestamps but {len(values)} values")
        values = _plain_values(values)
        index = columns.index_of(times)
        scale, offset = hints.get(name, _IDENTITY)
        raws = _raw_integers(values, scale, offset) if values else None
        if raws is None and (scale, offset) != _IDENTITY:
            scale, offset = _IDENTITY
            raws = _raw_integers(values, 1, 0) if values else None
        if raws is None:
            signals[name] = [index, values]
        else:
            signals[name] = [index, scale, offset, _differences(raws)]
    body: dict[str, Any] = {
        "t0": float(t0),
        "times": columns.columns,
        "signals": signals,
        **batch_extras(batch, t0, counters),
    }
    try:
        packed = zlib.compress(cbor2.dumps(body, canonical=True), ZLIB_LEVEL)
        return cbor2.dumps({"v": VERSION, "vehicle": vehicle, "seq": seq, "z": packed}, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise PayloadError(f"cannot encode batch {seq}: {exc}") from exc


_OUTER_KEYS = frozenset({"v", "vehicle", "seq", "z"})
_BODY_KEYS = frozenset({"t0", "times", "signals", "events", "driver", "campaign", "counters"})


def decode_payload_v2(doc: dict[Any, Any]) -> Payload:
    """A version-2 payload from its outer map (already CBOR-decoded, `v` == 2); raises `PayloadError`."""
    vehicle, seq, packed = doc.get("vehicle"), doc.get("seq"), doc.get("z")
    if not isinstance(vehicle, str) or not vehicle:
        raise PayloadError("'vehicle' is missing or not a text string")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise PayloadError("'seq' is missing or not a non-negative integer")
    if not isinstance(packed, bytes):
        raise PayloadError("'z' is missing or not a byte string")
    body = _body(packed)
    t0 = body.get("t0")
    if not isinstance(t0, (int, float)) or isinstance(t0, bool) or not math.isfinite(t0):
        raise PayloadError("'t0' is missing or not a finite number")
    payload = Payload(vehicle=vehicle, seq=seq, t0=float(t0), version=VERSION)
    times = _decode_times(body.get("times"), payload.t0)
    payload.signals = _decode_signals(body.get("signals"), times)
    payload.events = _decode_events(body.get("events", []), payload.t0)
    payload.driver = _optional(body, "driver", dict)
    if payload.driver is not None:
        problem = driver_problem(payload.driver)
        if problem:
            raise PayloadError(problem)
    payload.campaign = _optional(body, "campaign", str)
    payload.counters = _optional(body, "counters", dict)
    payload.extra = {k: v for k, v in body.items() if k not in _BODY_KEYS}
    payload.extra.update((k, v) for k, v in doc.items() if k not in _OUTER_KEYS)
    return payload


def _body(packed: bytes) -> dict[Any, Any]:
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(packed, MAX_BODY_BYTES)
    except zlib.error as exc:
        raise PayloadError(f"'z' is not a zlib stream: {exc}") from exc
    if inflater.unconsumed_tail:
        raise PayloadError(f"'z' inflates beyond {MAX_BODY_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise PayloadError("'z' is not one complete zlib stream")
    try:
        body = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several unrelated types on garbage
        raise PayloadError(f"the body in 'z' is not CBOR: {exc}") from exc
    if not isinstance(body, dict):
        raise PayloadError("the body in 'z' is not a CBOR map")
    return body


def _is_int(value: Any) -> bool:
    return type(value) is int


def _decode_times(raw: Any, t0: float) -> list[list[float]]:
    if not isinstance(raw, list):
        raise PayloadError("'times' is missing or not an array")
    columns = []
    for column in raw:
        if not isinstance(column, list) or not all(map(_is_int, column)):
            raise PayloadError("a time column is not an array of integers (microseconds)")
        columns.append([t0 + dt / 1e6 for dt in accumulate(column)])
    return columns


def _decode_signals(raw: Any, times: list[list[float]]) -> dict[str, tuple[list[float], list[SignalValue]]]:
    if not isinstance(raw, dict):
        raise PayloadError("'signals' is missing or not a map")
    signals: dict[str, tuple[list[float], list[SignalValue]]] = {}
    for name, entry in raw.items():
        if not isinstance(name, str) or not isinstance(entry, list) or len(entry) not in (2, 4):
            raise PayloadError(f"signal {name!r} is not [index, values] or [index, scale, offset, raws]")
        index = entry[0]
        if not _is_int(index) or not 0 <= index < len(times):
            raise PayloadError(f"signal {name}: time index {index!r} names no time column")
        column = times[index]
        if len(entry) == 2:
            values = entry[1]
            if not isinstance(values, list) or not all(type(v) in (int, float, str) for v in values):
                raise PayloadError(f"signal {name}: values are not an array of numbers and strings")
        else:
            values = _scaled(name, *entry[1:])
        if len(values) != len(column):
            raise PayloadError(f"signal {name}: {len(values)} values for {len(column)} times")
        signals[name] = (column, values)
    return signals


def _scaled(name: str, scale: Any, offset: Any, differences: Any) -> list[SignalValue]:
    for what, number in (("scale", scale), ("offset", offset)):
        if type(number) not in (int, float) or not math.isfinite(number):
            raise PayloadError(f"signal {name}: {what} is not a finite number")
    if not isinstance(differences, list) or not all(map(_is_int, differences)):
        raise PayloadError(f"signal {name}: raw values are not an array of integers")
    raws = list(accumulate(differences))
    if raws and (max(raws) >= MAX_RAW or min(raws) <= -MAX_RAW):
        raise PayloadError(f"signal {name}: a raw value is beyond 2**53")
    return [raw * scale + offset for raw in raws]
