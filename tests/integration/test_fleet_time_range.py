"""`telemetry_samples_between(from, to)`: the samples of a time range, read only from the partitions that
can hold them (a real PostgreSQL; the plan is read from EXPLAIN ANALYZE)."""

from __future__ import annotations

import datetime as dt
import re
import time

import psycopg

from firmware_agent.fleet.schema import MIGRATIONS, partition_ddl, partition_name
from firmware_agent.fleet.store import FleetStore, Verified, connect, migrate
from firmware_agent.telemetry.cose import unverified_payload
from firmware_agent.telemetry.keys import kid_of
from firmware_agent.telemetry.payload import decode_payload
from firmware_agent.values import Batch
from tests.integration.fleet_helpers import FleetVehicle, make_batch
from tests.integration.postgres import Postgres

DAY = 86400.0
START = (time.time() // DAY - 4) * DAY + 3600.0  # 01:00 UTC four days ago
LONG_SPAN = 7200.0  # one batch of the fleet holds samples two hours apart
UTC = dt.timezone.utc


def _at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, UTC)


def _partition(seconds: float) -> str:
    return partition_name(_at(seconds).date())


def _verified(vehicle: FleetVehicle, batch: Batch, seq: int) -> Verified:
    message = vehicle.sealer(batch, seq)
    payload = decode_payload(unverified_payload(message))
    return Verified(vehicle.topic, message, payload, kid_of(vehicle.key.public_key()), time.time())


def _rows(conn: psycopg.Connection, sql: str, *params: object) -> set[tuple[object, ...]]:
    return {tuple(row) for row in conn.execute(sql, params).fetchall()}


def _scanned_partitions(conn: psycopg.Connection, sql: str, *params: object) -> set[str]:
    plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}", params).fetchall())
    return {
        name
        for line in plan.splitlines()
        if "never executed" not in line
        for name in re.findall(r"fleet_series_\d{8}", line)
    }


def test_a_time_range_reads_only_its_partitions_and_finds_every_sample(postgres: Postgres) -> None:
    vehicle = FleetVehicle("veh-range")
    store = FleetStore(postgres.uri)
    items = [_verified(vehicle, make_batch(day, START + day * DAY), day) for day in range(5)]
    long_batch = Batch()
    long_batch.samples["Vehicle.Speed"] = ([START + DAY, START + DAY + LONG_SPAN], [10.0, 20.0])
    items.append(_verified(vehicle, long_batch, 5))
    assert store.store(items, []).stored == 6
    store.close()

    conn = connect(postgres.uri)
    span = float(conn.execute("SELECT value FROM fleet_meta WHERE name = 'max_series_span_s'").fetchone()[0])
    assert LONG_SPAN < span <= LONG_SPAN + 1
    between = "SELECT * FROM telemetry_samples_between(%s, %s)"
    where = "SELECT * FROM telemetry_samples WHERE time >= %s AND time < %s"
    for first, last in [
        (START, START + 0.5),  # the first half second of day 0
        (START + DAY + LONG_SPAN - 1, START + DAY + LONG_SPAN + 1),  # the long batch's last sample only
        (START + 2 * DAY - 60, START + 3 * DAY + 60),  # days 2 and 3
        (START - DAY, START + 10 * DAY),  # everything
    ]:
        found = _rows(conn, between, _at(first), _at(last))
        assert found == _rows(conn, where, _at(first), _at(last))
        assert found
    # the long batch's second sample, two hours after its batch's t0: found, reading day 1 only
    late = (_at(START + DAY + LONG_SPAN - 1), _at(START + DAY + LONG_SPAN + 1))
    assert {row[4] for row in _rows(conn, between, *late)} == {20.0}
    assert _scanned_partitions(conn, between, *late) == {_partition(START + DAY)}
    # a second of day 3 reads day 3 (and day 2, where a series that long could start)
    inside = (_at(START + 3 * DAY), _at(START + 3 * DAY + 1))
    assert _scanned_partitions(conn, between, *inside) <= {
        _partition(START + 2 * DAY),
        _partition(START + 3 * DAY),
    }
    # the plain view reads every partition for the same filter
    assert len(_scanned_partitions(conn, where, *inside)) >= 5
    conn.close()


def test_upgrading_a_version_1_database_measures_the_spans_already_stored(postgres: Postgres) -> None:
    conn = connect(postgres.uri)
    with conn.transaction():
        conn.execute(MIGRATIONS[0])
        conn.execute("INSERT INTO fleet_meta (name, value) VALUES ('schema_version', '1')")
        conn.execute(partition_ddl(_at(START).date()))
        conn.execute(
            "INSERT INTO fleet_series (vehicle_id, seq, signal_id, t0, times, nums) "
            "VALUES (1, 0, 1, to_timestamp(%s), %s, %s)",
            (START, [START, START + 499.5, START + 12.0], [1.0, 2.0, 3.0]),
        )
    assert migrate(conn) == len(MIGRATIONS)
    assert (
        conn.execute("SELECT value FROM fleet_meta WHERE name = 'max_series_span_s'").fetchone()[0] == "500"
    )
    conn.close()
