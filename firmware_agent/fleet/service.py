"""Proactive service from the data: which vehicles are due, for which part, on what evidence.

The logic is SQL (`service_daily`, `service_trends` in `schema`, the limits in `fleet_service_limits`): a
least-squares line through each vehicle's daily means of a wear signal, and the date it crosses the part's
limit. This module only selects and formats what a CRM import takes (CSV with a header, or JSON).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import IO, Any

import psycopg

#: The columns of `service-due` output, in order (CSV header and JSON keys).
FIELDS = (
    "vehicle",
    "part",
    "signal",
    "status",
    "predicted_date",
    "last_value",
    "limit_value",
    "unit",
    "per_day",
    "days",
    "r2",
    "evidence",
)


@dataclass(frozen=True)
class ServiceDue:
    """One part of one vehicle that reached its limit or will within the horizon."""

    vehicle: str
    part: str
    signal: str
    status: str  # "due" (limit reached) or "soon" (predicted within the horizon)
    predicted_date: str | None
    last_value: float
    limit_value: float
    unit: str
    per_day: float | None
    days: int
    r2: float | None
    evidence: str


def service_due(
    conn: psycopg.Connection[Any], within_days: int, today: dt.date | None = None
) -> list[ServiceDue]:
    """Parts whose limit is reached, or predicted to be reached within `within_days` of `today`."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    horizon = today + dt.timedelta(days=within_days)
    rows = conn.execute(
        "SELECT vehicle, part, signal, limit_value, direction, unit, days, first_day, last_day, last_value, "
        "per_day, r2, predicted_date, limit_reached FROM service_trends "
        "WHERE limit_reached OR predicted_date <= %s ORDER BY coalesce(predicted_date, %s), vehicle, part",
        (horizon, today),
    ).fetchall()
    conn.commit()
    due = []
    for (
        vehicle,
        part,
        signal,
        limit,
        direction,
        unit,
        days,
        first,
        last,
        value,
        per_day,
        r2,
        predicted,
        reached,
    ) in rows:
        trend = (
            f"{per_day:+.3f} {unit}/day over {days} days ({first:%Y-%m-%d}..{last:%Y-%m-%d}, r² {r2:.2f})"
            if per_day is not None and r2 is not None
            else f"{days} day(s) of data, no trend yet"
        )
        beyond = "above" if direction == "rising" else "below"
        evidence = (
            f"{signal} {value:.1f} {unit} on {last:%Y-%m-%d} (limit {limit:g} {unit}, due {beyond}); {trend}"
        )
        due.append(
            ServiceDue(
                vehicle=vehicle,
                part=part,
                signal=signal,
                status="due" if reached else "soon",
                predicted_date=predicted.isoformat() if predicted else None,
                last_value=round(float(value), 3),
                limit_value=float(limit),
                unit=unit,
                per_day=None if per_day is None else round(float(per_day), 5),
                days=int(days),
                r2=None if r2 is None else round(float(r2), 4),
                evidence=evidence,
            )
        )
    return due


def write_csv(rows: list[ServiceDue], stream: IO[str]) -> None:
    """One header line, one row per due part (RFC 4180 quoting)."""
    writer = csv.DictWriter(stream, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))


def write_json(rows: list[ServiceDue], stream: IO[str]) -> None:
    """A JSON array of objects with the `FIELDS` keys."""
    json.dump([asdict(row) for row in rows], stream, indent=1)
    stream.write("\n")
