"""`[identity]` in the agent's configuration: which signals say who drives, and the stage's thresholds.

Signals are named `MESSAGE.Signal` (or by their VSS path), so another vehicle's DBC names its own; the
defaults are the reference vehicle's (`dbc/`). Every key is documented in `docs/configuration.md` and the
policy in `docs/identity.md`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware_agent.errors import UserError
from firmware_agent.identity.features import CHANNELS

#: The reference vehicle's signal for each behavioural channel (an electric car: no throttle plate, so
#: motor torque stands in for the throttle and motor speed for the engine speed).
DEFAULT_BEHAVIOUR: Mapping[str, str] = {
    "pedal": "ACCEL_PEDAL.AccelPedalPos",
    "throttle": "MOTOR_STATUS.MotorTorque",
    "speed": "VEHICLE_SPEED.VehicleSpeed",
    "long_accel": "INERTIAL.LongAccel",
    "lat_accel": "INERTIAL.LatAccel",
    "brake_switch": "BRAKE_STATUS.BrakePedalPressed",
    "brake_pressure": "BRAKE_STATUS.MasterCylPressure",
    "steer_rate": "STEERING.SteeringRate",
    "steer_angle": "STEERING.SteeringAngle",
    "rpm": "MOTOR_STATUS.MotorSpeed",
    "gear": "GEAR_STATUS.GearSelected",
}
#: Explicit identity, strongest first: the key in use, the head unit's profile, the seat-memory slot.
DEFAULT_EXPLICIT = ("KEY_STATUS.KeyId", "HU_STATUS.ActiveProfile", "SEAT_MEMORY.MemorySlot")
#: Signals that identify a person directly; with the stage on they never leave the car in telemetry.
DEFAULT_PRIVATE = ("KEY_STATUS.KeyId", "HU_PROFILE_EVENT.ProfileUserHash")

_KEYS = {
    "enabled",
    "learn",
    "explicit",
    "none_values",
    "private",
    "ignition",
    "ignition_on",
    "behaviour",
    "activation_minutes",
    "window_seconds",
    "step_seconds",
    "max_windows_per_profile",
    "explicit_prior",
    "identify_confidence",
    "mismatch_confidence",
    "mismatch_seconds",
    "evidence_horizon_seconds",
}


@dataclass(frozen=True)
class IdentitySettings:
    """The identity stage's configuration (see the module docstring and docs/configuration.md)."""

    enabled: bool = True
    #: learn each finished drive on the car; false: the profiles change only through `profile learn/forget`
    learn: bool = True
    #: explicit identity signals, strongest first; the first one with a value names the profile
    explicit: tuple[str, ...] = DEFAULT_EXPLICIT
    #: raw values of an explicit signal that mean "nobody" (no key in range, no profile selected)
    none_values: tuple[float, ...] = (0,)
    private: tuple[str, ...] = DEFAULT_PRIVATE
    #: the ignition signal and the values (labels or numbers) that mean "on": a drive is on to off.
    #: Empty: no ignition signal, the drive lasts as long as the data.
    ignition: str = "IGNITION_STATUS.IgnitionState"
    ignition_on: tuple[str | float, ...] = ("ON", "START")
    behaviour: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_BEHAVIOUR))
    activation_minutes: float = 20.0
    window_seconds: float = 60.0
    step_seconds: float = 10.0
    max_windows_per_profile: int = 2000
    #: belief that the key's holder drives, before any behavioural evidence
    explicit_prior: float = 0.9
    identify_confidence: float = 0.95
    mismatch_confidence: float = 0.95
    mismatch_seconds: float = 120.0
    #: evidence older than this fades (so a change of driver in mid-drive can still be seen)
    evidence_horizon_seconds: float = 300.0
    #: the signal settings the file gave (`explicit`, `ignition`, `behaviour.speed`, ...): a signal given
    #: must exist in the databases; a default one the databases lack is simply not used
    given: frozenset[str] = frozenset()

    @classmethod
    def from_table(cls, table: Mapping[str, Any], origin: str) -> IdentitySettings:
        """Read the `[identity]` table of file `origin`; `UserError` naming `identity.KEY` on a problem."""
        reader = _TableReader(table, origin)
        for key in table:
            if key not in _KEYS:
                raise reader.fail(key, f"unknown key (known: {', '.join(sorted(_KEYS))})")
        defaults = cls()
        behaviour = dict(DEFAULT_BEHAVIOUR)
        given = table.get("behaviour", {})
        if not isinstance(given, Mapping):
            raise reader.fail("behaviour", 'expected a table of CHANNEL = "MESSAGE.Signal"')
        for channel, signal in given.items():
            if channel not in CHANNELS:
                raise reader.fail(f"behaviour.{channel}", f"unknown channel (known: {', '.join(CHANNELS)})")
            if not isinstance(signal, str):
                raise reader.fail(f"behaviour.{channel}", 'expected "MESSAGE.Signal", or "" for none')
            behaviour[channel] = signal
        given = {key for key in ("explicit", "ignition") if key in table}
        given |= {f"behaviour.{channel}" for channel in table.get("behaviour", {})}
        settings = cls(
            given=frozenset(given),
            enabled=reader.boolean("enabled", defaults.enabled),
            learn=reader.boolean("learn", defaults.learn),
            explicit=reader.names("explicit", defaults.explicit),
            none_values=tuple(reader.numbers("none_values", defaults.none_values)),
            private=reader.names("private", defaults.private),
            ignition=reader.text("ignition", defaults.ignition),
            ignition_on=reader.labels("ignition_on", defaults.ignition_on),
            behaviour={channel: name for channel, name in behaviour.items() if name},
            activation_minutes=reader.number("activation_minutes", defaults.activation_minutes, 0.0),
            window_seconds=reader.number("window_seconds", defaults.window_seconds, 10.0, 60.0),
            step_seconds=reader.number("step_seconds", defaults.step_seconds, 1.0, 60.0),
            max_windows_per_profile=int(
                reader.number("max_windows_per_profile", defaults.max_windows_per_profile, 10, 100_000, True)
            ),
            explicit_prior=reader.number("explicit_prior", defaults.explicit_prior, 0.5, 0.999),
            identify_confidence=reader.number(
                "identify_confidence", defaults.identify_confidence, 0.5, 0.9999
            ),
            mismatch_confidence=reader.number(
                "mismatch_confidence", defaults.mismatch_confidence, 0.5, 0.9999
            ),
            mismatch_seconds=reader.number("mismatch_seconds", defaults.mismatch_seconds, 0.0, 86_400.0),
            evidence_horizon_seconds=reader.number(
                "evidence_horizon_seconds", defaults.evidence_horizon_seconds, 30.0, 86_400.0
            ),
        )
        if settings.step_seconds > settings.window_seconds:
            raise reader.fail("step_seconds", "must not exceed window_seconds")
        return settings


