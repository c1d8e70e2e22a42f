"""Signal values for each message of the vehicle's DBCs, read from the vehicle and cabin states."""

from __future__ import annotations

import random
from collections.abc import Callable

from sim.cabin import CabinState, ProfileEvent
from sim.personas import Identity
from sim.physics import VehicleState

Values = dict[str, float]

#: Brake pads of the reference vehicle last this many km from new to worn (front, rear) before the car's own
#: spread (+-10 %); the pad sensor reports `PadWearLevel` 0..100 % in 0.5 % steps.
PAD_LIFE_KM = (50_000.0, 80_000.0)
#: The traction battery loses this many % of capacity per 10,000 km before the car's own spread (+-20 %).
SOH_LOSS_PER_10K_KM = 2.0


class Wear:
    """Slow wear read from the odometer: what changes from one simulated day to the next.

    `Wear(rng)` draws the car's own spread (pad life, battery ageing) once; `pad_wear(corner, km)` and
    `state_of_health(km)` are then functions of the odometer only, so drives of one car on later days (a
    larger `--odometer`) show a realistic trend: +0.1 %/day for pads at 50 km a day.
    """

    def __init__(self, rng: random.Random) -> None:
        front = PAD_LIFE_KM[0] * rng.uniform(0.9, 1.1)
        rear = PAD_LIFE_KM[1] * rng.uniform(0.9, 1.1)
        self.pad_life_km = (front, front * rng.uniform(0.98, 1.02), rear, rear * rng.uniform(0.98, 1.02))
        self.soh_loss_per_km = SOH_LOSS_PER_10K_KM / 10_000 * rng.uniform(0.8, 1.2)

    def pad_wear(self, corner: int, odometer_km: float) -> float:
        """% worn of the pad at `corner` (FL, FR, RL, RR): pads are replaced when worn through."""
        life = self.pad_life_km[corner]
        return 100.0 * (odometer_km % life) / life

    def state_of_health(self, odometer_km: float) -> float:
        """% of the new battery's capacity left."""
        return max(70.0, 100.0 - self.soh_loss_per_km * odometer_km)


