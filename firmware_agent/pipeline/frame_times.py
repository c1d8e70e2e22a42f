"""The first stage of the daemon's pipeline: frames whose time cannot be real are refused and counted.

A capture stamped in microseconds since the epoch (1.5e15), one line stamped 2e17, or a simulator started
at 1e300 gave times where float64 cannot step a batch grid (`t + 0.1 == t`), the collector spun, and a
clock that jumps decades ahead and back cuts every open batch. Policy: a frame whose timestamp is not a
number in [0, `MAX_FRAME_TIME`] (values.py: 2100-01-01 UTC) is dropped before any other stage sees it
(decode, E2E, identity, the data clock), counted (`decode.bad_time`), and the first one is reported in
one line naming its bus and time. Clamping was rejected: a clamped time would put the frame's samples at a
moment that never happened, and every later absurd frame on the same instant.
"""

from __future__ import annotations

from collections.abc import Callable

import can

from firmware_agent.values import MAX_FRAME_TIME


def plausible_time(timestamp: float) -> bool:
    """True for a frame time the pipeline accepts: a number in [0, MAX_FRAME_TIME] (NaN is not)."""
    return 0.0 <= timestamp <= MAX_FRAME_TIME


class FrameTimeGuard:
    """`filter(chunk)`: the frames with plausible times; `refused` counts the others.

    `report(line)` is called once, for the first refused frame (the daemon's log stays one line per event).
    """

    def __init__(self, report: Callable[[str], None] | None = None) -> None:
        self.refused = 0
        self._report = report

    def filter(self, frames: list[can.Message]) -> list[can.Message]:
        """`frames` itself when every time is plausible (the common case: two comparisons per frame)."""
        if all(0.0 <= frame.timestamp <= MAX_FRAME_TIME for frame in frames):
            return frames
        kept = [frame for frame in frames if 0.0 <= frame.timestamp <= MAX_FRAME_TIME]
        refused = len(frames) - len(kept)
        if self.refused == 0 and self._report is not None:
            first = next(frame for frame in frames if not plausible_time(frame.timestamp))
            self._report(
                f"frame at t={first.timestamp:g} on {first.channel} refused: frame times must be seconds in "
                f"[0, {MAX_FRAME_TIME:.0f}] (before 2100; microseconds since the epoch?); "
                "further ones are counted in decode.bad_time"
            )
        self.refused += refused
        return kept
