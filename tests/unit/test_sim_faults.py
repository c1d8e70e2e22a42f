"""Injected faults show up on the wire exactly as asked, and nowhere else."""

from __future__ import annotations

from collections import defaultdict

import can
import pytest

from firmware_agent.decode.busload import bus_bitrate, frame_seconds
from firmware_agent.decode.catalog import Catalog
from firmware_agent.e2e_protection import profile_for
from firmware_agent.errors import UserError
from firmware_agent.vehicle import default_dbc_specs
from sim import Simulation, parse_fault
from sim.faults import FLOOD_ID, Fault

FAULTS = (
    "bad-crc@10:powertrain",
    "flood@12+1:chassis",
    "counter-repeat@14:chassis",
    "counter-skip@16:powertrain",
    "wrong-dlc@18:body",
    "unknown-id@20+1:infotainment",
    "error-frame@22:chassis",
    "silent@24+2:chassis",
    "link-down@28+3:powertrain",
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_specs(default_dbc_specs())


@pytest.fixture(scope="module")
def faulty() -> tuple[Simulation, list[can.Message]]:
    simulation = Simulation("ben", "city", seed=3, duration=36.0, faults=[parse_fault(f) for f in FAULTS])
    return simulation, list(simulation.frames())


def _t(simulation: Simulation, frame: can.Message) -> float:
    return frame.timestamp - simulation.start_time


def test_fault_syntax():
    assert parse_fault("flood") == Fault("flood", 10.0, 2.0, "powertrain")
    assert parse_fault("bad-crc@5.5:chassis") == Fault("bad-crc", 5.5, 0.0, "chassis")
    assert parse_fault("silent@30+4:body") == Fault("silent", 30.0, 4.0, "body")
    for bad, words in (
        ("nonsense", "unknown fault"),
        ("flood@x", "seconds"),
        ("flood@1+0", "DURATION above 0"),
        ("flood@1:moon", "unknown bus"),
        ("flood:", "expected NAME"),
    ):
        with pytest.raises(UserError, match=words):
            parse_fault(bad)


def test_e2e_fault_on_a_bus_without_e2e_is_refused():
    with pytest.raises(UserError, match="no E2E-protected messages"):
        list(Simulation(1, "city", duration=2.0, faults=[parse_fault("bad-crc@1:body")]).frames())


def test_every_fault_is_recorded_with_the_frames_it_touched(faulty):
    simulation, _ = faulty
    assert [str(record.fault) for record in simulation.injected] == [str(parse_fault(f)) for f in FAULTS]
    assert all(record.frames > 0 for record in simulation.injected)


def test_e2e_faults_hit_exactly_the_frames_asked_for(faulty, catalog):
    simulation, frames = faulty
    bad_crc: dict[str, list[float]] = defaultdict(list)
    steps: dict[str, list[tuple[float, int]]] = defaultdict(list)
    last: dict[str, int] = {}
    for frame in frames:
        if frame.is_error_frame:
            continue  # its ID field carries the error class, not a message ID
        message = catalog.lookup(frame.channel, frame.arbitration_id, frame.is_extended_id)
        profile = profile_for(message) if message is not None else None
        if profile is None:
            continue
        if not profile.crc_ok(frame.data):
            bad_crc[message.name].append(_t(simulation, frame))
        counter = profile.counter(frame.data)
        if message.name in last:
            step = (counter - last[message.name]) % profile.counter_modulo
            if step != 1:
                steps[message.name].append((_t(simulation, frame), step))
        last[message.name] = counter
    # bad-crc@10:powertrain: the first frame of each protected powertrain message at or after 10 s.
    assert set(bad_crc) == {"VEHICLE_SPEED", "ACCEL_PEDAL"}
    assert all(len(times) == 1 and 10.0 <= times[0] < 10.03 for times in bad_crc.values())
    # counter-repeat@14:chassis once; counter-skip@16:powertrain once; silent: counters resume (+1).
    for name in ("BRAKE_STATUS", "STEERING"):
        assert len(steps[name]) == 1 and steps[name][0][1] == 0 and 14.0 <= steps[name][0][0] < 14.02
    for name in ("VEHICLE_SPEED", "ACCEL_PEDAL"):
        skip, gap = steps[name]
        assert skip[1] == 2 and 16.0 <= skip[0] < 16.03
        # link-down@28+3: the ECU kept counting while the interface was down.
        assert 31.0 <= gap[0] < 31.03 and gap[1] == (150 + 1) % 16


def test_flood_fills_the_bus_to_100_percent(faulty, catalog):
    simulation, frames = faulty
    chassis = [f for f in frames if f.channel == "chassis" and 12.0 <= _t(simulation, f) < 13.0]
    floods = [f for f in chassis if f.arbitration_id == FLOOD_ID and not f.is_error_frame]
    assert floods and all(f.data == bytes(8) for f in floods)
    assert not [f for f in frames if f.arbitration_id == FLOOD_ID and not 12.0 <= _t(simulation, f) < 13.0
                and not f.is_error_frame]  # fmt: skip
    bitrate = bus_bitrate(simulation.databases["chassis"])
    busy = sum(frame_seconds(len(f.data), f.is_extended_id, bitrate, f.bitrate_switch) for f in chassis)
    assert busy == pytest.approx(1.0, abs=0.03)


def test_dlc_unknown_id_and_error_frame_faults(faulty, catalog):
    simulation, frames = faulty
    short = [f for f in frames if f.channel == "body" and len(f.data) < _length(catalog, f)]
    assert {catalog.lookup(f.channel, f.arbitration_id, f.is_extended_id).name for f in short} == {
        "WINDOW_STATUS", "DOOR_STATUS", "SEAT_MEMORY", "KEY_STATUS", "IGNITION_STATUS"
    }  # fmt: skip
    assert len(short) == 5 and all(18.0 <= _t(simulation, f) < 18.6 for f in short)
    unknown = [f for f in frames if not f.is_error_frame and catalog.lookup(f.channel, f.arbitration_id,
               f.is_extended_id) is None and f.arbitration_id != FLOOD_ID]  # fmt: skip
    assert len(unknown) == 10 and {f.channel for f in unknown} == {"infotainment"}
    assert {(f.arbitration_id, f.is_extended_id) for f in unknown} == {(0x7E5, False), (0x18DAF1FE, True)}
    errors = [(f.channel, round(_t(simulation, f), 2)) for f in frames if f.is_error_frame]
    # one error-frame fault, plus the link-down markers: down at 28 s, back up at 31 s.
    assert errors == [("chassis", 22.0), ("powertrain", 28.0), ("powertrain", 31.0)]


def _length(catalog: Catalog, frame: can.Message) -> int:
    message = catalog.lookup(frame.channel, frame.arbitration_id, frame.is_extended_id)
    return message.length if message is not None else len(frame.data)


def test_silent_bus_and_link_down_leave_gaps_only_there(faulty):
    simulation, frames = faulty
    for bus, start, end in (("chassis", 24.0, 26.0), ("powertrain", 28.0, 31.0)):
        times = [_t(simulation, f) for f in frames if f.channel == bus and not f.is_error_frame]
        inside = [t for t in times if start <= t < end]
        assert not inside, bus
        before = max(t for t in times if t < start)
        after = min(t for t in times if t >= end)
        assert before > start - 0.021 and after < end + 0.021  # the fastest message is 50 Hz or more
    others = [_t(simulation, f) for f in frames if f.channel == "body"]
    assert any(24.0 <= t < 26.0 for t in others)  # the other buses keep talking
