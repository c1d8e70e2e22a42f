"""The hand-over from decoding to collection: one record per decoded frame, not one `Sample` per value.

A `FrameRecord` is `(timestamp, group, values)`: the frame's time, the `SignalGroup` naming its samples
and the tuple of their values, `values[i]` being the sample of `group.names[i]`. A decoder creates one
group per distinct tuple of names and reuses it for every frame of that shape, so the collector keys its
routes on the group object (identity hash, nothing hashed per frame) and an `all` campaign stores a
frame as one row, turned into per-signal columns only when its batch is cut.
"""

from __future__ import annotations

from collections.abc import Iterable

from firmware_agent.values import Sample, SignalValue


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
