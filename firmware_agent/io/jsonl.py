"""jsonl output: one JSON object per decoded frame, in capture order (the contract in `decode/records.py`)."""

from __future__ import annotations

from typing import TextIO

from firmware_agent.decode.records import group_json_lines, in_capture_order
from firmware_agent.decode.vectorised import DecodedGroup


class JsonlWriter:
    """One JSON object per decoded frame, in capture order."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, groups: list[DecodedGroup]) -> None:
        """Write one batch's frames as jsonl."""
        texts = [group_json_lines(group) for group in groups]
        self.stream.writelines(in_capture_order(groups, texts))

    def flush(self) -> None:
        """Hand what is written to the reader now (live input)."""
        self.stream.flush()

    def close(self) -> None:
        """Flush the stream."""
        self.stream.flush()
