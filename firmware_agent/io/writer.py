"""What every output format of `decode` offers (`jsonl.py`, `csv.py`, `parquet.py`)."""

from __future__ import annotations

from typing import Protocol

from firmware_agent.decode.vectorised import DecodedGroup


class RecordWriter(Protocol):
    """Receives the decoded groups of each batch in turn."""

    def write(self, groups: list[DecodedGroup]) -> None:
        """Write one batch's decoded frames."""

    def close(self) -> None:
        """Flush and finish the output."""
