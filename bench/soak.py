"""Memory of the car daemon over hours of driving: `firmware-agent run` fed many simulated hours.

The daemon runs as a subprocess, as on the car: `python -m firmware_agent run`, the vehicle's own DBCs,
`--collect all`, signing, the SQLite outbox and the upload to a local mosquitto that this script starts on
127.0.0.1 and a free port (`bench/pipeline.py`'s `start_mosquitto`), the identity stage on with its
default settings (the simulator's reference vehicle carries its signals). Its one source is a capture of
`--distinct` simulated drives written with `firmware-agent sim --start-time ...`: each drive is one
ignition cycle (key in range, ignition on, drive, park, ignition off, lock), `--park-minutes` after the
previous one. Four personas drive with two keys: anna and ben their own, chloe and dev with a borrowed
one (the simulator's borrowed-key scenario: the behaviour may contradict the key). The capture is replayed
`replay:FILE?loop=N` until `--hours` of driving are reached (the replay source shifts each pass forward by
the capture's length, so time only moves forward and every pass is new drives to the daemon). The
identity stage thus sees dozens of drives: it learns at every ignition off, refits the model on its
worker thread, activates the profiles after 20 minutes, and both profiles reach the
`FIT_WINDOWS_PER_PROFILE` windows a fit uses (2 hours of driving each at the default step) well before
the end: from then on every refit has the same size. The capture is cached in `.cache/soak/` (keyed by
the pool's parameters and a digest of the simulator's source).

While it runs, the daemon's VmRSS (/proc/PID/status) is sampled every 0.5 s together with the frames it
has read (`health.json` in its state directory, rewritten every heartbeat), which the capture's frame
index turns into simulated hours of driving. As fast as the machine goes; no asserts on time or memory.

    .venv/bin/python bench/soak.py [--hours 12] [--drive-minutes 15] [--distinct 8] [--park-minutes 5]

Prints: simulated hours, frames, drives, wall time; RSS after warm-up (`--warmup-minutes` of driving),
at 25/50/75/100 % of the driving, the peak (VmHWM), the highest RSS per tenth of the run, the slope of a
least-squares line in MB per simulated hour over the second half and over the part after the identity
model's training set stopped growing (every profile at its fit cap); the daemon's own counters at the end
(from its last signed batch, which carries them, read off the broker), the batches a subscriber received,
and the identity registry's profiles (`identity/profiles.json`). `--csv FILE` writes the samples;
`--keep DIR` keeps the daemon's state directory and log. `--tracemalloc DEPTH` runs the daemon under
tracemalloc (several times slower: for a debug run with fewer hours), takes snapshots at 10, 25, 50, 75
and 98 % of the driving, and prints the allocation sites that grew most from the first to the last.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

from pipeline import rss_mb, start_mosquitto  # noqa: E402

from firmware_agent.identity.learning import FIT_WINDOWS_PER_PROFILE  # noqa: E402
from firmware_agent.identity.settings import IdentitySettings  # noqa: E402
from firmware_agent.telemetry.broker import BrokerConfig  # noqa: E402
from firmware_agent.telemetry.cose import unverified_payload  # noqa: E402
from firmware_agent.telemetry.keys import generate_private_key  # noqa: E402
from firmware_agent.telemetry.payload import decode_payload  # noqa: E402
from firmware_agent.telemetry.subscriber import Subscriber  # noqa: E402
from sim import DEFAULT_EPOCH  # noqa: E402

CACHE = REPO / ".cache" / "soak"
#: The drives of one pass, in order: (driver, scenario, the persona whose key the car sees). Each key is
#: in the car for half of the driving, so both profiles pass FIT_WINDOWS_PER_PROFILE early in the run.
ROTATION = (
    ("anna", "city", None),
    ("ben", "highway", None),
    ("anna", "highway", None),
    ("ben", "city", None),
    ("chloe", "borrowed-key", "anna"),
    ("anna", "city", None),
    ("ben", "highway", None),
    ("dev", "borrowed-key", "ben"),
)
SAMPLE_S = 0.5
#: `--tracemalloc`: the daemon started through this wrapper dumps a snapshot on every SIGUSR1.
TRACE_WRAPPER = """
import runpy, signal, sys, tracemalloc
tracemalloc.start({depth})
count = [0]
def dump(signum, frame):
    count[0] += 1
    tracemalloc.take_snapshot().dump(f"{folder}/snapshot-{{count[0]}}.bin")
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["firmware_agent", *sys.argv[1:]]
runpy.run_module("firmware_agent", run_name="__main__")
"""
TRACE_POINTS = (0.1, 0.25, 0.5, 0.75, 0.98)


@dataclass(frozen=True)
class Drive:
    """One simulated drive of the capture: who, where, its frames and its first and last frame times."""

    driver: str
    scenario: str
    key_of: str | None
    seed: int
    frames: int
    first: float
    last: float

    @property
    def seconds(self) -> float:
        return self.last - self.first

    def label(self) -> str:
        key = f" with {self.key_of}'s key" if self.key_of else ""
        return f"{self.driver} {self.scenario}{key}"


class DriveIndex:
    """Frames read by the daemon -> simulated seconds of driving (the capture looped `loops` times)."""

    def __init__(self, drives: list[Drive], loops: int) -> None:
        self.drives = drives
        self.loops = loops
        self.starts = [0]
        for drive in drives:
            self.starts.append(self.starts[-1] + drive.frames)
        self.pass_frames = self.starts[-1]
        self.pass_seconds = sum(drive.seconds for drive in drives)
        self.frames = self.pass_frames * loops
        self.seconds = self.pass_seconds * loops

    def seconds_at(self, frames: int) -> float:
        frames = min(max(frames, 0), self.frames)
        passes, rest = divmod(frames, self.pass_frames)
        if passes >= self.loops:
            return self.seconds
        index = bisect.bisect_right(self.starts, rest) - 1
        drive = self.drives[index]
        before = sum(d.seconds for d in self.drives[:index])
        within = (rest - self.starts[index]) / drive.frames * drive.seconds
        return passes * self.pass_seconds + before + within


def sim_source_hash() -> str:
    """A digest of the simulator's source: a changed simulator makes a new cached capture."""
    digest = hashlib.sha256()
    for path in sorted([*(REPO / "sim").glob("*.py"), REPO / "firmware_agent" / "cli" / "sim.py"]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_capture(distinct: int, minutes: float, park_minutes: float, seed: int) -> tuple[Path, list[Drive]]:
    """The capture of `distinct` drives (simulated once, then cached): its path and its drives."""
    name = f"drives-{distinct}x{minutes:g}min-park{park_minutes:g}-seed{seed}-sim{sim_source_hash()}"
    folder = CACHE / name
    capture, index = folder / "drives.log", folder / "drives.json"
    if capture.exists() and index.exists():
        return capture, [Drive(**entry) for entry in json.loads(index.read_text())]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    drives = []
    start = DEFAULT_EPOCH
    started = time.perf_counter()
    with (folder / "drives.tmp").open("wb") as out:
        for number in range(distinct):
            driver, scenario, key_of = ROTATION[number % len(ROTATION)]
            part = folder / f"drive-{number}.log"
            command = [sys.executable, "-m", "firmware_agent", "sim", "--driver", driver]
            command += ["--scenario", scenario, "--seed", str(seed * 1000 + number)]
            command += ["--duration", f"{minutes * 60:g}", "--start-time", f"{start:.6f}", "--out", str(part)]
            command += ["--key-of", key_of] if key_of else []
            subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
            data = part.read_bytes()
            part.unlink()
            lines = data.splitlines()
            first, last = float(lines[0].split()[0].strip(b"()")), float(lines[-1].split()[0].strip(b"()"))
            drives.append(Drive(driver, scenario, key_of, seed * 1000 + number, len(lines), first, last))
            out.write(data)
            start = last + park_minutes * 60
            print(f"  simulated drive {number + 1}/{distinct}: {drives[-1].label()}, {len(lines):,} frames "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    os.replace(folder / "drives.tmp", capture)
    index.write_text(json.dumps([drive.__dict__ for drive in drives], indent=1))
    return capture, drives


class TelemetryTail(threading.Thread):
    """Every signed batch the daemon uploads, counted; the newest few kept (the last carries the counters)."""

    def __init__(self, subscriber: Subscriber) -> None:
        super().__init__(daemon=True)
        self.subscriber = subscriber
        self.batches = self.bytes = 0
        self.newest: collections.deque[bytes] = collections.deque(maxlen=16)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            item = self.subscriber.get(0.2)
            if item is not None:
                self.batches += 1
                self.bytes += len(item[1])
                self.newest.append(item[1])

    def final_counters(self) -> dict[str, int]:
        """The counters of the newest batch that carries them (the daemon's last batch before its exit)."""
        best: tuple[int, dict[str, int]] = (-1, {})
        for data in self.newest:
            payload = decode_payload(unverified_payload(data))
            if payload.counters and payload.seq > best[0]:
                best = (payload.seq, payload.counters)
        return best[1]


@dataclass
class Sample:
    wall: float  #: seconds since the daemon started
    frames: int  #: frames the daemon had read (its latest health.json)
    hours: float  #: simulated hours of driving those frames are
    rss: float  #: MB


@dataclass
class Run:
    samples: list[Sample]
    wall: float
    status: int
    peak: float  #: VmHWM, MB
    started: float  #: epoch seconds
    log: list[dict[str, Any]]  #: the daemon's JSON log lines (other lines as {"message": line})


def run_daemon(
    capture: Path, loops: int, index: DriveIndex, broker: str, workdir: Path, trace_depth: int
) -> Run:
    """Run the daemon on the looped capture, sampling its RSS and progress."""
    key = workdir / "key.pem"
    generate_private_key(key)
    state = workdir / "state"
    command = [sys.executable, "-m", "firmware_agent"]
    trace_points: list[float] = []
    if trace_depth:
        snapshots = workdir / "snapshots"
        snapshots.mkdir()
        command = [sys.executable, "-c", TRACE_WRAPPER.format(depth=trace_depth, folder=snapshots)]
        trace_points = list(TRACE_POINTS)
    command += ["run", "--source", f"replay:{capture}?loop={loops}", "--collect", "all"]
    command += ["--broker", broker, "--vehicle-id", "bench-soak", "--signing-key", str(key)]
    command += ["--state-dir", str(state), "--exit-at-end", "--log-format", "json"]
    health = state / "health.json"
    samples: list[Sample] = []
    peak = 0.0
    frames = 0
    with (workdir / "daemon.log").open("wb") as log:
        started, epoch = time.perf_counter(), time.time()
        proc = subprocess.Popen(command, stderr=log, stdout=log)
        while proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                document = json.loads(health.read_text())
                frames = sum(bus.get("frames_in", 0) for bus in document.get("buses", {}).values())
            try:
                rss, hwm = rss_mb(proc.pid), rss_mb(proc.pid, "VmHWM")
            except OSError:
                rss = hwm = 0.0
            if rss and frames:
                peak = max(peak, hwm)
                hours = index.seconds_at(frames) / 3600
                samples.append(Sample(time.perf_counter() - started, frames, hours, rss))
                if trace_points and hours >= trace_points[0] * index.seconds / 3600:
                    trace_points.pop(0)
                    proc.send_signal(signal.SIGUSR1)
            time.sleep(SAMPLE_S)
        wall = time.perf_counter() - started
    lines = []
    for line in (workdir / "daemon.log").read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"message": line})
    return Run(samples, wall, proc.returncode, peak, epoch, lines)


