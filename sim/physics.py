"""A small longitudinal and lateral model of the reference vehicle: a front-motor EV with one gear.

Forces: motor (pedal times the torque/power limit, or lift-off regeneration), friction brakes from
master-cylinder pressure, aerodynamic drag and rolling resistance. Tyre grip caps deceleration; above it
ABS cycles the brakes. Lateral motion is kinematic: the steering-wheel angle sets the path curvature,
lateral acceleration is v²·κ and yaw rate v·κ. The battery integrates the electrical power.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from sim.scenarios import STEERING_RATIO, WHEELBASE

G = 9.81
MASS = 1850.0  #: kg, with driver
CDA = 0.62  #: drag coefficient times frontal area, m²
AIR_DENSITY = 1.2
ROLLING = 0.011
WHEEL_RADIUS = 0.34  #: m
GEAR_RATIO = 9.1
MOTOR_TORQUE_MAX = 330.0  #: Nm
MOTOR_POWER_MAX = 150e3  #: W
REGEN_POWER_MAX = 60e3  #: W
BRAKE_PRESSURE_MAX = 160.0  #: bar at full pedal
BRAKE_DECEL_PER_BAR = 0.075  #: m/s² per bar of master-cylinder pressure
GRIP = 0.92  #: tyre-road friction coefficient (dry asphalt)
TRACK = 1.6  #: m, for inner/outer wheel speeds in curves
BATTERY_CAPACITY_AH = 190.0
AUX_POWER = 700.0  #: W, 12 V loads and climate when ready

GEAR_P, GEAR_R, GEAR_N, GEAR_D, GEAR_B = 0, 1, 2, 3, 4
#: Lift-off deceleration (one-pedal regeneration) per gear, m/s².
LIFT_OFF_DECEL = {GEAR_D: 0.35, GEAR_B: 1.4, GEAR_R: 0.35}


def pressure_for_pedal(brake_pedal: float) -> float:
    """Master-cylinder pressure (bar) for a brake pedal travel 0..1 (progressive booster curve)."""
    return float(BRAKE_PRESSURE_MAX * max(0.0, brake_pedal) ** 1.5)


def pedal_for_pressure(pressure: float) -> float:
    """Inverse of `pressure_for_pedal`."""
    return float((max(0.0, pressure) / BRAKE_PRESSURE_MAX) ** (1 / 1.5))


def resistance(speed: float) -> float:
    """Drag plus rolling resistance at `speed` (m/s, signed), N, opposing the motion."""
    if abs(speed) < 0.01:
        return 0.0
    return math.copysign(0.5 * AIR_DENSITY * CDA * speed * speed + ROLLING * MASS * G, speed)


def traction_limit(speed: float) -> float:
    """Largest motor force at the wheels at `speed` (m/s), N."""
    return min(MOTOR_TORQUE_MAX * GEAR_RATIO / WHEEL_RADIUS, MOTOR_POWER_MAX / max(abs(speed), 1.0))


def lift_off_force(speed: float, gear: int) -> float:
    """Regenerative force with the pedal released, N (fades out below 8 km/h)."""
    fade = min(1.0, abs(speed) / 2.2)
    return LIFT_OFF_DECEL.get(gear, 0.0) * MASS * fade


@dataclass
class VehicleState:
    """Everything the buses report about the moving vehicle, SI units unless named otherwise."""

    speed: float = 0.0  #: m/s, negative when reversing
    accel: float = 0.0  #: m/s², longitudinal, along the direction of travel of the car body
    distance: float = 0.0  #: m, odometer since start
    gear: int = GEAR_P
    accel_pedal: float = 0.0  #: 0..1
    brake_pedal: float = 0.0  #: 0..1
    brake_pressure: float = 0.0  #: bar
    abs_active: bool = False
    motor_torque: float = 0.0  #: Nm
    motor_speed: float = 0.0  #: rpm
    motor_temp: float = 24.0  #: °C
    steering_angle: float = 0.0  #: steering-wheel degrees, positive = left
    steering_rate: float = 0.0  #: deg/s
    curvature: float = 0.0  #: 1/m of the path actually driven
    lat_accel: float = 0.0  #: m/s²
    yaw_rate: float = 0.0  #: deg/s
    wheel_speeds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  #: km/h FL FR RL RR
    soc: float = 80.0  #: %
    battery_current: float = 0.0  #: A, positive = discharge
    battery_voltage: float = 395.0  #: V
    ready: bool = False  #: drive system on (ignition ON)


class VehicleModel:
    """Integrates the vehicle state from the driver's pedals, gear and steering wheel."""

    def __init__(self, rng: random.Random, soc: float) -> None:
        self.state = VehicleState(soc=soc)
        # Tyre rolling radii differ by a few per mille (wear, pressure): each wheel reads its own speed.
        self._tyre_factor = [1.0 + rng.uniform(-0.004, 0.004) for _ in range(4)]
        self._noise = rng
        self._abs_phase = 0.0

    def step(self, dt: float, accel_pedal: float, brake_pedal: float, steering_angle: float) -> None:
        """Advance by `dt` seconds with the given controls (gear is set on `state.gear` by the driver)."""
        s = self.state
        v = s.speed
        gear = s.gear
        s.accel_pedal = accel_pedal
        s.brake_pedal = brake_pedal
        s.brake_pressure = pressure_for_pedal(brake_pedal)
        direction = -1.0 if gear == GEAR_R else 1.0

        if gear in (GEAR_D, GEAR_B, GEAR_R) and s.ready:
            # One-pedal feel: released = lift-off regeneration, ~20 % holds speed, full = the traction limit.
            lift = lift_off_force(v, gear)
            motor_force = direction * (accel_pedal * (traction_limit(v) + lift) - lift)
        else:
            motor_force = 0.0
        brake_decel = s.brake_pressure * BRAKE_DECEL_PER_BAR
        grip_decel = GRIP * G
        s.abs_active = brake_decel > 0.95 * grip_decel and abs(v) > 2.0
        if s.abs_active:
            self._abs_phase += dt * 2 * math.pi * 7.0  # ABS modulates at ~7 Hz
            brake_decel = grip_decel * (0.9 + 0.06 * math.sin(self._abs_phase))
        brake_force = brake_decel * MASS
        if gear == GEAR_P:
            brake_force = max(brake_force, 3 * MASS)  # parking pawl holds the car
        # Regenerative share of braking: the motor takes what it can, friction the rest.
        regen_brake = min(brake_force, REGEN_POWER_MAX / max(abs(v), 1.0)) if abs(v) > 1.5 else 0.0

        drive = motor_force - resistance(v)
        if abs(v) < 0.05 and abs(drive) <= brake_force:
            new_v = 0.0  # held by the brakes (static friction)
        else:
            decel = brake_force * (1.0 if v > 0 or (v == 0 and drive > 0) else -1.0)
            new_v = v + (drive - decel) / MASS * dt
            if v != 0.0 and new_v * v < 0.0:
                new_v = 0.0  # brakes and resistance stop the car, they do not reverse it
        s.accel = (new_v - v) / dt
        s.speed = new_v
        s.distance += abs(new_v) * dt

        wheel_force = motor_force - regen_brake * math.copysign(1.0, new_v)
        s.motor_torque = wheel_force * WHEEL_RADIUS / GEAR_RATIO
        s.motor_speed = new_v / WHEEL_RADIUS * GEAR_RATIO * 60 / (2 * math.pi)
        s.motor_temp += (abs(s.motor_torque) * 0.0004 - (s.motor_temp - 24.0) * 0.002) * dt

        electrical = wheel_force * new_v
        electrical = electrical / 0.9 if electrical > 0 else electrical * 0.85
        if s.ready:
            electrical += AUX_POWER
        open_circuit = 340.0 + 0.8 * s.soc
        s.battery_current = electrical / open_circuit
        s.battery_voltage = open_circuit - 0.06 * s.battery_current
        s.soc -= s.battery_current * dt / 3600.0 / BATTERY_CAPACITY_AH * 100.0

        self._lateral(dt, new_v, steering_angle)
        self._wheels(new_v, brake_decel, accel_pedal)

    def _lateral(self, dt: float, v: float, steering_angle: float) -> None:
        s = self.state
        s.steering_rate = (steering_angle - s.steering_angle) / dt
        s.steering_angle = steering_angle
        s.curvature = math.tan(math.radians(steering_angle / STEERING_RATIO)) / WHEELBASE
        s.lat_accel = v * v * s.curvature
        s.yaw_rate = math.degrees(v * s.curvature)

    def _wheels(self, v: float, brake_decel: float, accel_pedal: float) -> None:
        s = self.state
        kmh = abs(v) * 3.6
        # Braking slip grows with deceleration; ABS lets it oscillate around ~10 %.
        slip = min(0.08, brake_decel / (GRIP * G) * 0.05) if kmh > 3 else 0.0
        if s.abs_active:
            slip = 0.1 + 0.08 * math.sin(self._abs_phase)
        drive_slip = accel_pedal * 0.015 if kmh > 3 else 0.0  # front wheels are driven
        half_track = TRACK / 2 * s.curvature
        for i in range(4):
            side = half_track if i in (1, 3) else -half_track  # outer wheels turn faster
            wheel_slip = slip * (1.15 if i < 2 else 0.85) - (drive_slip if i < 2 else 0.0)
            value = kmh * self._tyre_factor[i] * (1.0 + side) * (1.0 - wheel_slip)
            s.wheel_speeds[i] = max(0.0, value + self._noise.gauss(0.0, 0.03) if kmh > 0.5 else 0.0)
