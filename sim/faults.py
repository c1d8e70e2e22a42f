"""Faults the simulator injects on demand, so that tests of the agent can provoke each failure.

Syntax (CLI `--fault`, API `parse_fault`): ``NAME[@START[+DURATION]][:BUS]``, times in seconds from the
start of the simulation. START defaults to 10 s, BUS to `powertrain`, DURATION to the fault's default.
A DURATION of 0 on a per-frame fault (bad-crc, counter-repeat, counter-skip, wrong-dlc, unknown-id,
error-frame) means "once": the first affected frame of each message at or after START.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import can
from cantools.database.can import Database, Message

from firmware_agent.decode.busload import bus_bitrate, frame_seconds
from firmware_agent.errors import UserError
from firmware_agent.vehicle import BUS_NAMES

#: The ID a babbling node floods the bus with: 0 wins every arbitration.
FLOOD_ID = 0x000
#: IDs that no DBC of the vehicle defines (a diagnostic tester's request and a stray extended ID).
UNKNOWN_IDS: tuple[tuple[int, bool], ...] = ((0x7E5, False), (0x18DAF1FE, True))
#: SocketCAN error classes carried in the error frames that mark an interface going down and up.
CAN_ERR_BUSOFF = 0x040
CAN_ERR_RESTARTED = 0x100


@dataclass(frozen=True)
class FaultKind:
    """What a fault does and how long it lasts by default."""

    name: str
    summary: str
    default_duration: float
    needs_e2e: bool = False


KINDS: dict[str, FaultKind] = {
    kind.name: kind
    for kind in (
        FaultKind("flood", "100 % bus load: back-to-back ID 0x000 frames fill every free bit", 2.0),
        FaultKind("bad-crc", "E2E-protected frames carry a wrong CRC byte", 0.0, needs_e2e=True),
        FaultKind(
            "counter-repeat", "E2E alive counters do not advance (a frame repeats its counter)", 0.0, True
        ),
        FaultKind(
            "counter-skip", "E2E alive counters jump by two (one value is skipped)", 0.0, needs_e2e=True
        ),
        FaultKind("wrong-dlc", "frames arrive shorter than the DBC length (half the bytes)", 0.0),
        FaultKind("unknown-id", "frames with IDs no DBC defines (0x7E5, 0x18DAF1FE), 10 per second", 0.0),
        FaultKind("error-frame", "CAN error frames (is_error_frame), 20 per second", 0.0),
        FaultKind("silent", "every ECU on the bus stops sending; counters resume where they stopped", 3.0),
        FaultKind(
            "link-down",
            "the receiving interface goes down and comes back: a gap (ECU counters run on) bracketed by "
            "error frames; on socketcan output the link is really set down/up",
            3.0,
        ),
    )
}

_SPEC = re.compile(r"^(?P<name>[a-z-]+)(?:@(?P<start>[^+:]+)(?:\+(?P<duration>[^:]+))?)?(?::(?P<bus>\w+))?$")


@dataclass(frozen=True)
class Fault:
    """One fault to inject: what, when (seconds from the start) and on which bus."""

    kind: str
    start: float = 10.0
    duration: float = 0.0
    bus: str = "powertrain"

    @property
    def end(self) -> float:
        """When the fault stops (equal to `start` for a one-off)."""
        return self.start + self.duration

    def active(self, t: float) -> bool:
        """True while a lasting fault applies at simulated second `t`."""
        return self.start <= t < self.end

    def __str__(self) -> str:
        return f"{self.kind}@{self.start:g}+{self.duration:g}:{self.bus}"


def parse_fault(spec: str) -> Fault:
    """Parse ``NAME[@START[+DURATION]][:BUS]``; UserError naming the bad part otherwise."""
    match = _SPEC.match(spec.strip())
    if not match:
        raise UserError(f"--fault {spec}: expected NAME[@START[+DURATION]][:BUS]")
    name = match["name"]
    if name not in KINDS:
        raise UserError(f"--fault {spec}: unknown fault {name!r} (known: {', '.join(KINDS)})")
    bus = match["bus"] or "powertrain"
    if bus not in BUS_NAMES:
        raise UserError(f"--fault {spec}: unknown bus {bus!r} (known: {', '.join(BUS_NAMES)})")
    try:
        start = float(match["start"]) if match["start"] is not None else 10.0
        duration = float(match["duration"]) if match["duration"] is not None else KINDS[name].default_duration
    except ValueError:
        raise UserError(f"--fault {spec}: START and DURATION must be seconds") from None
    if start < 0 or duration < 0:
        raise UserError(f"--fault {spec}: START and DURATION must not be negative")
    if duration == 0 and name in ("flood", "silent", "link-down"):
        raise UserError(f"--fault {spec}: {name} needs a DURATION above 0")
    return Fault(name, start, duration, bus)


def periodic_load(database: Database) -> float:
    """Fraction of the bus its periodic messages occupy (the one bus-load model, decode/busload.py)."""
    bitrate = bus_bitrate(database)
    load = 0.0
    for message in database.messages:
        if message.cycle_time:
            seconds = frame_seconds(
                message.length, message.is_extended_frame, bitrate, switched=message.is_fd
            )
            load += seconds / (message.cycle_time / 1000.0)
    return load


@dataclass
class InjectedFault:
    """Ground truth: a fault as it was injected, with how many frames it added, changed or withheld."""

    fault: Fault
    frames: int = 0


class FaultInjector:
    """Answers, for each frame the simulation is about to send, what the active faults do to it."""

    def __init__(self, faults: list[Fault], databases: dict[str, Database]) -> None:
        for fault in faults:
            if KINDS[fault.kind].needs_e2e and not _has_e2e(databases[fault.bus]):
                raise UserError(f"--fault {fault}: bus {fault.bus} has no E2E-protected messages")
        self.injected = [InjectedFault(fault) for fault in faults]
        self._once_hit: list[set[str]] = [set() for _ in faults]
        self._next_extra = [fault.start for fault in faults]
        self._flood_interval: dict[str, float] = {}
        for bus, database in databases.items():
            free = max(0.02, 1.0 - periodic_load(database))
            self._flood_interval[bus] = frame_seconds(8, False, bus_bitrate(database)) / free

    def _hits(self, index: int, t: float, message: Message) -> bool:
        fault = self.injected[index].fault
        if fault.duration > 0:
            return fault.active(t)
        if t >= fault.start and message.name not in self._once_hit[index]:
            self._once_hit[index].add(message.name)
            return True
        return False

    def frame_fate(
        self, bus: str, t: float, message: Message, protected: bool
    ) -> tuple[bool, int, bool, bool]:
        """(send it, counter step, corrupt the CRC, shorten it) for a frame of `message` at `t`."""
        send, step, bad_crc, short = True, 1, False, False
        for index, record in enumerate(self.injected):
            fault = record.fault
            if fault.bus != bus or t < fault.start:
                continue
            kind = fault.kind
            if kind in ("silent", "link-down"):
                if fault.active(t):
                    send = False
                    step = 0 if kind == "silent" else step
                    record.frames += 1
            elif kind in ("bad-crc", "counter-repeat", "counter-skip"):
                if protected and self._hits(index, t, message):
                    record.frames += 1
                    if kind == "bad-crc":
                        bad_crc = True
                    else:
                        step = 0 if kind == "counter-repeat" else 2
            elif kind == "wrong-dlc" and self._hits(index, t, message):
                short = True
                record.frames += 1
        return send, step, bad_crc, short

    def extra_frames(
        self, t0: float, t1: float, start_time: float, channels: dict[str, str]
    ) -> list[can.Message]:
        """Frames the faults add with simulated times in [t0, t1)."""
        out: list[can.Message] = []
        for index, record in enumerate(self.injected):
            fault = record.fault
            kind = fault.kind
            channel = channels[fault.bus]
            if kind == "link-down":
                for moment, error_class in ((fault.start, CAN_ERR_BUSOFF), (fault.end, CAN_ERR_RESTARTED)):
                    if t0 <= moment < t1:
                        out.append(_error_frame(start_time + moment, channel, error_class))
                        record.frames += 1
                continue
            if kind not in ("flood", "unknown-id", "error-frame"):
                continue
            interval = {"flood": self._flood_interval[fault.bus], "unknown-id": 0.1, "error-frame": 0.05}[
                kind
            ]
            end = fault.end if fault.duration > 0 else fault.start + interval / 2  # once: a single frame
            moment = self._next_extra[index]
            while t0 <= moment < t1 and moment < end:
                out.append(self._extra(kind, record.frames, start_time + moment, channel))
                record.frames += 1
                moment += interval
            self._next_extra[index] = moment
        return out

    @staticmethod
    def _extra(kind: str, number: int, timestamp: float, channel: str) -> can.Message:
        if kind == "flood":
            return can.Message(timestamp=timestamp, arbitration_id=FLOOD_ID, is_extended_id=False,
                               data=bytes(8), channel=channel)  # fmt: skip
        if kind == "unknown-id":
            frame_id, extended = UNKNOWN_IDS[number % len(UNKNOWN_IDS)]
            data = bytes((number * 37 + i) & 0xFF for i in range(8))
            return can.Message(timestamp=timestamp, arbitration_id=frame_id, is_extended_id=extended,
                               data=data, channel=channel)  # fmt: skip
        return _error_frame(timestamp, channel, 0)


def _error_frame(timestamp: float, channel: str, error_class: int) -> can.Message:
    return can.Message(timestamp=timestamp, arbitration_id=error_class, is_error_frame=True,
                       is_extended_id=False, data=bytes(8), channel=channel)  # fmt: skip


def _has_e2e(database: Database) -> bool:
    from firmware_agent.e2e_protection import profile_for

    return any(profile_for(message) is not None for message in database.messages)
