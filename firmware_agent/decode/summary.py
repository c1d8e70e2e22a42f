"""What a decode run saw: frames per message, rates, skips and why, unknown IDs, bus load per channel.

Bus load is an estimate: nominal frame bits without bit stuffing (classic CAN: 47 + 8 x bytes for 11-bit
IDs, 67 + 8 x bytes for 29-bit IDs, interframe space included), all counted at the nominal bitrate
(`--bitrate`, 500 kbit/s by default), over the time between a channel's first and last frame.
CAN FD data phases at a higher bitrate make the estimate an upper bound.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from firmware_agent.decode.compiled import SKIP_UNKNOWN_ID
from firmware_agent.decode.readers.frames import FrameBatch
from firmware_agent.decode.vectorised import BatchResult


@dataclass
class _Span:
    count: int = 0
    first: float = float("inf")
    last: float = float("-inf")

    def add(self, count: int, first: float, last: float) -> None:
        self.count += count
        self.first = min(self.first, first)
        self.last = max(self.last, last)

    @property
    def duration(self) -> float:
        return self.last - self.first if self.count > 1 else 0.0


@dataclass
class Summary:
    """Counters filled batch by batch; `render()` prints the tables."""

    bitrate: int = 500_000
    messages: dict[tuple[str, str], _Span] = field(default_factory=lambda: defaultdict(_Span))
    errors: dict[tuple[str, str], Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    unknown: Counter[tuple[str, int, bool]] = field(default_factory=Counter)
    skips: Counter[str] = field(default_factory=Counter)
    channels: dict[str, _Span] = field(default_factory=lambda: defaultdict(_Span))
    channel_bits: Counter[str] = field(default_factory=Counter)
    frames: int = 0
    decoded: int = 0

    def add(self, batch: FrameBatch, result: BatchResult) -> None:
        """Account for one batch and what decoding it gave."""
        self.frames += len(batch)
        bits = np.where(batch.is_extended, 67, 47) + 8 * batch.length.astype(np.int64)
        for code, name in enumerate(batch.channels):
            rows = batch.channel == code
            if rows.any():
                stamps = batch.timestamp[rows]
                self.channels[name].add(int(rows.sum()), float(stamps.min()), float(stamps.max()))
                self.channel_bits[name] += int(bits[rows].sum())
        for group in result.groups:
            key = (group.channel, group.message.name)
            self.messages[key].add(len(group.rows), float(group.timestamp[0]), float(group.timestamp[-1]))
            self.decoded += len(group.rows)
        for skipped in result.skipped:
            self.skips[skipped.reason] += skipped.count
            if skipped.reason == SKIP_UNKNOWN_ID:
                self.unknown[(skipped.channel, skipped.arbitration_id, skipped.is_extended)] += skipped.count
            elif skipped.message is not None:
                self.errors[(skipped.channel, skipped.message)][skipped.reason] += skipped.count

    def skip_line(self) -> str:
        """One line for stderr: how many frames were decoded and why the others were skipped."""
        line = f"decoded {self.decoded:,} of {self.frames:,} frames"
        if self.skips:
            reasons = ", ".join(f"{reason}: {count:,}" for reason, count in self.skips.most_common())
            line += f"; skipped {sum(self.skips.values()):,} ({reasons})"
        return line

    def render(self, out: TextIO) -> None:
        """Print the per-message table, unknown IDs and bus load."""
        keys = sorted(set(self.messages) | set(self.errors))
        width = max([len("message"), *(len(name) for _, name in keys)])
        out.write(
            f"{'channel':<10} {'message':<{width}} {'frames':>9} {'rate Hz':>9} {'errors':>7}  error kinds\n"
        )
        for key in keys:
            span = self.messages.get(key, _Span())
            rate = (span.count - 1) / span.duration if span.duration > 0 else 0.0
            errors = self.errors.get(key, Counter())
            kinds = ", ".join(f"{reason} {count}" for reason, count in errors.most_common())
            errors_total = sum(errors.values())
            out.write(
                f"{key[0]:<10} {key[1]:<{width}} {span.count:>9,} {rate:>9.1f} {errors_total:>7,}  {kinds}\n"
            )
        if self.unknown:
            out.write(f"\nunknown IDs ({len(self.unknown)}, {sum(self.unknown.values()):,} frames):\n")
            for (channel, frame_id, extended), count in sorted(self.unknown.items()):
                text = f"{frame_id:08X}" if extended else f"{frame_id:03X}"
                out.write(f"  {channel:<10} {text:>8} {count:>9,}\n")
        out.write(f"\nbus load (estimate at {self.bitrate / 1000:g} kbit/s, no bit stuffing):\n")
        for channel, span in sorted(self.channels.items()):
            load = self.channel_bits[channel] / (span.duration * self.bitrate) if span.duration > 0 else 0.0
            out.write(
                f"  {channel:<10} {span.count:>9,} frames over {span.duration:8.1f} s  {100 * load:5.1f} %\n"
            )
        out.write(f"\n{self.skip_line()}\n")
