"""The plain values handed from one pipeline stage to the next.

Frames are python-can `can.Message` objects as the buses and readers produce them (timestamp, channel,
arbitration_id, is_extended_id, is_fd, data). The decode stage turns a frame into a `FrameRecord`
(`(timestamp, SignalGroup, values)`: one record per decoded frame, not one `Sample` per value; a decoder
makes one `SignalGroup` per frame shape and reuses it, so the collector keys its routes on the group
object and an `all` campaign stores a frame as one row) or, for consumers that want one object per
value, into `Sample`s. Collection groups them into a `Batch`, which carries `Event`s; the outbox gives
each batch its sequence number, signs it and keeps it until the broker acknowledges it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Frame and sample times are seconds: since the Unix epoch (live buses, most captures) or since the start
#: of a recording (ASC, BLF relative times), so never negative and never after 2100-01-01 UTC. A time
#: outside is a unit mistake (a logger writing microseconds or nanoseconds since the epoch) or garbage,
#: and float64 cannot step a 10 Hz grid there (`t + 0.1 == t` from about 1e15). Checked by
#: `pipeline.frame_times` (frames) and `sim.Simulation` (its start and end).
MAX_FRAME_TIME = 4_102_444_800.0

#: A decoded signal value: physical number, or the value-table name as a string.
SignalValue = int | float | str


@dataclass(slots=True)
class Sample:
    """One signal value at one instant, named by VSS path where mapped, else `Message.Signal`."""

    timestamp: float
    name: str
    value: SignalValue


@dataclass(frozen=True)
class Event:
    """Something that happened, reported in a batch's `events`: a driver change, an E2E burst, a bus gap."""

    timestamp: float
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


#: Batch priorities: the outbox evicts low-priority batches first when it is full.
PRIORITY_LOW = 0
PRIORITY_NORMAL = 1
PRIORITY_HIGH = 2


@dataclass
class Batch:
    """Samples and events collected over one interval, before it receives a sequence number.

    `signals` maps a signal name to its samples as (timestamps, values), in time order. `counters`, when
    set, are the counters its payload carries, fixed (a part of a batch split after sealing keeps the ones
    the batch was sealed with); None lets the sealer ask for the current ones.
    """

    samples: dict[str, tuple[list[float], list[SignalValue]]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    campaign: str | None = None
    driver: dict[str, Any] | None = None
    priority: int = PRIORITY_NORMAL
    counters: dict[str, int] | None = None

    def add(self, sample: Sample) -> None:
        """Append one sample to its signal's series."""
        series = self.samples.get(sample.name)
        if series is None:
            series = self.samples[sample.name] = ([], [])
        series[0].append(sample.timestamp)
        series[1].append(sample.value)

    def sample_count(self) -> int:
        """Number of samples across all signals."""
        return sum(len(times) for times, _ in self.samples.values())

    def is_empty(self) -> bool:
        """True when the batch carries neither samples nor events."""
        return not self.samples and not self.events


class SignalGroup:
    """The sample names of a frame shape, in the order of the record's values (compared by identity)."""

    __slots__ = ("names",)

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def __repr__(self) -> str:
        return f"SignalGroup({self.names!r})"


#: One decoded frame: (timestamp, group, values aligned with group.names).
FrameRecord = tuple[float, SignalGroup, tuple[SignalValue, ...]]


def samples_of(records: Iterable[FrameRecord]) -> list[Sample]:
    """The records as `Sample`s, in order (for consumers that want one object per value)."""
    return [
        Sample(timestamp, name, value)
        for timestamp, group, values in records
        for name, value in zip(group.names, values, strict=True)
    ]
