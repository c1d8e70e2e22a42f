"""What `verify` exports beyond samples: one line per batch (campaign, counters, driver) and parquet.

`BatchWriter` (`verify --batches FILE`): JSON lines `{vehicle, seq, time, campaign, counters, driver,
samples, events}`, one per verified batch, so that loss counters and the campaign travel with the data.

`ParquetExport` (`verify --format parquet -o FOLDER`): `samples.parquet` (`vehicle, seq, time, timestamp,
signal, value_num, value_text`: numbers and labels apart, as the fleet ingest stores them),
`events.parquet` (`vehicle, seq, time, timestamp, kind, detail` as JSON text, `driver` profile) and
`batches.parquet` (the `--batches` fields; `counters` and `driver` as JSON text). `time` is
`timestamp[us, tz=UTC]`, `timestamp` float seconds. Rows are written in row groups of `row_group_rows`,
so memory stays bounded however long the dump is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from firmware_agent.errors import UserError
from firmware_agent.telemetry.verify import VerifiedBatch


def batch_record(batch: VerifiedBatch) -> dict[str, Any]:
    """The per-batch fields of a verified batch."""
    payload = batch.payload
    return {
        "vehicle": payload.vehicle,
        "seq": payload.seq,
        "time": round(payload.t0, 6),
        "campaign": payload.campaign,
        "counters": payload.counters or {},
        "driver": payload.driver,
        "samples": payload.sample_count(),
        "events": len(payload.events),
    }


class BatchWriter:
    """One JSON line per verified batch."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, batch: VerifiedBatch) -> None:
        """Write the batch's line."""
        self._stream.write(json.dumps(batch_record(batch), default=str) + "\n")
        self._stream.flush()


class ParquetExport:
    """samples.parquet, events.parquet and batches.parquet in one folder."""

    def __init__(self, folder: Path, row_group_rows: int = 65_536) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet
        except ImportError:
            raise UserError("parquet output needs pyarrow: pip install 'firmware-agent[parquet]'") from None
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder}: verify --format parquet writes a folder; this is a file")
        folder.mkdir(parents=True, exist_ok=True)
        self._pa = pa
        self.folder = folder
        self.row_group_rows = row_group_rows
        time = pa.timestamp("us", tz="UTC")
        self.schemas = {
            "samples": pa.schema(
                [
                    ("vehicle", pa.string()),
                    ("seq", pa.int64()),
                    ("time", time),
                    ("timestamp", pa.float64()),
                    ("signal", pa.string()),
                    ("value_num", pa.float64()),
                    ("value_text", pa.string()),
                ]
            ),
            "events": pa.schema(
                [
                    ("vehicle", pa.string()),
                    ("seq", pa.int64()),
                    ("time", time),
                    ("timestamp", pa.float64()),
                    ("kind", pa.string()),
                    ("detail", pa.string()),
                    ("driver", pa.string()),
                ]
            ),
            "batches": pa.schema(
                [
                    ("vehicle", pa.string()),
                    ("seq", pa.int64()),
                    ("time", time),
                    ("timestamp", pa.float64()),
                    ("campaign", pa.string()),
                    ("counters", pa.string()),
                    ("driver", pa.string()),
                    ("samples", pa.int64()),
                    ("events", pa.int64()),
                ]
            ),
        }
        self._rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in self.schemas}
        self._writers: dict[str, Any] = {}

    def write(self, batch: VerifiedBatch) -> None:
        """Add a batch's samples, events and batch row."""
        payload = batch.payload
        profile = (payload.driver or {}).get("profile")
        for sample in payload.samples():
            value = sample.value
            number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
            text = value if isinstance(value, str) else None
            self._add(
                "samples",
                (
                    payload.vehicle,
                    payload.seq,
                    _micros(sample.timestamp),
                    sample.timestamp,
                    sample.name,
                    number,
                    text,
                ),
            )
        for event in payload.events:
            detail = json.dumps(event.detail, default=str) if event.detail is not None else None
            self._add(
                "events",
                (
                    payload.vehicle,
                    payload.seq,
                    _micros(event.timestamp),
                    event.timestamp,
                    event.kind,
                    detail,
                    profile,
                ),
            )
        record = batch_record(batch)
        self._add(
            "batches",
            (
                payload.vehicle,
                payload.seq,
                _micros(payload.t0),
                payload.t0,
                payload.campaign,
                json.dumps(record["counters"]),
                json.dumps(payload.driver, default=str),
                record["samples"],
                record["events"],
            ),
        )

    def _add(self, name: str, row: tuple[Any, ...]) -> None:
        rows = self._rows[name]
        rows.append(row)
        if len(rows) >= self.row_group_rows:
            self._flush(name)

    def _flush(self, name: str) -> None:
        import pyarrow.parquet as pq

        pa = self._pa
        schema = self.schemas[name]
        rows = self._rows[name]
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
        table = pa.table(
            [pa.array(list(column), field.type) for column, field in zip(columns, schema, strict=True)],
            schema=schema,
        )
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = pq.ParquetWriter(str(self.folder / f"{name}.parquet"), schema)
        writer.write_table(table)
        self._rows[name] = []

    def close(self) -> None:
        """Write what is buffered and finish the three files (empty ones too: the schema is the contract)."""
        for name in self.schemas:
            if self._rows[name] or name not in self._writers:
                self._flush(name)
            self._writers[name].close()


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)
