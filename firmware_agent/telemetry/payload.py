"""The telemetry payload: one `Batch` as a compact CBOR map, and back.

Wire shape (documented with a schema in `docs/telemetry-format.md`)::

    {"v": 1, "vehicle": ID, "seq": N, "t0": EPOCH_SECONDS_FLOAT,
     "signals": {NAME: [[DT_MICROSECONDS, ...], [VALUE, ...]]},
     ? "events": [{"dt": DT_MICROSECONDS, "kind": TEXT, ? "detail": MAP}, ...],
     ? "driver": MAP, ? "campaign": TEXT, ? "counters": {TEXT: UINT}}

A sample's time is `t0 + dt / 1e6`; `t0` is the earliest sample or event of the batch, so every `dt` is a
small non-negative integer. Encoding is canonical CBOR (RFC 8949 §4.2.1: sorted keys, shortest lossless
float), which turns most physical values into 3- or 5-byte floats.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from firmware_agent.telemetry.driver_fields import driver_problem, event_problem
from firmware_agent.values import Batch, Event, Sample, SignalValue

#: The payload format version this module writes and reads.
PAYLOAD_VERSION = 1


class PayloadError(ValueError):
    """Bytes that are not a well-formed telemetry payload (version 1, or 2: `payload_v2`)."""


@dataclass
class Payload:
    """A decoded payload; `signals` holds absolute times (epoch seconds), as in `Batch.samples`."""

    vehicle: str
    seq: int
    t0: float
    signals: dict[str, tuple[list[float], list[SignalValue]]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    driver: dict[str, Any] | None = None
    campaign: str | None = None
    counters: dict[str, int] | None = None
    #: Keys this version does not know, kept so that readers can pass them on.
    extra: dict[str, Any] = field(default_factory=dict)
    #: The payload format version it arrived in (1, or 2: `payload_v2`).
    version: int = PAYLOAD_VERSION

    def samples(self) -> Iterator[Sample]:
        """Every sample, signal by signal, each signal in time order."""
        for name, (times, values) in self.signals.items():
            for timestamp, value in zip(times, values, strict=True):
                yield Sample(timestamp, name, value)

    def sample_count(self) -> int:
        """Number of samples across all signals."""
        return sum(len(times) for times, _ in self.signals.values())


def _plain(value: Any) -> SignalValue:
    """Turn numpy scalars and bools into the int/float/str that CBOR encodes compactly."""
    kind = type(value)
    if kind is float or kind is int or kind is str:
        plain: SignalValue = value
        return plain
    if isinstance(value, bool):
        return int(value)
    if hasattr(value, "item"):  # numpy scalar
        return _plain(value.item())
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    raise PayloadError(f"signal value {value!r} is not a number or a string")


_PLAIN_TYPES = frozenset((int, float, str))


def _plain_values(values: list[SignalValue]) -> list[SignalValue]:
    """`values` as CBOR should see them: the list itself when every value is already int, float or str."""
    if set(map(type, values)) <= _PLAIN_TYPES:
        return values
    return [_plain(value) for value in values]


class _Deltas:
    """Microseconds since `t0` of a signal's timestamps, computed once per distinct timestamp list.

    The signals of one message share their timestamps (every frame carries all of them), so a batch of
    `--collect all` has a few distinct lists for many signals; an equal list (compared in C) reuses the
    integers already computed.
    """

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self._seen: dict[tuple[int, float, float], list[tuple[list[float], list[int]]]] = {}

    def of(self, times: list[float]) -> list[int]:
        if not times:
            return []
        key = (len(times), times[0], times[-1])
        candidates = self._seen.setdefault(key, [])
        for known, deltas in candidates:
            if known is times or known == times:
                return deltas
        t0 = self.t0
        deltas = [round((t - t0) * 1e6) for t in times]
        candidates.append((times, deltas))
        return deltas


def _earliest(batch: Batch) -> float | None:
    starts = [times[0] for times, _ in batch.samples.values() if times]
    starts.extend(event.timestamp for event in batch.events)
    return min(starts) if starts else None


def encode_payload(
    batch: Batch,
    vehicle: str,
    seq: int,
    counters: Mapping[str, int] | None = None,
) -> bytes:
    """Encode `batch` as the CBOR payload of batch number `seq` of `vehicle`.

    `counters` (e.g. the outbox's and the uploader's) ride along under `counters`. An empty batch is
    allowed (a heartbeat carrying only counters); its `t0` is the current time.
    """
    earliest = _earliest(batch)
    t0 = time.time() if earliest is None else earliest
    signals: dict[str, list[list[Any]]] = {}
    deltas = _Deltas(t0)
    for name, (times, values) in batch.samples.items():
        if len(times) != len(values):
            raise PayloadError(f"signal {name}: {len(times)} timestamps but {len(values)} values")
        signals[name] = [deltas.of(times), _plain_values(values)]
    doc: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "vehicle": vehicle,
        "seq": seq,
        "t0": float(t0),
        "signals": signals,
        **batch_extras(batch, t0, counters),
    }
    try:
        return cbor2.dumps(doc, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise PayloadError(f"cannot encode batch {seq}: {exc}") from exc


def batch_extras(batch: Batch, t0: float, counters: Mapping[str, int] | None) -> dict[str, Any]:
    """The optional keys both payload versions carry as they are: events, driver, campaign, counters."""
    extras: dict[str, Any] = {}
    if batch.events:
        extras["events"] = [_encode_event(event, t0) for event in batch.events]
    if batch.driver is not None:
        extras["driver"] = batch.driver
    if batch.campaign is not None:
        extras["campaign"] = batch.campaign
    if counters:
        extras["counters"] = {str(k): int(v) for k, v in counters.items()}
    return extras


def _encode_event(event: Event, t0: float) -> dict[str, Any]:
    item: dict[str, Any] = {"dt": round((event.timestamp - t0) * 1e6), "kind": event.kind}
    if event.detail:
        item["detail"] = event.detail
    return item


_KNOWN_KEYS = frozenset({"v", "vehicle", "seq", "t0", "signals", "events", "driver", "campaign", "counters"})


def decode_payload(data: bytes) -> Payload:
    """Decode a payload of version 1 or 2; raise `PayloadError` naming the first problem found.

    Any bytes at all, signed or not: numbers too large for a float (`t0 = 10**400`, a huge `dt`) are a
    `PayloadError` like every other problem, never an `OverflowError` escaping to the caller.
    """
    try:
        return _decode_payload(data)
    except PayloadError:
        raise
    except (OverflowError, ValueError, TypeError, ArithmeticError) as exc:
        raise PayloadError(f"payload has a value out of range: {exc}") from exc


def _decode_payload(data: bytes) -> Payload:
    try:
        doc = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several unrelated types on garbage
        raise PayloadError(f"payload is not CBOR: {exc}") from exc
    if not isinstance(doc, dict):
        raise PayloadError("payload is not a CBOR map")
    if doc.get("v") == 2 and type(doc.get("v")) is int:
        from firmware_agent.telemetry.payload_v2 import decode_payload_v2  # it builds on this module

        return decode_payload_v2(doc)
    if doc.get("v") != PAYLOAD_VERSION:
        raise PayloadError(f"unsupported payload version {doc.get('v')!r}")
    vehicle, seq, t0 = doc.get("vehicle"), doc.get("seq"), doc.get("t0")
    if not isinstance(vehicle, str) or not vehicle:
        raise PayloadError("'vehicle' is missing or not a text string")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise PayloadError("'seq' is missing or not a non-negative integer")
    if not isinstance(t0, (int, float)) or isinstance(t0, bool) or not math.isfinite(t0):
        raise PayloadError("'t0' is missing or not a finite number")
    payload = Payload(vehicle=vehicle, seq=seq, t0=float(t0))
    payload.signals = _decode_signals(doc.get("signals"), payload.t0)
    payload.events = _decode_events(doc.get("events", []), payload.t0)
    payload.driver = _optional(doc, "driver", dict)
    if payload.driver is not None:
        problem = driver_problem(payload.driver)
        if problem:
            raise PayloadError(problem)
    payload.campaign = _optional(doc, "campaign", str)
    payload.counters = _optional(doc, "counters", dict)
    payload.extra = {k: v for k, v in doc.items() if k not in _KNOWN_KEYS}
    return payload


def _optional(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if value is not None and not isinstance(value, kind):
        raise PayloadError(f"'{key}' is not a {kind.__name__}")
    return value


def _decode_signals(raw: Any, t0: float) -> dict[str, tuple[list[float], list[SignalValue]]]:
    if not isinstance(raw, dict):
        raise PayloadError("'signals' is missing or not a map")
    signals: dict[str, tuple[list[float], list[SignalValue]]] = {}
    for name, series in raw.items():
        if not isinstance(name, str) or not isinstance(series, list) or len(series) != 2:
            raise PayloadError(f"signal {name!r} is not [[dt...], [value...]]")
        deltas, values = series
        if not isinstance(deltas, list) or not isinstance(values, list) or len(deltas) != len(values):
            raise PayloadError(f"signal {name}: dt and value arrays differ in length")
        if not all(type(dt) is int for dt in deltas):
            raise PayloadError(f"signal {name}: a dt is not an integer number of microseconds")
        if not all(type(v) in (int, float, str) for v in values):
            raise PayloadError(f"signal {name}: a value is not a number or a string")
        signals[name] = ([t0 + dt / 1e6 for dt in deltas], values)
    return signals


def _decode_events(raw: Any, t0: float) -> list[Event]:
    if not isinstance(raw, list):
        raise PayloadError("'events' is not an array")
    events = []
    for item in raw:
        if not isinstance(item, dict) or type(item.get("dt")) is not int or type(item.get("kind")) is not str:
            raise PayloadError("an event is not {dt: int, kind: text, ? detail: map}")
        detail = item.get("detail", {})
        if not isinstance(detail, dict):
            raise PayloadError(f"event {item['kind']}: 'detail' is not a map")
        problem = event_problem(item["kind"], detail)
        if problem:
            raise PayloadError(problem)
        events.append(Event(t0 + item["dt"] / 1e6, item["kind"], detail))
    return events