class _TableReader:
    def __init__(self, table: Mapping[str, Any], origin: str) -> None:
        self.table = table
        self.origin = origin

    def fail(self, key: str, problem: str) -> UserError:
        return UserError(f"{self.origin}: identity.{key}: {problem}")

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def text(self, key: str, default: str) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {value!r}")
        return value

    def names(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.table.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise self.fail(key, 'expected a list of signal names ("MESSAGE.Signal")')
        return tuple(value)

    def numbers(self, key: str, default: tuple[float, ...]) -> list[float]:
        value = self.table.get(key, list(default))
        if not isinstance(value, list) or not all(_is_finite(item) for item in value):
            raise self.fail(key, "expected a list of numbers")
        return list(value)

    def labels(self, key: str, default: tuple[str | float, ...]) -> tuple[str | float, ...]:
        value = self.table.get(key, list(default))
        if (
            not isinstance(value, list)
            or not value
            or not all((isinstance(item, str) and item) or _is_finite(item) for item in value)
        ):
            raise self.fail(key, "expected a non-empty list of value-table labels or numbers")
        return tuple(value)

    def number(
        self, key: str, default: float, low: float, high: float = math.inf, integer: bool = False
    ) -> float:
        value = self.table.get(key, default)
        kinds = (int,) if integer else (int, float)
        if not isinstance(value, kinds) or isinstance(value, bool) or not low <= value <= high:
            kind = "an integer" if integer else "a number"
            bound = f"between {low:g} and {high:g}" if high != math.inf else f">= {low:g}"
            raise self.fail(key, f"expected {kind} {bound}, got {value!r}")
        return value


def _is_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
