"""The collector on the real RAV4 capture, decoded with cantools, with `docs/examples/campaigns/rav4.toml`.

The brake module's pressure rises five times in the 60 s capture (t = 24.7, 30.9, 57.9, 58.6, 58.8 s from
the start); every expectation below is computed from the decoded stream, not hard-coded.
"""

from __future__ import annotations

from pathlib import Path

import can
import pytest

from firmware_agent.collect.campaign import Campaign, load_campaigns, needed_signals
from firmware_agent.collect.collector import Collector
from firmware_agent.collect.names import SignalNames
from firmware_agent.decode.catalog import Catalog
from firmware_agent.values import PRIORITY_HIGH, Batch, Sample

CAMPAIGNS = Path(__file__).resolve().parents[2] / "docs" / "examples" / "campaigns" / "rav4.toml"
PRESSURE = "BRAKE_MODULE.BRAKE_PRESSURE"


@pytest.fixture(scope="module")
def campaigns(rav4_dbc_specs: list[str]) -> dict[str, Campaign]:
    catalog = Catalog.from_specs(rav4_dbc_specs, warn_stream=None)
    loaded = load_campaigns(CAMPAIGNS, SignalNames.from_catalog(catalog))
    return {campaign.name: campaign for campaign in loaded}


@pytest.fixture(scope="module")
def samples(rav4_capture: Path, rav4_dbc_specs: list[str], campaigns: dict[str, Campaign]) -> list[Sample]:
    """The samples the campaigns need, decoded from every frame of the capture with cantools."""
    catalog = Catalog.from_specs(rav4_dbc_specs, warn_stream=None)
    wanted = needed_signals(campaigns.values())
    assert wanted is not None
    stream: list[Sample] = []
    for frame in can.LogReader(str(rav4_capture)):
        message = catalog.lookup(frame.channel, frame.arbitration_id, frame.is_extended_id)
        if message is None or not any(f"{message.name}.{s.name}" in wanted for s in message.signals):
            continue
        decoded = message.decode(frame.data, decode_choices=True)
        for signal, value in decoded.items():
            name = f"{message.name}.{signal}"
            if name in wanted:
                stream.append(Sample(frame.timestamp, name, value))  # type: ignore[arg-type]
    return stream


@pytest.fixture(scope="module")
def collected(samples: list[Sample], campaigns: dict[str, Campaign]) -> tuple[list[Batch], dict[str, int]]:
    collector = Collector(list(campaigns.values()))
    batches: list[Batch] = []
    for sample in samples:
        collector.offer(sample)
        batches += collector.poll()
    batches += collector.flush()
    return batches, collector.counters


def rows(batches: list[Batch]) -> list[tuple[str, float, object]]:
    found = []
    for batch in batches:
        for name, (times, values) in batch.samples.items():
            found += [(name, t, v) for t, v in zip(times, values, strict=True)]
    return sorted(found, key=lambda row: (row[1], row[0]))


def rising_edges(samples: list[Sample]) -> list[float]:
    edges, pressed = [], False
    for sample in samples:
        if sample.name == PRESSURE:
            now = float(sample.value) > 100  # type: ignore[arg-type]
            if now and not pressed:
                edges.append(sample.timestamp)
            pressed = now
    return edges


def test_braking_captures_keep_exactly_ten_seconds_before_and_five_after(
    samples: list[Sample], campaigns: dict[str, Campaign], collected: tuple[list[Batch], dict[str, int]]
) -> None:
    batches, counters = collected
    braking = campaigns["braking"]
    # A capture larger than max_batch_samples comes in several batches; the first carries the trigger.
    captures: list[list[Batch]] = []
    for batch in batches:
        if batch.campaign == "braking":
            if batch.events:
                captures.append([])
            captures[-1].append(batch)
    assert len(captures[0]) > 1
    edges = rising_edges(samples)
    assert len(edges) == 5
    # Reference for the documented policy: an edge inside an open capture is ignored (no cooldown set).
    accepted: list[float] = []
    for edge in edges:
        if not accepted or edge > accepted[-1] + braking.post_trigger_s:
            accepted.append(edge)
    assert [capture[0].events[0].timestamp for capture in captures] == accepted
    assert (counters["triggers"], counters["triggers_suppressed"]) == (
        len(accepted),
        len(edges) - len(accepted),
    )

    first = captures[0]
    trigger = accepted[0]
    signals = set(braking.signals)
    expected = [
        (s.name, s.timestamp, s.value)
        for s in samples
        if s.name in signals and trigger - 10.0 <= s.timestamp <= trigger + 5.0
    ]
    assert rows(first) == sorted(expected, key=lambda row: (row[1], row[0]))
    assert len(expected) > 10_000 and all(batch.priority == PRIORITY_HIGH for batch in first)
    times = [t for _, t, _ in rows(first)]
    assert trigger - 10.0 <= times[0] < trigger - 9.9 and trigger + 4.9 < times[-1] <= trigger + 5.0

    # The second capture starts where the first ended: nothing is sent twice.
    second = rows(captures[1])
    assert second[0][1] > trigger + 5.0
    # The last capture was still open when the capture ended.
    assert counters["captures_truncated"] == 1
    assert max(t for _, t, _ in rows(captures[-1])) == max(s.timestamp for s in samples if s.name in signals)


def test_periodic_speed_is_the_last_value_of_each_second(
    samples: list[Sample], collected: tuple[list[Batch], dict[str, int]]
) -> None:
    batches, _ = collected
    got = rows([batch for batch in batches if batch.campaign == "speed"])
    start = samples[0].timestamp  # the collector's grid starts at the first sample it sees
    last_per_second: dict[int, tuple[str, float, object]] = {}
    for sample in samples:
        if sample.name == "SPEED.SPEED":
            last_per_second[int((sample.timestamp - start) // 1.0)] = (
                sample.name,
                sample.timestamp,
                sample.value,
            )
    assert got == list(last_per_second.values())
    assert 59 <= len(got) <= 61


def test_steering_on_change_with_a_one_degree_deadband(
    samples: list[Sample], collected: tuple[list[Batch], dict[str, int]]
) -> None:
    batches, _ = collected
    got = rows([batch for batch in batches if batch.campaign == "steering"])
    expected, last = [], None
    for sample in samples:
        if sample.name != "STEER_ANGLE_SENSOR.STEER_ANGLE":
            continue
        if last is None or abs(sample.value - last) > 1.0:  # type: ignore[operator]
            expected.append((sample.name, sample.timestamp, sample.value))
            last = sample.value
    assert got == expected
    steering_samples = sum(1 for s in samples if s.name == "STEER_ANGLE_SENSOR.STEER_ANGLE")
    assert 10 < len(got) < steering_samples / 2
