"""The fleet database: tables designed for ingest speed, and the stable views users query.

Layout (PostgreSQL 12+; documented with example queries in `docs/fleet.md`):

- `fleet_vehicles`, `fleet_signals`: dimension tables; every other table stores small integer ids.
- `fleet_batches`: one row per stored batch, unique `(vehicle_id, seq)`: the idempotence key. `digest`
  (SHA-256 of the signed message) tells a QoS 1 re-delivery (same bytes) from a replay (other bytes).
- `fleet_series`: one row per (batch, signal) with the times (`float8[]`, epoch seconds, as on the wire)
  and values (`float8[]` for numbers, `text[]` for names) as arrays, range-partitioned by the batch's
  `t0` into one partition per UTC day. One row carries all of a signal's samples of a batch, so an
  insert is one row per signal instead of one per sample (a `--collect all` batch has ~100 signals and
  thousands of samples) and the per-row overhead (~50 bytes) is shared; big rows are TOAST-compressed.
  This is the layout TimescaleDB's compression converts to; we write it directly.
- `fleet_events`, `fleet_keys` (the key registry), `fleet_quarantine` (what failed, the reason and the
  bytes), `fleet_meta` (schema version, retention), `fleet_service_limits` (proactive service as data).

Stable interface (views; their columns never change meaning): `telemetry_samples`, `telemetry_batches`,
`telemetry_events`, `telemetry_gaps`, and the service views `service_daily`, `service_trends`,
`service_due_candidates`; and `telemetry_samples_between(from, to)`, `telemetry_samples`'s rows of a time
range read from the partitions that can hold them.
"""

from __future__ import annotations

import datetime as dt

#: Advisory lock id held while migrating, so that two workers starting together migrate once.
MIGRATION_LOCK = 0x466C656574  # "Fleet"

_V1 = """
CREATE TABLE IF NOT EXISTS fleet_meta (name text PRIMARY KEY, value text NOT NULL);

CREATE TABLE fleet_vehicles (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);
CREATE TABLE fleet_signals (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);
CREATE TABLE fleet_keys (
    kid bytea PRIMARY KEY,
    vehicle text NOT NULL,
    public_key bytea NOT NULL,
    valid_from timestamptz NOT NULL DEFAULT now(),
    valid_until timestamptz,
    added_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    revoke_reason text
);
CREATE INDEX fleet_keys_vehicle ON fleet_keys (vehicle);

CREATE TABLE fleet_batches (
    vehicle_id integer NOT NULL,
    seq bigint NOT NULL,
    t0 timestamptz NOT NULL,
    campaign text,
    driver jsonb,
    counters jsonb,
    received_at timestamptz NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    kid bytea NOT NULL,
    samples integer NOT NULL,
    message_bytes integer NOT NULL,
    digest bytea NOT NULL,
    PRIMARY KEY (vehicle_id, seq)
);
CREATE INDEX fleet_batches_t0 ON fleet_batches (t0);

CREATE TABLE fleet_series (
    vehicle_id integer NOT NULL,
    seq bigint NOT NULL,
    signal_id integer NOT NULL,
    t0 timestamptz NOT NULL,
    times float8[] NOT NULL,
    nums float8[],
    texts text[]
) PARTITION BY RANGE (t0);
CREATE INDEX fleet_series_lookup ON fleet_series (signal_id, vehicle_id, t0);

CREATE TABLE fleet_events (
    vehicle_id integer NOT NULL,
    seq bigint NOT NULL,
    time timestamptz NOT NULL,
    kind text NOT NULL,
    detail jsonb NOT NULL
);
CREATE INDEX fleet_events_vehicle ON fleet_events (vehicle_id, seq);

CREATE TABLE fleet_quarantine (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic text NOT NULL,
    kind text NOT NULL,
    reason text NOT NULL,
    message bytea NOT NULL
);

CREATE VIEW telemetry_samples AS
SELECT v.name AS vehicle, s.seq, g.name AS signal, to_timestamp(u.t) AS time, u.value_num, u.value_text
FROM fleet_series s
JOIN fleet_vehicles v ON v.id = s.vehicle_id
JOIN fleet_signals g ON g.id = s.signal_id
CROSS JOIN LATERAL unnest(s.times, s.nums, s.texts) AS u(t, value_num, value_text);

CREATE VIEW telemetry_batches AS
SELECT v.name AS vehicle, b.seq, b.t0, b.campaign, b.driver, b.counters, b.received_at
FROM fleet_batches b JOIN fleet_vehicles v ON v.id = b.vehicle_id;

CREATE VIEW telemetry_events AS
SELECT v.name AS vehicle, e.seq, e.time, e.kind, e.detail
FROM fleet_events e JOIN fleet_vehicles v ON v.id = e.vehicle_id;

CREATE VIEW telemetry_gaps AS
SELECT vehicle, seq + 1 AS from_seq, next_seq - 1 AS to_seq
FROM (
    SELECT v.name AS vehicle, b.seq, lead(b.seq) OVER (PARTITION BY b.vehicle_id ORDER BY b.seq) AS next_seq
    FROM fleet_batches b JOIN fleet_vehicles v ON v.id = b.vehicle_id
) w
WHERE next_seq > seq + 1;

-- What `campaign publish` sent, so that a serial is never reused (the car ignores or rejects it).
CREATE TABLE fleet_campaigns (
    vehicle text NOT NULL,
    serial bigint NOT NULL,
    kid bytea NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fleet_campaigns_vehicle ON fleet_campaigns (vehicle, serial);

-- Proactive service: which signal tells the state of which part, its limit, and which way it wears.
CREATE TABLE fleet_service_limits (
    part text NOT NULL,
    signal text NOT NULL PRIMARY KEY,
    limit_value float8 NOT NULL,
    direction text NOT NULL CHECK (direction IN ('rising', 'falling')),
    unit text NOT NULL DEFAULT '',
    lookback_days integer NOT NULL DEFAULT 90
);
INSERT INTO fleet_service_limits (part, signal, limit_value, direction, unit) VALUES
    ('brake pad front left', 'Vehicle.Chassis.Axle.Row1.Wheel.Left.Brake.PadWear', 80, 'rising', '%'),
    ('brake pad front right', 'Vehicle.Chassis.Axle.Row1.Wheel.Right.Brake.PadWear', 80, 'rising', '%'),
    ('brake pad rear left', 'Vehicle.Chassis.Axle.Row2.Wheel.Left.Brake.PadWear', 80, 'rising', '%'),
    ('brake pad rear right', 'Vehicle.Chassis.Axle.Row2.Wheel.Right.Brake.PadWear', 80, 'rising', '%'),
    ('HV battery', 'Vehicle.Powertrain.TractionBattery.StateOfHealth', 80, 'falling', '%');

-- One value per vehicle, signal and UTC day: the daily mean (the sensors are noisy, days are not).
CREATE VIEW service_daily AS
SELECT s.vehicle, l.part, s.signal, l.limit_value, l.direction, l.unit,
       date_trunc('day', s.time AT TIME ZONE 'UTC') AS day, avg(s.value_num) AS value, count(*) AS samples
FROM fleet_service_limits l
JOIN telemetry_samples s ON s.signal = l.signal
WHERE s.value_num IS NOT NULL AND s.time > now() - make_interval(days => l.lookback_days)
GROUP BY 1, 2, 3, 4, 5, 6, 7;

-- Least-squares line through the daily means: slope per day, and the day it crosses the limit.
CREATE VIEW service_trends AS
WITH fit AS (
    SELECT vehicle, part, signal, limit_value, direction, unit,
           count(*) AS days, min(day) AS first_day, max(day) AS last_day,
           (array_agg(value ORDER BY day DESC))[1] AS last_value,
           regr_slope(value, extract(epoch FROM day)::float8 / 86400) AS per_day,
           regr_intercept(value, extract(epoch FROM day)::float8 / 86400) AS intercept,
           regr_r2(value, extract(epoch FROM day)::float8 / 86400) AS r2
    FROM service_daily
    GROUP BY 1, 2, 3, 4, 5, 6
)
SELECT vehicle, part, signal, limit_value, direction, unit, days, first_day, last_day, last_value, per_day,
       r2,
       CASE WHEN days >= 2
                 AND ((direction = 'rising' AND per_day > 0) OR (direction = 'falling' AND per_day < 0))
            THEN (timestamp '1970-01-01'
                  + make_interval(secs => (limit_value - intercept) / per_day * 86400))::date
       END AS predicted_date,
       CASE WHEN direction = 'rising' THEN last_value >= limit_value ELSE last_value <= limit_value END
           AS limit_reached
FROM fit;
"""

