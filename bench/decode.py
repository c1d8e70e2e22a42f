"""Benchmark: `firmware-agent decode --format parquet` against a user's python-can + cantools loop.

Builds the real RAV4 capture repeated N times (timestamps shifted so the copies follow each other) in a
temporary folder, then times, in one run on the same machine:

  (a) baseline: python-can `LogReader` + `db.decode_message` per frame into lists (in this process);
  (b) `firmware-agent decode --format parquet -o out/` (a subprocess: start-up included; best of 3);
  (c) optionally `cantools decode` (`--cantools`), the command-line tool a user would reach for;
  (m) an MF4 (CANedge) capture, CSS's 150 k-frame J1939 sample: `firmware-agent decode --format parquet`
      against asammdf's own bus-logging extraction (`MDF(...).extract_bus_logging(...)`), each a
      subprocess with its imports, best of `--repeat`;
  (s) the latency of `firmware-agent decode -` on a pipe: the time from writing a candump line to
      reading its jsonl record, over 50 lines written 20 ms apart (median and worst).

It prints wall and CPU seconds and the ratios (CPU time is what to compare when other work shares
the machine), and the peak RSS of (b) for the requested sizes (`--rss 1000000
5000000`) to show that memory stays flat as the capture grows. No absolute time is asserted anywhere.

(b) runs as an installed command does: with Python's bytecode cache (in a temporary folder, so that
`PYTHONDONTWRITEBYTECODE` in a developer's shell does not make every run recompile the package, which
pip does once at install time) and with the parsed-DBC cache warm, after one untimed run.

    .venv/bin/python bench/decode.py                 # 8 copies, 1.08 M frames
    .venv/bin/python bench/decode.py --rss 1000000 5000000
    .venv/bin/python bench/decode.py --no-rav4 --no-stdin --repeat 5   # only the MF4 case (m)
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CAPTURE = DATA / "captures" / "rav4" / "rav4_2018-08-02_seg40.log"
DBC_CAN0 = DATA / "dbc" / "opendbc__toyota_new_mc_pt_generated.dbc"
DBC_CAN1 = DATA / "dbc" / "opendbc__toyota_adas.dbc"
MF4 = ROOT / "tests" / "data" / "captures" / "css_mf4" / "other_asammdf-basics_input_00000001.MF4"
DBC_J1939 = ROOT / "tests" / "data" / "dbc" / "css__CSS-Electronics-SAE-J1939-DEMO.dbc"
FIRMWARE_AGENT = Path(sys.executable).with_name("firmware-agent")


def build_capture(path: Path, frames: int) -> int:
    """Write the RAV4 capture repeated (shifted in time) until it has `frames` lines; returns the count."""
    lines = CAPTURE.read_bytes().splitlines()
    first = float(lines[0].split(b")")[0][1:])
    last = float(lines[-1].split(b")")[0][1:])
    period = last - first + 0.01
    written = 0
    copy = 0
    with path.open("wb") as out:
        while written < frames:
            shift = round(copy * period * 1e6)
            block = []
            for line in lines[: frames - written]:
                stamp, rest = line.split(b")", 1)
                seconds, micros = stamp[1:].split(b".")
                total = int(seconds) * 1_000_000 + int(micros) + shift
                block.append(b"(%d.%06d)%s\n" % (total // 1_000_000, total % 1_000_000, rest))
            out.writelines(block)
            written += len(block)
            copy += 1
    return written


def baseline(path: Path) -> tuple[float, float, int]:
    """The user's loop: python-can LogReader + db.decode_message per frame into lists.

    Returns wall seconds, CPU seconds and the number of decoded records.
    """
    import can
    import cantools

    databases = {
        "can0": cantools.database.load_file(str(DBC_CAN0), strict=False),
        "can1": cantools.database.load_file(str(DBC_CAN1)),
    }
    start = time.perf_counter()
    cpu_start = time.process_time()
    timestamps: list[float] = []
    records: list[dict] = []
    for frame in can.LogReader(str(path)):
        try:
            decoded = databases[frame.channel].decode_message(frame.arbitration_id, frame.data)
        except (KeyError, ValueError, Exception):  # unknown IDs and cantools' decode errors
            continue
        timestamps.append(frame.timestamp)
        records.append(decoded)
    return time.perf_counter() - start, time.process_time() - cpu_start, len(records)


def run_cli(arguments: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Run a command, returning wall seconds, CPU seconds (user + system) and its peak RSS in kB.

    The command is started from a small helper process, so that the peak RSS is the command's own and
    not the memory it inherits, before exec, from a fork of this (large) benchmark process.
    """
    helper = (
        "import os, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
        "_, status, usage = os.wait4(process.pid, 0)\n"
        "elapsed = time.perf_counter() - start\n"
        "if status:\n"
        "    sys.exit(process.stderr.read().decode())\n"
        "print(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", helper, *arguments], capture_output=True, text=True, check=False, env=env
    )
    if result.returncode:
        raise SystemExit(f"{arguments[0]} failed: {result.stderr}")
    elapsed, cpu, rss = result.stdout.split()
    return float(elapsed), float(cpu), int(rss)


