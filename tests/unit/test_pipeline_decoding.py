"""The decode-to-samples stage against cantools, on the vehicle's DBCs, with and without campaigns."""

from __future__ import annotations

import math
import random

import can
import pytest
from cantools.database.can import Message

from firmware_agent.decode.catalog import Catalog
from firmware_agent.e2e_protection import profile_for
from firmware_agent.pipeline.decoding import SampleDecoder
from firmware_agent.pipeline.e2e_check import E2EChecker, E2ESettings
from firmware_agent.values import Event, Sample, samples_of
from firmware_agent.vehicle import default_dbc_dir, default_dbc_specs
from firmware_agent.vss import VssMap


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_specs(default_dbc_specs())


@pytest.fixture(scope="module")
def vss() -> VssMap:
    return VssMap.load(default_dbc_dir() / "vss.toml")


def random_frames(catalog: Catalog, count: int, seed: int = 1) -> list[can.Message]:
    """Valid frames of every message on its own bus (E2E-protected ones with counter and CRC set)."""
    rng = random.Random(seed)
    bindings = catalog.all_messages()
    counters: dict[str, int] = {}
    frames = []
    for i in range(count):
        channel, message = bindings[i % len(bindings)]
        data = bytearray(rng.getrandbits(8) for _ in range(message.length))
        profile = profile_for(message)
        if profile is not None:
            counters[message.name] = counters.get(message.name, -1) + 1
            profile.protect(data, counters[message.name])
        frames.append(
            can.Message(
                timestamp=1000.0 + i / 1000,
                channel=channel,
                arbitration_id=message.frame_id,
                is_extended_id=message.is_extended_frame,
                is_fd=message.length > 8,
                data=bytes(data),
            )
        )
    return frames


def expected_samples(
    catalog: Catalog, vss: VssMap, frames: list[can.Message], wanted: set[str] | None
) -> list:
    out = []
    for frame in frames:
        message: Message | None = catalog.lookup(frame.channel, frame.arbitration_id, frame.is_extended_id)
        assert message is not None
        try:
            decoded = message.decode(frame.data, decode_choices=True)
        except Exception:
            continue
        for signal, value in decoded.items():
            name = vss.name_for(message.name, signal)
            if wanted is None or name in wanted:
                plain = value.name if hasattr(value, "name") else value
                out.append((frame.timestamp, name, plain))
    return out


def _comparable(item: tuple) -> tuple:
    """NaN (a float signal's random bits) compares equal to NaN here."""
    timestamp, name, value = item
    return (timestamp, name, "NaN" if isinstance(value, float) and math.isnan(value) else value)


def run(catalog: Catalog, vss: VssMap, frames: list[can.Message], wanted: set[str] | None):
    samples: list[Sample] = []
    events: list[Event] = []
    decoder = SampleDecoder(catalog, vss, wanted, E2EChecker(E2ESettings(), events.append))
    for start in range(0, len(frames), 100):
        samples += decoder.process(frames[start : start + 100])
    return decoder, samples, events


def test_every_signal_equals_cantools(catalog: Catalog, vss: VssMap) -> None:
    frames = random_frames(catalog, 3000)
    decoder, samples, events = run(catalog, vss, frames, None)
    got = [(s.timestamp, s.name, s.value) for s in samples]
    assert [_comparable(t) for t in got] == [
        _comparable(t) for t in expected_samples(catalog, vss, frames, None)
    ]
    assert "Vehicle.Speed" in {s.name for s in samples}
    assert "SEAT_MEMORY.MemorySlot" in {s.name for s in samples}  # unmapped: MESSAGE.Signal
    assert all(isinstance(s.value, (int, float, str)) for s in samples)
    assert events == [] and decoder.checker.counts["e2e_dropped"] == 0
    assert decoder.counts["frames"] == 3000 and decoder.counts["samples"] == len(samples)


