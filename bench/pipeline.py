"""Frames per second of the agent's whole live path, against a naive pipeline, in the same run.

Live path measured: source reader thread → bounded queue → decode to samples (compiled decoders, only
wanted signals) → E2E checks → collector → COSE signing → SQLite outbox (fsync per batch) → uploader,
publishing to a local mosquitto that this script starts (mosquitto's own CPU is not counted: it is the
backend). The frames come from the real RAV4 capture held in memory and replayed `--repeat` times with
time shifted forward; the source builds a fresh `can.Message` per frame, as a python-can bus does.

Speed is frames per CPU-second of this process (all its threads), i.e. what one core sustains. The
baseline is the loop a user would write: cantools `decode_message` per frame and one JSON sample per signal.

    .venv/bin/python bench/pipeline.py [--repeat 8]

A third workload measures the identity stage: a simulated 7-minute drive of the reference vehicle (its own
DBCs, ignition on to off, the key in range), replayed `--repeat` times as that many drives, `--collect all`,
identity on (the first drive activates the profile, every later one runs the behavioural model and ends
with a refit) against identity off, in the same run.

Prints, per workload: frames/s (agent and naive), the ratio, the share of one core that 4 buses at
500 kbit/s and 80 % load (13,000 frames/s) would need, RSS over the run, and wire bytes per sample. The
`--collect all` workload runs with payload version 1 and 2 (`[telemetry] payload_version`), and the wire
size is measured for both. No asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# As `firmware-agent run` does: python-can would import asammdf + pandas (~100 MB) for MF4 support.
sys.modules.setdefault("asammdf", None)  # type: ignore[arg-type]

import can  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from firmware_agent.decode.catalog import Catalog  # noqa: E402
from firmware_agent.identity.settings import IdentitySettings  # noqa: E402
from firmware_agent.service.agent import Agent  # noqa: E402
from firmware_agent.service.config import AgentConfig  # noqa: E402
from firmware_agent.sources.base import EndOfSource, Source  # noqa: E402
from firmware_agent.sources.spec import SourceSpec  # noqa: E402
from firmware_agent.telemetry.broker import BrokerConfig  # noqa: E402
from firmware_agent.telemetry.keys import generate_private_key  # noqa: E402
from firmware_agent.telemetry.subscriber import Subscriber  # noqa: E402

DATA = REPO.parent / "shared" / "data"
CAPTURE = DATA / "captures" / "rav4" / "rav4_2018-08-02_seg40.log"
DBC = [
    f"can0={DATA / 'dbc' / 'opendbc__toyota_new_mc_pt_generated.dbc'}",
    f"can1={DATA / 'dbc' / 'opendbc__toyota_adas.dbc'}",
]
#: A realistic campaign: the dozen signals a driving-behaviour campaign wants, every sample of each.
CAMPAIGN = """
[[campaign]]
name = "driving"
mode = "all"
signals = ["WHEEL_SPEEDS.WHEEL_SPEED_FL", "WHEEL_SPEEDS.WHEEL_SPEED_FR", "WHEEL_SPEEDS.WHEEL_SPEED_RL",
           "WHEEL_SPEEDS.WHEEL_SPEED_RR", "STEER_ANGLE_SENSOR.STEER_ANGLE", "STEER_ANGLE_SENSOR.STEER_RATE",
           "SPEED.SPEED", "GAS_PEDAL.GAS_PEDAL", "BRAKE_MODULE.BRAKE_PRESSED", "BRAKE_MODULE.BRAKE_PRESSURE",
           "GEAR_PACKET.GEAR", "KINEMATICS.ACCEL_Y"]
