"""`firmware-agent ingest` against a real mosquitto and a throwaway PostgreSQL: counts, not impressions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.cli import main
from firmware_agent.fleet.ingest import IngestSettings, IngestWorker
from firmware_agent.fleet.store import add_key, connect, migrate, revoke_key
from firmware_agent.telemetry.broker import BrokerConfig
from firmware_agent.telemetry.keys import kid_of, public_key_pem
from tests.integration.fleet_helpers import SIGNALS, FleetVehicle, Publisher, make_batch, seal_fleet
from tests.integration.mosquitto import Mosquitto
from tests.integration.postgres import Postgres

NOW = time.time()


def _register(uri: str, *vehicles: FleetVehicle) -> None:
    conn = connect(uri)
    migrate(conn)
    for vehicle in vehicles:
        add_key(conn, vehicle.vehicle_id, vehicle.key.public_key())
    conn.close()


def _scalar(uri: str, sql: str) -> object:
    with psycopg.connect(uri) as conn:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None


@contextmanager
def _worker(broker: Mosquitto, uri: str, client_id: str = "w1") -> Iterator[IngestWorker]:
    worker = IngestWorker(BrokerConfig(broker.url), uri, IngestSettings(client_id=client_id, key_refresh=0.5))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    assert worker.wait_ready(10)
    try:
        yield worker
    finally:
        stop.set()
        thread.join(30)


def _wait(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_ingest_stores_verified_batches_and_quarantines_the_rest(
    mosquitto: Mosquitto, postgres: Postgres
) -> None:
    good = [FleetVehicle(f"veh-{n}") for n in range(3)]
    revoked, unknown, nul = FleetVehicle("veh-revoked"), FleetVehicle("veh-unknown"), FleetVehicle("veh-nul")
    _register(postgres.uri, *good, revoked, nul)
    conn = connect(postgres.uri)
    revoke_key(
        conn,
        kid_of(revoked.key.public_key()).hex(),
        "stolen head unit",
    )
    conn.close()
    first = seal_fleet(good, 10, NOW - 60)
    later = seal_fleet(good, 20, NOW - 60)[len(first) :]
    replay = (good[0].topic, good[0].sealer(make_batch(4, NOW, 3), 4))  # seq 4 again, other content
    nul_batch = make_batch(0, NOW - 30)
    nul_batch.samples["Vehicle.Name"] = ([NOW - 30], ["bad\x00name"])  # PostgreSQL text cannot hold NUL
    moved = (good[1].topic, good[0].sealer(make_batch(99, NOW, 2), 99))  # veh-0's batch on veh-1's topic
    refused = [
        (revoked.topic, revoked.sealer(make_batch(0, NOW, 2), 0)),
        (unknown.topic, unknown.sealer(make_batch(0, NOW, 2), 0)),
        (good[2].topic, b"\xd2\x84poison"),
        replay,
        moved,
        (nul.topic, nul.sealer(nul_batch, 0)),
    ]
    messages = [*first, first[5], *refused, *later]  # first[5]: a byte-identical re-delivery
    with _worker(mosquitto, postgres.uri) as worker:
        publisher = Publisher(BrokerConfig(mosquitto.url))
        publisher.publish(messages)
        publisher.close()
        _wait(lambda: worker.counters.received >= len(messages))
        time.sleep(0.3)
    assert worker.counters.received == len(messages)
    assert worker.counters.stored == 60
    assert worker.counters.duplicates == 1
    assert worker.counters.kinds == {
        "revoked_key": 1,
        "unknown_kid": 1,
        "malformed": 1,
        "replay": 1,
        "wrong_topic": 1,
        "store_failed": 1,
    }
    uri = postgres.uri
    assert _scalar(uri, "SELECT count(*) FROM telemetry_batches") == 60
    assert _scalar(uri, "SELECT count(*) FROM telemetry_samples") == 60 * 3 * 10
    assert _scalar(uri, "SELECT count(*) FROM telemetry_samples WHERE value_text = 'D'") == 60 * 5
    assert _scalar(uri, "SELECT count(DISTINCT signal) FROM telemetry_samples") == len(SIGNALS)
    assert _scalar(uri, "SELECT count(*) FROM telemetry_events WHERE kind = 'hard_braking'") == 3 * 2
    assert _scalar(uri, "SELECT count(*) FROM telemetry_gaps") == 0
    assert _scalar(uri, "SELECT count(*) FROM fleet_quarantine") == 6
    assert _scalar(uri, "SELECT reason FROM fleet_quarantine WHERE kind = 'revoked_key'").endswith(
        "stolen head unit"
    )
    assert _scalar(uri, "SELECT length(message) FROM fleet_quarantine WHERE kind = 'malformed'") == 8
    # the stored sample is the signed one: time and value as the vehicle sent them
    assert (
        _scalar(
            uri,
            "SELECT value_num FROM telemetry_samples WHERE vehicle = 'veh-1' AND seq = 3 "
            "AND signal = 'Vehicle.Speed' "
            "ORDER BY time LIMIT 1",
        )
        == 50.0 + 3
    )
    assert _scalar(
        uri, "SELECT driver->>'profile' FROM telemetry_batches WHERE vehicle = 'veh-2' AND seq = 0"
    ) == ("p-0123456789abcdef")


def test_keys_cli_and_gap_view(
    postgres: Postgres, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "pub.pem"
    pem.write_text(public_key_pem(key.public_key()))
    assert main(["ingest", "keys", "add", "--db", postgres.uri, "veh-7", str(pem)]) == 0
    kid = capsys.readouterr().out.split()[1]
    assert (
        main(["ingest", "keys", "add", "--db", postgres.uri, "veh-8", str(pem)]) == 2
    )  # one key, one vehicle
    assert main(["ingest", "keys", "list", "--db", postgres.uri]) == 0
    assert f"veh-7\t{kid}\tusable" in capsys.readouterr().out
    assert main(["ingest", "keys", "revoke", "--db", postgres.uri, kid[:6]]) == 0
    assert main(["ingest", "keys", "list", "--db", postgres.uri, "--vehicle", "veh-7"]) == 0
    assert f"veh-7\t{kid}\trevoked" in capsys.readouterr().out


def _start_worker(broker: Mosquitto, uri: str, client_id: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware_agent",
            "ingest",
            "--broker",
            broker.url,
            "--db",
            uri,
            "--client-id",
            client_id,
            "--share",
            "g1",
            "--stats-every",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def test_kill_9_and_postgres_restart_lose_nothing_and_store_nothing_twice(
    mosquitto_persistent: Mosquitto, postgres: Postgres, tmp_path: Path
) -> None:
    """Two workers share the load; one is killed with SIGKILL and restarted, then PostgreSQL crashes
    (immediate stop) and restarts, all while 40 vehicles publish 1,200 batches."""
    vehicles = [FleetVehicle(f"car-{n:02d}") for n in range(40)]
    _register(postgres.uri, *vehicles)
    messages = seal_fleet(vehicles, 30, NOW - 120)
    log = tmp_path / "workers.log"
    workers = {cid: _start_worker(mosquitto_persistent, postgres.uri, cid, log) for cid in ("w1", "w2")}
    try:
        _wait(lambda: log.exists() and log.read_text().count("subscribed to") == 2, 30)
        publisher = Publisher(BrokerConfig(mosquitto_persistent.url))
        thread = threading.Thread(target=publisher.publish, args=(messages, 100.0))
        thread.start()
        _wait(lambda: _scalar(postgres.uri, "SELECT count(*) FROM fleet_batches") >= 300)
        os.kill(workers["w1"].pid, signal.SIGKILL)  # mid-group, unacknowledged messages in its session
        workers["w1"].wait()
        time.sleep(1.0)
        workers["w1"] = _start_worker(mosquitto_persistent, postgres.uri, "w1", log)
        _wait(lambda: _scalar(postgres.uri, "SELECT count(*) FROM fleet_batches") >= 700)
        postgres.restart("immediate")  # a crash: recovery on start; the workers reconnect
        thread.join(120)
        publisher.close()
        _wait(lambda: _scalar(postgres.uri, "SELECT count(*) FROM fleet_batches") >= len(messages), 90)
        time.sleep(1.0)  # anything stored twice would show up now
    finally:
        for process in workers.values():
            process.send_signal(signal.SIGTERM)
        for process in workers.values():
            process.wait(30)
    text = log.read_text()
    uri = postgres.uri
    assert _scalar(uri, "SELECT count(*) FROM fleet_batches") == len(messages), text[-3000:]
    assert _scalar(uri, "SELECT count(*) FROM fleet_series") == len(messages) * len(SIGNALS)
    assert _scalar(uri, "SELECT count(*) FROM telemetry_samples") == len(messages) * len(SIGNALS) * 10
    assert _scalar(uri, "SELECT count(*) FROM telemetry_gaps") == 0
    assert _scalar(uri, "SELECT count(*) FROM fleet_quarantine") == 0
    assert "database unavailable" in text  # the restart was felt, and survived