def test_only_wanted_signals_are_emitted_and_other_messages_skipped(catalog: Catalog, vss: VssMap) -> None:
    frames = random_frames(catalog, 1700)
    wanted = {"Vehicle.Speed", "BRAKE_STATUS.BrakePedalPos"}  # the second spelled MESSAGE.Signal
    decoder, samples, _ = run(catalog, vss, frames, wanted)
    names = {s.name for s in samples}
    assert names == {"Vehicle.Speed", "Vehicle.Chassis.Brake.PedalPosition"}
    assert len(samples) == 2 * 100  # 17 messages round robin: 100 frames each
    assert decoder.counts["skipped"] == 1500


def test_unknown_ids_and_short_frames_are_counted(catalog: Catalog, vss: VssMap) -> None:
    frames = [
        can.Message(
            timestamp=1.0, channel="powertrain", arbitration_id=0x7AB, data=bytes(8), is_extended_id=False
        ),
        can.Message(
            timestamp=2.0, channel="chassis", arbitration_id=0x210, data=bytes(2), is_extended_id=False
        ),
        can.Message(
            timestamp=3.0, channel="nosuchbus", arbitration_id=0x210, data=bytes(8), is_extended_id=False
        ),
    ]
    decoder, samples, _ = run(catalog, vss, frames, None)
    assert samples == []
    assert decoder.counts["skipped"] == 2
    assert decoder.counts["decode_too_short"] == 1


def test_e2e_bad_frames_are_not_decoded(catalog: Catalog, vss: VssMap) -> None:
    message = catalog.lookup("powertrain", 0x100, False)
    assert message is not None
    profile = profile_for(message)
    assert profile is not None
    payloads = [profile.protect(bytearray(8), counter) for counter in (0, 1, 1, 2)]
    payloads.append(bytearray(payloads[-1]))
    payloads[-1][profile.crc_byte] ^= 0xFF  # corrupt CRC
    frames = [
        can.Message(
            timestamp=float(i),
            channel="powertrain",
            arbitration_id=0x100,
            data=bytes(p),
            is_extended_id=False,
        )
        for i, p in enumerate(payloads)
    ]
    decoder, samples, _ = run(catalog, vss, frames, {"Vehicle.Speed"})
    assert [s.timestamp for s in samples] == [0.0, 1.0, 3.0]
    assert decoder.checker.counts["e2e_repeated"] == 1
    assert decoder.checker.counts["e2e_crc_errors"] == 1


def test_kernel_filters_pass_exactly_the_wanted_messages(catalog: Catalog, vss: VssMap) -> None:
    decoder = SampleDecoder(
        catalog,
        vss,
        {"Vehicle.Speed", "KEY_STATUS.KeyId", "Vehicle.Chassis.Brake.PedalPosition"},
        E2EChecker(E2ESettings(), lambda e: None),
    )
    assert decoder.kernel_filters("powertrain") == [{"can_id": 0x100, "can_mask": 0x7FF, "extended": False}]
    assert decoder.kernel_filters("body") == [
        {"can_id": 0x18FF4040, "can_mask": 0x1FFFFFFF, "extended": True}
    ]
    assert decoder.kernel_filters("infotainment") == []
    everything = SampleDecoder(catalog, vss, None, E2EChecker(E2ESettings(), lambda e: None))
    assert len(everything.kernel_filters("chassis")) == 4


def test_records_carry_the_samples_with_one_group_per_shape(catalog: Catalog, vss: VssMap) -> None:
    frames = random_frames(catalog, 1700, seed=5)
    decoder = SampleDecoder(catalog, vss, None, E2EChecker(E2ESettings(), lambda e: None))
    records = decoder.process_records(frames)
    samples = SampleDecoder(catalog, vss, None, E2EChecker(E2ESettings(), lambda e: None)).process(frames)
    assert [(s.timestamp, s.name, _comparable((0, "", s.value))) for s in samples_of(records)] == [
        (s.timestamp, s.name, _comparable((0, "", s.value))) for s in samples
    ]
    assert decoder.counts["samples"] == len(samples) == sum(len(values) for _, _, values in records)
    groups = {id(group): group for _, group, _ in records}
    shapes = {group.names for group in groups.values()}
    assert len(groups) == len(shapes)  # one group object per tuple of names
    assert all(len(group.names) == len(values) for _, group, values in records)
    seat = {names for names in shapes if "SEAT_MEMORY.SeatPage" in names}
    assert len(seat) > 1  # a multiplexed message: one shape per branch
