"""csv output: one row per signal value, `timestamp,channel,id,message,signal,value,unit`, in capture
order; `value` is the value-table name where there is one (unless `--no-choices`), else the physical
value; `unit` is the DBC's (empty where it has none)."""

from __future__ import annotations

import csv
import io
from typing import TextIO

from firmware_agent.decode.records import column_values, in_capture_order
from firmware_agent.decode.vectorised import DecodedGroup


class CsvWriter:
    """One CSV row per signal value, in capture order."""

    header = ("timestamp", "channel", "id", "message", "signal", "value", "unit")

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        csv.writer(stream, lineterminator="\n").writerow(self.header)

    def write(self, groups: list[DecodedGroup]) -> None:
        """Write one batch's frames as CSV rows."""
        texts = [self._group_rows(group) for group in groups]
        self.stream.writelines(in_capture_order(groups, texts))

    @staticmethod
    def _group_rows(group: DecodedGroup) -> list[str]:
        prefix_tail = f",{csv_field(group.channel)},{group.arbitration_id},{csv_field(group.message.name)},"
        units = {signal.name: signal.unit or "" for signal in group.message.signals}
        names = [csv_field(name) for name in group.signals]
        tails = [f",{csv_field(units.get(name, ''))}\n" for name in group.signals]
        columns = [column_values(column) for column in group.signals.values()]
        stamps = [repr(value) for value in group.timestamp.tolist()]
        rows = []
        for stamp, *values in zip(stamps, *columns, strict=False):
            prefix = stamp + prefix_tail
            rows.append(
                "".join(
                    f"{prefix}{name},{csv_field(str(value))}{tail}"
                    for name, tail, value in zip(names, tails, values, strict=False)
                    if value is not None
                )
            )
        return rows

    def flush(self) -> None:
        """Hand what is written to the reader now (live input)."""
        self.stream.flush()

    def close(self) -> None:
        """Flush the stream."""
        self.stream.flush()


def csv_field(text: str) -> str:
    """`text` as one csv cell: quoted (csv module rules) only when it holds a comma, quote or line break."""
    if any(char in text for char in ',"\n\r'):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow([text])
        return buffer.getvalue()
    return text
