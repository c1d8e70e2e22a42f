"""`firmware-agent ingest`: the fleet receiver (verified telemetry into PostgreSQL), its key registry, and
the service-due list."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from firmware_agent.errors import UserError


def add_subparser(subparsers: Any) -> None:
    """Register `ingest` and its subcommands `keys` and `service-due`."""
    parser = subparsers.add_parser(
        "ingest",
        help="the fleet receiver: verified telemetry from a broker into PostgreSQL",
        description="Run one ingest worker: subscribe to $share/GROUP/vehicles/+/telemetry (MQTT 5 shared "
        "subscription, QoS 1, persistent session), verify every batch against the key registry in the "
        "database, store it in one transaction and acknowledge it only after the commit. Messages that fail "
        "go to the quarantine table. Stops on SIGTERM or Ctrl-C after storing what it holds. "
        "Subcommands: `keys` (the registry), `service-due` (vehicles due for service). "
        "Needs the `fleet` extra.",
    )
    _add_db(parser, required=False)
    parser.add_argument("--broker", metavar="URL", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    parser.add_argument(
        "--share",
        metavar="GROUP",
        default="fleet-ingest",
        help="shared subscription group (workers of one group split the traffic; default: %(default)s)",
    )
    parser.add_argument(
        "--client-id",
        metavar="ID",
        help="MQTT client id; the broker keeps its session "
        "(default: ingest-HOSTNAME-GROUP); give each worker its own",
    )
    parser.add_argument(
        "--session-expiry",
        type=int,
        default=86400,
        metavar="S",
        help="seconds the broker keeps the session while the worker is away (default: %(default)s)",
    )
    parser.add_argument(
        "--receive-maximum",
        type=int,
        default=1000,
        metavar="N",
        help="unacknowledged messages the broker may send at once (default: %(default)s)",
    )
    parser.add_argument(
        "--max-group",
        type=int,
        default=500,
        metavar="N",
        help="messages stored per transaction at most (default: %(default)s)",
    )
    parser.add_argument(
        "--retention-days",
        type=int,
        metavar="DAYS",
        help="set the retention (0 = keep everything; stored in the database for all workers)",
    )
    parser.add_argument("--ca", metavar="FILE", type=Path, help="CA certificate of the broker (mqtts)")
    parser.add_argument("--cert", metavar="FILE", type=Path, help="client certificate (mqtts)")
    parser.add_argument("--key", metavar="FILE", type=Path, help="client certificate's private key (mqtts)")
    parser.add_argument(
        "--stats-every",
        type=float,
        default=10.0,
        metavar="S",
        help="log the counters every S seconds (0: only at the end)",
    )
    parser.set_defaults(func=_do_ingest)

    commands = parser.add_subparsers(title="subcommands", dest="ingest_command", metavar="SUBCOMMAND")
    keys = commands.add_parser("keys", help="the key registry: add, list, revoke")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    add = key_commands.add_parser("add", help="register a vehicle's public key")
    _add_db(add)
    add.add_argument("vehicle", metavar="VEHICLE")
    add.add_argument("public_key", metavar="PUBLIC_PEM", type=Path, help="public (or private) key PEM file")
    add.add_argument("--valid-from", metavar="ISO_TIME", type=_timestamp, help="default: now")
    add.add_argument("--valid-until", metavar="ISO_TIME", type=_timestamp, help="default: until revoked")
    add.set_defaults(func=_do_keys_add)
    listing = key_commands.add_parser("list", help="list the registry")
    _add_db(listing)
    listing.add_argument("--vehicle", metavar="VEHICLE", help="only this vehicle's keys")
    listing.set_defaults(func=_do_keys_list)
    revoke = key_commands.add_parser("revoke", help="revoke a key: its batches are refused from now on")
    _add_db(revoke)
    revoke.add_argument("kid", metavar="KID", help="key id in hex (a unique prefix will do)")
    revoke.add_argument("--reason", default="", help="kept in the registry and in quarantine reasons")
    revoke.set_defaults(func=_do_keys_revoke)

    due = commands.add_parser("service-due", help="vehicles due for service (CSV, or JSON with --json)")
    _add_db(due)
    due.add_argument(
        "--within",
        type=int,
        default=30,
        metavar="DAYS",
        help="also list parts predicted to reach their limit within DAYS (default: %(default)s)",
    )
    due.add_argument("--json", action="store_true", help="a JSON array instead of CSV")
    due.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here instead of stdout")
    due.set_defaults(func=_do_service_due)


def _add_db(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--db",
        metavar="URI",
        required=required,
        help="libpq connection URI, e.g. postgresql:///fleet?host=/run/postgresql",
    )


def _timestamp(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise UserError("the fleet commands need psycopg: pip install 'firmware-agent[fleet]'") from exc


def _connect(uri: str) -> Any:
    _require_psycopg()
    from firmware_agent.fleet.store import connect, migrate

    conn = connect(uri)
    migrate(conn)
    return conn


def _do_ingest(args: argparse.Namespace) -> int:
    if args.db is None or args.broker is None:
        raise UserError("ingest needs --broker URL and --db URI (or a subcommand: keys, service-due)")
    for name in ("receive_maximum", "max_group", "session_expiry"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    _require_psycopg()
    from firmware_agent.fleet.ingest import IngestSettings, IngestWorker, shared_filter
    from firmware_agent.fleet.store import set_retention_days
    from firmware_agent.telemetry.broker import BrokerConfig

    shared_filter(args.share)  # a bad group name is an error before anything connects
    if args.retention_days is not None:
        conn = _connect(args.db)
        set_retention_days(conn, args.retention_days)
        conn.close()
    logging.basicConfig(level=logging.INFO, format="firmware-agent ingest: %(message)s", stream=sys.stderr)
    broker = BrokerConfig(args.broker, ca_file=args.ca, cert_file=args.cert, key_file=args.key)
    settings = IngestSettings(
        group=args.share,
        client_id=args.client_id or f"ingest-{socket.gethostname()}-{args.share}",
        session_expiry=args.session_expiry,
        receive_maximum=args.receive_maximum,
        max_group=args.max_group,
    )
    worker = IngestWorker(broker, args.db, settings)
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    counters = worker.run(stop, report_every=args.stats_every)
    print(f"firmware-agent ingest: {counters.line()}", file=sys.stderr)
    return 0


def _do_keys_add(args: argparse.Namespace) -> int:
    from firmware_agent.fleet.store import add_key
    from firmware_agent.telemetry.keys import load_public_key

    public = load_public_key(args.public_key)
    conn = _connect(args.db)
    try:
        kid = add_key(conn, args.vehicle, public, args.valid_from, args.valid_until)
    finally:
        conn.close()
    print(f"{args.vehicle}\t{kid.hex()}")
    return 0


def _do_keys_list(args: argparse.Namespace) -> int:
    from firmware_agent.fleet.store import load_keys

    conn = _connect(args.db)
    try:
        records = load_keys(conn)
    finally:
        conn.close()
    now = dt.datetime.now(dt.timezone.utc)
    print("vehicle\tkid\tstate\tvalid_from\tvalid_until\trevoked_at")
    for r in records:
        if args.vehicle and r.vehicle != args.vehicle:
            continue
        state = "usable" if r.usable_at(now) else ("revoked" if r.revoked_at else "not-valid-now")
        print(
            f"{r.vehicle}\t{r.kid.hex()}\t{state}\t{r.valid_from.isoformat()}\t"
            f"{r.valid_until.isoformat() if r.valid_until else '-'}\t"
            f"{r.revoked_at.isoformat() if r.revoked_at else '-'}"
        )
    return 0


def _do_keys_revoke(args: argparse.Namespace) -> int:
    from firmware_agent.fleet.store import revoke_key

    conn = _connect(args.db)
    try:
        vehicle = revoke_key(conn, args.kid, args.reason)
    finally:
        conn.close()
    print(f"revoked {args.kid} of {vehicle}", file=sys.stderr)
    return 0


def _do_service_due(args: argparse.Namespace) -> int:
    from firmware_agent.fleet.service import service_due, write_csv, write_json

    if args.within < 0:
        raise UserError(f"--within {args.within}: must be 0 or more days")
    conn = _connect(args.db)
    try:
        rows = service_due(conn, args.within)
    finally:
        conn.close()
    if args.output is not None:
        try:
            stream = args.output.open("w", encoding="utf-8", newline="")
        except OSError as exc:
            raise UserError(f"{args.output}: cannot open for writing: {exc.strerror}") from exc
    else:
        stream = sys.stdout
    try:
        (write_json if args.json else write_csv)(rows, stream)
    finally:
        if stream is not sys.stdout:
            stream.close()
    return 0