"""
LOAD_FRAMES_PER_S = 13_000

Row = tuple[float, str, int, bool, bool, bytes]


class MemorySource(Source):
    """The capture from memory, `repeat` times, a new `can.Message` per frame (not live: nothing dropped)."""

    live = False

    def __init__(self, rows: list[Row], repeat: int) -> None:
        super().__init__(SourceSpec(text="memory:rav4", kind="replay", arg="rav4"))
        self.rows, self.repeat = rows, repeat
        self.duration = rows[-1][0] - rows[0][0] + 1e-3
        self._iter: Any = None

    def open(self) -> None:
        self._iter = self._frames()

    def _frames(self) -> Any:
        message = can.Message
        for index in range(self.repeat):
            shift = index * self.duration
            for ts, channel, frame_id, ext, fd, data in self.rows:
                yield message(
                    timestamp=ts + shift,
                    channel=channel,
                    arbitration_id=frame_id,
                    is_extended_id=ext,
                    is_fd=fd,
                    data=data,
                    check=False,
                )

    def read(self, timeout: float) -> can.Message | None:
        try:
            return next(self._iter)
        except StopIteration:
            raise EndOfSource from None

    def close(self) -> None:
        self._iter = None


def load_rows() -> list[Row]:
    return [
        (m.timestamp, str(m.channel), m.arbitration_id, m.is_extended_id, m.is_fd, bytes(m.data))
        for m in can.LogReader(str(CAPTURE))
    ]


def rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    """A memory figure of a process in MB from /proc/PID/status (VmRSS: resident now, VmHWM: its peak);
    0.0 when the line is missing (an exited process not yet reaped). OSError when the process is gone."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler(threading.Thread):
    """RSS every 0.25 s while the run lasts."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.samples.append(rss_mb())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(mosquitto, os.X_OK):
        sys.exit("bench/pipeline.py: mosquitto is not installed (make sysdeps installs it)")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    quiet = subprocess.DEVNULL
    proc = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=quiet, stdout=quiet)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc, f"mqtt://127.0.0.1:{port}"


def sim_rows(seconds: float) -> list[Row]:
    """A simulated city drive of persona 1 on the reference vehicle (ignition on to off, key in range)."""
    from sim import Simulation

    frames = Simulation(driver=1, scenario="city", seed=3, duration=seconds).frames()
    return [
        (m.timestamp, str(m.channel), m.arbitration_id, m.is_extended_id, m.is_fd, bytes(m.data))
        for m in frames
    ]


def run_agent(
    rows: list[Row],
    repeat: int,
    collect: str,
    broker: str,
    workdir: Path,
    dbc: tuple[str, ...] = tuple(DBC),
    identity: IdentitySettings | None = None,
    payload_version: int = 2,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    label = "id" if identity is not None and identity.enabled else "noid"
    state = workdir / f"state-{collect.replace('/', '_')}-{label}-{len(dbc)}-v{payload_version}"
    key = workdir / "key.pem"
    if not key.exists():
        generate_private_key(key)
    config = AgentConfig(
        vehicle_id="bench-0001",
        sources=(),
        broker=BrokerConfig(url=broker),
        signing_key=key,
        state_dir=state,
        dbc=dbc,
        collect=collect,
        outbox_max_bytes=1024 * 1024 * 1024,
        payload_version=payload_version,
        exit_at_end=True,
        identity=identity or IdentitySettings(),
    )
    with open(os.devnull, "w") as devnull:
        agent = Agent(config, sources=[MemorySource(rows, repeat)], log=devnull)
        sampler = RssSampler()
        rss_start = rss_mb()
        sampler.start()
        cpu, wall = time.process_time(), time.perf_counter()
        status = agent.run(threading.Event())
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        sampler.stop.set()
    frames = len(rows) * repeat
    counts = agent.counters()
    identity_counts = {k: v for k, v in counts.items() if k.startswith("identity.")}
    return {
        "identity": identity_counts,
        "status": status,
        "frames": frames,
        "samples": counts.get("decode.samples", 0),
        "batches": agent.batches_committed,
        "cpu": cpu,
        "wall": wall,
        "fps": frames / cpu,
        "rss_start": rss_start,
        "rss": sampler.samples or [rss_mb()],
    }


def run_naive(rows: list[Row], repeat: int, wanted: set[str] | None) -> dict[str, Any]:
    """cantools `decode_message` per frame, one JSON sample per signal (written to /dev/null)."""
    catalog = Catalog.from_specs(DBC, warn_stream=None)
    databases: dict[str, Any] = {}
    for spec in DBC:
        channel, _, path = spec.partition("=")
        import cantools

        databases[channel] = cantools.database.load_file(path, strict=False)
    del catalog
    frames = samples = 0
    with open(os.devnull, "w") as out:
        cpu = time.process_time()
        for index in range(repeat):
            shift = index * (rows[-1][0] - rows[0][0] + 1e-3)
            for ts, channel, frame_id, ext, fd, data in rows:
                message = can.Message(
                    timestamp=ts + shift, channel=channel, arbitration_id=frame_id,
                    is_extended_id=ext, is_fd=fd, data=data, check=False,
                )  # fmt: skip
                frames += 1
                database = databases.get(message.channel)
                if database is None:
                    continue
                try:
                    decoded = database.decode_message(message.arbitration_id, message.data)
                    name = database.get_message_by_frame_id(message.arbitration_id).name
                except Exception:
                    continue
                for signal_name, value in decoded.items():
                    key = f"{name}.{signal_name}"
                    if wanted is not None and key not in wanted:
                        continue
                    value = str(value) if not isinstance(value, (int, float)) else value
                    out.write(json.dumps({"t": message.timestamp, "name": key, "value": value}) + "\n")
                    samples += 1
        cpu = time.process_time() - cpu
    return {"frames": frames, "samples": samples, "cpu": cpu, "fps": frames / cpu}


def wire_bytes_per_sample(
    rows: list[Row], broker: str, workdir: Path, payload_version: int
) -> tuple[int, int, int]:
    """One pass of the capture with `--collect all`: (bytes on the wire, samples, batches)."""
    with Subscriber(BrokerConfig(broker), ["vehicles/+/telemetry"]) as subscriber:
        run_agent(
            rows, 1, "all", broker, workdir / f"wire-v{payload_version}", payload_version=payload_version
        )
        from firmware_agent.telemetry.cose import unverified_payload
        from firmware_agent.telemetry.payload import decode_payload

        total = samples = batches = 0
        while (item := subscriber.get(2.0)) is not None:
            total += len(item[1])
            samples += decode_payload(unverified_payload(item[1])).sample_count()
            batches += 1
    return total, samples, batches


def daemon_rss(broker: str, workdir: Path, loops: int) -> tuple[list[float], float, int]:
    """RSS (MB) of `firmware-agent run` replaying the capture `loops` times: samples, wall time, exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "key.pem"
    generate_private_key(key)
    command = [sys.executable, "-m", "firmware_agent", "run", "--source", f"replay:{CAPTURE}?loop={loops}"]
    command += [arg for spec in DBC for arg in ("--dbc", spec)]
    command += ["--collect", "all", "--broker", broker, "--vehicle-id", "bench-0002"]
    command += ["--signing-key", str(key)]
    command += ["--state-dir", str(workdir / "state"), "--exit-at-end"]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    samples = []
    while proc.poll() is None:
        try:
            rss = rss_mb(proc.pid)
        except OSError:
            rss = 0.0
        if rss:
            samples.append(rss)
        time.sleep(0.25)
    return samples, time.perf_counter() - started, proc.returncode


