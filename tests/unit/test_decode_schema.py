"""Units, types and the schema (issue 10, part 2): `signals`, csv units, parquet metadata, sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_agent.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_rav4(tmp_path: Path, rav4_capture: Path) -> Path:
    path = tmp_path / "rav4.log"
    with rav4_capture.open("rb") as source:
        path.write_bytes(b"".join(source.readline() for _ in range(3000)))
    return path


def test_signals_json_is_the_schema_with_vss_datatypes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["signals", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    messages = {message["name"]: message for message in document["messages"]}
    gear = next(s for s in messages["GEAR_STATUS"]["signals"] if s["name"] == "GearSelected")
    assert gear["telemetry_name"] == "Vehicle.Powertrain.Transmission.SelectedGear"
    assert gear["datatype"] == "string" and gear["vss_datatype"] == "int8"
    assert gear["choices"]["0"] == "P"
    speed = next(s for s in messages["VEHICLE_SPEED"]["signals"] if s["name"] == "VehicleSpeed")
    assert speed["unit"] == "km/h" and speed["datatype"] == "number" and speed["vss"] == "Vehicle.Speed"
    assert messages["VEHICLE_SPEED"]["cycle_time_ms"] and messages["VEHICLE_SPEED"]["channel"] == "powertrain"
    assert "signals --json" in (ROOT / "docs" / "telemetry-format.md").read_text()


def test_signals_table_for_given_dbc(capsys: pytest.CaptureFixture[str], test_data: Path) -> None:
    assert main(["signals", "--dbc", str(test_data / "dbc" / "cantools__motohawk.dbc")]) == 0
    out = capsys.readouterr().out
    assert "* 0x1F0 ExampleMessage (8 bytes" in out
    assert "  Temperature: number degK [229.52..270.47]" in out
    assert "    0=Disabled, 1=Enabled" in out


def test_parquet_carries_units_choices_and_a_utc_timestamp(
    capsys: pytest.CaptureFixture[str], small_rav4: Path, rav4_dbc_specs: list[str], tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    folder = tmp_path / "pq"
    argv = ["decode", str(small_rav4), "--format", "parquet", "-o", str(folder)]
    assert main([*argv, *(arg for spec in rav4_dbc_specs for arg in ("--dbc", spec))]) == 0
    table = pq.read_table(folder / "can0.WHEEL_SPEEDS.parquet")
    field = table.schema.field("WHEEL_SPEED_FL")
    assert field.metadata[b"unit"] == b"km/h" and field.metadata[b"datatype"] == b"number"
    assert str(table.schema.field("time").type) == "timestamp[us, tz=UTC]"
    first = table.slice(0, 1).to_pylist()[0]
    assert first["time"].timestamp() == pytest.approx(first["timestamp"], abs=1e-6)


def test_jsonl_output_gets_a_schema_sidecar(
    capsys: pytest.CaptureFixture[str], small_rav4: Path, rav4_dbc_specs: list[str], tmp_path: Path
) -> None:
    target = tmp_path / "out.jsonl"
    argv = ["decode", str(small_rav4), "-o", str(target)]
    assert main([*argv, *(arg for spec in rav4_dbc_specs for arg in ("--dbc", spec))]) == 0
    schema = json.loads((tmp_path / "out.jsonl.schema.json").read_text())
    decoded = {json.loads(line)["message"] for line in target.read_text().splitlines()}
    assert {message["name"] for message in schema["messages"]} == decoded
    wheel = next(m for m in schema["messages"] if m["name"] == "WHEEL_SPEEDS")
    assert {s["unit"] for s in wheel["signals"]} == {"km/h", ""}
