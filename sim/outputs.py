"""Where simulated frames go: a capture file (candump -L, ASC, BLF) or live python-can buses.

Captures are written as fast as frames are generated. candump logs keep each frame's channel name (the
bus name, or its `--map` name); ASC and BLF number their channels, so there the vehicle's buses are
channels 1-4 in the order body, powertrain, chassis, infotainment (python-can channel 0-3).

Live output opens python-can buses from `INTERFACE[:CHANNEL]` specs and paces frames in real time
(scaled by `speed`; 0 = as fast as possible). A link-down fault on a socketcan bus really sets the
interface down and up with `ip link` when permitted; otherwise the gap is only simulated.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import can

from firmware_agent.errors import UserError
from firmware_agent.vehicle import BUS_NAMES
from sim.faults import Fault

#: Where the simulator reports what it could not do (without a handler: one line on stderr).
log = logging.getLogger("sim")

#: Capture formats by file suffix, as python-can's `can.Logger` picks its writer.
CAPTURE_SUFFIXES = (".log", ".asc", ".blf")


def parse_map(specs: Sequence[str]) -> dict[str, str]:
    """`--map BUS=CHANNEL` specs to a {bus: channel} dict; UserError for a bad spec or unknown bus."""
    mapping: dict[str, str] = {}
    for spec in specs:
        bus, equals, channel = spec.partition("=")
        bus, channel = bus.strip(), channel.strip()
        if not equals or not bus or not channel:
            raise UserError(f"--map {spec}: expected BUS=CHANNEL, e.g. powertrain=vcan0")
        if bus not in BUS_NAMES:
            raise UserError(f"--map {spec}: unknown bus {bus!r} (known: {', '.join(BUS_NAMES)})")
        mapping[bus] = channel
    return mapping


def write_capture(frames: Iterable[can.Message], path: Path) -> int:
    """Write every frame to `path` (format from the suffix); return the number of frames written."""
    suffix = path.suffix.lower()
    if suffix not in CAPTURE_SUFFIXES:
        raise UserError(f"--out {path}: unknown capture format (use {', '.join(CAPTURE_SUFFIXES)})")
    if not path.parent.is_dir():
        raise UserError(f"--out {path}: folder {path.parent} does not exist")
    count = 0
    numbered = suffix != ".log"
    numbers: dict[str, int] = {}
    with can.Logger(str(path)) as writer:
        for frame in frames:
            if numbered and isinstance(frame.channel, str):
                frame.channel = numbers.setdefault(frame.channel, _channel_number(frame.channel, numbers))
            writer.on_message_received(frame)
            count += 1
    return count


def _channel_number(channel: str, taken: dict[str, int]) -> int:
    """The ASC/BLF channel (0-based) of a bus; mapped names that are no bus take the next free number."""
    if channel in BUS_NAMES:
        return BUS_NAMES.index(channel)
    return len(BUS_NAMES) + sum(1 for name in taken if name not in BUS_NAMES)


@dataclass
class Route:
    """A python-can bus and the vehicle buses whose frames it carries."""

    interface: str
    channel: str
    buses: list[str]
    fd: bool
    bus: can.BusABC | None = None
    sent: int = 0
    failed: int = 0


@dataclass
class SendReport:
    """What a live run sent: frames per python-can bus, failures, vehicle buses not routed anywhere."""

    routes: list[Route] = field(default_factory=list)
    skipped_buses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plan_routes(bus_specs: Sequence[str], channels: dict[str, str], fd_buses: set[str]) -> SendReport:
    """Decide which python-can bus carries which vehicle bus (see the module and docs/simulator.md)."""
    report = SendReport()
    routed: set[str] = set()
    for spec in bus_specs:
        interface, colon, channel = spec.partition(":")
        interface = interface.strip()
        if not interface or (colon and not channel.strip()):
            raise UserError(f"--bus {spec}: expected INTERFACE[:CHANNEL], e.g. virtual or socketcan:vcan0")
        if interface not in can.VALID_INTERFACES:
            raise UserError(f"--bus {spec}: unknown python-can interface {interface!r}")
        if interface == "udp_multicast":
            raise UserError(f"--bus {spec}: udp_multicast leaves the machine; use virtual or socketcan")
        if not colon:
            for bus in BUS_NAMES:
                if bus not in routed:
                    report.routes.append(Route(interface, channels[bus], [bus], bus in fd_buses))
                    routed.add(bus)
            continue
        channel = channel.strip()
        buses = [bus for bus in BUS_NAMES if channels[bus] == channel and bus not in routed]
        if not buses and len(bus_specs) == 1:
            buses = list(BUS_NAMES)  # one interface carries the whole vehicle
        if not buses:
            raise UserError(
                f"--bus {spec}: no vehicle bus is mapped to {channel!r} (add --map BUS={channel})"
            )
        report.routes.append(Route(interface, channel, buses, any(bus in fd_buses for bus in buses)))
        routed.update(buses)
    report.skipped_buses = [bus for bus in BUS_NAMES if bus not in routed]
    return report


def open_routes(report: SendReport) -> None:
    """Open every planned python-can bus; UserError naming the spec when one cannot be opened."""
    for route in report.routes:
        try:
            route.bus = can.Bus(interface=route.interface, channel=route.channel, fd=route.fd)
        except (can.CanError, OSError, ValueError, ImportError) as exc:
            close_routes(report)
            raise UserError(f"--bus {route.interface}:{route.channel}: cannot open: {exc}") from exc


def close_routes(report: SendReport) -> None:
    """Shut every opened bus down."""
    for route in report.routes:
        if route.bus is not None:
            route.bus.shutdown()
            route.bus = None


def send_paced(
    frames: Iterator[can.Message],
    report: SendReport,
    channels: dict[str, str],
    speed: float,
    faults: Sequence[Fault] = (),
) -> None:
    """Send each frame on the bus that carries its channel, `speed` times real time (0 = unpaced)."""
    by_channel = {channels[bus]: route for route in report.routes for bus in route.buses}
    links = _LinkToggler(report, channels, faults)
    started = time.monotonic()
    first: float | None = None
    try:
        for frame in frames:
            if first is None:
                first = frame.timestamp
            if speed > 0:
                delay = started + (frame.timestamp - first) / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            links.update(frame.timestamp - first, report)
            route = by_channel.get(str(frame.channel))
            if route is None or route.bus is None:
                continue
            if frame.is_error_frame and links.real(route):
                continue  # the kernel reports a real link-down itself
            try:
                route.bus.send(frame)
                route.sent += 1
            except can.CanError:
                route.failed += 1
    finally:
        links.finish(report)  # never leave an interface down, even on Ctrl-C


class _LinkToggler:
    """Sets socketcan interfaces down and up for link-down faults (when the system lets us)."""

    def __init__(self, report: SendReport, channels: dict[str, str], faults: Sequence[Fault]) -> None:
        self._pending: list[tuple[float, str, str]] = []
        self._disabled = False
        self._real: set[str] = set()
        self._down: set[str] = set()
        for fault in faults:
            if fault.kind != "link-down":
                continue
            for route in report.routes:
                if route.interface == "socketcan" and fault.bus in route.buses:
                    self._pending += [(fault.start, route.channel, "down"), (fault.end, route.channel, "up")]
                    self._real.add(route.channel)
        self._pending.sort()

    def real(self, route: Route) -> bool:
        """True when link-down on this route's interface is done for real (no marker frames needed)."""
        return route.channel in self._real and not self._disabled

    def update(self, elapsed: float, report: SendReport) -> None:
        """Run the `ip link` changes that are due `elapsed` simulated seconds into the run."""
        while self._pending and self._pending[0][0] <= elapsed:
            _, device, state = self._pending.pop(0)
            if state == "down" and not self._disabled:
                if self._ip_link(device, state, report):
                    self._down.add(device)
            elif state == "up" and device in self._down:
                self._ip_link(device, state, report)
                self._down.discard(device)

    def finish(self, report: SendReport) -> None:
        """Bring every interface we took down back up, even if the run ended early."""
        for device in sorted(self._down):
            self._ip_link(device, "up", report)
        self._down.clear()

    def _ip_link(self, device: str, state: str, report: SendReport) -> bool:
        command = ["ip", "link", "set", "dev", device, state]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
            problem = (result.stderr.strip() or f"exit {result.returncode}") if result.returncode else ""
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = str(exc)
        if problem:
            self._disabled = True
            report.notes.append(f"link-down: `{' '.join(command)}` failed ({problem}); gap simulated only")
            log.warning("firmware-agent sim: %s", report.notes[-1])
        return not problem
