"""`replay:PATH[?speed=X&loop=N]`: a recorded capture played back into the pipeline.

As fast as possible by default; `speed=X` paces frames at X times real time (1 = as recorded). `loop=N`
plays the capture N times, each pass shifted by the capture's duration so time keeps moving forward.
Frames keep the channel names the capture gives them (`can0`, `1`, ...) unless the spec names a bus.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import can

from firmware_agent.errors import UserError
from firmware_agent.io import detect_format, open_capture
from firmware_agent.io.candump_log import CandumpLogReader
from firmware_agent.io.frames import FrameBatch, ReadStats
from firmware_agent.sources.playback import PlaybackSource
from firmware_agent.sources.spec import SourceSpec

#: Frames (python-can formats) or bytes (candump -L) the capture reader takes at a time: bounded memory.
CHUNK_FRAMES = 5_000
BLOCK_BYTES = 256 << 10


class ReplaySource(PlaybackSource):
    """Reads every capture format `firmware-agent decode` reads (`io.open_capture`): candump -L
    (also with hex-letter FD flags), candump console output, ASC (also gzipped), BLF, TRC, CSV, MF4."""

    OPTIONS = ("speed", "loop")

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.path = Path(spec.arg)
        if not self.path.is_file():
            raise UserError(f"source {spec.text!r}: {self.path}: no such file")
        try:
            self.format_name = detect_format(str(self.path))
        except UserError as exc:
            raise UserError(f"source {spec.text!r}: {exc}") from exc
        self.loops = spec.integer("loop", 1)
        #: Malformed capture lines skipped so far, over every pass (candump readers skip and count them).
        self.stats = ReadStats()

    @property
    def name(self) -> str:
        """The bus name, else the capture's file name."""
        return self.spec.bus or self.path.name

    def frames(self) -> Iterator[can.Message]:
        """Every pass over the capture, each shifted to start after the previous one ended."""
        shift = 0.0
        first: float | None = None
        for _ in range(self.loops):
            last = first if first is not None else 0.0
            for frame in _frames_of(self.path, self.format_name, self.stats):
                if first is None:
                    first = last = frame.timestamp
                last = max(last, frame.timestamp)
                frame.timestamp += shift
                yield frame
            if first is None:
                return
            # The next pass starts one typical frame gap after this one ended.
            shift += last - first + 1e-3

    def counters(self) -> dict[str, int]:
        """`malformed_lines`: capture lines the reader could not parse and skipped."""
        return {"malformed_lines": self.stats.malformed}

    def failure(self, exc: Exception) -> Exception:
        """Every reader has its own parse errors; all mean "not a readable capture"."""
        return UserError(f"source {self.spec.text!r}: cannot read {self.path}: {exc}")


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
