"""The shell of the finite sources (replay, sim): frames from a generator, paced, handed out in time.

A `PlaybackSource` subclass only says where its frames come from (`frames()`); the shell renames them to
the spec's bus, paces them at `speed` times the pace their timestamps say (`speed=X`; none: as fast as
possible), and never blocks a `read(timeout)` for longer than `timeout`: a frame not due yet is kept and
`None` returned, so the reader thread hands the frames it has to the pipeline within its chunk time
instead of holding a paced capture back until a chunk is full (issue 9: a 10-frame log at speed 1 reached
the pipeline as one chunk after 4.5 s).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Iterator

import can

from firmware_agent.sources.base import EndOfSource, Source
from firmware_agent.sources.spec import SourceSpec


class PlaybackSource(Source):
    """A finite source: `frames()` once per `open()`, paced, with the spec's bus name on every frame."""

    live = False

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        #: X times real time; None: as fast as the pipeline takes them
        self.speed: float | None = spec.number("speed", 1.0) if "speed" in spec.options else None
        self._frames: Iterator[can.Message] | None = None
        self._pending: can.Message | None = None
        self._origin: tuple[float, float] | None = None  # (monotonic time, timestamp) of the first frame

    @abstractmethod
    def frames(self) -> Iterator[can.Message]:
        """Every frame of one playback, in order (called by `open`)."""

    def failure(self, exc: Exception) -> Exception:
        """The error to raise when `frames()` fails with `exc` (default: `exc` itself)."""
        return exc

    def open(self) -> None:
        """Start the playback from its beginning."""
        self._frames = self.frames()
        self._pending = None
        self._origin = None

    def read(self, timeout: float) -> can.Message | None:
        """The next frame when it is due; None if it is not due within `timeout`; `EndOfSource` at the end."""
        if self._frames is None:
            raise EndOfSource
        frame = self._pending
        if frame is None:
            try:
                frame = next(self._frames)
            except StopIteration:
                raise EndOfSource from None
            except (EndOfSource, can.CanError, OSError):
                raise
            except Exception as exc:
                raise self.failure(exc) from exc
            if self.spec.bus is not None:
                frame.channel = self.spec.bus
        if self.speed is not None:
            now = time.monotonic()
            if self._origin is None:
                self._origin = (now, frame.timestamp)
            delay = self._origin[0] + (frame.timestamp - self._origin[1]) / self.speed - now
            if delay > timeout:
                time.sleep(max(0.0, timeout))
                self._pending = frame
                return None
            if delay > 0:
                time.sleep(delay)
        self._pending = None
        return frame

    def close(self) -> None:
        """Forget the playback."""
        self._frames = None
        self._pending = None