def ours(path: Path, output: Path) -> tuple[float, float, int]:
    """`firmware-agent decode --format parquet`, start-up included."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(output.parent / "pycache")
    return run_cli(
        [
            str(FIRMWARE_AGENT),
            "decode",
            str(path),
            "--dbc",
            f"can0={DBC_CAN0}",
            "--dbc",
            f"can1={DBC_CAN1}",
            "--format",
            "parquet",
            "-o",
            str(output),
        ],
        env,
    )


def mf4_case(folder: Path, repeat: int) -> None:
    """(m): ours against asammdf's bus-logging extraction on the same MF4 file, in this run."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    command = [str(FIRMWARE_AGENT), "decode", str(MF4), "--dbc", str(DBC_J1939), "--format", "parquet"]
    asammdf = (
        "import sys\nfrom asammdf import MDF\n"
        "MDF(sys.argv[1]).extract_bus_logging(database_files={'CAN': [(sys.argv[2], 0)]})\n"
    )
    baseline_command = [sys.executable, "-c", asammdf, str(MF4), str(DBC_J1939)]
    run_cli([*command, "-o", str(folder / "mf4")], env)  # warm-up
    run_cli(baseline_command, env)
    mine = [run_cli([*command, "-o", str(folder / "mf4")], env) for _ in range(repeat)]
    theirs = [run_cli(baseline_command, env) for _ in range(repeat)]
    wall, cpu = min(run[0] for run in mine), min(run[1] for run in mine)
    base_wall, base_cpu = min(run[0] for run in theirs), min(run[1] for run in theirs)
    print(
        f"(m) MF4, 150,411 frames: firmware-agent decode --format parquet {wall:5.2f} s wall {cpu:5.2f} s CPU"
    )
    print(
        f"    asammdf extract_bus_logging:                      {base_wall:5.2f} s wall {base_cpu:5.2f} s CPU"
    )
    print(
        f"    ratio asammdf/ours: {base_wall / wall:.2f}x wall, {base_cpu / cpu:.2f}x CPU (best of {repeat})"
    )
    # the same two in this process, imports done: reading and decoding alone
    from asammdf import MDF

    sys.path.insert(0, str(ROOT))
    from firmware_agent.decode.catalog import Catalog
    from firmware_agent.decode.vectorised import VectorDecoder
    from firmware_agent.io import open_capture

    catalog = Catalog.from_specs([str(DBC_J1939)], warn_stream=None)
    mine_cpu, theirs_cpu, records = [], [], 0
    for _ in range(repeat):
        start = time.process_time()
        decoder = VectorDecoder(catalog)
        records = sum(len(g.rows) for batch in open_capture(str(MF4)) for g in decoder.decode(batch).groups)
        mine_cpu.append(time.process_time() - start)
        start = time.process_time()
        MDF(str(MF4)).extract_bus_logging(database_files={"CAN": [(str(DBC_J1939), 0)]})
        theirs_cpu.append(time.process_time() - start)
    print(
        f"    in-process, imports done: ours {min(mine_cpu):.3f} s CPU ({records:,} records),"
        f" asammdf {min(theirs_cpu):.3f} s CPU: {min(theirs_cpu) / min(mine_cpu):.2f}x"
    )


