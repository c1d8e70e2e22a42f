"""A progress line on a terminal: share done, count, and the time left, redrawn in place on stderr.

Only a terminal gets it (`ProgressLine(..., stream=...)` is silent unless the stream is a TTY), so pipes,
log files and tests' captured output never see a carriage return. Redraws are at most every
`MIN_REDRAW_SECONDS`; `finish()` draws the last line at 100 % with the total time, `close()` ends the line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: Seconds between redraws (a redraw per block would flood a slow serial console).
MIN_REDRAW_SECONDS = 0.2


def format_duration(seconds: float) -> str:
    """`0:07`, `12:34`, `1:02:03`."""
    whole = max(0, int(seconds + 0.5))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_progress(
    label: str,
    done: float,
    total: float | None,
    elapsed: float,
    count: int | None = None,
    unit: str = "frames",
) -> str:
    """One progress line: `label: 42.0 % 1,234 frames, ETA 0:07` (at 100 %: `... in 0:12`).

    `done` and `total` are in any one unit (bytes, simulated seconds); without a total only the count
    and the elapsed time are shown. The ETA assumes the rate so far holds.
    """
    counted = f" {count:,} {unit}" if count is not None else ""
    if not total or total <= 0:
        return f"{label}:{counted}, {format_duration(elapsed)} elapsed"
    share = min(max(done / total, 0.0), 1.0)
    if share >= 1.0:
        return f"{label}: 100.0 %{counted} in {format_duration(elapsed)}"
    eta = (
        f"ETA {format_duration(elapsed * (1 - share) / share)}" if share > 0 and elapsed > 0 else "ETA --:--"
    )
    return f"{label}: {100 * share:5.1f} %{counted}, {eta}"


class ProgressLine:
    """A redrawn progress line on `stream` when it is a terminal; does nothing otherwise."""

    def __init__(
        self, label: str, total: float | None = None, stream: TextIO | None = None, unit: str = "frames"
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_terminal(self.stream)
        self.label = label
        self.total = total
        self.unit = unit
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._width = 0
        self._done = 0.0
        self._count: int | None = None

    def update(self, done: float, count: int | None = None, label: str | None = None) -> None:
        """Record progress; redraw when enough time has passed since the last redraw."""
        self._done, self._count = done, count
        if label is not None:
            self.label = label
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw >= MIN_REDRAW_SECONDS:
            self._last_draw = now
            self._draw(format_progress(self.label, done, self.total, now - self.started, count, self.unit))

    def finish(self) -> None:
        """Draw the final line: 100 % and the total time."""
        if self.enabled:
            elapsed = time.monotonic() - self.started
            total = self.total if self.total else None
            self._draw(format_progress(self.label, total or 0.0, total, elapsed, self._count, self.unit))

    def close(self) -> None:
        """End the line (after `finish()`, or where a run stopped early) so the next output starts clean."""
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def _draw(self, line: str) -> None:
        padding = " " * max(0, self._width - len(line))
        self.stream.write(f"\r{line}{padding}")
        self.stream.flush()
        self._width = len(line)


class CaptureProgress:
    """Progress through several captures by bytes read: `(name, position, size, frames)` callbacks."""

    def __init__(self, label: str, total_bytes: int | None, stream: TextIO | None = None) -> None:
        self.line = ProgressLine(label, total_bytes, stream)
        self._finished_bytes = 0
        self._current: str | None = None
        self._current_size = 0
        self._frames_before = 0
        self._frames = 0

    @property
    def enabled(self) -> bool:
        return self.line.enabled

    def __call__(self, name: str, position: int | None, size: int | None, frames: int) -> None:
        if name != self._current:
            self._finished_bytes += self._current_size
            self._frames_before += self._frames
            self._current, self._current_size = name, size or 0
        self._frames = frames
        done = self._finished_bytes + min(position or 0, size or 0)
        self.line.update(done, self._frames_before + frames, label=name)

    def finish(self) -> None:
        self.line.finish()

    def close(self) -> None:
        self.line.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