def fit_set_settled(run: Run, step_seconds: float) -> float | None:
    """Wall seconds (since the start) after which no learned drive grew the model's training set any more:
    the last `identity: learned N window(s) for P (M min in all)` of a profile that had fewer than
    FIT_WINDOWS_PER_PROFILE windows before it. None when the log has no learned drive."""
    last = None
    for entry in run.log:
        message = str(entry.get("message", ""))
        if not message.startswith("identity: learned") or "time" not in entry:
            continue
        words = message.split()
        learned, minutes = int(words[2]), float(words[-4].lstrip("("))
        if minutes * 60 / step_seconds - learned < FIT_WINDOWS_PER_PROFILE:
            last = float(entry["time"]) - run.started
    return last


def at_fraction(samples: list[Sample], total_hours: float, fraction: float) -> Sample:
    """The sample nearest `fraction` of the driving (the last sample for 1.0)."""
    if fraction >= 1.0:
        return samples[-1]
    target = fraction * total_hours
    return min(samples, key=lambda s: abs(s.hours - target))


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0.0 with fewer than 2 distinct x)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def trace_report(folder: Path, top: int = 12) -> None:
    """The allocation sites that grew most between the first snapshot and the last."""
    import tracemalloc

    paths = sorted(folder.glob("snapshot-*.bin"), key=lambda p: int(p.stem.split("-")[1]))
    if len(paths) < 2:
        print(f"\n== tracemalloc: {len(paths)} snapshot(s), nothing to compare")
        return
    snapshots = [tracemalloc.Snapshot.load(str(path)) for path in paths]
    sizes = [sum(stat.size for stat in snapshot.statistics("filename")) / 2**20 for snapshot in snapshots]
    print("\n== tracemalloc: traced MB per snapshot: " + ", ".join(f"{size:.1f}" for size in sizes))
    first, last = snapshots[0], snapshots[-1]
    for name in ("lineno", "traceback"):
        stats = last.compare_to(first, name)
        print(f"\n== tracemalloc: {paths[0].name} -> {paths[-1].name}, grown most, by {name}")
        for stat in stats[:top]:
            print(f"  {stat.size_diff / 1024:+9.1f} KiB  {stat.count_diff:+7d} blocks  "
                  f"{stat.traceback.format()[-1].strip() if name == 'lineno' else ''}")  # fmt: skip
            if name == "traceback":
                for line in stat.traceback.format(limit=8):
                    print(f"      {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=12.0, help="simulated hours of driving (default 12)")
    parser.add_argument("--drive-minutes", type=float, default=15.0, help="minutes per drive (default 15)")
    parser.add_argument("--distinct", type=int, default=8, help="distinct drives simulated (default 8)")
    parser.add_argument("--park-minutes", type=float, default=5.0, help="parked between drives (default 5)")
    parser.add_argument("--warmup-minutes", type=float, default=60.0, help="driving before 'start' (60)")
    parser.add_argument("--seed", type=int, default=1, help="simulator seeds derive from it (default 1)")
    parser.add_argument("--csv", type=Path, help="write the samples (wall s, frames, hours, RSS MB)")
    parser.add_argument("--keep", type=Path, help="keep the daemon's state directory and log here")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="DEPTH", help="debug run (slow)")
    args = parser.parse_args()
    wanted_drives = max(1, math.ceil(args.hours * 60 / args.drive_minutes))
    distinct = min(args.distinct, wanted_drives)
    loops = math.ceil(wanted_drives / distinct)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; capture: {distinct} drives of "
          f"{args.drive_minutes:g} min, {args.park_minutes:g} min apart, replayed {loops} times")  # fmt: skip
    generating = time.perf_counter()
    capture, drives = build_capture(distinct, args.drive_minutes, args.park_minutes, args.seed)
    generating = time.perf_counter() - generating
    index = DriveIndex(drives, loops)
    by_key = collections.Counter(drive.key_of or drive.driver for drive in drives)
    keys = ", ".join(f"{name} {count}" for name, count in by_key.most_common())
    print(f"  {index.pass_frames:,} frames, {index.pass_seconds / 3600:.2f} h of driving per pass "
          f"(drives per key: {keys}); ready in {generating:.0f} s ({capture})")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        workdir = Path(tmp)
        broker_proc, broker = start_mosquitto(workdir)
        try:
            with Subscriber(BrokerConfig(broker), ["vehicles/+/telemetry"]) as subscriber:
                tail = TelemetryTail(subscriber)
                tail.start()
                run = run_daemon(capture, loops, index, broker, workdir, args.tracemalloc)
                deadline = time.monotonic() + 10  # the last acknowledged batches reach the subscriber too
                while time.monotonic() < deadline and tail.batches < _committed(workdir):
                    time.sleep(0.1)
                tail.done.set()
                tail.join()
        finally:
            broker_proc.terminate()
            broker_proc.wait()
        report(args, index, run, tail, workdir)
        if args.tracemalloc:
            trace_report(workdir / "snapshots")
        if args.csv:
            with args.csv.open("w") as out:
                out.write("wall_s,frames,sim_hours,rss_mb\n")
                for s in run.samples:
                    out.write(f"{s.wall:.2f},{s.frames},{s.hours:.4f},{s.rss:.2f}\n")
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(workdir, args.keep)
    return run.status


