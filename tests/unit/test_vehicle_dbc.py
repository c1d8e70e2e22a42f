"""The project's own vehicle definitions: strict loading, required features, VSS mapping, E2E CRC."""

from __future__ import annotations

import cantools
import pytest

from firmware_agent.e2e_protection import crc8_j1850, profile_for
from firmware_agent.vehicle import BUS_NAMES, default_dbc_dir
from firmware_agent.vss import VssMap


@pytest.fixture(scope="module")
def databases() -> dict[str, cantools.database.can.Database]:
    return {
        bus: cantools.database.load_file(default_dbc_dir() / f"{bus}.dbc", strict=True) for bus in BUS_NAMES
    }


def test_every_periodic_message_declares_its_cycle_time(databases):
    for bus, db in databases.items():
        for message in db.messages:
            if message.send_type == "Event":
                assert message.cycle_time in (None, 0), f"{bus}.{message.name}"
            else:
                assert message.cycle_time and message.cycle_time > 0, f"{bus}.{message.name}"


def test_dbc_feature_coverage(databases):
    messages = [m for db in databases.values() for m in db.messages]
    signals = [s for m in messages for s in m.signals]
    assert any(m.is_multiplexed() for m in messages)
    assert any(m.is_fd and m.length > 8 for m in messages)
    assert any(m.is_extended_frame for m in messages)
    assert any(s.is_signed for s in signals)
    assert any(s.byte_order == "big_endian" for s in signals)
    assert any(s.is_float for s in signals)
    assert sum(1 for s in signals if s.choices) >= 10


def test_safety_messages_carry_counter_and_crc(databases):
    protected = {m.name for db in databases.values() for m in db.messages if profile_for(m) is not None}
    assert {"VEHICLE_SPEED", "BRAKE_STATUS", "STEERING"} <= protected


def test_message_names_are_unique_across_buses(databases):
    names = [m.name for db in databases.values() for m in db.messages]
    assert len(names) == len(set(names))


def test_vss_mapping_names_real_signals_and_required_paths(databases):
    mapping = VssMap.load(default_dbc_dir() / "vss.toml")
    known = {f"{m.name}.{s.name}" for db in databases.values() for m in db.messages for s in m.signals}
    assert set(mapping.to_vss) <= known
    paths = set(mapping.to_vss.values())
    for required in (
        "Vehicle.Speed",
        "Vehicle.Cabin.Door.Row1.DriverSide.Window.Position",
        "Vehicle.Chassis.Brake.PedalPosition",
        "Vehicle.Driver.Identifier.Subject",
    ):
        assert required in paths
    assert len(paths) == len(mapping.to_vss), "two signals map to one VSS path"
    assert mapping.name_for("VEHICLE_SPEED", "VehicleSpeed") == "Vehicle.Speed"
    assert mapping.name_for("BRAKE_STATUS", "MasterCylPressure") == "BRAKE_STATUS.MasterCylPressure"
    assert mapping.resolve("Vehicle.Speed") == "VEHICLE_SPEED.VehicleSpeed"


def test_crc8_j1850_check_value():
    # The catalogue check value of CRC-8/SAE-J1850.
    assert crc8_j1850(b"123456789") == 0x4B


def test_e2e_protect_then_check_and_detect_corruption(databases):
    message = databases["chassis"].get_message_by_name("STEERING")
    profile = profile_for(message)
    assert profile is not None
    payload = bytearray(
        message.encode({"SteeringCrc": 0, "SteeringCounter": 0, "SteeringAngle": -12.5, "SteeringRate": 40})
    )
    profile.protect(payload, 17)
    assert profile.counter(payload) == 1
    assert profile.crc_ok(payload)
    decoded = message.decode(bytes(payload))
    assert decoded["SteeringCounter"] == 1 and decoded["SteeringAngle"] == -12.5
    payload[3] ^= 0x01
    assert not profile.crc_ok(payload)
