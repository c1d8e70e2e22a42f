"""`docs/examples/campaigns/demo.toml` on a simulated drive of our vehicle with an emergency stop.

Frames come from the simulator, are decoded with cantools and named as the decode stage names them (VSS
path, else MESSAGE.Signal; value-table entries as their names), then go through the collector.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from cantools.database.namedsignalvalue import NamedSignalValue

from firmware_agent.collect.campaign import Campaign, load_campaigns
from firmware_agent.collect.collector import Collector
from firmware_agent.collect.names import SignalNames
from firmware_agent.decode.catalog import Catalog
from firmware_agent.values import PRIORITY_HIGH, PRIORITY_LOW, Batch, Sample
from firmware_agent.vehicle import default_dbc_dir, default_dbc_specs
from firmware_agent.vss import VssMap
from sim.vehicle import Simulation

DEMO = Path(__file__).resolve().parents[2] / "docs" / "examples" / "campaigns" / "demo.toml"
PEDAL = "Vehicle.Chassis.Brake.PedalPosition"


@pytest.fixture(scope="module")
def drive() -> tuple[list[Sample], dict[str, Campaign]]:
    catalog = Catalog.from_specs(default_dbc_specs(), warn_stream=None)
    vss = VssMap.load(default_dbc_dir() / "vss.toml")
    campaigns = {c.name: c for c in load_campaigns(DEMO, SignalNames.from_catalog(catalog, vss))}
    samples: list[Sample] = []
    for frame in Simulation("ben", "city", seed=3, duration=60.0, hard_brakes=[25.0]).frames():
        message = catalog.lookup(frame.channel, frame.arbitration_id, frame.is_extended_id)
        if message is None:
            continue
        for signal, value in message.decode(frame.data, decode_choices=True).items():
            if isinstance(value, NamedSignalValue):
                value = str(value.name)
            samples.append(Sample(frame.timestamp, vss.name_for(message.name, signal), value))  # type: ignore[arg-type]
    return samples, campaigns


@pytest.fixture(scope="module")
def batches(drive: tuple[list[Sample], dict[str, Campaign]]) -> list[Batch]:
    samples, campaigns = drive
    collector = Collector(list(campaigns.values()))
    found: list[Batch] = []
    for sample in samples:
        collector.offer(sample)
        found += collector.poll()
    return found + collector.flush()


def rows(batches: list[Batch], campaign: str) -> list[tuple[str, float, object]]:
    found = []
    for batch in batches:
        if batch.campaign == campaign:
            for name, (times, values) in batch.samples.items():
                found += [(name, t, v) for t, v in zip(times, values, strict=True)]
    return sorted(found, key=lambda row: (row[1], row[0]))


def test_the_emergency_stop_is_captured_ten_seconds_before_and_five_after(
    drive: tuple[list[Sample], dict[str, Campaign]], batches: list[Batch]
) -> None:
    samples, campaigns = drive
    pressed = [s.timestamp for s in samples if s.name == PEDAL and float(s.value) > 80]  # type: ignore[arg-type]
    assert pressed, "the simulated emergency stop presses the brake pedal past 80 %"
    trigger = pressed[0]
    captures = [batch for batch in batches if batch.campaign == "hard-braking"]
    assert [event.timestamp for batch in captures for event in batch.events] == [trigger]
    assert all(batch.priority == PRIORITY_HIGH for batch in captures)
    signals = set(campaigns["hard-braking"].signals)
    expected = [(s.name, s.timestamp, s.value) for s in samples if s.name in signals]
    expected = [row for row in expected if trigger - 10.0 <= row[1] <= trigger + 5.0]
    assert rows(batches, "hard-braking") == sorted(expected, key=lambda row: (row[1], row[0]))
    # ABS engaged during the stop and is in the capture by its value-table name.
    assert "active" in {v for name, _, v in expected if name == "Vehicle.ADAS.ABS.IsEngaged"}


def test_drive_is_one_value_per_signal_per_second_in_ten_second_batches(batches: list[Batch]) -> None:
    drive = [batch for batch in batches if batch.campaign == "drive"]
    assert len(drive) == 6
    for batch in drive:
        for times, _ in batch.samples.values():
            assert max(times) - min(times) < 10.0
            assert all(later - earlier > 0.5 for earlier, later in pairwise(times))


def test_infotainment_is_low_priority_and_only_changes(
    drive: tuple[list[Sample], dict[str, Campaign]], batches: list[Batch]
) -> None:
    samples, _ = drive
    infotainment = [batch for batch in batches if batch.campaign == "infotainment"]
    assert infotainment and all(batch.priority == PRIORITY_LOW for batch in infotainment)
    volume = [v for name, _, v in rows(batches, "infotainment") if name.endswith("Media.Volume")]
    sent = [s.value for s in samples if s.name == "Vehicle.Cabin.Infotainment.Media.Volume"]
    assert 1 < len(volume) < len(sent)
    assert all(abs(b - a) > 1 for a, b in pairwise(volume))  # type: ignore[operator]
