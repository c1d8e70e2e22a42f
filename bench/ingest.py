"""Fleet ingest under load: 1,000 vehicles through mosquitto into PostgreSQL with 1 and 2 workers.

    .venv/bin/python bench/ingest.py [--vehicles 1000] [--batches 5] [--publishers 3] [--workers 1 2]

Batches are made ahead with the real sealer (COSE_Sign1/Ed25519 over the default payload, version 2 since
issue 11's compact format; figures measured before it were on version 1): each is a 10 s "drive" batch,
9 signals at 1 Hz plus a 10 Hz speed series (190 samples). Several publisher processes send
them over loopback with QoS 1 as fast as the broker acknowledges; `firmware-agent ingest` workers (separate
processes, one MQTT 5 shared-subscription group, a fresh database per run) verify, store and acknowledge.
Then a paced run (`--paced-rate` batches/s, well below capacity) measures end-to-end latency: from the
publisher's send to the commit that stored it (`fleet_batches.stored_at`).

Printed per worker count: batches/s and samples/s overall and per worker CPU-second (the workers' own
user+system time from /proc), latency p50/p99, database bytes per sample (all fleet tables and indexes),
and the ratio to a baseline measured in the same run: verifying the same messages in one process, no
broker, no database (`TelemetryVerifier`), i.e. what storing costs on top of checking signatures.
Everything shares this machine's cores (broker, PostgreSQL, publishers, workers): absolute figures are
this machine's; the ratios travel better.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from firmware_agent.fleet.store import add_key, connect, migrate  # noqa: E402
from firmware_agent.telemetry.broker import BrokerConfig  # noqa: E402
from firmware_agent.telemetry.keys import kid_of  # noqa: E402
from firmware_agent.telemetry.verify import TelemetryVerifier  # noqa: E402
from firmware_agent.values import Batch  # noqa: E402
from tests.integration.fleet_helpers import FleetVehicle, Publisher  # noqa: E402
from tests.integration.mosquitto import Mosquitto, free_port  # noqa: E402
from tests.integration.postgres import Postgres  # noqa: E402

SIGNALS = [
    "Vehicle.TraveledDistance",
    "Vehicle.Chassis.Accelerator.PedalPosition",
    "Vehicle.Powertrain.Transmission.SelectedGear",
    "Vehicle.Powertrain.ElectricMotor.Speed",
    "Vehicle.Powertrain.ElectricMotor.Torque",
    "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed",
    "Vehicle.Powertrain.TractionBattery.CurrentCurrent",
    "Vehicle.Chassis.Axle.Row1.Wheel.Left.Brake.PadWear",
    "Vehicle.Powertrain.TractionBattery.StateOfHealth",
]


def drive_batch(seq: int, t0: float, n: int) -> Batch:
    """A 10 s drive batch: 9 signals at 1 Hz and the speed at 10 Hz (190 samples)."""
    batch = Batch(campaign="drive")
    for k, name in enumerate(SIGNALS):
        times = [t0 + i for i in range(10)]
        batch.samples[name] = (times, [round(10.0 * k + 0.37 * i + (n % 13), 2) for i in range(10)])
    batch.samples["Vehicle.Speed"] = (
        [t0 + i / 10 for i in range(100)],
        [round(50 + 10 * ((i + n) % 17) / 17, 2) for i in range(100)],
    )
    return batch


def make_fleet(
    vehicles: int, batches: int, t0: float
) -> tuple[list[FleetVehicle], list[list[tuple[str, bytes]]]]:
    """The fleet and its messages, per round (all vehicles' seq 0, then seq 1, ...)."""
    fleet = [FleetVehicle(f"bench-{n:05d}") for n in range(vehicles)]
    rounds = []
    for seq in range(batches):
        rounds.append(
            [(v.topic, v.sealer(drive_batch(seq, t0 + 10 * seq, n), seq)) for n, v in enumerate(fleet)]
        )
    return fleet, rounds


def _publish(url: str, messages: list[tuple[str, bytes]], rate: float, out: str) -> None:
    publisher = Publisher(BrokerConfig(url), max_inflight=500)
    publisher.publish(messages, rate)
    publisher.close()
    with open(out, "w") as stream:
        for (topic, _), sent in zip(messages, publisher.sent_at, strict=True):
            stream.write(f"{topic.split('/')[1]}\t{sent}\n")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _count(uri: str) -> int:
    with psycopg.connect(uri) as conn:
        return int(conn.execute("SELECT count(*) FROM fleet_batches").fetchone()[0])  # type: ignore[index]


def run(args: argparse.Namespace, workers: int, fleet: list[FleetVehicle], rounds: list, tmp: Path) -> dict:
    broker = Mosquitto(tmp / f"mosquitto-{workers}")
    with broker.config_path.open("a") as conf:  # a dead worker's queue must not overflow in a long run
        conf.write("max_queued_messages 0\nmax_inflight_messages 0\n")
    broker.start()
    pg = Postgres(free_port())
    pg.start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        conn = connect(pg.uri)
        migrate(conn)
        for vehicle in fleet:
            add_key(conn, vehicle.vehicle_id, vehicle.key.public_key())
        conn.close()
        log = tmp / f"workers-{workers}.log"
        for n in range(workers):
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "firmware_agent",
                        "ingest",
                        "--broker",
                        broker.url,
                        "--db",
                        pg.uri,
                        "--client-id",
                        f"bench-{n}",
                        "--share",
                        "bench",
                        "--stats-every",
                        "0",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=log.open("ab"),
                )
            )
        deadline = time.monotonic() + 30
        while log.read_text().count("subscribed to") < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not subscribe: {log.read_text()}")
            time.sleep(0.1)
        cpu0 = [_cpu_seconds(p.pid) for p in processes]
        messages = [m for r in rounds for m in r]
        total = len(messages)
        # throughput: everything as fast as the broker takes it
        started = time.monotonic()
        _publish_all(broker.url, messages, args.publishers, 0.0, tmp / f"sent-{workers}")
        while _count(pg.uri) < total:
            time.sleep(0.05)
            if time.monotonic() - started > 900:
                raise RuntimeError("ingest did not finish within 15 minutes")
        elapsed = time.monotonic() - started
        cpu = sum(_cpu_seconds(p.pid) - c for p, c in zip(processes, cpu0, strict=True))
        with psycopg.connect(pg.uri) as db:
            samples = int(db.execute("SELECT sum(samples) FROM fleet_batches").fetchone()[0])  # type: ignore[index]
            size = int(
                db.execute(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                    "WHERE c.relname LIKE 'fleet_%' AND c.relkind IN ('r', 'p')"
                ).fetchone()[0]  # type: ignore[index]
            )
        # latency: a paced run of fresh seqs well below capacity
        seq = len(rounds)
        paced = [
            (v.topic, v.sealer(drive_batch(seq, time.time(), k), seq))
            for k, v in enumerate(fleet[: args.paced])
        ]
        sent_file = tmp / f"paced-{workers}"
        _publish_all(broker.url, paced, 1, args.paced_rate, sent_file)
        while _count(pg.uri) < total + len(paced):
            time.sleep(0.05)
        sent = {}
        for path in sent_file.parent.glob(sent_file.name + ".*"):
            for line in path.read_text().splitlines():
                vehicle, when = line.split("\t")
                sent[vehicle] = float(when)
        with psycopg.connect(pg.uri) as db:
            rows = db.execute(
                "SELECT v.name, extract(epoch FROM b.stored_at) FROM fleet_batches b "
                "JOIN fleet_vehicles v ON v.id = b.vehicle_id WHERE b.seq = %s",
                (len(rounds),),
            ).fetchall()
        latencies = sorted(float(stored) - sent[name] for name, stored in rows if name in sent)
    finally:
        for p in processes:
            p.send_signal(signal.SIGTERM)
        for p in processes:
            p.wait(60)
        pg.destroy()
        broker.stop()
    return {
        "workers": workers,
        "batches": total,
        "samples": samples,
        "seconds": elapsed,
        "batches_s": total / elapsed,
        "samples_s": samples / elapsed,
        "batches_cpu_s": total / cpu,
        "samples_cpu_s": samples / cpu,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "bytes_per_sample": size / samples,
        "cpu": cpu,
    }