def _committed(workdir: Path) -> int:
    try:
        return int(json.loads((workdir / "state" / "health.json").read_text())["batches_committed"])
    except (OSError, ValueError, KeyError):
        return 0


def report(args: argparse.Namespace, index: DriveIndex, run: Run, tail: TelemetryTail, workdir: Path) -> None:
    hours = index.seconds / 3600
    drives = len(index.drives) * index.loops
    samples = run.samples
    print(f"\n== soak: firmware-agent run --source replay:CAPTURE?loop={index.loops} --collect all "
          f"--exit-at-end, identity on (exit {run.status})")  # fmt: skip
    print(f"  {hours:.2f} simulated hours of driving ({drives} drives), {index.frames:,} frames, "
          f"wall {run.wall:.0f} s ({hours * 3600 / run.wall:.0f}x real time, {index.frames / run.wall:,.0f} "
          f"frames/s), {len(samples)} RSS samples")  # fmt: skip
    if not samples:
        print("  no RSS sample: the daemon exited at once; its log:")
        print((workdir / "daemon.log").read_text()[-2000:])
        return
    warm = [s for s in samples if s.hours >= args.warmup_minutes / 60] or samples
    half = [(s.hours, s.rss) for s in samples if s.hours >= hours / 2]
    points = {f"{int(f * 100)} %": at_fraction(samples, hours, f).rss for f in (0.25, 0.5, 0.75, 1.0)}
    print(f"  RSS MB: first sample {samples[0].rss:.1f}; after warm-up ({args.warmup_minutes:g} min of "
          f"driving) {warm[0].rss:.1f}; " + ", ".join(f"at {k} {v:.1f}" for k, v in points.items())
          + f"; peak (VmHWM) {run.peak:.1f}")  # fmt: skip
    tenths = [
        max((s.rss for s in samples if i * hours / 10 <= s.hours < (i + 1) * hours / 10), default=0.0)
        for i in range(10)
    ]
    tenths[-1] = max(tenths[-1], samples[-1].rss)
    print("  RSS MB, highest per tenth of the driving: " + " ".join(f"{v:.1f}" for v in tenths))
    print(f"  slope over the second half ({len(half)} samples): {slope(half):+.3f} MB per simulated hour "
          f"(min/max {min(r for _, r in half or [(0, 0)]):.1f}/{max(r for _, r in half or [(0, 0)]):.1f} "
          "MB)")  # fmt: skip
    settled = fit_set_settled(run, IdentitySettings().step_seconds)
    steady = [(s.hours, s.rss) for s in samples if settled is not None and s.wall > settled]
    if settled is not None and len(steady) >= 2:
        since = steady[0][0]
        print(f"  the model's training set last grew at {since:.2f} h; from then on: slope "
              f"{slope(steady):+.3f} MB per simulated hour over {hours - since:.2f} h, RSS min/max "
              f"{min(r for _, r in steady):.1f}/{max(r for _, r in steady):.1f} MB")  # fmt: skip
    else:
        print("  the model's training set grew until the end (no profile at its fit cap for long)")
    counters = tail.final_counters()
    health: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        health = json.loads((workdir / "state" / "health.json").read_text())
    print(f"  batches: {health.get('batches_committed', 0):,} committed, "
          f"{health.get('batches_acknowledged', 0):,} acknowledged, {tail.batches:,} received by a "
          f"subscriber ({tail.bytes / 2**20:.0f} MB signed)")  # fmt: skip
    if counters:
        dropped = sum(v for k, v in counters.items() if k.endswith("frames_dropped"))
        wanted = ("decode.samples", "e2e.e2e_dropped", "outbox.evicted", "outbox.dead_lettered",
                  "uploader.acknowledged", "events.dropped", "agent.batches_rejected")  # fmt: skip
        print(f"  counters (last batch): frames dropped {dropped:,}, "
              + ", ".join(f"{k} {counters.get(k, 0):,}" for k in wanted))  # fmt: skip
        identity = {k.removeprefix("identity."): v for k, v in counters.items() if k.startswith("identity.")}
        print("  identity: " + ", ".join(f"{k} {v:,}" for k, v in identity.items()))
    else:
        print("  counters: no batch with counters received")
    profiles_path = workdir / "state" / "identity" / "profiles.json"
    try:
        profiles = json.loads(profiles_path.read_text())["profiles"]
    except (OSError, ValueError, KeyError):
        profiles = {}
    cap = IdentitySettings().max_windows_per_profile
    for profile, record in sorted(profiles.items(), key=lambda item: -item[1]["windows"]):
        fit = min(record["windows"], FIT_WINDOWS_PER_PROFILE)
        print(f"  profile {profile}: {record['drives']} drives learned, {record['windows']} windows kept "
              f"(cap {cap}), {fit} in a fit (FIT_WINDOWS_PER_PROFILE {FIT_WINDOWS_PER_PROFILE}), "
              f"{record['minutes']:.0f} min")  # fmt: skip
    messages = [str(entry.get("message", "")) for entry in run.log]
    levels = collections.Counter(str(entry.get("level", "-")) for entry in run.log)
    by_level = ", ".join(f"{k} {v}" for k, v in sorted(levels.items()))
    print(f"  daemon log: {len(messages)} lines ({by_level}), "
          f"{sum('model refitted' in m for m in messages)} 'model refitted', "
          f"{sum('driver mismatch' in m for m in messages)} 'driver mismatch'")  # fmt: skip
    if messages:
        print(f"  {messages[-1]}")


if __name__ == "__main__":
    sys.exit(main())
