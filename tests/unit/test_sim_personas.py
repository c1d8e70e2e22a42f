"""Personas: distinct, repeatable driving statistics on the bus, explicit identity, the borrowed key."""

from __future__ import annotations

import statistics
from collections import defaultdict
from functools import lru_cache
from itertools import pairwise

import pytest

from firmware_agent.decode.catalog import Catalog
from firmware_agent.vehicle import default_dbc_specs
from sim import PERSONAS, Simulation


@lru_cache(maxsize=1)
def _catalog() -> Catalog:
    return Catalog.from_specs(default_dbc_specs())


_USED = {
    "VEHICLE_SPEED", "INERTIAL", "BRAKE_STATUS", "ACCEL_PEDAL", "HU_STATUS", "HU_PROFILE_EVENT",
    "KEY_STATUS", "SEAT_MEMORY", "WINDOW_STATUS",
}  # fmt: skip


@lru_cache(maxsize=16)
def _trip(driver: str, scenario: str = "city", seed: int = 1, duration: float = 120.0) -> dict:
    """Decode a simulated trip into {message name: [(seconds, signals)]} (cached across tests)."""
    simulation = Simulation(driver, scenario, seed=seed, duration=duration)
    out: dict[str, list[tuple[float, dict]]] = defaultdict(list)
    for frame in simulation.frames():
        message = _catalog().lookup(frame.channel, frame.arbitration_id, frame.is_extended_id)
        if message.name not in _USED:
            continue
        out[message.name].append(
            (frame.timestamp - simulation.start_time, message.decode(frame.data, decode_choices=False))
        )
    out["_simulation"] = simulation  # type: ignore[assignment]
    return out


def _behaviour(trip: dict) -> dict[str, float]:
    """The statistics a behavioural fingerprint would use."""
    speed = [s["VehicleSpeed"] for _, s in trip["VEHICLE_SPEED"]]

    def speed_at(t: float) -> float:
        return speed[min(int(t / 0.02), len(speed) - 1)]

    moving_accel = [s["LongAccel"] for t, s in trip["INERTIAL"] if speed_at(t) > 3 and s["LongAccel"] > 0.5]
    pressures = [
        s["MasterCylPressure"]
        for t, s in trip["BRAKE_STATUS"]
        if speed_at(t) > 5 and s["MasterCylPressure"] > 1
    ]
    pedal = [s["AccelPedalPos"] for _, s in trip["ACCEL_PEDAL"] if s["AccelPedalPos"] > 0]
    moving = [v for v in speed if v > 5]
    return {
        "accel": statistics.mean(moving_accel),
        "accel_p95": sorted(moving_accel)[int(0.95 * len(moving_accel))],
        "brake": statistics.mean(pressures) if pressures else 0.0,
        "pedal_p90": sorted(pedal)[int(0.9 * len(pedal))],
        "speed": statistics.mean(moving),
        "volume": statistics.mean(s["Volume"] for _, s in trip["HU_STATUS"][-200:-50]),
    }


def test_sporty_and_calm_personas_differ_measurably():
    calm = _behaviour(_trip("anna"))
    sporty = _behaviour(_trip("ben"))
    assert sporty["accel"] > 1.6 * calm["accel"]
    assert sporty["accel_p95"] > 2.0 * calm["accel_p95"]
    assert sporty["brake"] > calm["brake"] + 5  # brakes later, so harder
    assert sporty["pedal_p90"] > 1.5 * calm["pedal_p90"]
    assert sporty["volume"] > calm["volume"] + 10


def test_a_persona_stays_itself_across_trips_but_no_two_trips_are_equal():
    first, second = _behaviour(_trip("ben", seed=1)), _behaviour(_trip("ben", seed=2))
    calm = _behaviour(_trip("anna", seed=1))
    assert first != second
    for key in ("accel", "accel_p95", "brake"):
        assert abs(first[key] - second[key]) < abs(first[key] - calm[key]), key


@pytest.mark.parametrize("persona", PERSONAS, ids=lambda p: p.name)
def test_each_persona_carries_its_identity(persona):
    trip = _trip(persona.name, duration=12.0)
    identity = persona.identity
    key = trip["KEY_STATUS"][-1][1]
    assert (key["KeyId"], key["KeySlot"], key["KeyType"]) == (
        identity.key_id,
        identity.key_slot,
        identity.key_type,
    )
    assert trip["HU_STATUS"][-1][1]["ActiveProfile"] == identity.profile
    event = trip["HU_PROFILE_EVENT"]
    assert (
        len(event) == 1
        and event[0][1]["ProfileIndex"] == identity.profile
        and event[0][1]["ProfileEventType"] == 1
    )
    slots = {s["MemorySlot"] for _, s in trip["SEAT_MEMORY"] if s["SeatPage"] == 0 and _ > 1.5}
    assert slots == {identity.seat_slot}
    seat = [s["SeatPosition"] for _, s in trip["SEAT_MEMORY"] if s["SeatPage"] == 1]
    assert seat[-1] == pytest.approx(identity.seat_position, abs=0.1)


def test_borrowed_key_carries_the_owners_identity_and_the_drivers_behaviour():
    borrowed = _trip("ben", "borrowed-key")
    simulation = borrowed["_simulation"]
    assert simulation.borrowed and simulation.persona.name == "ben" and simulation.key_owner.name == "anna"
    anna, ben = PERSONAS[0].identity, PERSONAS[1].identity
    key_ids = {s["KeyId"] for _, s in borrowed["KEY_STATUS"] if s["KeyPresent"]}
    assert key_ids == {anna.key_id}
    assert {s["ActiveProfile"] for _, s in borrowed["HU_STATUS"]} <= {0, anna.profile}
    assert borrowed["HU_PROFILE_EVENT"][0][1]["ProfileIndex"] == anna.profile
    assert {s["MemorySlot"] for t, s in borrowed["SEAT_MEMORY"] if s["SeatPage"] == 0 and t > 1.5} == {
        anna.seat_slot
    }
    # The seat first goes to anna's memory position, then ben moves it to where he sits.
    seat = [(t, s["SeatPosition"]) for t, s in borrowed["SEAT_MEMORY"] if s["SeatPage"] == 1]
    assert any(abs(p - anna.seat_position) < 1 for t, p in seat if t < 8)
    assert seat[-1][1] == pytest.approx(ben.seat_position, abs=0.1)
    # The profile restores anna's volume; ben turns it up to his own level while driving.
    volumes = [s["Volume"] for _, s in borrowed["HU_STATUS"] if s["ActiveProfile"]]
    assert volumes[0] == PERSONAS[0].behaviour.volume
    assert abs(volumes[-1] - PERSONAS[1].behaviour.volume) <= 8
    behaviour = _behaviour(borrowed)
    as_ben, as_anna = _behaviour(_trip("ben")), _behaviour(_trip("anna"))
    for key in ("accel", "accel_p95", "brake", "volume"):
        assert abs(behaviour[key] - as_ben[key]) < abs(behaviour[key] - as_anna[key]), key


def test_windows_move_only_while_their_switch_is_held():
    trip = _trip("dev")  # dev rolls windows down in town, holding the switch
    frames = [s for _, s in trip["WINDOW_STATUS"]]
    moved = 0
    for before, after in pairwise(frames):
        for corner in ("FL", "FR", "RL", "RR"):
            if after[f"WindowPos{corner}"] != before[f"WindowPos{corner}"]:
                moved += 1
                assert {before[f"WindowSwitch{corner}"], after[f"WindowSwitch{corner}"]} & {1, 2}, corner
    assert moved > 10
