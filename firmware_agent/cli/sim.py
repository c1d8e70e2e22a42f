"""`firmware-agent sim`: simulate the reference vehicle into a capture file or onto python-can buses."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_agent.errors import UserError

if TYPE_CHECKING:
    import can

    from firmware_agent.progress import ProgressLine


def add_subparser(subparsers: Any) -> None:
    """Register `sim` and its options."""
    parser = subparsers.add_parser(
        "sim",
        help="simulate a drive of the reference vehicle (capture file or live bus)",
        description="Simulate a persona driving a scenario: the frames of all four buses, written to a "
        "capture (--out FILE.log|.asc|.blf) as fast as possible or sent to python-can buses (--bus) in "
        "real time. Same arguments and --seed, same frames.",
    )
    parser.add_argument("--duration", type=float, default=120.0, metavar="SECONDS", help="default 120")
    parser.add_argument("--driver", default="1", metavar="N|NAME", help="persona who drives (default 1)")
    parser.add_argument("--scenario", default="city", metavar="NAME", help="default city")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="default 0")
    parser.add_argument(
        "--key-of",
        metavar="N|NAME",
        help="persona whose key, profile and seat slot the car sees (borrowed key)",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--out", type=Path, metavar="FILE", help="capture file: .log (candump -L), .asc, .blf"
    )
    target.add_argument(
        "--bus",
        action="append",
        default=[],
        metavar="INTERFACE[:CHANNEL]",
        help="python-can bus to send on, paced in real time (repeatable; see --map)",
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="BUS=CHANNEL",
        help="channel name for a bus (repeatable)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME[@START[+DURATION]][:BUS]",
        help="inject a fault (repeatable; --list shows them)",
    )
    parser.add_argument(
        "--hard-brake",
        type=float,
        action="append",
        default=[],
        metavar="SECONDS",
        help="an obstacle forces an emergency stop (ABS) at this time, or once the car moves (repeatable)",
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="pacing on a bus: X times real time, 0 = unpaced"
    )
    parser.add_argument(
        "--start-time",
        type=float,
        metavar="EPOCH",
        help="timestamp of simulated second 0 (default: 2026-01-01T00:00:00Z for files, now for buses)",
    )
    parser.add_argument(
        "--odometer",
        type=float,
        metavar="KM",
        help="the car's odometer at the start (default: drawn from the seed); the slow wear signals (brake "
        "pads, battery health) follow it, so a larger value with a later --start-time is a later day",
    )
    parser.add_argument("--list", action="store_true", help="list personas, scenarios and faults, then exit")
    parser.set_defaults(func=_do_sim)


def _do_sim(args: argparse.Namespace) -> int:
    from sim import FAULT_KINDS, PERSONAS, SCENARIOS, Simulation, parse_fault
    from sim.outputs import close_routes, open_routes, parse_map, plan_routes, send_paced, write_capture
    from sim.vehicle import DEFAULT_EPOCH, SimulationError

    if args.list:
        _print_list(PERSONAS, SCENARIOS, FAULT_KINDS)
        return 0
    if not (math.isfinite(args.speed) and args.speed >= 0):
        raise UserError(f"--speed {args.speed:g}: must be 0 (unpaced) or a positive factor")
    faults = [parse_fault(spec) for spec in args.fault]
    live = args.out is None
    start_time = args.start_time if args.start_time is not None else (time.time() if live else DEFAULT_EPOCH)
    arguments = (args.driver, args.scenario, args.seed, args.duration, faults, args.key_of, start_time)
    try:
        # the simulation checks its own arguments; this door only names them as its options
        Simulation.check(*arguments, args.hard_brake, args.odometer)
        if args.out is None and not args.bus:
            raise UserError("give --out FILE or --bus INTERFACE[:CHANNEL] (or --list)")
        channels = parse_map(args.map)
        simulation = Simulation(
            *arguments, channels=channels, hard_brakes=args.hard_brake, odometer_km=args.odometer
        )
    except SimulationError as exc:
        option = _OPTIONS.get(exc.argument, exc.argument)
        raise UserError(
            f"{option} {exc.value}: {exc.problem}" if exc.value else f"{option}: {exc.problem}"
        ) from None

    started = time.perf_counter()
    if not live:
        progress = _progress(args.duration, args.out)
        try:
            frames = simulation.frames()
            if progress is not None:
                frames = _reporting(frames, progress, start_time)
            count = write_capture(frames, args.out)
            if progress is not None:
                progress.finish()
        finally:
            if progress is not None:
                progress.close()
        where = str(args.out)
    else:
        fd_buses = {bus for bus, db in simulation.databases.items() if any(m.is_fd for m in db.messages)}
        report = plan_routes(args.bus, simulation.channels, fd_buses)
        if report.skipped_buses:
            print(
                f"firmware-agent sim: not sent (no --bus for them): {', '.join(report.skipped_buses)}",
                file=sys.stderr,
            )
        open_routes(report)
        try:
            send_paced(simulation.frames(), report, simulation.channels, args.speed, faults)
        finally:
            close_routes(report)
        count = sum(route.sent for route in report.routes)
        failed = sum(route.failed for route in report.routes)
        where = ", ".join(f"{r.interface}:{r.channel}" for r in report.routes)
        if failed:
            where += f" ({failed} frames failed to send)"
    elapsed = time.perf_counter() - started
    borrowed = f" with {simulation.key_owner.name}'s key" if simulation.borrowed else ""
    rate = count / max(elapsed, 1e-9)
    who, what = simulation.persona.name, simulation.scenario.name
    print(
        f"firmware-agent sim: {who} drives {what}{borrowed}, seed {args.seed}: "
        f"{count} frames, {args.duration:g} s simulated in {elapsed:.2f} s ({rate:,.0f} frames/s) -> {where}",
        file=sys.stderr,
    )
    return 0


#: Simulated seconds from which `sim --out` shows a progress line on a terminal (a minute takes about 1 s).
PROGRESS_MIN_SECONDS = 300.0
#: Frames between progress updates (the line itself redraws at most five times a second).
_PROGRESS_EVERY = 4096


def _progress(duration: float, out: Path) -> ProgressLine | None:
    """A progress line in simulated seconds for a long run, only when stderr is a terminal."""
    from firmware_agent.progress import ProgressLine

    if duration < PROGRESS_MIN_SECONDS or not sys.stderr.isatty():
        return None
    return ProgressLine(str(out), total=duration)


def _reporting(
    frames: Iterable[can.Message], progress: ProgressLine, start_time: float
) -> Iterator[can.Message]:
    """`frames` unchanged, telling `progress` how many simulated seconds have been written."""
    count = 0
    for frame in frames:
        count += 1
        if count % _PROGRESS_EVERY == 0:
            progress.update(frame.timestamp - start_time, count)
        yield frame
    progress.update(progress.total or 0.0, count)


#: `Simulation` argument -> the option that sets it
_OPTIONS = {
    "driver": "--driver",
    "scenario": "--scenario",
    "key_owner": "--key-of",
    "seed": "--seed",
    "duration": "--duration",
    "start_time": "--start-time",
    "hard_brakes": "--hard-brake",
    "faults": "--fault",
    "odometer_km": "--odometer",
}


def _print_list(personas: Any, scenarios: Any, kinds: Any) -> None:
    print("personas (--driver N|NAME, --key-of N|NAME):")
    for p in personas:
        i = p.identity
        print(
            f"  {p.number} {p.name:<6} key {i.key_id:#010x} slot {i.key_slot}, profile {i.profile}, "
            f"seat memory {i.seat_slot or 'none'}: {p.summary}"
        )
    print("scenarios (--scenario NAME):")
    for s in scenarios:
        print(f"  {s.name:<13} {s.summary}")
    print("faults (--fault NAME[@START[+DURATION]][:BUS], START default 10 s, BUS default powertrain):")
    for kind in kinds.values():
        default = f"{kind.default_duration:g} s" if kind.default_duration else "once"
        print(f"  {kind.name:<15} {kind.summary} (default: {default})")
