"""`replay:PATH[?speed=X&loop=N]`: a recorded capture played back into the pipeline.

As fast as possible by default; `speed=X` paces frames at X times real time (1 = as recorded). `loop=N`
plays the capture N times, each pass shifted by the capture's duration so time keeps moving forward.
Frames keep the channel names the capture gives them (`can0`, `1`, ...) unless the spec names a bus.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import can

from firmware_agent.decode.readers import detect_format, open_capture
from firmware_agent.decode.readers.candump_log import CandumpLogReader
from firmware_agent.decode.readers.frames import FrameBatch, ReadStats
from firmware_agent.errors import UserError
from firmware_agent.sources.base import EndOfSource, Source
from firmware_agent.sources.pacing import Pacer
from firmware_agent.sources.spec import SourceSpec

#: Frames (python-can formats) or bytes (candump -L) the capture reader takes at a time: bounded memory.
CHUNK_FRAMES = 5_000
BLOCK_BYTES = 256 << 10


class ReplaySource(Source):
    """Reads every capture format `firmware-agent decode` reads (`decode.readers.open_capture`): candump -L
    (also with hex-letter FD flags), candump console output, ASC (also gzipped), BLF, TRC, CSV, MF4."""

    OPTIONS = ("speed", "loop")
    live = False

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.path = Path(spec.arg)
        if not self.path.is_file():
            raise UserError(f"source {spec.text!r}: {self.path}: no such file")
        try:
            self.format_name = detect_format(str(self.path))
        except UserError as exc:
            raise UserError(f"source {spec.text!r}: {exc}") from exc
        self.speed: float | None = spec.number("speed", 0.0) if "speed" in spec.options else None
        self.loops = spec.integer("loop", 1)
        self._frames: Iterator[can.Message] | None = None
        #: Malformed capture lines skipped so far, over every pass (candump readers skip and count them).
        self.stats = ReadStats()

    @property
    def name(self) -> str:
        """The bus name, else the capture's file name."""
        return self.spec.bus or self.path.name

    def open(self) -> None:
        """Start reading the capture from its beginning."""
        self._frames = self._play()

    def _play(self) -> Iterator[can.Message]:
        shift = 0.0
        first: float | None = None
        pacer = Pacer(self.speed)
        for _ in range(self.loops):
            last = first if first is not None else 0.0
            for frame in _frames_of(self.path, self.format_name, self.stats):
                if first is None:
                    first = last = frame.timestamp
                last = max(last, frame.timestamp)
                frame.timestamp += shift
                if self.spec.bus is not None:
                    frame.channel = self.spec.bus
                pacer.wait_for(frame.timestamp)
                yield frame
            if first is None:
                return
            # The next pass starts one typical frame gap after this one ended.
            shift += last - first + 1e-3

    def counters(self) -> dict[str, int]:
        """`malformed_lines`: capture lines the reader could not parse and skipped."""
        return {"malformed_lines": self.stats.malformed}

    def read(self, timeout: float) -> can.Message | None:
        """The next frame of the capture; `EndOfSource` after the last pass."""
        if self._frames is None:
            raise EndOfSource
        try:
            return next(self._frames)
        except StopIteration:
            raise EndOfSource from None
        except Exception as exc:  # every reader has its own parse errors; all mean "not a readable capture"
            raise UserError(f"source {self.spec.text!r}: cannot read {self.path}: {exc}") from exc

    def close(self) -> None:
        """Forget the reader."""
        self._frames = None


def _frames_of(path: Path, format_name: str, stats: ReadStats) -> Iterator[can.Message]:
    """Every frame of a capture, in capture order, read in small chunks; skipped lines go to `stats`."""
    with path.open("rb") as raw:
        plain_candump = format_name == "candump -L" and raw.read(2) != b"\x1f\x8b"
    if plain_candump:
        # The vectorised reader with small blocks: a few MB of RSS instead of ~25 MB with decode's default.
        with path.open("rb") as stream:
            yield from _rows(CandumpLogReader(stream, str(path), stats, block_bytes=BLOCK_BYTES))
    else:
        capture = open_capture(str(path), chunk_size=CHUNK_FRAMES)
        try:
            yield from _rows(capture)
        finally:
            stats.malformed += capture.stats.malformed


def _rows(batches: Iterable[FrameBatch]) -> Iterator[can.Message]:
    for batch in batches:
        yield from batch.messages()
