"""One tidy parquet file (`--format parquet --single-file -o FILE.parquet`): one row per signal value.

Columns: `time` (`timestamp[us, tz=UTC]`), `timestamp` (float64 seconds), `channel`, `id` (uint32),
`message`, `signal`, `unit` (dictionary strings), `value` (float64: the physical value, null where it is
not a number) and `label` (the value-table name, null where there is none). pandas, polars and DuckDB
read it in one call (`pd.read_parquet`, `pl.read_parquet`, `SELECT * FROM 'FILE.parquet'`); pivot it for
a wide table. About four times the bytes of the per-message folder (`parquet.py`), which stays the
default for big captures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from firmware_agent.decode.vectorised import DecodedGroup
from firmware_agent.errors import UserError


class SingleParquetWriter:
    """Tidy rows of every message into one file, a row group per batch."""

    def __init__(self, path: Path, decode_choices: bool = True) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError("parquet output needs pyarrow: pip install 'firmware-agent[parquet]'") from None
        if path.is_dir():
            raise UserError(f"{path}: --single-file writes one file; this is a folder")
        self._pa = pa
        self.decode_choices = decode_choices
        text = pa.dictionary(pa.int32(), pa.string())
        self.schema = pa.schema(
            [
                pa.field("time", pa.timestamp("us", tz="UTC")),
                pa.field("timestamp", pa.float64(), metadata={"unit": "s"}),
                pa.field("channel", text),
                pa.field("id", pa.uint32()),
                pa.field("message", text),
                pa.field("signal", text),
                pa.field("unit", text),
                pa.field("value", pa.float64()),
                pa.field("label", pa.string()),
            ]
        )
        try:
            self._writer: Any = pq.ParquetWriter(str(path), self.schema)
        except OSError as exc:
            raise UserError(f"{path}: cannot write: {exc}") from None

    def write(self, groups: list[DecodedGroup]) -> None:
        """Write one batch's values as one row group, in capture order."""
        pa = self._pa
        parts: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        order: list[np.ndarray] = []
        for group in groups:
            units = {signal.name: signal.unit or "" for signal in group.message.signals}
            for name, column in group.signals.items():
                rows = np.ones(len(group.rows), bool) if column.present is None else column.present
                count = int(rows.sum())
                if not count:
                    continue
                stamps = group.timestamp[rows]
                parts["timestamp"].append(stamps)
                order.append(group.rows[rows])
                parts["id"].append(np.full(count, group.arbitration_id, np.uint32))
                for key, text in (("channel", group.channel), ("message", group.message.name)):
                    parts[key].append([text] * count)
                parts["signal"].append([name] * count)
                parts["unit"].append([units.get(name, "")] * count)
                values = column.values[rows]
                numbers = (
                    values.astype(np.float64)
                    if values.dtype.kind in "iuf"
                    else np.array([float(v) for v in values], np.float64)
                )
                parts["value"].append(numbers)
                labels: list[str | None] = [None] * count
                if self.decode_choices and column.label is not None and column.labels:
                    codes = column.label[rows].tolist()
                    labels = [column.labels[code] if code >= 0 else None for code in codes]
                parts["label"].append(labels)
        if not order:
            return
        sort = np.argsort(np.concatenate(order), kind="stable")
        stamps = np.concatenate(parts["timestamp"])[sort]
        arrays = {
            "time": pa.array(np.round(stamps * 1e6).astype(np.int64), pa.int64()).cast(
                self.schema.field("time").type
            ),
            "timestamp": pa.array(stamps, pa.float64()),
            "id": pa.array(np.concatenate(parts["id"])[sort], pa.uint32()),
            "value": pa.array(np.concatenate(parts["value"])[sort], pa.float64()),
        }
        for key in ("channel", "message", "signal", "unit", "label"):
            flat = np.array([item for part in parts[key] for item in part], dtype=object)[sort]
            array = pa.array(flat.tolist(), pa.string())
            arrays[key] = array.dictionary_encode() if key != "label" else array
        self._writer.write_table(pa.table([arrays[name] for name in self.schema.names], schema=self.schema))

    def close(self) -> None:
        """Finish the file."""
        self._writer.close()
