"""Plain `candump` console output, as piped from a live bus: `  can0  123   [8]  11 22 33 ...`.

Also the CAN FD form (`[08]`, `[64]`), absolute or relative timestamps (`-t a`, `-t d`, `-t z`:
`(1533226487.000018)  can0  ...`), the `-x` direction and flag columns, remote requests and error frames.
Lines without a timestamp get the time they were read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import numpy as np

from firmware_agent.errors import UserError
from firmware_agent.io.candump_log import MAX_DATA_BYTES, Frame
from firmware_agent.io.frames import FrameBatch
from firmware_agent.io.text import LineReader

_LINE = re.compile(
    rb"^\s*(?:\((?P<time>\d+(?:\.\d+)?)\)\s+)?(?P<channel>\S+)\s+(?:[RT]X\s+(?:(?P<brs>[-B])\s+[-E]\s+)?)?"
    rb"(?P<id>[0-9A-Fa-f]{1,8})\s+\[(?P<length>\d{1,2})\]\s*(?P<rest>.*?)\s*$"
)
_HEX_BYTES = re.compile(rb"^(?:[0-9A-Fa-f]{2}(?:\s+|$))*")
_CAN_ERR_FLAG = 0x20000000
#: Lines per batch from a pipe: small, so frames from a live bus come out promptly.
_PIPE_BLOCK_BYTES = 64 << 10

SNIFF = re.compile(_LINE.pattern, re.M)


def parse_line(line: bytes, now: float) -> Frame | None:
    """Parse one console line; None for a blank line, ValueError when malformed."""
    if not line.strip():
        return None
    match = _LINE.match(line)
    if match is None:
        raise ValueError("not a candump line")
    arbitration_id = int(match["id"], 16)
    length = int(match["length"])
    rest = match["rest"]
    is_remote = rest.startswith(b"remote request")
    is_error = (arbitration_id & _CAN_ERR_FLAG != 0 and len(match["id"]) == 8) or b"ERRORFRAME" in rest
    data = b""
    if not is_remote:
        hex_part = _HEX_BYTES.match(rest)
        data = bytes.fromhex(hex_part.group(0).decode("ascii")) if hex_part else b""
        if len(data) != length:
            raise ValueError(f"[{length}] but {len(data)} data bytes")
        if length > MAX_DATA_BYTES:
            raise ValueError(f"{length} data bytes, more than a CAN frame's {MAX_DATA_BYTES}")
    stamp = match["time"]
    return Frame(
        timestamp=float(stamp) if stamp else now,
        channel=match["channel"].decode("utf-8", "replace"),
        arbitration_id=arbitration_id & 0x1FFFFFFF,
        is_extended=len(match["id"]) > 3,
        is_fd=length > 8 or (len(match["length"]) == 2 and match["length"].startswith(b"0")),  # [08]
        is_remote=is_remote,
        is_error=is_error,
        data=data,
        bitrate_switch=match["brs"] == b"B",
    )


class CandumpConsoleReader(LineReader):
    """Batches of frames from candump's console output; malformed lines counted (fatal with `strict`)."""

    format_name = "candump output"
    block_bytes = _PIPE_BLOCK_BYTES

    def __iter__(self) -> Iterator[FrameBatch]:
        first_line = 1
        for block in self._blocks:
            now = time.time()
            frames: list[Frame] = []
            lines = block.split(b"\n")[:-1]
            for offset, line in enumerate(lines):
                try:
                    frame = parse_line(line, now)
                except ValueError:
                    if self.strict:
                        shown = line.decode("utf-8", "replace")[:80]
                        raise UserError(
                            f"{self.name}:{first_line + offset}: malformed candump line: {shown!r}"
                        ) from None
                    self.stats.add_malformed(first_line + offset)
                    continue
                if frame is not None:
                    frames.append(frame)
            first_line += len(lines)
            if frames:
                yield batch_from_frames(frames)


def batch_from_frames(frames: list[Frame]) -> FrameBatch:
    """Pack parsed line frames into a `FrameBatch`."""
    names: dict[str, int] = {}
    width = max(1, max(len(f.data) for f in frames))
    data = np.zeros((len(frames), width), np.uint8)
    for row, frame in enumerate(frames):
        data[row, : len(frame.data)] = np.frombuffer(frame.data, np.uint8)
    return FrameBatch(
        timestamp=np.array([f.timestamp for f in frames], np.float64),
        channel=np.array([names.setdefault(f.channel, len(names)) for f in frames], np.int32),
        channels=list(names),
        arbitration_id=np.array([f.arbitration_id for f in frames], np.uint32),
        is_extended=np.array([f.is_extended for f in frames], bool),
        is_fd=np.array([f.is_fd for f in frames], bool),
        is_remote=np.array([f.is_remote for f in frames], bool),
        is_error=np.array([f.is_error for f in frames], bool),
        length=np.array([len(f.data) for f in frames], np.int16),
        data=data,
        bitrate_switch=np.array([f.bitrate_switch for f in frames], bool),
    )