def stdin_latency(lines: int = 50, gap: float = 0.02) -> None:
    """(s): seconds from writing a candump line into `decode -` to reading its record."""
    import statistics

    dbc = ROOT / "tests" / "data" / "dbc" / "cantools__motohawk.dbc"
    process = subprocess.Popen(
        [str(FIRMWARE_AGENT), "decode", "-", "--dbc", str(dbc)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None and process.stdout is not None
    delays = []
    for number in range(lines):
        sent = time.perf_counter()
        process.stdin.write(f"({1700000000 + number}.000000) can0 1F0#C001400000000000\n".encode())
        process.stdin.flush()
        process.stdout.readline()
        delays.append(time.perf_counter() - sent)
        time.sleep(gap)
    process.stdin.close()
    process.wait(timeout=30)
    delays = delays[1:]  # the first line also waits for start-up
    print(
        f"(s) decode - on a pipe: record {1000 * statistics.median(delays):.1f} ms after its line"
        f" (median of {len(delays)}; worst {1000 * max(delays):.1f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=8, help="RAV4 copies for the timing (default 8)")
    parser.add_argument("--cantools", action="store_true", help="also time `cantools decode`")
    parser.add_argument("--no-baseline", action="store_true", help="skip the slow baseline loop")
    parser.add_argument("--repeat", type=int, default=3, help="runs of (b), the best is reported (default 3)")
    parser.add_argument("--no-mf4", action="store_true", help="skip the MF4 case (m)")
    parser.add_argument(
        "--no-rav4", action="store_true", help="skip the RAV4 cases (a), (b), (c) and --rss: only (m) and (s)"
    )
    parser.add_argument("--no-stdin", action="store_true", help="skip the stdin latency case (s)")
    parser.add_argument(
        "--rss", type=int, nargs="*", default=[], metavar="FRAMES", help="peak RSS at these sizes"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fa-bench-") as folder:
        if args.no_rav4:
            print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
            print(f"load average before: {os.getloadavg()[0]:.2f} (other work skews wall times)")
            if not args.no_mf4:
                mf4_case(Path(folder), args.repeat)
            if not args.no_stdin:
                stdin_latency()
            return
        capture = Path(folder) / "rav4_x.log"
        frames = build_capture(capture, args.copies * 135_468)
        print(f"capture: RAV4 x{args.copies}, {frames:,} frames, {capture.stat().st_size / 1e6:.0f} MB")
        print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
        print(f"load average before: {os.getloadavg()[0]:.2f} (other work on the machine skews wall times)")
        ours(capture, Path(folder) / "out")  # warm-up: bytecode and DBC caches, page cache
        runs = [ours(capture, Path(folder) / "out") for _ in range(args.repeat)]
        # the least wall and the least CPU time, each over the runs (other work only ever adds to them)
        seconds, cpu, rss = (
            min(run[0] for run in runs),
            min(run[1] for run in runs),
            max(run[2] for run in runs),
        )
        print(
            f"(b) firmware-agent decode --format parquet: {seconds:6.2f} s wall {cpu:6.2f} s CPU"
            f"  (best of {args.repeat} each; peak RSS {rss / 1024:.0f} MB)"
        )
        if not args.no_baseline:
            base, base_cpu, decoded = baseline(capture)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(
                f"(a) LogReader + decode_message loop:         {base:6.2f} s wall {base_cpu:6.2f} s CPU"
                f"  ({decoded:,} records, peak RSS {peak / 1024:.0f} MB)"
            )
            print(f"    speed-up (a)/(b): {base / seconds:.1f}x wall, {base_cpu / cpu:.1f}x CPU")
        if not args.no_mf4:
            mf4_case(Path(folder), args.repeat)
        if not args.no_stdin:
            stdin_latency()
        if args.cantools:
            cantools_seconds = _cantools(capture)
            print(f"(c) cantools decode (can0 DBC only):        {cantools_seconds:6.2f} s")
        for size in args.rss:
            sized = Path(folder) / f"rav4_{size}.log"
            build_capture(sized, size)
            seconds, cpu, rss = ours(sized, Path(folder) / f"out_{size}")
            sized.unlink()
            print(
                f"peak RSS for {size:>10,} frames: {rss / 1024:6.0f} MB"
                f"  ({seconds:.1f} s wall, {cpu:.1f} s CPU)"
            )


def _cantools(capture: Path) -> float:
    # cantools decode reads candump output on stdin and decodes with one database
    start = time.perf_counter()
    with capture.open("rb") as source:
        subprocess.run(
            [str(Path(sys.executable).with_name("cantools")), "decode", "--no-strict", str(DBC_CAN0)],
            stdin=source,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
