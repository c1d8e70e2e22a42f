"""A simulated two-minute drive on the wire: decodes completely, keeps cycle times, counters and CRCs."""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise

import can
import pytest

from firmware_agent.decode.catalog import Catalog
from firmware_agent.e2e_protection import profile_for
from firmware_agent.vehicle import BUS_NAMES, default_dbc_specs
from sim import Simulation


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_specs(default_dbc_specs())


@pytest.fixture(scope="module")
def drive() -> tuple[Simulation, list[can.Message]]:
    simulation = Simulation("ben", "city", seed=7, duration=120.0, hard_brakes=[25.0])
    return simulation, list(simulation.frames())


@pytest.fixture(scope="module")
def decoded(drive, catalog) -> dict[str, list[tuple[float, dict]]]:
    """Message name -> [(seconds since start, decoded signals)]; fails on any frame that does not decode."""
    simulation, frames = drive
    out: dict[str, list[tuple[float, dict]]] = defaultdict(list)
    for frame in frames:
        message = catalog.lookup(frame.channel, frame.arbitration_id, frame.is_extended_id)
        assert message is not None, f"unknown frame {frame}"
        out[message.name].append((frame.timestamp - simulation.start_time, message.decode(frame.data)))
    return out


def test_two_minute_drive_decodes_completely_on_all_buses(drive, decoded, catalog):
    _, frames = drive
    assert 55_000 < len(frames) < 65_000
    assert {frame.channel for frame in frames} == set(BUS_NAMES)
    every_message = {message.name for _, message in catalog.all_messages()}
    assert set(decoded) == every_message  # every message of the four DBCs, periodic and event, appears
    timestamps = [frame.timestamp for frame in frames]
    assert timestamps == sorted(timestamps)


def test_every_periodic_message_keeps_its_cycle_time_within_5_percent(drive, catalog):
    _, frames = drive
    times: dict[str, list[float]] = defaultdict(list)
    for frame in frames:
        message = catalog.lookup(frame.channel, frame.arbitration_id, frame.is_extended_id)
        times[message.name].append(frame.timestamp)
    for channel, message in catalog.all_messages():
        if not message.cycle_time:
            continue
        period = message.cycle_time / 1000.0
        stamps = times[message.name]
        assert len(stamps) == pytest.approx(120.0 / period, abs=2), message.name
        worst = max(abs((b - a) - period) / period for a, b in pairwise(stamps))
        assert worst < 0.05, f"{channel}.{message.name}: interval off by {worst:.1%}"


def test_alive_counters_step_by_one_and_crcs_are_right(drive, catalog):
    _, frames = drive
    last: dict[str, int] = {}
    checked = 0
    for frame in frames:
        message = catalog.lookup(frame.channel, frame.arbitration_id, frame.is_extended_id)
        profile = profile_for(message)
        if profile is None:
            continue
        assert profile.crc_ok(frame.data), f"bad CRC in {message.name} at {frame.timestamp}"
        counter = profile.counter(frame.data)
        if message.name in last:
            assert counter == (last[message.name] + 1) % profile.counter_modulo, message.name
        last[message.name] = counter
        checked += 1
    assert set(last) == {"VEHICLE_SPEED", "ACCEL_PEDAL", "BRAKE_STATUS", "STEERING"}
    assert checked == pytest.approx(120 * (50 + 50 + 100 + 100), abs=4)


def test_frame_formats_follow_the_dbc(drive, catalog):
    _, frames = drive
    for frame in frames:
        message = catalog.lookup(frame.channel, frame.arbitration_id, frame.is_extended_id)
        assert frame.is_fd == message.is_fd and frame.bitrate_switch == message.is_fd
        assert frame.is_extended_id == message.is_extended_frame
        assert len(frame.data) == message.length
    assert any(frame.is_extended_id and frame.arbitration_id == 0x18FF4040 for frame in frames)