def _publish_all(url: str, messages: list, publishers: int, rate: float, out: Path) -> None:
    slices = [messages[i::publishers] for i in range(publishers)]
    procs = [
        multiprocessing.Process(target=_publish, args=(url, part, rate / publishers, f"{out}.{i}"))
        for i, part in enumerate(slices)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError("a publisher failed")


def baseline(fleet: list[FleetVehicle], rounds: list) -> float:
    """Batches/s verifying the same messages in this process (signature, topic, payload decode)."""
    keys = {kid_of(v.key.public_key()): v.key.public_key() for v in fleet}
    verifier = TelemetryVerifier(keys, track_seq=False)
    messages = [m for r in rounds for m in r]
    started = time.process_time()
    for topic, message in messages:
        verifier.check(topic, message)
    return len(messages) / (time.process_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=5, help="batches per vehicle (10 s of driving each)")
    parser.add_argument("--publishers", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--paced", type=int, default=500, help="batches of the latency run")
    parser.add_argument("--paced-rate", type=float, default=100.0, help="batches/s of the latency run")
    args = parser.parse_args()
    t0 = time.time() - 3600
    started = time.monotonic()
    fleet, rounds = make_fleet(args.vehicles, args.batches, t0)
    size = sum(len(m) for r in rounds for _, m in r) / (args.vehicles * args.batches)
    sealing = time.monotonic() - started
    print(
        f"{args.vehicles} vehicles x {args.batches} batches sealed ahead in {sealing:.1f} s "
        f"({size:.0f} bytes each); {args.publishers} publisher processes; "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    )
    verify_rate = baseline(fleet, rounds)
    print(f"baseline: verify only (one process, no broker, no database): {verify_rate:,.0f} batches/s")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as folder:
        results = [run(args, w, fleet, rounds, Path(folder)) for w in args.workers]
    print()
    print(
        "| workers | batches/s | samples/s | batches/s per worker CPU-s | samples/s per worker CPU-s "
        "| vs verify-only | latency p50 / p99 (ms) | DB bytes/sample |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['workers']} | {r['batches_s']:,.0f} | {r['samples_s']:,.0f} | {r['batches_cpu_s']:,.0f} "
            f"| {r['samples_cpu_s']:,.0f} | {r['batches_cpu_s'] / verify_rate:.2f} "
            f"| {r['p50_ms']:.0f} / {r['p99_ms']:.0f} | {r['bytes_per_sample']:.1f} |"
        )


if __name__ == "__main__":
    main()