class SignalValues:
    """Maps the simulated state onto DBC signals, message by message (`values(name, index)`)."""

    def __init__(
        self,
        vehicle: VehicleState,
        cabin: CabinState,
        key: Identity,
        drive_mode: int,
        odometer_km: float,
        rng: random.Random,
        wear: Wear | None = None,
    ) -> None:
        self.v = vehicle
        self.c = cabin
        self.key = key
        self.drive_mode = drive_mode
        self.odometer_km = odometer_km
        self.key_battery = rng.uniform(55, 100)
        self.worn_pad = rng.randrange(12)  # one car in three has a worn pad somewhere
        # its own stream: the draws of `rng` (and so every other signal of a seed) stay as they were
        self.wear = wear or Wear(random.Random(0))
        self._sensor_noise = random.Random(int(odometer_km * 1000))
        self._rng = rng
        self._by_name: dict[str, Callable[[int], Values]] = {
            "VEHICLE_SPEED": self._vehicle_speed,
            "MOTOR_STATUS": self._motor_status,
            "ACCEL_PEDAL": self._accel_pedal,
            "GEAR_STATUS": self._gear_status,
            "INERTIAL": self._inertial,
            "HV_BATTERY": self._hv_battery,
            "BRAKE_STATUS": self._brake_status,
            "WHEEL_SPEEDS": self._wheel_speeds,
            "STEERING": self._steering,
            "BRAKE_WEAR": self._brake_wear,
            "WINDOW_STATUS": self._window_status,
            "DOOR_STATUS": self._door_status,
            "SEAT_MEMORY": self._seat_memory,
            "KEY_STATUS": self._key_status,
            "IGNITION_STATUS": self._ignition_status,
            "HU_STATUS": self._hu_status,
        }

    def knows(self, name: str) -> bool:
        """True when the simulator produces values for the periodic message `name`."""
        return name in self._by_name

    def values(self, name: str, index: int) -> Values:
        """Physical signal values of the `index`-th frame of message `name` (multiplexers alternate)."""
        return self._by_name[name](index)

    @staticmethod
    def profile_event(event: ProfileEvent) -> Values:
        """HU_PROFILE_EVENT's signals for one event."""
        return {
            "ProfileEventType": event.event_type,
            "ProfileIndex": event.index,
            "ProfileUserHash": event.user_hash,
        }

    # powertrain
    def _vehicle_speed(self, _: int) -> Values:
        return {
            "SpeedCrc": 0,
            "SpeedCounter": 0,
            "SpeedValid": 1,
            "VehicleSpeed": abs(self.v.speed) * 3.6,
            "Odometer": self.odometer_km + self.v.distance / 1000.0,
        }

    def _motor_status(self, _: int) -> Values:
        return {
            "MotorSpeed": self.v.motor_speed,
            "MotorTorque": self.v.motor_torque,
            "MotorTemp": self.v.motor_temp,
        }

    def _accel_pedal(self, _: int) -> Values:
        pedal = self.v.accel_pedal
        return {
            "PedalCrc": 0,
            "PedalCounter": 0,
            "AccelPedalPos": pedal * 100.0,
            "KickDown": int(pedal > 0.92),
        }

    def _gear_status(self, _: int) -> Values:
        return {"GearSelected": self.v.gear, "DriveMode": self.drive_mode}

    def _inertial(self, _: int) -> Values:
        gauss = self._rng.gauss
        return {
            "LongAccel": self.v.accel + gauss(0.0, 0.02),
            "LatAccel": self.v.lat_accel + gauss(0.0, 0.02),
            "YawRate": self.v.yaw_rate + gauss(0.0, 0.05),
        }

    def _hv_battery(self, _: int) -> Values:
        return {
            "StateOfCharge": self.v.soc,
            "BatteryCurrent": self.v.battery_current,
            "BatteryVoltage": round(self.v.battery_voltage, 1),
            "StateOfHealth": self.wear.state_of_health(self._odometer()),
        }

    def _odometer(self) -> float:
        return self.odometer_km + self.v.distance / 1000.0

    # chassis
    def _brake_status(self, _: int) -> Values:
        v = self.v
        return {
            "BrakeCrc": 0,
            "BrakeCounter": 0,
            "BrakePedalPressed": int(v.brake_pedal > 0.02),
            "AbsActive": int(v.abs_active),
            "MasterCylPressure": v.brake_pressure,
            "BrakePedalPos": v.brake_pedal * 100.0,
        }

    def _wheel_speeds(self, _: int) -> Values:
        fl, fr, rl, rr = self.v.wheel_speeds
        return {"WheelSpeedFL": fl, "WheelSpeedFR": fr, "WheelSpeedRL": rl, "WheelSpeedRR": rr}

    def _steering(self, _: int) -> Values:
        return {
            "SteeringCrc": 0,
            "SteeringCounter": 0,
            "SteeringAngle": self.v.steering_angle,
            "SteeringRate": self.v.steering_rate,
        }

    def _brake_wear(self, _: int) -> Values:
        values: Values = {}
        odometer = self._odometer()
        for i, corner in enumerate(("FL", "FR", "RL", "RR")):
            values[f"PadWear{corner}"] = int(self.worn_pad == i)
            level = self.wear.pad_wear(i, odometer) + self._sensor_noise.gauss(0.0, 0.4)
            values[f"PadWearLevel{corner}"] = min(100.0, max(0.0, round(level * 2) / 2))
        return values

    # body
    def _window_status(self, _: int) -> Values:
        w = self.c.windows
        values: Values = {}
        for i, corner in enumerate(("FL", "FR", "RL", "RR")):
            values[f"WindowPos{corner}"] = w[i].position
            values[f"WindowSwitch{corner}"] = w[i].switch
        values["ChildLockActive"] = int(self.c.child_lock)
        return values

    def _door_status(self, _: int) -> Values:
        d = self.c.doors
        return {
            "DoorOpenFL": int(d[0]),
            "DoorOpenFR": int(d[1]),
            "DoorOpenRL": int(d[2]),
            "DoorOpenRR": int(d[3]),
            "TrunkOpen": int(d[4]),
            "CentralLock": self.c.central_lock,
        }

    def _seat_memory(self, index: int) -> Values:
        c = self.c
        if index % 2 == 0:
            return {
                "SeatPage": 0,
                "MemorySlot": c.memory_slot,
                "MemoryRecallActive": int(c.recall_active),
                "MirrorPosLeft": c.mirror_left,
                "MirrorPosRight": c.mirror_right,
            }
        return {
            "SeatPage": 1,
            "SeatPosition": c.seat_position,
            "SeatHeight": c.seat_height,
            "BackrestRecline": c.recline,
        }

    def _key_status(self, _: int) -> Values:
        if not self.c.key_present:
            return {"KeyPresent": 0, "KeyType": 0, "KeySlot": 0, "KeyId": 0, "KeyBattery": 0}
        key = self.key
        return {
            "KeyPresent": 1,
            "KeyType": key.key_type,
            "KeySlot": key.key_slot,
            "KeyId": key.key_id,
            "KeyBattery": self.key_battery,
        }

    def _ignition_status(self, _: int) -> Values:
        return {"IgnitionState": self.c.ignition}

    # infotainment
    def _hu_status(self, _: int) -> Values:
        c = self.c
        return {
            "ActiveProfile": c.profile,
            "MediaSource": c.source,
            "Volume": c.volume,
            "Muted": int(c.muted),
            "NavActive": int(c.nav_active),
            "PhoneConnected": int(c.phone_connected),
            "DisplayBrightness": c.brightness,
            "NavDistanceToDestination": round(c.nav_distance, 2),
            "CabinTempSetpoint": c.cabin_temp,
            "FanLevel": c.fan_level,
        }
