"""Frame records (decode → collect without a `Sample` per value) give exactly the batches samples give.

The vehicle's DBCs with random payloads go through `SampleDecoder.process_records`; one collector takes the
records, another the same values as `Sample`s, with campaigns of every mode: `all` of every signal and of
a few (a multiplexed message's signals among them), batches so small that they fill within a frame,
periodic, throttled on-change and triggered campaigns.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from firmware_agent.collect.campaign import Campaign, loads_campaigns
from firmware_agent.collect.collector import Collector
from firmware_agent.decode.catalog import Catalog
from firmware_agent.pipeline.decoding import SampleDecoder
from firmware_agent.pipeline.e2e_check import E2EChecker, E2ESettings
from firmware_agent.values import Batch, FrameRecord, Sample, SignalGroup, samples_of
from firmware_agent.vehicle import default_dbc_dir, default_dbc_specs
from firmware_agent.vss import VssMap
from tests.unit.test_pipeline_decoding import random_frames

CAMPAIGNS = """
[[campaign]]
name = "everything"
mode = "all"
batch_interval_s = 0.5
max_batch_samples = 7

[[campaign]]
name = "everything-big"
mode = "all"
batch_interval_s = 1

[[campaign]]
name = "some"
mode = "all"
batch_interval_s = 0.4
max_batch_samples = 5
signals = ["Vehicle.Speed", "SEAT_MEMORY.SeatPage", "SEAT_MEMORY.MirrorPosLeft",
           "Vehicle.Chassis.Axle.Row2.Wheel.Right.Speed", "Vehicle.Chassis.Axle.Row1.Wheel.Left.Speed",
           "Vehicle.Powertrain.Transmission.SelectedGear"]

[[campaign]]
name = "one"
mode = "all"
signals = ["Vehicle.Chassis.SteeringWheel.Angle"]

[[campaign]]
name = "tick"
mode = "periodic"
period_ms = 100
batch_interval_s = 1
signals = ["Vehicle.Speed", "Vehicle.Cabin.Seat.Row1.DriverSide.Position", "HU_STATUS.Muted"]

[[campaign]]
name = "changes"
mode = "on_change"
deadband = 5
min_interval_ms = 20
signals = ["Vehicle.Chassis.SteeringWheel.Angle", "HU_STATUS.Muted", "SEAT_MEMORY.SeatPage"]

[[campaign]]
name = "fast"
mode = "triggered"
condition = "Vehicle.Speed > 200"
pre_trigger_s = 0.05
post_trigger_s = 0.05
cooldown_s = 0.2
signals = ["Vehicle.Speed", "Vehicle.Chassis.SteeringWheel.Angle"]
"""


@pytest.fixture(scope="module")
def records() -> list[list[FrameRecord]]:
    catalog = Catalog.from_specs(default_dbc_specs())
    vss = VssMap.load(default_dbc_dir() / "vss.toml")
    decoder = SampleDecoder(catalog, vss, None, E2EChecker(E2ESettings(), lambda event: None))
    frames = random_frames(catalog, 6000, seed=3)
    return [decoder.process_records(frames[start : start + 100]) for start in range(0, len(frames), 100)]


def collect(
    campaigns: list[Campaign], chunks: list[list[FrameRecord]], feed: Callable[[Collector, list], None]
) -> tuple[dict[str | None, list[tuple]], dict[str, int]]:
    collector = Collector(campaigns)
    batches: list[Batch] = []
    for chunk in chunks:
        feed(collector, chunk)
        batches += collector.poll()
    batches += collector.flush()
    by_campaign: dict[str | None, list[tuple]] = {}
    for batch in batches:
        samples = {name: (list(times), list(values)) for name, (times, values) in batch.samples.items()}
        by_campaign.setdefault(batch.campaign, []).append((samples, batch.events, batch.priority))
    return by_campaign, collector.counters


def test_records_give_the_batches_samples_give(records: list[list[FrameRecord]]) -> None:
    campaigns = loads_campaigns(CAMPAIGNS)
    by_records, counters = collect(campaigns, records, lambda c, chunk: c.offer_records(chunk))
    by_samples, expected = collect(campaigns, records, lambda c, chunk: c.offer_many(samples_of(chunk)))
    assert by_records == by_samples
    assert counters == expected
    # The campaigns did their work: full batches, triggers, per-sample and row paths all ran.
    assert counters["batches_full"] > 100 and counters["triggers"] > 0
    assert {"everything", "some", "one", "tick", "changes", "fast"} <= set(by_records)
    seat = {name for samples, _, _ in by_records["everything"] for name in samples if "SEAT_MEMORY" in name}
    assert "SEAT_MEMORY.SeatPage" in seat and len(seat) > 3


def test_series_stay_in_arrival_order_when_groups_share_a_name() -> None:
    """Two shapes sharing a name (multiplexer branches): one signal's samples keep their order."""
    first, second = SignalGroup(("mux", "a")), SignalGroup(("mux", "b"))
    collector = Collector(loads_campaigns('[[campaign]]\nname = "x"\nmode = "all"\n'))
    collector.offer_records([(1.0, first, (0, 10)), (2.0, second, (1, 20)), (3.0, first, (0, 11))])
    collector.offer(Sample(4.0, "mux", 1))
    (batch,) = collector.flush()
    assert batch.samples == {
        "mux": ([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1]),
        "a": ([1.0, 3.0], [10, 11]),
        "b": ([2.0], [20]),
    }
    assert collector.counters["samples_in"] == 7
