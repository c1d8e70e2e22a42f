"""Real-time pacing for finite sources (replay, sim): frames leave at `speed` times their recorded pace."""

from __future__ import annotations

import time


class Pacer:
    """Sleeps before each frame so that frames go out `speed` times as fast as their timestamps say.

    `speed=None` means as fast as possible (no sleeping). The first frame sets the origin.
    """

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self._first_timestamp: float | None = None
        self._started = 0.0

    def wait_for(self, timestamp: float) -> None:
        """Block until the frame stamped `timestamp` is due."""
        if self.speed is None:
            return
        if self._first_timestamp is None:
            self._first_timestamp = timestamp
            self._started = time.monotonic()
            return
        delay = self._started + (timestamp - self._first_timestamp) / self.speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
