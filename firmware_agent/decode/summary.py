"""What a decode run saw: frames per message, rates, skips and why, unknown IDs, bus load per channel.

Bus load is an estimate by the one bus-load model (`decode/busload.py`: nominal frame bits without bit
stuffing, classic CAN: 47 + 8 x bytes for 11-bit IDs, 67 + 8 x bytes for 29-bit IDs, interframe space
included), over the time between a channel's first and last frame. The bitrate is `--bitrate` when
given, else what the channel's database declares (DBC `BA_ "Baudrate"`), else 500 kbit/s. For CAN FD
frames sent with a bit-rate switch, the payload bits are counted at the data-phase bitrate (DBC
`BA_ "BaudrateCANFD"`) when the database declares one and `--bitrate` is not given; everything else at
the nominal bitrate.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from firmware_agent.decode.busload import DEFAULT_BITRATE, header_bits
from firmware_agent.decode.catalog import BusBitrate
from firmware_agent.decode.compiled import SKIP_UNKNOWN_ID
from firmware_agent.decode.vectorised import BatchResult
from firmware_agent.io.frames import FrameBatch


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


#: The bitrate assumed for a channel whose database declares none.


@dataclass
class Summary:
    """Counters filled batch by batch; `render()` prints the tables.

    `bitrate` (from `--bitrate`) overrides every channel's; otherwise `bus_bitrate(channel)` (the
    catalog's `bitrate`) says what the channel's database declares, and `DEFAULT_BITRATE` applies
    where it declares nothing.
    """

    bitrate: int | None = None
    bus_bitrate: Callable[[str], BusBitrate | None] | None = None
    messages: dict[tuple[str, str], _Span] = field(default_factory=lambda: defaultdict(_Span))
    errors: dict[tuple[str, str], Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    unknown: Counter[tuple[str, int, bool]] = field(default_factory=Counter)
    skips: Counter[str] = field(default_factory=Counter)
    channels: dict[str, _Span] = field(default_factory=lambda: defaultdict(_Span))
    channel_bits: Counter[str] = field(default_factory=Counter)
    #: seconds of bus time per channel (the bits at the bitrates used)
    channel_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    channel_bitrates: dict[str, tuple[BusBitrate, str]] = field(default_factory=dict)
    frames: int = 0
    decoded: int = 0
    #: seconds per bin of `--summary --interval` (None: no load over time)
    interval: float | None = None
    #: per channel: bin number (floor(timestamp / interval)) -> seconds of bus time in it
    load_bins: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    load_origin: float | None = None

    def add(self, batch: FrameBatch, result: BatchResult) -> None:
        """Account for one batch and what decoding it gave."""
        self.frames += len(batch)
        payload_bits = 8 * batch.length.astype(np.int64)
        bits = np.where(batch.is_extended, header_bits(True), header_bits(False)) + payload_bits
        switched = batch.bitrate_switch
        for code, name in enumerate(batch.channels):
            rows = batch.channel == code
            if rows.any():
                stamps = batch.timestamp[rows]
                self.channels[name].add(int(rows.sum()), float(stamps.min()), float(stamps.max()))
                channel_bits = int(bits[rows].sum())
                self.channel_bits[name] += channel_bits
                bitrate = self._channel_bitrate(name)
                fast_bits = 0
                if bitrate.data is not None and switched is not None:
                    fast_bits = int(payload_bits[rows & switched & batch.is_fd].sum())
                self.channel_seconds[name] += (channel_bits - fast_bits) / bitrate.nominal + (
                    fast_bits / bitrate.data if bitrate.data else 0.0
                )
                if self.interval is not None:
                    self._add_load_bins(name, stamps, bits[rows], bitrate)
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

    def _add_load_bins(self, channel: str, stamps: np.ndarray, bits: np.ndarray, bitrate: BusBitrate) -> None:
        # nominal bitrate for every bit here: the load over time is for spotting floods, not accounting
        assert self.interval is not None
        if self.load_origin is None:
            self.load_origin = float(stamps.min())  # intervals start at the run's first frame
        numbers = np.floor((stamps - self.load_origin) / self.interval).astype(np.int64)
        first = int(numbers.min())
        seconds = np.bincount(numbers - first, weights=bits / bitrate.nominal)
        bins = self.load_bins[channel]
        for offset in np.flatnonzero(seconds).tolist():
            bins[first + offset] = bins.get(first + offset, 0.0) + float(seconds[offset])

    def load_over_time(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per channel: bin start times and the bus load (0..1) in each, bins without frames at 0."""
        assert self.interval is not None
        result = {}
        for channel, bins in self.load_bins.items():
            numbers = np.arange(min(bins), max(bins) + 1)
            seconds = np.array([bins.get(int(number), 0.0) for number in numbers])
            result[channel] = ((self.load_origin or 0.0) + numbers * self.interval, seconds / self.interval)
        return result

    def _render_load_over_time(self, out: TextIO) -> None:
        assert self.interval is not None
        loads = self.load_over_time()
        out.write(
            f"\nbus load per {self.interval:g} s (peak, then each interval while there are at most 60):\n"
        )
        width = max([10, *(len(channel) for channel in loads)])
        for channel, (starts, load) in sorted(loads.items()):
            peak = int(np.argmax(load))
            at = starts[peak] - (self.load_origin or 0.0)
            out.write(
                f"  {channel:<{width}} peak {100 * load[peak]:5.1f} % at {at:.1f} s"
                f" (of {len(load)} intervals; median {100 * float(np.median(load)):.1f} %)\n"
            )
            if len(load) <= 60:
                out.write("    " + " ".join(f"{100 * value:.0f}" for value in load.tolist()) + "\n")

    def _channel_bitrate(self, channel: str) -> BusBitrate:
        known = self.channel_bitrates.get(channel)
        if known is None:
            declared = self.bus_bitrate(channel) if self.bus_bitrate is not None else None
            if self.bitrate is not None:
                known = (BusBitrate(self.bitrate), "--bitrate")
            elif declared is not None:
                known = (declared, "DBC")
            else:
                known = (BusBitrate(DEFAULT_BITRATE), "default")
            self.channel_bitrates[channel] = known
        return known[0]

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
        channels = [channel for channel, _ in keys] + [channel for channel, _, _ in self.unknown]
        channel_width = max([10, *(len(channel) for channel in channels)])
        out.write(
            f"{'channel':<{channel_width}} {'message':<{width}} {'frames':>9} {'rate Hz':>9} {'errors':>7}"
            "  error kinds\n"
        )
        for key in keys:
            span = self.messages.get(key, _Span())
            rate = (span.count - 1) / span.duration if span.duration > 0 else 0.0
            errors = self.errors.get(key, Counter())
            kinds = ", ".join(f"{reason} {count}" for reason, count in errors.most_common())
            errors_total = sum(errors.values())
            out.write(
                f"{key[0]:<{channel_width}} {key[1]:<{width}} {span.count:>9,} {rate:>9.1f} "
                f"{errors_total:>7,}  {kinds}\n"
            )
        if self.unknown:
            out.write(f"\nunknown IDs ({len(self.unknown)}, {sum(self.unknown.values()):,} frames):\n")
            for (channel, frame_id, extended), count in sorted(self.unknown.items()):
                text = f"{frame_id:08X}" if extended else f"{frame_id:03X}"
                out.write(f"  {channel:<{channel_width}} {text:>8} {count:>9,}\n")
        out.write("\nbus load (estimate, no bit stuffing):\n")
        channel_width = max([channel_width, *(len(channel) for channel in self.channels)])
        for channel, span in sorted(self.channels.items()):
            load = self.channel_seconds[channel] / span.duration if span.duration > 0 else 0.0
            bitrate, source = self.channel_bitrates[channel]
            speed = f"{bitrate.nominal / 1000:g} kbit/s"
            if bitrate.data is not None:
                speed += f", data {bitrate.data / 1000:g} kbit/s"
            out.write(
                f"  {channel:<{channel_width}} {span.count:>9,} frames over {span.duration:8.1f} s"
                f"  {100 * load:5.1f} %"
                f"  at {speed} ({source})\n"
            )
        if self.interval is not None and self.load_bins:
            self._render_load_over_time(out)
        out.write(f"\n{self.skip_line()}\n")
