"""Proactive service end to end: simulated days of one car -> agent -> mosquitto -> ingest -> service-due;
and `campaign publish` to a vehicle that verifies it as the agent does."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from firmware_agent.cli import main
from firmware_agent.fleet.ingest import IngestSettings, IngestWorker
from firmware_agent.telemetry.broker import BrokerConfig
from firmware_agent.telemetry.campaign_updates import CampaignUpdates
from firmware_agent.telemetry.keys import load_public_key
from firmware_agent.telemetry.subscriber import Subscriber
from tests.integration.mosquitto import Mosquitto
from tests.integration.postgres import Postgres

REPO = Path(__file__).resolve().parents[2]
HEALTH = REPO / "docs" / "examples" / "campaigns" / "health.toml"
DAYS, KM_PER_DAY, FIRST_KM = 6, 250.0, 38_000.0


def committed_batches(state: Path) -> int:
    """How many batches the agent's outbox has numbered (its next sequence number)."""
    uri = f"file:{state / 'outbox.sqlite3'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        return int(db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0])


def test_brake_pad_trend_predicts_the_service_date(
    mosquitto: Mosquitto, postgres: Postgres, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = tmp_path / "car.pem", tmp_path / "car.pub.pem"
    assert main(["keys", "generate", "--out", str(key)]) == 0
    assert main(["keys", "public", "--key", str(key), "-o", str(pub)]) == 0
    assert main(["ingest", "keys", "add", "--db", postgres.uri, "car-svc", str(pub)]) == 0
    worker = IngestWorker(BrokerConfig(mosquitto.url), postgres.uri, IngestSettings(client_id="svc"))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    assert worker.wait_ready(10)  # the first day's batches must not reach the broker before the subscription
    today = int(time.time() // 86400) * 86400
    try:
        for day in range(DAYS):  # one short drive a day, DAYS days ago up to yesterday
            drive = tmp_path / f"day{day}.log"
            start = today - (DAYS - day) * 86400 + 8 * 3600
            odometer = FIRST_KM + day * KM_PER_DAY
            assert main(["sim", "--duration", "40", "--seed", "5", "--start-time", str(start),
                         "--odometer", str(odometer), "--out", str(drive)]) == 0  # fmt: skip
            assert main(["run", "--source", f"replay:{drive}", "--collect", str(HEALTH),
                         "--broker", mosquitto.url, "--vehicle-id", "car-svc", "--signing-key", str(key),
                         "--state-dir", str(tmp_path / "state"), "--exit-at-end"]) == 0  # fmt: skip
        # Every batch the agent committed (several a day), not just one a day: a day whose last batch is
        # still on its way would skew that day's mean and the trend (a flaky failure under load).
        committed = committed_batches(tmp_path / "state")
        deadline = time.monotonic() + 60
        while worker.counters.stored < committed and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(30)
    assert worker.counters.quarantined == 0
    assert worker.counters.stored == committed >= DAYS
    capsys.readouterr()
    assert main(["ingest", "service-due", "--db", postgres.uri, "--within", "60", "--json"]) == 0
    due = json.loads(capsys.readouterr().out)
    parts = {row["part"]: row for row in due}
    # front pads: ~50,000 km life (+-10 %) at 250 km/day = 0.45..0.56 %/day, at ~76 % of 80 % -> soon
    assert set(parts) == {"brake pad front left", "brake pad front right"}, due
    for row in parts.values():
        assert row["vehicle"] == "car-svc" and row["days"] == DAYS
        assert 100 * KM_PER_DAY / 55_000 * 0.9 < row["per_day"] < 100 * KM_PER_DAY / 45_000 * 1.1, row
        assert row["r2"] > 0.9
        if row["status"] == "soon":
            # the date follows from the last daily mean and the slope
            days_left = (row["limit_value"] - row["last_value"]) / row["per_day"]
            predicted = time.strftime("%Y-%m-%d", time.gmtime(today - 86400 + days_left * 86400))
            assert (
                abs(
                    time.mktime(time.strptime(row["predicted_date"], "%Y-%m-%d"))
                    - time.mktime(time.strptime(predicted, "%Y-%m-%d"))
                )
                <= 2 * 86400
            ), (row, predicted)
    # the same as CSV for a CRM import: a header and one row per part
    assert main(["ingest", "service-due", "--db", postgres.uri, "--within", "60"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["part"] for r in rows] == [r["part"] for r in due]
    # the battery (~92 % health, limit 80 %) is not due, but its health is there to see
    assert main(["ingest", "service-due", "--db", postgres.uri, "--within", "0", "--json"]) == 0
    assert all(row["status"] == "due" for row in json.loads(capsys.readouterr().out))


def test_campaign_publish_is_verified_by_the_vehicle(
    mosquitto: Mosquitto, postgres: Postgres, tmp_path: Path
) -> None:
    backend, backend_pub = tmp_path / "backend.pem", tmp_path / "backend.pub.pem"
    assert main(["keys", "generate", "--out", str(backend)]) == 0
    assert main(["keys", "public", "--key", str(backend), "-o", str(backend_pub)]) == 0
    car_pub = tmp_path / "car.pub.pem"
    assert main(["keys", "generate", "--out", str(tmp_path / "car.pem")]) == 0
    assert main(["keys", "public", "--key", str(tmp_path / "car.pem"), "-o", str(car_pub)]) == 0
    assert main(["ingest", "keys", "add", "--db", postgres.uri, "car-c1", str(car_pub)]) == 0
    publish = ["campaign", "publish", "--broker", mosquitto.url, "--key", str(backend), "--db", postgres.uri]
    assert main([*publish, "--serial", "3", "--all", str(HEALTH)]) == 0
    assert main([*publish, "--serial", "3", "--vehicle", "car-c1", str(HEALTH)]) == 2  # not above 3
    applied = []
    public = load_public_key(backend_pub)
    from firmware_agent.telemetry.keys import kid_of

    updates = CampaignUpdates("car-c1", {kid_of(public): public}, applied.append)
    with Subscriber(BrokerConfig(mosquitto.url), ["vehicles/car-c1/campaigns"]) as sub:
        item = sub.get(10)  # the retained update
    assert item is not None
    updates.handle(*item)
    assert [u.serial for u in applied] == [3]
    assert applied[0].document["campaign"][0]["name"] == "health"