def test_seat_memory_pages_alternate(decoded):
    pages = [signals["SeatPage"] for _, signals in decoded["SEAT_MEMORY"]]
    assert pages[:6] == [0, 1, 0, 1, 0, 1]
    assert all(a != b for a, b in pairwise(pages))


def _first(decoded, name, condition) -> float:
    return next(t for t, signals in decoded[name] if condition(signals))


def test_trip_starts_and_ends_like_a_person_does_it(decoded):
    key_in = _first(decoded, "KEY_STATUS", lambda s: s["KeyPresent"] == 1)
    unlocked = _first(decoded, "DOOR_STATUS", lambda s: s["CentralLock"] == "unlocked")
    recall = _first(decoded, "SEAT_MEMORY", lambda s: s.get("MemoryRecallActive") == "recalling")
    door = _first(decoded, "DOOR_STATUS", lambda s: s["DoorOpenFL"] == 1)
    ignition_on = _first(decoded, "IGNITION_STATUS", lambda s: s["IgnitionState"] == "ON")
    profile_event = decoded["HU_PROFILE_EVENT"][0][0]
    in_gear = _first(decoded, "GEAR_STATUS", lambda s: s["GearSelected"] == "D")
    moving = _first(decoded, "VEHICLE_SPEED", lambda s: s["VehicleSpeed"] > 5)
    # Key in range, unlock and seat recall come within a second (KEY_STATUS is sent only every 500 ms).
    assert max(key_in, unlocked, recall) < 1.6
    assert max(key_in, unlocked, recall) < door < profile_event < ignition_on < in_gear < moving < 15
    # The end: stopped, P, ignition off, door opened and closed, locked, key gone.
    last_drive = max(t for t, s in decoded["GEAR_STATUS"] if s["GearSelected"] != "P")
    ignition_after = [s["IgnitionState"] for t, s in decoded["IGNITION_STATUS"] if t > last_drive]
    assert "OFF" in ignition_after and ignition_after[-1] == "LOCK"
    assert decoded["DOOR_STATUS"][-1][1]["CentralLock"] == "locked"
    assert decoded["KEY_STATUS"][-1][1]["KeyPresent"] == 0
    assert decoded["VEHICLE_SPEED"][-1][1]["VehicleSpeed"] == 0


def test_physics_hangs_together(decoded):
    speeds = dict(decoded["VEHICLE_SPEED"][::5])
    top = max(s["VehicleSpeed"] for s in speeds.values())
    assert 25 < top < 70  # a city drive
    for t, wheels in decoded["WHEEL_SPEEDS"]:
        if 60 < t < 61:
            reference = max(s["VehicleSpeed"] for tt, s in decoded["VEHICLE_SPEED"] if abs(tt - t) < 0.03)
            for value in wheels.values():
                assert value == pytest.approx(reference, abs=0.05 * reference + 0.5)
    # The hard brake at 25 s: ABS cycles, wheels slip below vehicle speed, the car decelerates near 1 g.
    abs_times = [t for t, s in decoded["BRAKE_STATUS"] if s["AbsActive"] == "active"]
    assert abs_times and 25 < abs_times[0] < 35
    during = [s for t, s in decoded["INERTIAL"] if abs_times[0] + 0.3 < t < abs_times[0] + 0.8]
    assert min(s["LongAccel"] for s in during) < -7.5
    pressures = [s["MasterCylPressure"] for t, s in decoded["BRAKE_STATUS"] if t in set(abs_times)]
    assert min(pressures) > 100
    gears = {str(s["GearSelected"]) for _, s in decoded["GEAR_STATUS"]}
    assert gears == {"P", "D"}  # ben drives in D
    motor = [(t, s["MotorSpeed"]) for t, s in decoded["MOTOR_STATUS"] if 60 < t < 60.1]
    speed_now = next(s["VehicleSpeed"] for t, s in decoded["VEHICLE_SPEED"] if t > 60)
    assert motor[0][1] == pytest.approx(speed_now / 3.6 / 0.34 * 9.1 * 60 / 6.2832, abs=40)
