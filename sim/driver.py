"""The driver model: a persona's behaviour turned into pedal, brake, gear and steering-wheel inputs.

The driver looks ahead along the route: speed limits and curves set the speed they want, stops and slower
stretches set when they lift off (coast time) and when they brake (the deceleration they plan, i.e. how
early). The wanted acceleration is turned into pedal positions through the vehicle model's own force
terms; the persona's pedal rate limit and foot noise then shape the jerk. Steering follows the route's
curvature a preview time ahead with the persona's lag and lane-keeping corrections; on the highway the
driver changes lanes now and then. Rare emergency stops put the car into ABS.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator

from sim import physics
from sim.personas import Behaviour
from sim.physics import GEAR_N, GEAR_P, GEAR_R, VehicleState
from sim.scenarios import FULL_LOCK_DEG, STEERING_RATIO, WHEELBASE, Segment

LANE_WIDTH = 3.5  #: m
STOPPED = 0.05  #: m/s below which the car counts as standing
HOLD_PRESSURE = 22.0  #: bar a driver keeps on the brake pedal at a standstill
COAST = -0.1  #: wanted acceleration meaning "foot off both pedals"


class Driver:
    """Drives one persona's trip along a route: `idle` while seated, `depart`, then `step` every tick."""

    def __init__(self, behaviour: Behaviour, route: Iterator[Segment], rng: random.Random) -> None:
        self.b = behaviour
        self._route = route
        self._rng = rng
        self._ahead: deque[Segment] = deque()
        self._position = 0.0  # m into the current segment
        self._waiting_until: float | None = None
        self._wait_total = 0.0
        self._committed = False  # slowing down for a stop: no more accelerating until standing
        self._stopped_for: Segment | None = None
        self.accel_pedal = 0.0
        self.brake_pedal = 0.0
        self.steering_angle = 0.0
        self._foot_noise = 0.0
        self._steer_noise = 0.0
        self._lane_change: tuple[float, float, float] | None = None  # start, duration, amplitude
        self._emergency_at: float | None = None  # m into the current segment
        self._pull_over_at: float | None = None  # m into the current segment
        self.parked_at: float | None = None
        self.drive_gear = behaviour.gear
        self._fill(400.0)

    @property
    def segment(self) -> Segment:
        """The segment the car is on."""
        return self._ahead[0]

    @property
    def road(self) -> str:
        """city, highway or parking: where the car is now."""
        return self._ahead[0].road

    def _fill(self, distance: float) -> None:
        while sum(s.length for s in self._ahead) - self._position < distance:
            self._ahead.append(next(self._route))

    def pull_over(self, now: float, state: VehicleState) -> None:
        """End the trip: stop at the kerb a comfortable braking distance ahead, then park."""
        if self._waiting_until is not None and self.parked_at is None:
            self.parked_at = now  # already standing: this is where the trip ends
            self._waiting_until = None
            return
        if self._pull_over_at is None:
            v = abs(state.speed)
            self._pull_over_at = self._position + v * v / (2 * self.b.brake_decel) + v * 1.0 + 2.0

    def step(self, now: float, dt: float, state: VehicleState) -> None:
        """Choose this tick's pedals, gear and steering from the state the car is in."""
        v = abs(state.speed)
        self._advance(v * dt)
        if self.parked_at is not None:
            if now > self.parked_at + 2.5:  # in P and switched off: foot off the brake, getting out
                self.brake_pedal = max(0.0, self.brake_pedal - dt)
            else:
                self._hold(state, GEAR_P if now > self.parked_at + 1.0 else state.gear, dt)
            self._steer(now, dt, v, 0.0)
            return
        if self._waiting_until is not None:
            self._wait(now, dt, state)
            self._steer(now, dt, v, self._curvature_ahead(2.0))
            return
        wanted = self._wanted_accel(now, v)
        self._pedals(wanted, state, dt)
        self._maybe_lane_change(now, dt, v)
        self._maybe_emergency(dt, v)
        self._steer(now, dt, v, self._curvature_ahead(max(2.0, v * self.b.steer_preview)))
        if v < STOPPED and wanted < 0 and wanted != COAST:
            self._arrive(now, state)

    # -- longitudinal -----------------------------------------------------------------------------------

    def _advance(self, distance: float) -> None:
        self._position += distance
        while self._position >= self._ahead[0].length and self._waiting_until is None:
            if self._ahead[0].stop and self._stopped_for is not self._ahead[0]:
                break  # must stop here first; creeping past the line is absorbed by the stop
            self._position -= self._ahead[0].length
            for name in ("_emergency_at", "_pull_over_at"):
                mark = getattr(self, name)
                if mark is not None:
                    setattr(self, name, mark - self._ahead[0].length)
            self._ahead.popleft()
            self._fill(400.0)
        if self._ahead[0].stop and self._stopped_for is not self._ahead[0]:
            self._position = min(self._position, self._ahead[0].length)

    def _cap(self, segment: Segment) -> float:
        """The speed the persona wants on a segment, m/s."""
        factor = {"highway": self.b.speed_factor_highway, "city": self.b.speed_factor_city}.get(
            segment.road, 1.0
        )
        cap = segment.limit / 3.6 * factor
        curvature = abs(segment.curvature)
        if curvature > 1e-6:
            cap = min(cap, math.sqrt(self.b.lat_accel_max / curvature))
        return cap

    def _constraints(self) -> Iterator[tuple[float, float, float]]:
        """(distance ahead, speed to reach there, margin) for each upcoming speed constraint."""
        if self._pull_over_at is not None:
            yield self._pull_over_at - self._position, 0.0, 0.0
        distance = -self._position
        for segment in self._ahead:
            if distance > 0:
                yield distance, self._cap(segment), 0.0
            distance += segment.length
            if segment.stop and self._stopped_for is not segment:
                margin = self.b.brake_margin if segment.stop != "manoeuvre" else 0.3
                yield distance, 0.0, margin
                return

    def _wanted_accel(self, now: float, v: float) -> float:
        """The acceleration the driver wants now; COAST means "foot off both pedals"."""
        b = self.b
        wanted = min(b.accel_gain * (self._cap(self.segment) - v), b.accel_max)
        for distance, target, margin in self._constraints():
            room = max(distance - margin, 0.3)
            if target == 0.0 and self._committed and v < 1.0 and room > 2.0:
                wanted = min(wanted, 0.4)  # stopped short of the line: roll up to it
                continue
            if target >= v:
                continue
            needed = (v * v - target * target) / (2 * room)
            brake_point = room - (v * v - target * target) / (2 * b.brake_decel)
            if target == 0.0 and room < 0.5:
                wanted = min(wanted, -1.0)  # at the line: come to a firm stop
            elif needed >= 0.9 * b.brake_decel or (target == 0.0 and self._committed):
                self._committed = self._committed or target == 0.0
                wanted = min(wanted, -needed)  # follow the braking curve the persona planned
            elif brake_point < v * b.coast_time:
                self._committed = self._committed or target == 0.0
                wanted = min(wanted, COAST)  # foot off the pedal: let regeneration slow the car
        if self._emergency_at is not None and self._emergency_at - self._position < v * v / 19.0 + 1.0:
            wanted = min(wanted, -9.5)  # after ~0.9 s of reaction: full stop
        return wanted

    def _pedals(self, wanted: float, state: VehicleState, dt: float) -> None:
        """Turn a wanted acceleration into pedal travel, at the persona's pedal speed and steadiness."""
        v = state.speed
        gear = state.gear
        force = physics.MASS * wanted + physics.resistance(abs(v))
        lift = physics.lift_off_force(v, gear)
        limit = physics.traction_limit(v)
        if wanted == COAST:
            accel_target = brake_target = 0.0
        elif force > -lift:
            accel_target = min(1.0, (force + lift) / (limit + lift))
            brake_target = 0.0
        else:
            accel_target = 0.0
            pressure = max(0.0, -(force + lift)) / physics.MASS / physics.BRAKE_DECEL_PER_BAR
            brake_target = physics.pedal_for_pressure(pressure)
        self._foot_noise += (-self._foot_noise * dt / 0.8) + self._rng.gauss(
            0.0, self.b.pedal_noise
        ) * math.sqrt(dt)
        if accel_target > 0:
            accel_target = min(1.0, max(0.0, accel_target + self._foot_noise))
        rate = self.b.pedal_rate * dt
        self.accel_pedal += max(-rate * 2, min(rate, accel_target - self.accel_pedal))
        self.brake_pedal += max(-rate * 2, min(rate * 1.5, brake_target - self.brake_pedal))
        if wanted <= -9.0:
            self.brake_pedal = min(1.0, self.brake_pedal + 8.0 * dt)  # panic stop: stamps on the pedal

    def _hold(self, state: VehicleState, gear: int, dt: float) -> None:
        state.gear = gear
        self.accel_pedal = max(0.0, self.accel_pedal - self.b.pedal_rate * 2 * dt)
        hold = physics.pedal_for_pressure(HOLD_PRESSURE)
        self.brake_pedal += max(-dt, min(dt * self.b.pedal_rate, hold - self.brake_pedal))

    def _arrive(self, now: float, state: VehicleState) -> None:
        """Stopped under braking: at a red light, a stop sign, a manoeuvre, an obstacle or the end."""
        if self._pull_over_at is not None and self._pull_over_at - self._position < 15:
            self.parked_at = now
            self._committed = False
            return
        if self._emergency_at is not None and self._emergency_at - self._position < 15:
            self._emergency_at = None
            self._wait_until(now, 2.0)
            self._committed = False
            return
        segment = self.segment
        if segment.stop and segment.length - self._position < 12:
            self._stopped_for = segment
            self._wait_until(now, segment.wait)
            self._committed = False

    def _wait_until(self, now: float, seconds: float) -> None:
        self._waiting_until = now + seconds
        self._wait_total = seconds

    def _wait(self, now: float, dt: float, state: VehicleState) -> None:
        assert self._waiting_until is not None
        remaining = self._waiting_until - now
        at_line = self._stopped_for is self._ahead[0] and len(self._ahead) > 1
        following = self._ahead[1] if at_line else self.segment
        go_gear = GEAR_R if following.direction < 0 else self.drive_gear
        gear = state.gear
        if (
            self.b.neutral_at_long_stops
            and self._wait_total > 10
            and 2.0 < remaining < self._wait_total - 2.0
        ):
            gear = GEAR_N
        elif remaining < self._wait_total * 0.5:
            gear = go_gear  # selects the next gear (R after a forward move) with the brake held
        self._hold(state, gear, dt)
        if remaining <= 0:
            state.gear = go_gear
            self._waiting_until = None
            if at_line:
                self._position = self._ahead[0].length  # the stop line: the next tick moves on

    def idle(self, state: VehicleState, dt: float) -> None:
        """Before the trip: foot on the brake, gear in P."""
        self._hold(state, GEAR_P, dt)

    def depart(self, state: VehicleState) -> None:
        """Shift out of P into the persona's drive gear (brake held) to begin the trip."""
        state.gear = GEAR_R if self.segment.direction < 0 else self.drive_gear

    def emergency_stop(self, state: VehicleState) -> bool:
        """An obstacle appears just ahead: stop as hard as the car can (ABS). False when not moving yet."""
        v = abs(state.speed)
        if self._emergency_at is not None or v < 5.0 or self._waiting_until is not None:
            return False
        self._emergency_at = self._position + v * 0.9 + v * v / (2 * 9.5)
        return True

    def _maybe_emergency(self, dt: float, v: float) -> None:
        chance = self.b.emergency_brakes_per_hour / 3600.0 * dt
        if (
            self._emergency_at is None
            and v > 12.0
            and self.segment.road != "parking"
            and self._rng.random() < chance
        ):
            self._emergency_at = self._position + v * 0.9 + v * v / (2 * 9.5)

    # -- lateral -------------------------------------------------------------------------------------------

    def _curvature_ahead(self, preview: float) -> float:
        distance = preview + self._position
        for segment in self._ahead:
            if distance < segment.length:
                return segment.curvature
            distance -= segment.length
        return self._ahead[-1].curvature

    def _maybe_lane_change(self, now: float, dt: float, v: float) -> None:
        chance = self.b.lane_changes_per_min / 60.0 * dt
        if self._lane_change is None and self.road == "highway" and v > 16.0 and self._rng.random() < chance:
            duration = (3.0 + 6.0 * self.b.steer_tau) * self._rng.uniform(0.85, 1.15)
            side = 1.0 if self._rng.random() < 0.5 else -1.0
            amplitude = side * 2 * math.pi * LANE_WIDTH / (v * v * duration * duration)
            self._lane_change = (now, duration, amplitude)

    def _steer(self, now: float, dt: float, v: float, curvature: float) -> None:
        b = self.b
        if self._lane_change is not None:
            start, duration, amplitude = self._lane_change
            phase = (now - start) / duration
            if phase >= 1.0:
                self._lane_change = None
            else:
                curvature += amplitude * math.sin(2 * math.pi * phase)
        target = math.degrees(math.atan(WHEELBASE * curvature)) * STEERING_RATIO
        # Lane-keeping corrections: an Ornstein-Uhlenbeck wander, larger for a busier steerer.
        if v > 1.0:
            self._steer_noise += -self._steer_noise * dt / 1.2 + self._rng.gauss(
                0.0, b.steer_noise
            ) * math.sqrt(dt)
        target += self._steer_noise * min(1.0, 8.0 / max(v, 1.0))
        max_rate = 720.0 * dt * (0.3 / max(b.steer_tau, 0.1))
        change = (target - self.steering_angle) * min(1.0, dt / b.steer_tau)
        self.steering_angle += max(-max_rate, min(max_rate, change))
        self.steering_angle = max(-FULL_LOCK_DEG, min(FULL_LOCK_DEG, self.steering_angle))
