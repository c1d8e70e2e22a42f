"""The fleet database behind `ingest`: schema on first use, the key registry, and group-committed stores.

`FleetStore.store(items)` writes a group of verified batches and quarantined messages in ONE transaction and
returns only after the commit, so the caller may then acknowledge every message of the group to the broker.
Samples go in with binary COPY, one row per (batch, signal) (see `schema`). Idempotence is the primary key
`(vehicle_id, seq)` of `fleet_batches`: a batch already stored is a duplicate when its bytes are the same
(QoS 1 re-delivery, a worker killed before its ack) and a `replay` for the quarantine when they differ.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_agent.errors import UserError
from firmware_agent.fleet.schema import (
    MIGRATION_LOCK,
    MIGRATIONS,
    PARTITIONS_AHEAD,
    day_of_partition,
    partition_ddl,
)
from firmware_agent.telemetry.keys import kid_of
from firmware_agent.telemetry.payload import Payload
from firmware_agent.telemetry.topics import validate_vehicle_id

log = logging.getLogger(__name__)

#: A batch whose t0 lies further ahead of the worker's clock than this is quarantined (`future_time`):
#: each accepted day makes a partition, and a vehicle's broken clock must not make thousands.
MAX_FUTURE = dt.timedelta(days=1)
#: Without a retention setting, batches older than this are quarantined (`too_old`) for the same reason.
MAX_AGE_WITHOUT_RETENTION = dt.timedelta(days=3650)

_UTC = dt.timezone.utc


class FleetDatabaseError(UserError):
    """The database cannot be reached or refused what `ingest` asked (one line, with the URI's host)."""


@dataclass
class Verified:
    """A message that verified, ready to store; `mid`/`qos` let the worker acknowledge it later."""

    topic: str
    message: bytes
    payload: Payload
    kid: bytes
    received_at: float
    mid: int = 0
    qos: int = 1


@dataclass
class Quarantined:
    """A message that must not enter the data: why, and its bytes."""

    topic: str
    message: bytes
    kind: str
    reason: str
    received_at: float
    mid: int = 0
    qos: int = 1


@dataclass
class StoreResult:
    """What one `store()` call did."""

    stored: int = 0
    samples: int = 0
    duplicates: int = 0
    quarantined: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyRecord:
    """One row of the key registry."""

    kid: bytes
    vehicle: str
    public_key: Ed25519PublicKey
    valid_from: dt.datetime
    valid_until: dt.datetime | None
    revoked_at: dt.datetime | None
    revoke_reason: str | None

    def usable_at(self, moment: dt.datetime) -> bool:
        """True when the key may verify a message received at `moment`."""
        if self.revoked_at is not None and self.revoked_at <= moment:
            return False
        return self.valid_from <= moment and (self.valid_until is None or moment < self.valid_until)


def connect(uri: str, autocommit: bool = False) -> psycopg.Connection[Any]:
    """Open a connection; a one-line `FleetDatabaseError` when PostgreSQL cannot be reached."""
    try:
        return psycopg.connect(uri, autocommit=autocommit, connect_timeout=10)
    except psycopg.Error as exc:
        raise FleetDatabaseError(f"database {_shown(uri)}: {exc}") from exc


def _shown(uri: str) -> str:
    """The URI without a password."""
    if "password=" not in uri and "@" not in uri:
        return uri
    try:
        info = psycopg.conninfo.conninfo_to_dict(uri)
    except psycopg.Error:
        return "(unparsable URI)"
    info.pop("password", None)
    shown: str = psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items()})
    return shown


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Create or upgrade the schema; returns the schema version. Safe with several workers at once."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        cur.execute("SELECT to_regclass('fleet_meta')")
        row = cur.fetchone()
        version = 0
        if row and row[0] is not None:
            cur.execute("SELECT value FROM fleet_meta WHERE name = 'schema_version'")
            found = cur.fetchone()
            version = int(found[0]) if found else 0
        if version > len(MIGRATIONS):
            raise FleetDatabaseError(
                f"the database schema is version {version}, newer than this firmware-agent "
                f"({len(MIGRATIONS)}); upgrade firmware-agent"
            )
        for number in range(version, len(MIGRATIONS)):
            cur.execute(MIGRATIONS[number])  # our own constant SQL
            log.info("fleet schema migrated to version %d", number + 1)
        cur.execute(
            "INSERT INTO fleet_meta (name, value) VALUES ('schema_version', %s) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (str(len(MIGRATIONS)),),
        )
    return len(MIGRATIONS)


