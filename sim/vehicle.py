"""The simulation: a persona drives a scenario; every ECU sends its DBC messages as python-can frames.

`Simulation(...).frames()` yields `can.Message` objects in timestamp order. Each message goes out at its
DBC cycle time (`GenMsgCycleTime`) from its ECU's own clock: a phase offset per ECU, a drift of a few
tens of ppm and ±1 % (at most 0.3 ms) jitter per frame, so intervals stay within 5 % of the cycle time.
Event messages (HU_PROFILE_EVENT) go out when the event happens. E2E-protected messages carry an alive
counter stepping by one and a correct CRC-8 (`firmware_agent.e2e_protection`). Faults change all of that
on request.
Everything random comes from `random.Random` streams seeded with the seed: same arguments, same frames.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import can
import cantools
from cantools.database.can import Database, Message

from firmware_agent.e2e_protection import E2EProfile, profile_for
from firmware_agent.errors import UserError
from firmware_agent.values import MAX_FRAME_TIME
from firmware_agent.vehicle import BUS_NAMES, default_dbc_dir
from sim.cabin import CLOSING_TIME, DEPART, DOOR_CLOSE, IGNITION_ON, Cabin
from sim.driver import Driver
from sim.faults import KINDS as FAULT_KINDS
from sim.faults import Fault, FaultInjector, InjectedFault
from sim.personas import PERSONAS, Persona, find_persona
from sim.physics import VehicleModel
from sim.scenarios import Scenario, find_scenario
from sim.signals import SignalValues, Wear

#: Physics and driver tick, s (the fastest cycle time on the vehicle's buses is 10 ms).
TICK = 0.01
#: Fixed start of simulated time for reproducible captures: 2026-01-01T00:00:00Z.
DEFAULT_EPOCH = 1767225600.0
#: Frames are released once no later tick can produce an earlier one (jitter is below this), s.
_RELEASE_LAG = 0.001
_EVENT_LATENCY = 0.004


@lru_cache(maxsize=1)
def load_databases() -> dict[str, Database]:
    """The vehicle's four DBCs, strictly loaded, by bus name."""
    folder = default_dbc_dir()
    databases: dict[str, Database] = {}
    for bus in BUS_NAMES:
        database = cantools.database.load_file(folder / f"{bus}.dbc", strict=True)
        assert isinstance(database, Database)
        databases[bus] = database
    return databases


@dataclass
class _Periodic:
    """Send state of one periodic message."""

    bus: str
    message: Message
    period: float
    phase: float
    drift: float
    jitter: float
    profile: E2EProfile | None
    limits: dict[str, tuple[float, float]]
    index: int = 0
    counter: int = -1
    nominal: float = 0.0


def _limits(message: Message) -> dict[str, tuple[float, float]]:
    """Each signal's DBC range: values outside are clamped rather than wrapped by the encoder."""
    out = {}
    for signal in message.signals:
        low = signal.minimum if signal.minimum is not None else -float("inf")
        high = signal.maximum if signal.maximum is not None else float("inf")
        out[signal.name] = (low, high)
    return out


class SimulationError(UserError):
    """A simulation argument that cannot be used: `argument` names it (as `Simulation` spells it), `value`
    is its text ("" for names, whose `problem` already quotes them)."""

    def __init__(self, argument: str, value: str, problem: str) -> None:
        super().__init__(f"{argument} {value}: {problem}" if value else f"{argument}: {problem}")
        self.argument, self.value, self.problem = argument, value, problem


def _found(find: Callable[[Any], Any], value: object, argument: str) -> Any:
    try:
        return find(value)
    except UserError as exc:
        raise SimulationError(argument, "", str(exc)) from None


