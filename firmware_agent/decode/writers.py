"""Output formats for decoded frames: jsonl, csv (long), parquet (long), each fed one batch at a time.

- jsonl: one object per decoded frame, in capture order (the contract in `records.py`).
- csv: one row per signal value, `timestamp,channel,id,message,signal,value`, in capture order; `value` is
  the value-table name where there is one (unless `--no-choices`), else the physical value.
- parquet: the same long layout as columns `timestamp` (float64), `channel`, `message`, `signal`
  (dictionary-encoded strings), `id` (uint32), `value` (float64, the physical value even where a name
  exists) and `label` (the value-table name, null where there is none). One row group per batch; rows
  are ordered by message and signal within a batch, not by time (sort by `timestamp` if you need to).
  One file whatever the mix of messages, and `pivot` on `signal` gives a wide table per message.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from firmware_agent.decode.records import column_values, group_json_lines, in_capture_order
from firmware_agent.decode.vectorised import DecodedGroup
from firmware_agent.errors import UserError


class RecordWriter(Protocol):
    """Receives the decoded groups of each batch in turn."""

    def write(self, groups: list[DecodedGroup]) -> None:
        """Write one batch's decoded frames."""

    def close(self) -> None:
        """Flush and finish the output."""


class JsonlWriter:
    """One JSON object per decoded frame, in capture order."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, groups: list[DecodedGroup]) -> None:
        """Write one batch's frames as jsonl."""
        texts = [group_json_lines(group) for group in groups]
        self.stream.writelines(in_capture_order(groups, texts))

    def close(self) -> None:
        """Flush the stream."""
        self.stream.flush()


class CsvWriter:
    """One CSV row per signal value, in capture order."""

    header = ("timestamp", "channel", "id", "message", "signal", "value")

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        csv.writer(stream, lineterminator="\n").writerow(self.header)

    def write(self, groups: list[DecodedGroup]) -> None:
        """Write one batch's frames as CSV rows."""
        texts = [self._group_rows(group) for group in groups]
        self.stream.writelines(in_capture_order(groups, texts))

    @staticmethod
    def _group_rows(group: DecodedGroup) -> list[str]:
        prefix_tail = f",{_csv_field(group.channel)},{group.arbitration_id},{_csv_field(group.message.name)},"
        names = [_csv_field(name) for name in group.signals]
        columns = [column_values(column) for column in group.signals.values()]
        stamps = [repr(value) for value in group.timestamp.tolist()]
        rows = []
        for stamp, *values in zip(stamps, *columns):
            prefix = stamp + prefix_tail
            rows.append(
                "".join(
                    f"{prefix}{name},{_csv_field(str(value))}\n"
                    for name, value in zip(names, values)
                    if value is not None
                )
            )
        return rows

    def close(self) -> None:
        """Flush the stream."""
        self.stream.flush()


def _csv_field(text: str) -> str:
    if any(char in text for char in ',"\n\r'):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow([text])
        return buffer.getvalue()
    return text


class ParquetWriter:
    """The long layout in one parquet file, a row group per batch."""

    def __init__(self, path: Path) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError("parquet output needs pyarrow: pip install 'firmware-agent[parquet]'") from None
        self._pa = pa
        text = pa.dictionary(pa.int32(), pa.string())
        self.schema = pa.schema(
            [
                ("timestamp", pa.float64()),
                ("channel", text),
                ("id", pa.uint32()),
                ("message", text),
                ("signal", text),
                ("value", pa.float64()),
                ("label", text),
            ]
        )
        try:
            self._writer = pq.ParquetWriter(str(path), self.schema)
        except OSError as exc:
            raise UserError(f"{path}: cannot write: {exc}") from None

    def write(self, groups: list[DecodedGroup]) -> None:
        """Write one batch's frames as one row group."""
        if not groups:
            return
        pa = self._pa
        parts: dict[str, list[np.ndarray]] = {name: [] for name in ("timestamp", "id", "value", "label")}
        codes: dict[str, list[np.ndarray]] = {"channel": [], "message": [], "signal": []}
        dictionaries: dict[str, dict[str, int]] = {"channel": {}, "message": {}, "signal": {}}
        labels: list[str] = []
        for group in groups:
            channel = dictionaries["channel"].setdefault(group.channel, len(dictionaries["channel"]))
            message = dictionaries["message"].setdefault(group.message.name, len(dictionaries["message"]))
            for name, column in group.signals.items():
                present = column.present
                count = len(group.rows) if present is None else int(present.sum())
                signal = dictionaries["signal"].setdefault(name, len(dictionaries["signal"]))
                parts["timestamp"].append(group.timestamp if present is None else group.timestamp[present])
                values = column.values if present is None else column.values[present]
                parts["value"].append(values.astype(np.float64))
                parts["id"].append(np.full(count, group.arbitration_id, np.uint32))
                codes["channel"].append(np.full(count, channel, np.int32))
                codes["message"].append(np.full(count, message, np.int32))
                codes["signal"].append(np.full(count, signal, np.int32))
                if column.label is not None and column.labels:
                    label = column.label if present is None else column.label[present]
                    parts["label"].append(np.where(label >= 0, label + len(labels), -1).astype(np.int32))
                    labels.extend(column.labels)
                else:
                    parts["label"].append(np.full(count, -1, np.int32))
        label_codes = np.concatenate(parts["label"])
        arrays: dict[str, Any] = {
            "timestamp": pa.array(np.concatenate(parts["timestamp"])),
            "id": pa.array(np.concatenate(parts["id"])),
            "value": pa.array(np.concatenate(parts["value"])),
            "label": pa.DictionaryArray.from_arrays(
                pa.array(label_codes, mask=label_codes < 0), pa.array(labels, pa.string())
            ),
        }
        for name, chunks in codes.items():
            arrays[name] = pa.DictionaryArray.from_arrays(
                pa.array(np.concatenate(chunks)), pa.array(list(dictionaries[name]), pa.string())
            )
        self._writer.write_table(
            pa.table({name: arrays[name] for name in self.schema.names}, schema=self.schema)
        )

    def close(self) -> None:
        """Finish the file."""
        self._writer.close()