# Version 2: `telemetry_samples_between(from, to)`, the samples of a time range read from the partitions
# that can hold them. A series is stored in the partition of its batch's `t0` (its earliest sample) and
# spans at most `fleet_meta.max_series_span_s` seconds (raised by ingest, in the transaction that stores a
# longer one), so samples in [from, to) can only be in series with from - span <= t0 < to: a range on the
# partition key, which PostgreSQL prunes on (the span at execution start, the rest when planning).
_V2 = """
INSERT INTO fleet_meta (name, value)
SELECT 'max_series_span_s', coalesce(ceil(max(span)), 0)::text
FROM (SELECT (SELECT max(t) FROM unnest(times) AS t) - extract(epoch FROM t0)::float8 AS span
      FROM fleet_series) AS spans
ON CONFLICT (name) DO NOTHING;

CREATE FUNCTION telemetry_samples_between(t_from timestamptz, t_to timestamptz)
RETURNS TABLE (vehicle text, seq bigint, signal text, "time" timestamptz, value_num float8, value_text text)
LANGUAGE sql STABLE AS $$
SELECT v.name, s.seq, g.name, to_timestamp(u.t), u.value_num, u.value_text
FROM fleet_series s
JOIN fleet_vehicles v ON v.id = s.vehicle_id
JOIN fleet_signals g ON g.id = s.signal_id
CROSS JOIN LATERAL unnest(s.times, s.nums, s.texts) AS u(t, value_num, value_text)
WHERE s.t0 < t_to
  AND s.t0 >= t_from - make_interval(
      secs => (SELECT value::float8 FROM fleet_meta WHERE name = 'max_series_span_s'))
  AND u.t >= extract(epoch FROM t_from)::float8 AND u.t < extract(epoch FROM t_to)::float8
$$;
"""

#: Migrations in order; `fleet_meta.schema_version` says how many are applied.
MIGRATIONS: tuple[str, ...] = (_V1, _V2)

#: Days of partitions made ahead of today (and kept made by the worker every hour).
PARTITIONS_AHEAD = 3


def partition_name(day: dt.date) -> str:
    """The name of the `fleet_series` partition holding batches whose `t0` falls on `day` (UTC)."""
    return f"fleet_series_{day:%Y%m%d}"


def partition_ddl(day: dt.date) -> str:
    """`CREATE TABLE IF NOT EXISTS` for the partition of `day` (bounds are UTC midnights)."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(days=1)
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF fleet_series "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )


def day_of_partition(name: str) -> dt.date | None:
    """The day of a partition name made by `partition_name`, or None for any other name."""
    prefix = "fleet_series_"
    if not name.startswith(prefix):
        return None
    try:
        return dt.datetime.strptime(name[len(prefix) :], "%Y%m%d").date()
    except ValueError:
        return None
