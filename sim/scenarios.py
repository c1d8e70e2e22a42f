"""Scenarios: the road a trip follows, as an endless, seeded sequence of route segments.

A segment has a length, a speed limit, a constant curvature (1/m, positive = left) and what ends it:
nothing, a red light, a stop sign or a parking manoeuvre (stop and change direction). The driver model
reads the segments ahead to choose its speed and steering; the same seed gives the same route.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from firmware_agent.errors import UserError

#: Wheelbase of the reference vehicle, m; with the steering ratio it turns curvature into wheel angle.
WHEELBASE = 2.8
STEERING_RATIO = 15.0
#: Steering-wheel angle at full lock, degrees (road wheels at 36°).
FULL_LOCK_DEG = 540.0
#: Smallest turning radius, m, reached at full lock.
MIN_RADIUS = WHEELBASE / math.tan(math.radians(FULL_LOCK_DEG / STEERING_RATIO))


@dataclass(frozen=True)
class Segment:
    """One stretch of road with constant curvature and speed limit."""

    length: float  #: m
    limit: float  #: km/h
    curvature: float = 0.0  #: 1/m, positive = left
    road: str = "city"  #: city, highway or parking: selects the driver's speed factor
    direction: int = 1  #: +1 forward (D/B), -1 reverse (R)
    stop: str | None = None  #: None, "light", "stop_sign" or "manoeuvre"
    wait: float = 0.0  #: seconds standing at the stop


def _turn(rng: random.Random, radius: float, limit: float, road: str) -> Segment:
    """A 90° turn left or right."""
    side = 1.0 if rng.random() < 0.5 else -1.0
    return Segment(length=math.pi / 2 * radius, limit=limit, curvature=side / radius, road=road)


def _city(rng: random.Random) -> Iterator[Segment]:
    while True:
        limit = rng.choice((30.0, 50.0, 50.0, 50.0))
        bend = rng.uniform(-1 / 400, 1 / 400) if rng.random() < 0.4 else 0.0
        ending = rng.random()
        if ending < 0.45:
            yield Segment(rng.uniform(120, 350), limit, bend, stop="light", wait=rng.uniform(6, 22))
        elif ending < 0.6:
            yield Segment(rng.uniform(80, 200), limit, bend, stop="stop_sign", wait=rng.uniform(0.8, 2.0))
        else:
            yield Segment(rng.uniform(100, 300), limit, bend)
        if rng.random() < 0.55:
            yield _turn(rng, rng.uniform(9, 14), 20.0, "city")


def _highway(rng: random.Random) -> Iterator[Segment]:
    yield Segment(120, 50, 0.0, road="city")
    yield Segment(math.pi / 2 * 120, 70, 1 / 120, road="highway")  # on-ramp loop
    yield Segment(400, 100, 0.0, road="highway")
    while True:
        limit = rng.choice((100.0, 120.0, 130.0, 130.0))
        radius = rng.uniform(900, 3000) * (1 if rng.random() < 0.5 else -1)
        yield Segment(rng.uniform(800, 2500), limit, 0.0, road="highway")
        yield Segment(rng.uniform(300, 900), limit, 1 / radius, road="highway")
        if rng.random() < 0.2:  # slow traffic ahead
            yield Segment(rng.uniform(400, 900), 80.0, 0.0, road="highway")


def _parking(rng: random.Random) -> Iterator[Segment]:
    lock = 1 / MIN_RADIUS
    yield Segment(40, 20, 0.0, road="parking")
    while True:
        yield _turn(rng, 7.0, 12.0, "parking")
        yield Segment(rng.uniform(15, 35), 15.0, 0.0, road="parking")
        side = 1.0 if rng.random() < 0.5 else -1.0
        # A three-point park into a bay: forward at full lock, back out at opposite lock, straighten in.
        yield Segment(2.0, 8.0, 0.0, road="parking", stop="manoeuvre", wait=1.0)
        yield Segment(rng.uniform(4, 6), 7.0, side * lock, road="parking", stop="manoeuvre", wait=1.2)
        yield Segment(rng.uniform(3, 5), 6.0, -side * lock, road="parking", direction=-1,
                      stop="manoeuvre", wait=1.0)  # fmt: skip
        yield Segment(rng.uniform(2, 4), 5.0, 0.0, road="parking", stop="manoeuvre", wait=rng.uniform(3, 8))
        yield Segment(rng.uniform(4, 7), 6.0, side * lock * 0.7, road="parking", direction=-1,
                      stop="manoeuvre", wait=1.0)  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    """A named kind of trip: its road and whether the key is borrowed."""

    name: str
    summary: str
    road: Callable[[random.Random], Iterator[Segment]]
    borrowed_key: bool = False

    def route(self, rng: random.Random) -> Iterator[Segment]:
        """The trip's route, endless; the driver stops wherever the trip's time runs out."""
        return self.road(rng)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("city", "town driving at 30-50 km/h: traffic lights, stop signs, 90° turns", _city),
    Scenario("highway", "on-ramp then 80-130 km/h with long curves, lane changes, slow traffic", _highway),
    Scenario(
        "parking", "car park at walking pace: full steering lock, reverse, three-point parking", _parking
    ),
    Scenario(
        "borrowed-key",
        "city trip where the driver uses another persona's key, profile and seat slot (--key-of)",
        _city,
        borrowed_key=True,
    ),
)


def find_scenario(name: str) -> Scenario:
    """The scenario called `name`; UserError naming the known ones otherwise."""
    for scenario in SCENARIOS:
        if scenario.name == name.strip().lower():
            return scenario
    known = ", ".join(s.name for s in SCENARIOS)
    raise UserError(f"unknown scenario {name!r} (known: {known})")
