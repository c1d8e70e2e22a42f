"""`verify` exports batches (campaign, counters, driver) and parquet (issue 10, part 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.cli import main
from firmware_agent.telemetry.cose import Signer
from firmware_agent.telemetry.keys import public_key_pem
from firmware_agent.telemetry.sealer import BatchSealer
from firmware_agent.telemetry.verify import DumpWriter
from firmware_agent.values import Batch, Event, Sample

TOPIC = "vehicles/veh-0001/telemetry"


@pytest.fixture
def dump_and_key(tmp_path: Path) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "pub.pem"
    pub.write_text(public_key_pem(key.public_key()))
    seal = BatchSealer("veh-0001", Signer(key))
    dump = tmp_path / "drive.dump"
    with dump.open("w") as stream:
        writer = DumpWriter(stream)
        for seq in range(3):
            batch = Batch(
                campaign="brakes",
                counters={"evicted": seq},
                driver={"profile": None, "source": "none", "confidence": 0.0},
            )
            batch.add(Sample(1.7e9 + seq, "Vehicle.Speed", 10.0 * seq))
            batch.add(Sample(1.7e9 + seq, "Vehicle.Powertrain.Transmission.SelectedGear", "D"))
            batch.events.append(Event(1.7e9 + seq + 0.25, "bus_gap", {"bus": "chassis"}))
            writer.write(TOPIC, seal(batch, seq))
    return dump, pub


def test_batches_export_campaign_and_counters(
    tmp_path: Path, dump_and_key: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dump, pub = dump_and_key
    target = tmp_path / "batches.jsonl"
    argv = ["verify", str(dump), "--public-key", str(pub), "--format", "none", "--batches", str(target)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["seq"] for row in rows] == [0, 1, 2]
    assert rows[2]["campaign"] == "brakes" and rows[2]["counters"] == {"evicted": 2}
    assert rows[0]["samples"] == 2 and rows[0]["events"] == 1 and rows[0]["driver"]["source"] == "none"


def test_parquet_export_holds_samples_events_and_batches(
    tmp_path: Path, dump_and_key: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    dump, pub = dump_and_key
    folder = tmp_path / "out"
    assert (
        main(["verify", str(dump), "--public-key", str(pub), "--format", "parquet", "-o", str(folder)]) == 0
    )
    samples = pq.read_table(folder / "samples.parquet").to_pylist()
    assert len(samples) == 6
    gear = [row for row in samples if row["signal"].endswith("SelectedGear")]
    assert {row["value_text"] for row in gear} == {"D"} and all(row["value_num"] is None for row in gear)
    speed = [row["value_num"] for row in samples if row["signal"] == "Vehicle.Speed"]
    assert speed == [0.0, 10.0, 20.0]
    assert samples[0]["time"].timestamp() == pytest.approx(1.7e9)
    events = pq.read_table(folder / "events.parquet").to_pylist()
    assert [event["kind"] for event in events] == ["bus_gap"] * 3
    assert json.loads(events[0]["detail"]) == {"bus": "chassis"}
    batches = pq.read_table(folder / "batches.parquet").to_pylist()
    assert [json.loads(row["counters"]) for row in batches] == [{"evicted": n} for n in range(3)]
    assert {row["campaign"] for row in batches} == {"brakes"}
