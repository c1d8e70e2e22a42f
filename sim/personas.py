"""Driver personas: how each person drives and handles the cabin, and the explicit identity they carry.

Behaviour parameters are what the driver-identification work learns a fingerprint from (pedal use,
braking, jerk, steering rate, preferred speeds, window and volume habits); the identity is what the car
sees explicitly (key/fob, infotainment profile, seat-memory slot). Each trip jitters the behaviour a little
(`Persona.for_trip`) so that two trips of one persona are alike but not identical.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from firmware_agent.errors import UserError


@dataclass(frozen=True)
class Identity:
    """What a driver carries and selects: key/fob, infotainment profile, seat memory."""

    key_id: int  #: the fob's immobiliser identity (KEY_STATUS.KeyId)
    key_slot: int  #: key slot learned by the car (KEY_STATUS.KeySlot)
    key_type: int  #: 1 fob, 2 phone, 3 card (KEY_STATUS.KeyType)
    profile: int  #: infotainment profile (HU_STATUS.ActiveProfile), 1..4
    seat_slot: int  #: seat-memory button recalled on unlock (SEAT_MEMORY.MemorySlot), 0 = none
    seat_position: float  #: preferred seat position, %
    seat_height: float  #: preferred seat height, %
    backrest_recline: float  #: preferred recline, deg
    mirror_left: float  #: %
    mirror_right: float  #: %


@dataclass(frozen=True)
class Behaviour:
    """How a person drives; every number is a mean that each trip jitters slightly."""

    accel_max: float  #: strongest acceleration they ask for, m/s²
    accel_gain: float  #: how hard they close a speed gap, 1/s
    pedal_rate: float  #: fastest pedal movement, fraction of travel per second (sets jerk)
    pedal_noise: float  #: foot unsteadiness on the accelerator, fraction of travel
    brake_decel: float  #: deceleration they plan when slowing for a stop (how early they brake), m/s²
    brake_margin: float  #: metres short of the stop line they aim for
    coast_time: float  #: seconds they lift off and coast before braking
    steer_tau: float  #: steering lag, s (smoothness)
    steer_preview: float  #: how far ahead they look when steering into a curve, s
    steer_noise: float  #: lane-keeping corrections, steering-wheel degrees
    lat_accel_max: float  #: lateral acceleration they accept in curves, m/s²
    speed_factor_city: float  #: chosen speed / limit in town
    speed_factor_highway: float  #: chosen speed / limit on the highway
    lane_changes_per_min: float  #: on the highway
    emergency_brakes_per_hour: float  #: hard stops (ABS) they end up in
    gear: int  #: 3 = D, 4 = B (one-pedal regeneration)
    neutral_at_long_stops: bool  #: shifts to N while waiting at a red light
    drive_mode: int  #: GEAR_STATUS.DriveMode: 0 comfort, 1 eco, 2 sport
    window_uses_per_min: float  #: how often they open/close a window in town
    window_one_shot: bool  #: uses the one-shot (auto) function instead of holding the switch
    window_rear: bool  #: also opens the rear windows
    volume: int  #: usual volume, %
    volume_changes_per_min: float
    volume_step: int  #: presses per adjustment
    louder_on_highway: bool
    sources: tuple[int, ...]  #: preferred media sources (HU_STATUS.MediaSource), first = usual
    source_changes_per_min: float
    nav_probability: float  #: chance a trip starts with navigation on
    mutes_per_hour: float
    brightness: float  #: display brightness, %
    cabin_temp: float  #: °C
    fan_level: int


@dataclass(frozen=True)
class Persona:
    """One simulated person: a number and name for `--driver`, behaviour and identity."""

    number: int
    name: str
    summary: str
    behaviour: Behaviour
    identity: Identity

    def for_trip(self, rng: random.Random) -> Behaviour:
        """This trip's behaviour: each continuous parameter jittered by a few percent."""
        changes: dict[str, Any] = {}
        for field in dataclasses.fields(Behaviour):
            value = getattr(self.behaviour, field.name)
            if isinstance(value, float):
                changes[field.name] = value * rng.uniform(0.95, 1.05)
        return dataclasses.replace(self.behaviour, **changes)


FM, DAB, USB, BLUETOOTH, INTERNET = 1, 2, 3, 4, 5