# --- settings -------------------------------------------------------------------------------------


def get_retention_days(conn: psycopg.Connection[Any]) -> int:
    """The retention setting in days (0: keep everything)."""
    row = conn.execute("SELECT value FROM fleet_meta WHERE name = 'retention_days'").fetchone()
    conn.commit()
    return int(row[0]) if row else 0


def set_retention_days(conn: psycopg.Connection[Any], days: int) -> None:
    """Store the retention setting (0: keep everything)."""
    if days < 0:
        raise UserError(f"retention {days} days: must be 0 (keep everything) or more")
    with conn.transaction():
        conn.execute(
            "INSERT INTO fleet_meta (name, value) VALUES ('retention_days', %s) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (str(days),),
        )


# --- key registry ---------------------------------------------------------------------------------


def add_key(
    conn: psycopg.Connection[Any],
    vehicle: str,
    public_key: Ed25519PublicKey,
    valid_from: dt.datetime | None = None,
    valid_until: dt.datetime | None = None,
) -> bytes:
    """Register `public_key` for `vehicle`; returns its kid. A kid of another vehicle is refused."""
    validate_vehicle_id(vehicle)
    kid = kid_of(public_key)
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with conn.transaction():
        row = conn.execute("SELECT vehicle, revoked_at FROM fleet_keys WHERE kid = %s", (kid,)).fetchone()
        if row is not None:
            if row[0] != vehicle:
                raise UserError(f"key {kid.hex()} is already registered for vehicle {row[0]}")
            if row[1] is not None:
                raise UserError(f"key {kid.hex()} of {vehicle} was revoked; a revoked key is never re-added")
            return kid
        conn.execute(
            "INSERT INTO fleet_keys (kid, vehicle, public_key, valid_from, valid_until) "
            "VALUES (%s, %s, %s, coalesce(%s, now()), %s)",
            (kid, vehicle, raw, valid_from, valid_until),
        )
    return kid


def revoke_key(conn: psycopg.Connection[Any], kid_hex: str, reason: str = "") -> str:
    """Revoke the key with this hex kid (or unique prefix); returns its vehicle. Takes effect at once for
    new workers and within the workers' key refresh interval for running ones."""
    prefix = kid_hex.strip().lower()
    try:
        bytes.fromhex(prefix if len(prefix) % 2 == 0 else prefix + "0")
    except ValueError as exc:
        raise UserError(f"kid {kid_hex!r} is not hexadecimal") from exc
    with conn.transaction():
        rows = conn.execute(
            "SELECT kid, vehicle FROM fleet_keys WHERE encode(kid, 'hex') LIKE %s", (prefix + "%",)
        ).fetchall()
        if not rows:
            raise UserError(f"no key with kid {kid_hex} in the registry")
        if len(rows) > 1:
            raise UserError(f"kid prefix {kid_hex} matches {len(rows)} keys; give more digits")
        conn.execute(
            "UPDATE fleet_keys SET revoked_at = coalesce(revoked_at, now()), revoke_reason = %s "
            "WHERE kid = %s",
            (reason or None, rows[0][0]),
        )
    return str(rows[0][1])


def load_keys(conn: psycopg.Connection[Any]) -> list[KeyRecord]:
    """Every key of the registry (usable or not)."""
    rows = conn.execute(
        "SELECT kid, vehicle, public_key, valid_from, valid_until, revoked_at, revoke_reason "
        "FROM fleet_keys ORDER BY vehicle, added_at"
    ).fetchall()
    conn.commit()
    return [
        KeyRecord(
            bytes(kid), vehicle, Ed25519PublicKey.from_public_bytes(bytes(raw)), since, until, revoked, why
        )
        for kid, vehicle, raw, since, until, revoked, why in rows
    ]


