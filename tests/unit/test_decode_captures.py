"""Real captures end to end: the RAV4 drive against cantools and comma's ground truth, J1939 MF4 logs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import can
import numpy as np
import pytest

from firmware_agent.decode.captures import DecodeOptions, decode_captures
from firmware_agent.decode.catalog import Catalog, j1939_pgn
from firmware_agent.decode.compiled import FrameDecoder
from firmware_agent.decode.summary import Summary
from firmware_agent.decode.vectorised import VectorDecoder
from firmware_agent.io import open_capture
from firmware_agent.io.jsonl import JsonlWriter

#: truth time (the logger's boot clock) + this = capture timestamp (see the data README)
BOOT_TO_CAPTURE = 1533226487.0 - 46408.58493039533


@pytest.fixture(scope="module")
def rav4_records(rav4_capture: Path, rav4_dbc_specs: list[str]) -> tuple[list[dict], Summary]:
    catalog = Catalog.from_specs(rav4_dbc_specs, warn_stream=None)
    out = io.StringIO()
    summary = Summary()
    decode_captures([str(rav4_capture)], catalog, DecodeOptions(), JsonlWriter(out), summary)
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


def _as_json(value: object) -> object:
    return str(value) if hasattr(value, "name") and hasattr(value, "value") else value


def test_rav4_jsonl_is_what_cantools_gives_for_every_frame(
    rav4_records: tuple[list[dict], Summary], rav4_capture: Path, rav4_dbc_specs: list[str]
) -> None:
    records, summary = rav4_records
    catalog = Catalog.from_specs(rav4_dbc_specs, warn_stream=None)
    per_frame = FrameDecoder(catalog)
    expected = []
    refused = 0
    for frame in can.LogReader(str(rav4_capture)):
        message = catalog.lookup(frame.channel, frame.arbitration_id, frame.is_extended_id)
        if message is None:
            continue
        try:
            signals = message.decode(bytes(frame.data), decode_choices=True)
        except Exception:
            refused += 1
            assert per_frame.decode(frame) is None
            continue
        expected.append((frame.timestamp, frame.channel, frame.arbitration_id, message.name, signals))
        decoded = per_frame.decode(frame)
        assert decoded is not None and decoded[1] == signals
    assert refused == 62  # PCS_HUD (0x411): cantools cannot unpack its overlapping signals
    assert len(records) == len(expected) > 89_000
    for record, (timestamp, channel, frame_id, name, signals) in zip(records, expected, strict=True):
        assert (record["timestamp"], record["channel"], record["id"], record["message"]) == (
            timestamp,
            channel,
            frame_id,
            name,
        )
        assert record["signals"] == {key: _as_json(value) for key, value in signals.items()}
    assert summary.skips["signals do not fit the message"] == 62
    assert summary.decoded == len(records)


def test_rav4_wheel_speeds_match_commas_ground_truth(
    rav4_records: tuple[list[dict], Summary], test_data: Path
) -> None:
    records, _ = rav4_records
    wheels = [r for r in records if r["message"] == "WHEEL_SPEEDS"]
    times = np.array([r["timestamp"] for r in wheels])
    with (test_data / "captures" / "rav4" / "truth_wheel_speed.csv").open() as source:
        truth = list(csv.DictReader(source))
    assert len(truth) > 3000
    for row in truth:
        at = float(row["boot_time_s"]) + BOOT_TO_CAPTURE
        nearest = int(np.argmin(np.abs(times - at)))
        assert abs(times[nearest] - at) < 1e-3
        signals = wheels[nearest]["signals"]
        ours = [signals[f"WHEEL_SPEED_{corner}"] / 3.6 for corner in ("FL", "FR", "RL", "RR")]
        theirs = [float(row[f"value{i}"]) for i in range(4)]
        assert ours == pytest.approx(theirs, abs=1e-9)


def test_j1939_mf4_decodes_by_pgn(test_data: Path) -> None:
    dbc = test_data / "dbc" / "css__CSS-Electronics-SAE-J1939-DEMO.dbc"
    capture = test_data / "captures" / "css_mf4" / "other_asammdf-basics_input_00000001.MF4"
    catalog = Catalog.from_specs([str(dbc)], warn_stream=None)
    by_pgn = {j1939_pgn(m.frame_id): m for m in catalog.messages()}
    decoder = VectorDecoder(catalog)
    checked = 0
    for batch in open_capture(str(capture)):
        out = io.StringIO()
        groups = decoder.decode(batch).groups
        JsonlWriter(out).write(groups)
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        rows = np.sort(np.concatenate([group.rows for group in groups]))
        assert {r["message"] for r in records} == {m.name for m in by_pgn.values()}
        assert any(r["id"] not in {m.frame_id for m in by_pgn.values()} for r in records)  # by PGN only
        for record, row in list(zip(records, rows.tolist(), strict=True))[::31]:
            frame = batch.message(row)
            expected = by_pgn[j1939_pgn(frame.arbitration_id)].decode(bytes(frame.data))
            assert record["id"] == frame.arbitration_id
            assert record["signals"] == {name: _as_json(value) for name, value in expected.items()}
            checked += 1
    assert checked > 100


def test_canmod_gps_is_bound_to_its_channel(test_data: Path) -> None:
    capture = test_data / "captures" / "css_mf4" / "other_matlab-basics_LOG_11111111_00000012_00000001.MF4"
    gps = test_data / "dbc" / "css__canmod-gps.dbc"
    catalog = Catalog.from_specs([f"2={gps}"], warn_stream=None)
    summary = Summary()
    decode_captures([str(capture)], catalog, DecodeOptions(), None, summary)
    assert summary.decoded > 1000
    assert {channel for channel, _ in summary.messages} == {"2"}