PERSONAS: tuple[Persona, ...] = (
    Persona(
        number=1,
        name="anna",
        summary="calm commuter: gentle pedal, brakes early and softly, smooth steering, one-pedal B gear",
        behaviour=Behaviour(
            accel_max=1.6,
            accel_gain=0.35,
            pedal_rate=0.35,
            pedal_noise=0.01,
            brake_decel=1.4,
            brake_margin=3.0,
            coast_time=3.0,
            steer_tau=0.55,
            steer_preview=1.2,
            steer_noise=0.6,
            lat_accel_max=1.8,
            speed_factor_city=0.92,
            speed_factor_highway=0.88,
            lane_changes_per_min=0.4,
            emergency_brakes_per_hour=1.0,
            gear=4,
            neutral_at_long_stops=False,
            drive_mode=1,
            window_uses_per_min=0.1,
            window_one_shot=True,
            window_rear=False,
            volume=14,
            volume_changes_per_min=0.3,
            volume_step=1,
            louder_on_highway=False,
            sources=(DAB, FM),
            source_changes_per_min=0.05,
            nav_probability=0.7,
            mutes_per_hour=0.0,
            brightness=40.0,
            cabin_temp=22.0,
            fan_level=2,
        ),
        identity=Identity(
            key_id=0x1A2B3C01,
            key_slot=1,
            key_type=1,
            profile=1,
            seat_slot=1,
            seat_position=32.0,
            seat_height=40.0,
            backrest_recline=12.0,
            mirror_left=45.0,
            mirror_right=55.0,
        ),
    ),
    Persona(
        number=2,
        name="ben",
        summary="sporty: floors the pedal, brakes late and hard, quick steering, fast, loud music",
        behaviour=Behaviour(
            accel_max=3.8,
            accel_gain=1.1,
            pedal_rate=2.2,
            pedal_noise=0.03,
            brake_decel=4.2,
            brake_margin=1.0,
            coast_time=0.3,
            steer_tau=0.15,
            steer_preview=0.5,
            steer_noise=1.5,
            lat_accel_max=4.0,
            speed_factor_city=1.08,
            speed_factor_highway=1.04,
            lane_changes_per_min=2.0,
            emergency_brakes_per_hour=12.0,
            gear=3,
            neutral_at_long_stops=False,
            drive_mode=2,
            window_uses_per_min=0.6,
            window_one_shot=False,
            window_rear=False,
            volume=34,
            volume_changes_per_min=2.0,
            volume_step=3,
            louder_on_highway=True,
            sources=(BLUETOOTH, USB, INTERNET),
            source_changes_per_min=0.6,
            nav_probability=0.1,
            mutes_per_hour=0.0,
            brightness=80.0,
            cabin_temp=19.5,
            fan_level=4,
        ),
        identity=Identity(
            key_id=0x1A2B3C02,
            key_slot=2,
            key_type=1,
            profile=2,
            seat_slot=2,
            seat_position=68.0,
            seat_height=25.0,
            backrest_recline=20.0,
            mirror_left=60.0,
            mirror_right=40.0,
        ),
    ),
    Persona(
        number=3,
        name="chloe",
        summary="cautious novice: unsteady foot, brakes early, busy steering, slow, N at long red lights",
        behaviour=Behaviour(
            accel_max=2.2,
            accel_gain=0.6,
            pedal_rate=0.9,
            pedal_noise=0.05,
            brake_decel=2.2,
            brake_margin=5.0,
            coast_time=1.5,
            steer_tau=0.3,
            steer_preview=0.6,
            steer_noise=3.0,
            lat_accel_max=1.5,
            speed_factor_city=0.85,
            speed_factor_highway=0.80,
            lane_changes_per_min=0.2,
            emergency_brakes_per_hour=3.0,
            gear=3,
            neutral_at_long_stops=True,
            drive_mode=0,
            window_uses_per_min=0.0,
            window_one_shot=True,
            window_rear=False,
            volume=20,
            volume_changes_per_min=0.8,
            volume_step=2,
            louder_on_highway=False,
            sources=(FM,),
            source_changes_per_min=0.2,
            nav_probability=1.0,
            mutes_per_hour=2.0,
            brightness=60.0,
            cabin_temp=23.5,
            fan_level=3,
        ),
        identity=Identity(
            key_id=0x5E6F7A03,
            key_slot=3,
            key_type=3,
            profile=3,
            seat_slot=3,
            seat_position=18.0,
            seat_height=72.0,
            backrest_recline=6.0,
            mirror_left=35.0,
            mirror_right=62.0,
        ),
    ),
    Persona(
        number=4,
        name="dev",
        summary="delivery driver: brisk, steady, windows down in town, phone key, FM radio, no seat memory",
        behaviour=Behaviour(
            accel_max=2.8,
            accel_gain=0.8,
            pedal_rate=1.2,
            pedal_noise=0.02,
            brake_decel=3.0,
            brake_margin=2.0,
            coast_time=1.0,
            steer_tau=0.25,
            steer_preview=0.8,
            steer_noise=1.0,
            lat_accel_max=3.0,
            speed_factor_city=1.0,
            speed_factor_highway=0.95,
            lane_changes_per_min=1.0,
            emergency_brakes_per_hour=4.0,
            gear=3,
            neutral_at_long_stops=False,
            drive_mode=3,
            window_uses_per_min=2.0,
            window_one_shot=False,
            window_rear=True,
            volume=24,
            volume_changes_per_min=0.5,
            volume_step=1,
            louder_on_highway=True,
            sources=(FM, DAB),
            source_changes_per_min=0.3,
            nav_probability=0.5,
            mutes_per_hour=6.0,
            brightness=70.0,
            cabin_temp=20.5,
            fan_level=5,
        ),
        identity=Identity(
            key_id=0x9C8B7A04,
            key_slot=4,
            key_type=2,
            profile=4,
            seat_slot=0,
            seat_position=55.0,
            seat_height=50.0,
            backrest_recline=15.0,
            mirror_left=50.0,
            mirror_right=50.0,
        ),
    ),
)


def find_persona(spec: str | int) -> Persona:
    """The persona named by number (`2`) or name (`ben`, any case); UserError when there is none."""
    text = str(spec).strip().lower()
    for persona in PERSONAS:
        if text in (str(persona.number), persona.name):
            return persona
    known = ", ".join(f"{p.number}={p.name}" for p in PERSONAS)
    raise UserError(f"unknown driver {spec!r} (known: {known})")