# --- the store --------------------------------------------------------------------------------------


def _jsonb(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, separators=(",", ":"))


def _max_series_span(conn: psycopg.Connection[Any]) -> float:
    """`fleet_meta.max_series_span_s`: no stored series spans more seconds from its t0."""
    row = conn.execute("SELECT value FROM fleet_meta WHERE name = 'max_series_span_s'").fetchone()
    conn.commit()
    return float(row[0]) if row else 0.0


def _series_arrays(values: Sequence[Any]) -> tuple[list[Any] | None, list[str | None] | None]:
    """`(nums, texts)` arrays for one signal: numbers as float8, value-table names as text."""
    kinds = set(map(type, values))
    if str not in kinds:
        return list(values), None
    if kinds == {str}:
        return None, list(values)
    nums = [None if type(v) is str else v for v in values]
    texts = [v if type(v) is str else None for v in values]
    return nums, texts


class FleetStore:
    """One worker's connection to the fleet database: dimension caches, partitions, group stores."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.conn = connect(uri)
        migrate(self.conn)
        self._vehicle_ids: dict[str, int] = {}
        self._signal_ids: dict[str, int] = {}
        self._partitions: set[dt.date] = set()
        self._max_span = _max_series_span(self.conn)
        self.retention_days = get_retention_days(self.conn)
        self.maintain()

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def reconnect(self) -> None:
        """Drop the connection and open a new one (after PostgreSQL restarted); raises while it is down."""
        with contextlib.suppress(psycopg.Error):
            self.conn.close()
        self.conn = psycopg.connect(self.uri, connect_timeout=5)

    # -- maintenance

    def maintain(self, now: dt.datetime | None = None) -> None:
        """Make the partitions of today and `PARTITIONS_AHEAD` days ahead; apply the retention setting."""
        today = (now or dt.datetime.now(_UTC)).date()
        self._ensure_partitions(today + dt.timedelta(days=n) for n in range(PARTITIONS_AHEAD + 1))
        if self.retention_days:
            self.drop_expired(today - dt.timedelta(days=self.retention_days))

    def drop_expired(self, oldest_kept: dt.date) -> int:
        """Drop the partitions of days before `oldest_kept` and the batches and events of those days."""
        with self.conn.transaction():
            names = [
                row[0]
                for row in self.conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'fleet_series'::regclass"
                ).fetchall()
            ]
            dropped = 0
            for name in names:
                day = day_of_partition(name)
                if day is not None and day < oldest_kept:
                    self.conn.execute(f"DROP TABLE IF EXISTS {name}")
                    self._partitions.discard(day)
                    dropped += 1
            limit = dt.datetime(oldest_kept.year, oldest_kept.month, oldest_kept.day, tzinfo=_UTC)
            self.conn.execute("DELETE FROM fleet_events WHERE time < %s", (limit,))
            self.conn.execute("DELETE FROM fleet_batches WHERE t0 < %s", (limit,))
        if dropped:
            log.info("retention: dropped %d day partitions before %s", dropped, oldest_kept)
        return dropped

    def _ensure_partitions(self, days: Iterable[dt.date]) -> None:
        missing = sorted(set(days) - self._partitions)
        if not missing:
            return
        with self.conn.transaction():
            for day in missing:
                try:
                    with self.conn.transaction():  # a savepoint: another worker may create it at once
                        self.conn.execute(partition_ddl(day))
                except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                    pass
        self._partitions.update(missing)

    def _ids(self, table: str, cache: dict[str, int], names: Iterable[str]) -> None:
        """Fill `cache` with the ids of `names`, inserting new ones (in a committed transaction of their
        own: an id must never come from a transaction that may still roll back)."""
        missing = sorted(set(names) - cache.keys())
        if not missing:
            return
        with self.conn.transaction():
            self.conn.execute(
                f"INSERT INTO {table} (name) SELECT unnest(%s::text[]) ON CONFLICT (name) DO NOTHING",
                (missing,),
            )
            rows = self.conn.execute(
                f"SELECT name, id FROM {table} WHERE name = ANY(%s)",
                (missing,),
            ).fetchall()
        cache.update(rows)

    # -- time window

    def time_problem(self, payload: Payload, now: float) -> tuple[str, str] | None:
        """`(kind, reason)` when the batch's t0 lies outside what this store accepts, else None."""
        if payload.t0 > now + MAX_FUTURE.total_seconds():
            return (
                "future_time",
                f"t0 {payload.t0:.0f} is more than {MAX_FUTURE} ahead of the receiver's clock",
            )
        oldest = dt.timedelta(days=self.retention_days) if self.retention_days else MAX_AGE_WITHOUT_RETENTION
        if payload.t0 < now - oldest.total_seconds():
            return "too_old", f"t0 {payload.t0:.0f} is older than the retention of {oldest.days} days"
        return None

    # -- storing

    def store(self, verified: Sequence[Verified], quarantined: Sequence[Quarantined]) -> StoreResult:
        """Store a group in one transaction; returns after the commit. Raises `psycopg.Error` on failure
        (nothing of the group is then stored; the caller retries or stores message by message)."""
        result = StoreResult()
        self._ids("fleet_vehicles", self._vehicle_ids, (v.payload.vehicle for v in verified))
        self._ids("fleet_signals", self._signal_ids, (n for v in verified for n in v.payload.signals))
        self._ensure_partitions(dt.datetime.fromtimestamp(v.payload.t0, _UTC).date() for v in verified)
        rejected = list(quarantined)
        span = self._max_span
        with self.conn.transaction(), self.conn.cursor() as cur:
            stored = self._insert_batches(cur, verified, rejected, result)
            if stored:
                span = self._copy_series(cur, stored, result)
                self._copy_events(cur, stored)
                if span > self._max_span:
                    # in this transaction: no reader sees a series longer than the span it prunes with
                    cur.execute(
                        "UPDATE fleet_meta SET value = greatest(value::float8, %s)::text "
                        "WHERE name = 'max_series_span_s'",
                        (span,),
                    )
            if rejected:
                cur.executemany(
                    "INSERT INTO fleet_quarantine (received_at, topic, kind, reason, message) "
                    "VALUES (to_timestamp(%s), %s, %s, %s, %s)",
                    [
                        (
                            q.received_at,
                            q.topic.replace("\0", ""),
                            q.kind,
                            q.reason.replace("\0", "\\0"),
                            q.message,
                        )
                        for q in rejected
                    ],
                )
        self._max_span = max(self._max_span, span)
        result.stored = len(stored)
        result.quarantined = len(rejected)
        for q in rejected:
            result.kinds[q.kind] = result.kinds.get(q.kind, 0) + 1
        return result

    def _insert_batches(
        self,
        cur: psycopg.Cursor[Any],
        verified: Sequence[Verified],
        rejected: list[Quarantined],
        result: StoreResult,
    ) -> list[Verified]:
        """Insert the batch rows (ON CONFLICT DO NOTHING); return the batches that are new."""
        rows = []
        seen: dict[tuple[int, int], Verified] = {}
        unique: list[Verified] = []
        for item in verified:
            p = item.payload
            key = (self._vehicle_ids[p.vehicle], p.seq)
            if key in seen:  # the same batch twice in one group (a re-delivery right behind the original)
                self._classify_existing(item, hashlib.sha256(seen[key].message).digest(), rejected, result)
                continue
            seen[key] = item
            unique.append(item)
            rows.append(
                (
                    key[0],
                    p.seq,
                    p.t0,
                    p.campaign,
                    _jsonb(p.driver),
                    _jsonb(p.counters),
                    item.received_at,
                    item.kid,
                    p.sample_count(),
                    len(item.message),
                    hashlib.sha256(item.message).digest(),
                )
            )
        if not rows:
            return []
        cur.execute(
            "INSERT INTO fleet_batches (vehicle_id, seq, t0, campaign, driver, counters, received_at, kid, "
            "samples, message_bytes, digest) "
            "SELECT v, s, to_timestamp(t), c, d, n, to_timestamp(r), k, x, b, g FROM unnest("
            "%s::int[], %s::int8[], %s::float8[], %s::text[], %s::jsonb[], %s::jsonb[], %s::float8[], "
            "%s::bytea[], %s::int[], %s::int[], %s::bytea[]) AS u(v, s, t, c, d, n, r, k, x, b, g) "
            "ON CONFLICT (vehicle_id, seq) DO NOTHING RETURNING vehicle_id, seq",
            [list(column) for column in zip(*rows, strict=True)],
        )
        inserted = {(int(v), int(s)) for v, s in cur.fetchall()}
        fresh: list[tuple[tuple[int, int], Verified]] = []
        existing: list[tuple[tuple[int, int], Verified]] = []
        for item in unique:
            key = (self._vehicle_ids[item.payload.vehicle], item.payload.seq)
            (fresh if key in inserted else existing).append((key, item))
        if existing:
            cur.execute(
                "SELECT vehicle_id, seq, digest FROM fleet_batches WHERE (vehicle_id, seq) IN "
                "(SELECT * FROM unnest(%s::int[], %s::int8[]))",
                ([k[0] for k, _ in existing], [k[1] for k, _ in existing]),
            )
            digests = {(int(v), int(s)): bytes(d) for v, s, d in cur.fetchall()}
            for key, item in existing:
                self._classify_existing(item, digests.get(key, b""), rejected, result)
        return [item for _, item in fresh]

    @staticmethod
    def _classify_existing(
        item: Verified, stored_digest: bytes, rejected: list[Quarantined], result: StoreResult
    ) -> None:
        if hashlib.sha256(item.message).digest() == stored_digest:
            result.duplicates += 1
            return
        rejected.append(
            Quarantined(
                item.topic,
                item.message,
                "replay",
                f"seq {item.payload.seq} of {item.payload.vehicle} is already stored with other content",
                item.received_at,
                item.mid,
                item.qos,
            )
        )

    def _copy_series(
        self, cur: psycopg.Cursor[Any], stored: Sequence[Verified], result: StoreResult
    ) -> float:
        """COPY the series of `stored`; returns a bound on their spans (whole seconds after t0, above)."""
        span = 0.0
        with cur.copy(
            "COPY fleet_series (vehicle_id, seq, signal_id, t0, times, nums, texts) "
            "FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int4", "int8", "int4", "timestamptz", "float8[]", "float8[]", "text[]"])
            for item in stored:
                p = item.payload
                vehicle_id = self._vehicle_ids[p.vehicle]
                t0 = dt.datetime.fromtimestamp(p.t0, _UTC)
                for name, (times, values) in p.signals.items():
                    if not times:
                        continue
                    nums, texts = _series_arrays(values)
                    if nums is not None and any(type(v) is int for v in nums):
                        nums = [None if v is None else float(v) for v in nums]
                    copy.write_row((vehicle_id, p.seq, self._signal_ids[name], t0, times, nums, texts))
                    result.samples += len(times)
                    span = max(span, math.floor(max(times) - p.t0) + 1.0)  # + 1: t0 is kept to the µs
        return span

    def _copy_events(self, cur: psycopg.Cursor[Any], stored: Sequence[Verified]) -> None:
        rows = [
            (
                self._vehicle_ids[item.payload.vehicle],
                item.payload.seq,
                dt.datetime.fromtimestamp(event.timestamp, _UTC),
                event.kind,
                _jsonb(event.detail or {}),
            )
            for item in stored
            for event in item.payload.events
        ]
        if not rows:
            return
        with cur.copy("COPY fleet_events (vehicle_id, seq, time, kind, detail) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def wait_for_database(uri: str, timeout: float) -> None:
    """Return once `uri` accepts connections, or raise `FleetDatabaseError` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(uri, connect_timeout=2).close()
            return
        except psycopg.Error as exc:
            if time.monotonic() > deadline:
                raise FleetDatabaseError(f"database {_shown(uri)}: {exc}") from exc
            time.sleep(0.2)
