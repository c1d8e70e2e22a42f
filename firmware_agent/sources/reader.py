"""One reader thread per source, handing frames to the pipeline through one bounded `FrameQueue`.

Queue policy (the bound is `max_frames`, in chunks of at most `chunk_frames`):

- **live sources** (socketcan, slcan, virtual) never wait: when the queue is full, the newest chunk is
  dropped and counted in `frames_dropped` for that bus. The kernel's socket buffer is the only other
  place frames can wait, and a reader that blocks would overflow it silently.
- **replay and sim** wait for room instead, so a capture is always processed completely.

Frames are handed over in chunks (up to `chunk_frames`, or whatever arrived within `chunk_seconds`) because
one queue operation per frame would cost more than decoding it.

A bus that disappears (`OSError`, `can.CanError`, e.g. the interface went down or the adapter was
unplugged) is closed and reopened with exponential backoff (`backoff_initial` doubling up to
`backoff_max`). The gap is reported once frames flow again as `Event(kind="bus_gap", detail={bus, from,
to, reason})`, `from` being when the error happened and `to` the timestamp of the first frame after it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import can

from firmware_agent.errors import UserError
from firmware_agent.sources.base import EndOfSource, Source
from firmware_agent.values import Event

#: One hand-over: the frames of one source, in arrival order.
Chunk = list[can.Message]


@dataclass(frozen=True)
class ReaderSettings:
    """Queue and retry tuning, from the `[pipeline]` section of the configuration."""

    max_frames: int = 16384
    chunk_frames: int = 256
    chunk_seconds: float = 0.02
    backoff_initial: float = 0.1
    backoff_max: float = 5.0


class FrameQueue:
    """Bounded hand-over of chunks from reader threads to the pipeline thread."""

    def __init__(self, settings: ReaderSettings) -> None:
        self.settings = settings
        self._queue: queue.Queue[Chunk] = queue.Queue(max(1, settings.max_frames // settings.chunk_frames))

    def offer(self, chunk: Chunk) -> bool:
        """Live hand-over: False (and nothing queued) when the queue is full."""
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            return False
        return True

    def put(self, chunk: Chunk, stop: threading.Event) -> bool:
        """Waiting hand-over for replay/sim; False if `stop` was set while waiting."""
        while not stop.is_set():
            try:
                self._queue.put(chunk, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float) -> Chunk | None:
        """The next chunk, or None after `timeout` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def get_nowait(self) -> Chunk | None:
        """The next chunk if one is waiting."""
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def empty(self) -> bool:
        """True when no chunk is waiting."""
        return self._queue.empty()


class EventBox:
    """Events from reader threads for the pipeline thread; bounded (oldest dropped, counted)."""

    def __init__(self, maxlen: int = 1024) -> None:
        self._events: deque[Event] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.dropped = 0

    def add(self, event: Event) -> None:
        """Keep one event (dropping the oldest when full)."""
        with self._lock:
            if len(self._events) == self._events.maxlen:
                self.dropped += 1
            self._events.append(event)

    def drain(self) -> list[Event]:
        """Every event so far, oldest first."""
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events


class SourceReader:
    """The thread that reads one source; counters are plain ints written only by that thread."""

    def __init__(
        self,
        source: Source,
        frames: FrameQueue,
        events: EventBox,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.frames = frames
        self.events = events
        self.settings = frames.settings
        self.clock = clock
        self.frames_in = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.gaps = 0
        #: Set when a finite source is exhausted (or the reader stopped); its last chunk is queued first.
        self.done = threading.Event()
        #: A problem no retry can fix (a replay file that cannot be read); the agent stops with it.
        self.fatal: UserError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"source-{source.name}", daemon=True)
        self._gap: tuple[float, str] | None = None

    @property
    def in_gap(self) -> bool:
        """True while the bus is lost (from the error until the first frame after it)."""
        return self._gap is not None

    @property
    def gap_reason(self) -> str | None:
        """Why the bus is lost (the error, one line), while it is."""
        gap = self._gap
        return gap[1] if gap is not None else None

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to stop and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._read_forever()
        except UserError as exc:
            self.fatal = exc
        except Exception as exc:
            # A bug, or an error the source does not class as a bus error: the agent must stop with an
            # error rather than carry on (or exit 0 at the end) without this source. The traceback still
            # reaches stderr through threading.excepthook.
            self.fatal = UserError(f"source {self.source.spec.text!r}: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.source.close()
            if self._gap is not None:
                self._report_gap(None)
            self.done.set()

    def _read_forever(self) -> None:
        backoff = self.settings.backoff_initial
        while not self._stop.is_set():
            try:
                if self._gap is not None and not self.source.available():
                    raise OSError("interface is down")
                self.source.open()
                if self._gap is not None:
                    self.reconnects += 1
                self._pump()
                return  # finite source exhausted, or stop requested
            except (OSError, can.CanError) as exc:
                self.source.close()
                if not self.source.live:
                    raise UserError(f"source {self.source.spec.text!r}: {exc}") from exc
                if self._gap is None:  # a new outage (frames flowed since the last one): back off afresh
                    self._gap = (self.clock(), _reason(exc))
                    backoff = self.settings.backoff_initial
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.settings.backoff_max)

    def _pump(self) -> None:
        """Read frames and hand them over in chunks until the source ends or `stop()` is called."""
        source, live = self.source, self.source.live
        chunk_frames, chunk_seconds = self.settings.chunk_frames, self.settings.chunk_seconds
        chunk: Chunk = []
        deadline = time.monotonic() + chunk_seconds
        try:
            while not self._stop.is_set():
                frame = source.read(chunk_seconds)
                if frame is not None:
                    if self._gap is not None:
                        self._report_gap(frame.timestamp)
                    chunk.append(frame)
                    if len(chunk) < chunk_frames and (not live or time.monotonic() < deadline):
                        continue
                elif not chunk:
                    deadline = time.monotonic() + chunk_seconds
                    continue
                self._hand_over(chunk, live)
                chunk = []
                deadline = time.monotonic() + chunk_seconds
        except EndOfSource:
            pass
        finally:
            if chunk:
                self._hand_over(chunk, live)

    def _hand_over(self, chunk: Chunk, live: bool) -> None:
        self.frames_in += len(chunk)
        if live:
            if not self.frames.offer(chunk):
                self.frames_dropped += len(chunk)
        elif not self.frames.put(chunk, self._stop):
            self.frames_dropped += len(chunk)

    def _report_gap(self, until: float | None) -> None:
        assert self._gap is not None
        since, reason = self._gap
        self._gap = None
        self.gaps += 1
        detail = {"bus": self.source.name, "from": since, "to": until, "reason": reason}
        self.events.add(Event(timestamp=since, kind="bus_gap", detail=detail))


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:200]