def report(name: str, agent: dict[str, Any], naive: dict[str, Any]) -> None:
    rss = agent["rss"]
    half = rss[len(rss) // 2 :] or rss
    counts = f"{agent['frames']:,} frames, {agent['samples']:,} samples, {agent['batches']} batches"
    print(f"\n== {name}: {counts}")
    print(f"  agent (whole live path, uploader to local mosquitto): {agent['fps']:>10,.0f} frames/s per core "
          f"(cpu {agent['cpu']:.2f} s, wall {agent['wall']:.2f} s, exit {agent['status']})")  # fmt: skip
    print(f"  naive (cantools decode_message + JSON per signal):    {naive['fps']:>10,.0f} frames/s per core "
          f"(cpu {naive['cpu']:.2f} s, {naive['samples']:,} samples)")  # fmt: skip
    print(f"  ratio agent/naive: {agent['fps'] / naive['fps']:.1f}x")
    print(f"  4 buses x 500 kbit/s x 80 % ({LOAD_FRAMES_PER_S:,} frames/s) would use "
          f"{100 * LOAD_FRAMES_PER_S / agent['fps']:.1f} % of one core (naive: "
          f"{100 * LOAD_FRAMES_PER_S / naive['fps']:.0f} %)")  # fmt: skip
    print(
        "  RSS MB of this benchmark process (holds the capture and the naive decoder too): "
        f"before run {agent['rss_start']:.0f}, max {max(rss):.0f}, "
        f"second half min/max {min(half):.0f}/{max(half):.0f}"
    )


def identity_workload(repeat: int, broker: str, workdir: Path) -> None:
    """The reference vehicle's simulated drive, `--collect all`, identity on against off (same run)."""
    from firmware_agent.vehicle import default_dbc_specs

    rows = sim_rows(420)
    dbc = tuple(default_dbc_specs())
    on = IdentitySettings(activation_minutes=5.0)
    off = IdentitySettings(enabled=False)
    with_identity = run_agent(rows, repeat, "all", broker, workdir / "identity-on", dbc, on)
    without = run_agent(rows, repeat, "all", broker, workdir / "identity-off", dbc, off)
    counts = with_identity["identity"]
    frames = with_identity["frames"]
    print(f"\n== identity stage: simulated 7-min drive x {repeat} ({frames:,} frames), collect all")
    learned = ", ".join(
        f"{name} {counts.get('identity.' + key, 0)}"
        for name, key in (("drives", "drives"), ("learned", "drives_learned"), ("windows", "windows"))
    )
    fps, cpu = with_identity["fps"], with_identity["cpu"]
    print(f"  identity on:  {fps:>10,.0f} frames/s per core (cpu {cpu:.2f} s); {learned}")
    print(f"  identity off: {without['fps']:>10,.0f} frames/s per core (cpu {without['cpu']:.2f} s)")
    print(f"  ratio on/off: {with_identity['fps'] / without['fps']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=8, help="capture passes per run (default 8)")
    args = parser.parse_args()
    rows = load_rows()
    print(f"RAV4 capture: {len(rows):,} frames x {args.repeat}; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpus")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        workdir = Path(tmp)
        broker_proc, broker = start_mosquitto(workdir)
        try:
            campaign = workdir / "campaign.toml"
            campaign.write_text(CAMPAIGN)
            wanted = set(tomllib.loads(CAMPAIGN)["campaign"][0]["signals"])
            report(
                "campaign (12 signals)",
                run_agent(rows, args.repeat, str(campaign), broker, workdir),
                run_naive(rows, args.repeat, wanted),
            )
            naive_all = run_naive(rows, args.repeat, None)
            all_v1 = run_agent(rows, args.repeat, "all", broker, workdir, payload_version=1)
            all_v2 = run_agent(rows, args.repeat, "all", broker, workdir, payload_version=2)
            report("collect all (every signal), payload version 1", all_v1, naive_all)
            report("collect all (every signal), payload version 2 (the default)", all_v2, naive_all)
            print(f"  ratio payload v2/v1: {all_v2['fps'] / all_v1['fps']:.2f}")
            identity_workload(args.repeat, broker, workdir)
            loops = max(2, args.repeat // 2)
            rss, wall, status = daemon_rss(broker, workdir / "daemon", loops)
            quarters = [rss[i * len(rss) // 4 : (i + 1) * len(rss) // 4] or [0.0] for i in range(4)]
            print(f"\n== RSS of the daemon itself: firmware-agent run --source replay:CAPTURE?loop={loops} "
                  f"--collect all --exit-at-end ({wall:.1f} s, exit {status})")  # fmt: skip
            print("  RSS MB max per quarter of the run: " + ", ".join(f"{max(q):.0f}" for q in quarters)
                  + f"; peak {max(rss):.0f}")  # fmt: skip
            sizes = {}
            for version in (1, 2):
                total, samples, batches = wire_bytes_per_sample(rows, broker, workdir, version)
                sizes[version] = total / samples
                print(
                    f"\n== wire size, payload version {version}, RAV4 capture once, --collect all: {total:,} "
                    f"bytes in {batches} signed batches, {samples:,} samples: {total / samples:.2f} bytes "
                    "per sample"
                )
            print(f"  ratio v1/v2: {sizes[1] / sizes[2]:.1f}x fewer bytes")
        finally:
            broker_proc.terminate()
            broker_proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