class Simulation:
    """One simulated trip: persona, scenario, seed, duration and faults in; frames and ground truth out.

    `driver` is the persona who drives (number, name or `Persona`); `key_owner` the persona whose key,
    infotainment profile and seat slot the car sees (default: the driver, or for the borrowed-key scenario
    persona 1, or 2 when persona 1 drives). `channels` renames buses (`{"powertrain": "vcan0"}`).
    `hard_brakes` are seconds at which an obstacle forces an emergency stop (ABS), as soon as the car
    is moving at that time or later.
    Ground truth for tests: `persona`, `key_owner`, `borrowed`, and after `frames()` ran, `injected`.
    """

    def __init__(
        self,
        driver: Persona | str | int = 1,
        scenario: Scenario | str = "city",
        seed: int = 0,
        duration: float = 120.0,
        faults: Sequence[Fault] = (),
        key_owner: Persona | str | int | None = None,
        start_time: float = DEFAULT_EPOCH,
        channels: dict[str, str] | None = None,
        hard_brakes: Sequence[float] = (),
        odometer_km: float | None = None,
    ) -> None:
        self.persona, self.scenario, key_owner = Simulation.check(
            driver, scenario, seed, duration, faults, key_owner, start_time, hard_brakes, odometer_km
        )
        if key_owner is None and self.scenario.borrowed_key:
            key_owner = PERSONAS[1] if self.persona.number == 1 else PERSONAS[0]
        self.key_owner = key_owner or self.persona
        self.seed = seed
        self.duration = float(duration)
        self.start_time = float(start_time)
        self.channels = {bus: bus for bus in BUS_NAMES} | dict(channels or {})
        self.faults = list(faults)
        self.hard_brakes = sorted(hard_brakes)
        self.odometer_km = odometer_km
        self.databases = load_databases()
        self.injected: list[InjectedFault] = []
        try:
            FaultInjector(self.faults, self.databases)  # a fault its bus cannot carry fails here, not later
        except UserError as exc:
            raise SimulationError("faults", "", str(exc)) from None

    @staticmethod
    def check(
        driver: Persona | str | int = 1,
        scenario: Scenario | str = "city",
        seed: int = 0,
        duration: float = 120.0,
        faults: Sequence[Fault] = (),
        key_owner: Persona | str | int | None = None,
        start_time: float = DEFAULT_EPOCH,
        hard_brakes: Sequence[float] = (),
        odometer_km: float | None = None,
    ) -> tuple[Persona, Scenario, Persona | None]:
        """The one check of a simulation's arguments (every front door: `Simulation(...)`, the `sim` CLI,
        the `sim:` source before it opens); returns the persona, scenario and key owner they name.
        Raises `SimulationError` naming the argument."""
        persona = driver if isinstance(driver, Persona) else _found(find_persona, driver, "driver")
        chosen = scenario if isinstance(scenario, Scenario) else _found(find_scenario, scenario, "scenario")
        owner = None
        if key_owner is not None:
            owner = (
                key_owner if isinstance(key_owner, Persona) else _found(find_persona, key_owner, "key_owner")
            )
        if not (isinstance(seed, int) and seed >= 0):
            raise SimulationError("seed", f"{seed}", "must be a whole number, 0 or more")
        if not (math.isfinite(duration) and duration > 0):
            raise SimulationError("duration", f"{duration:g}", "must be a positive number of seconds")
        if not (duration <= MAX_FRAME_TIME and 0.0 <= start_time <= MAX_FRAME_TIME - duration):  # and not NaN
            # frames at such times would be refused by the agent (and float64 cannot step their clocks)
            raise SimulationError(
                "start_time",
                f"{start_time:g}",
                f"with duration {duration:g} the drive must lie between 0 and {MAX_FRAME_TIME:.0f} "
                "(2100-01-01) seconds since the epoch",
            )
        for moment in hard_brakes:
            if not (math.isfinite(moment) and moment >= 0):
                raise SimulationError(
                    "hard_brakes", f"{moment:g}", "must be seconds from the start (0 or more)"
                )
        if odometer_km is not None and not 0.0 <= odometer_km <= 2_000_000.0:  # and not NaN
            raise SimulationError("odometer_km", f"{odometer_km:g}", "must be a distance in km, 0..2,000,000")
        for fault in faults:
            if fault.kind not in FAULT_KINDS:
                raise SimulationError("faults", f"{fault}", "unknown fault")
            if fault.bus not in BUS_NAMES:
                raise SimulationError("faults", f"{fault}", f"unknown bus {fault.bus!r}")
        return persona, chosen, owner

    @property
    def borrowed(self) -> bool:
        """True when the key (and with it profile and seat slot) belongs to someone else than the driver."""
        return self.key_owner is not self.persona

    def _stream(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}/{self.persona.name}/{self.scenario.name}/{name}")

    def _schedules(self, signals: SignalValues) -> list[_Periodic]:
        rng = self._stream("clocks")
        ecu_phase: dict[str, float] = {}
        ecu_drift: dict[str, float] = {}
        schedules = []
        for bus in BUS_NAMES:
            for message in self.databases[bus].messages:
                if not message.cycle_time or not signals.knows(message.name):
                    continue
                ecu = message.senders[0] if message.senders else bus
                if ecu not in ecu_phase:
                    ecu_phase[ecu] = rng.uniform(0.0, 0.008)
                    ecu_drift[ecu] = rng.uniform(-80e-6, 80e-6)
                period = message.cycle_time / 1000.0
                ecu_phase[ecu] += 0.00025  # messages of one ECU leave one after another
                schedules.append(
                    _Periodic(
                        bus=bus,
                        message=message,
                        period=period,
                        phase=ecu_phase[ecu],
                        drift=ecu_drift[ecu],
                        jitter=min(0.01 * period, 0.0003),
                        profile=profile_for(message),
                        limits=_limits(message),
                        nominal=ecu_phase[ecu],
                    )
                )
        return schedules

    def frames(self) -> Iterator[can.Message]:
        """Every frame of the trip on all four buses, in timestamp order."""
        persona, key = self.persona, self.key_owner
        trip = persona.for_trip(self._stream("trip"))
        model = VehicleModel(self._stream("vehicle"), soc=self._stream("battery").uniform(45, 92))
        driver = Driver(trip, self.scenario.route(self._stream("route")), self._stream("driver"))
        cabin = Cabin(trip, key.identity, persona.identity, self._stream("cabin"), key.behaviour.volume)
        signals = SignalValues(
            model.state,
            cabin.state,
            key.identity,
            trip.drive_mode,
            odometer_km=self.odometer_km
            if self.odometer_km is not None
            else self._stream("odometer").uniform(800, 60000),
            rng=self._stream("sensors"),
            wear=Wear(random.Random(f"{self.seed}/wear")),  # the car's, whoever drives it
        )
        injector = FaultInjector(self.faults, self.databases)
        self.injected = injector.injected
        schedules = self._schedules(signals)
        jitter_rng = self._stream("jitter")
        event_message = self.databases["infotainment"].get_message_by_name("HU_PROFILE_EVENT")
        events_sent = 0
        pull_over_from = self.duration - CLOSING_TIME if self.duration >= 40 else None
        hard_brakes = list(self.hard_brakes)
        # Reorder buffer: jitter moves a frame by at most 0.3 ms, so frames are released one tick behind;
        # it never holds more than about two ticks of frames (a flood adds ~45 per tick), no bound needed.
        heap: list[tuple[float, int, can.Message]] = []
        sequence = 0
        start = self.start_time
        ticks = round(self.duration / TICK)
        for tick in range(ticks):
            now = tick * TICK
            model.state.ready = cabin.state.ignition >= 3 and now >= IGNITION_ON
            if now < DEPART:
                if now >= DOOR_CLOSE:  # seated: foot on the brake
                    driver.idle(model.state, TICK)
            else:
                if now - TICK < DEPART <= now + 1e-9:
                    driver.depart(model.state)
                if pull_over_from is not None and driver.parked_at is None:
                    braking_time = abs(model.state.speed) / trip.brake_decel + 4.0
                    if now >= pull_over_from - braking_time:
                        driver.pull_over(now, model.state)
                if hard_brakes and now >= hard_brakes[0] and driver.emergency_stop(model.state):
                    hard_brakes.pop(0)
                driver.step(now, TICK, model.state)
            model.step(TICK, driver.accel_pedal, driver.brake_pedal, driver.steering_angle)
            cabin.step(now, TICK, abs(model.state.speed) * 3.6, driver.road, driver.parked_at)

            end = (tick + 1) * TICK
            for schedule in schedules:
                while schedule.nominal < end:
                    frame = self._periodic_frame(schedule, signals, injector, jitter_rng)
                    if frame is not None:
                        sequence += 1
                        heapq.heappush(heap, (frame.timestamp, sequence, frame))
            while events_sent < len(cabin.events):
                event = cabin.events[events_sent]
                events_sent += 1
                data = event_message.encode(SignalValues.profile_event(event), strict=False)
                sequence += 1
                timestamp = start + event.time + _EVENT_LATENCY
                heapq.heappush(
                    heap, (timestamp, sequence, self._message(event_message, "infotainment", data, timestamp))
                )
            for extra in injector.extra_frames(now, end, start, self.channels):
                sequence += 1
                heapq.heappush(heap, (extra.timestamp, sequence, extra))
            release = start + end - _RELEASE_LAG
            while heap and heap[0][0] < release:
                yield heapq.heappop(heap)[2]
        while heap:
            yield heapq.heappop(heap)[2]

    def _periodic_frame(
        self, schedule: _Periodic, signals: SignalValues, injector: FaultInjector, jitter_rng: random.Random
    ) -> can.Message | None:
        nominal = schedule.phase + schedule.index * schedule.period * (1.0 + schedule.drift)
        message = schedule.message
        index = schedule.index
        schedule.index += 1
        schedule.nominal = schedule.phase + schedule.index * schedule.period * (1.0 + schedule.drift)
        t = max(0.0, nominal + jitter_rng.uniform(-schedule.jitter, schedule.jitter))
        if injector.injected:
            send, step, bad_crc, short = injector.frame_fate(
                schedule.bus, t, message, schedule.profile is not None
            )
        else:
            send, step, bad_crc, short = True, 1, False, False
        if schedule.profile is not None:
            schedule.counter = (schedule.counter + step) % schedule.profile.counter_modulo
        if not send:
            return None
        values = signals.values(message.name, index)
        limits = schedule.limits
        for name, value in values.items():
            low, high = limits[name]
            if value < low:
                values[name] = low
            elif value > high:
                values[name] = high
        data = bytearray(message.encode(values, strict=False))
        if schedule.profile is not None:
            schedule.profile.protect(data, schedule.counter)
            if bad_crc:
                data[schedule.profile.crc_byte] ^= 0x5A
        if short:
            data = data[: len(data) // 2]
        return self._message(message, schedule.bus, bytes(data), self.start_time + t)

    def _message(self, message: Message, bus: str, data: bytes, timestamp: float) -> can.Message:
        return can.Message(
            timestamp=timestamp,
            arbitration_id=message.frame_id,
            is_extended_id=message.is_extended_frame,
            is_fd=message.is_fd,
            bitrate_switch=message.is_fd,
            data=data,
            channel=self.channels[bus],
        )
