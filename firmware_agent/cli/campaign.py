"""`firmware-agent campaign publish`: sign a campaign file and publish it, retained, to vehicles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from firmware_agent.errors import UserError


def add_subparser(subparsers: Any) -> None:
    """Register `campaign` and its `publish` action."""
    parser = subparsers.add_parser("campaign", help="publish signed campaign updates to vehicles")
    actions = parser.add_subparsers(dest="campaign_command", metavar="ACTION", required=True)
    publish = actions.add_parser(
        "publish",
        help="sign a campaign TOML file and publish it retained to vehicles/{id}/campaigns",
        description="Sign FILE (campaign TOML) with the backend key as update SERIAL for each vehicle's "
        "campaigns topic and publish it retained (QoS 1). The car applies a serial above the last it "
        "applied, ignores the same serial and rejects a lower one; with --db the serials published are "
        "recorded and a serial not above a vehicle's last one is refused.",
    )
    publish.add_argument("file", metavar="FILE", type=Path, help="campaign TOML file")
    publish.add_argument("--broker", metavar="URL", required=True)
    publish.add_argument("--key", metavar="BACKEND_PEM", type=Path, required=True, help="backend signing key")
    publish.add_argument("--serial", type=int, required=True, metavar="N", help="update serial (increasing)")
    who = publish.add_mutually_exclusive_group(required=True)
    who.add_argument("--vehicle", action="append", metavar="ID", help="a vehicle (repeatable)")
    who.add_argument(
        "--all", action="store_true", help="every vehicle with a usable key in the registry (needs --db)"
    )
    publish.add_argument("--db", metavar="URI", help="fleet database: records serials; needed by --all")
    publish.add_argument("--ca", metavar="FILE", type=Path, help="CA certificate of the broker (mqtts)")
    publish.add_argument("--cert", metavar="FILE", type=Path, help="client certificate (mqtts)")
    publish.add_argument("--tls-key", metavar="FILE", type=Path, help="client certificate's key (mqtts)")
    publish.set_defaults(func=_do_publish)


def _do_publish(args: argparse.Namespace) -> int:
    from firmware_agent.fleet.campaigns import check_campaign_text, publish_campaign
    from firmware_agent.telemetry.broker import BrokerConfig
    from firmware_agent.telemetry.keys import load_signing_key
    from firmware_agent.telemetry.topics import validate_vehicle_id

    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{args.file}: cannot read: {exc}") from exc
    check_campaign_text(text, str(args.file))
    key = load_signing_key(args.key)
    broker = BrokerConfig(args.broker, ca_file=args.ca, cert_file=args.cert, key_file=args.tls_key)
    conn = None
    if args.db:
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise UserError("--db needs psycopg: pip install 'firmware-agent[fleet]'") from exc
        from firmware_agent.fleet.store import connect, migrate

        conn = connect(args.db)
        migrate(conn)
    elif args.all:
        raise UserError("--all needs --db URI (the vehicles are those of the key registry)")
    try:
        if args.all:
            from firmware_agent.fleet.campaigns import registered_vehicles

            assert conn is not None  # --all without --db was refused above
            vehicles = registered_vehicles(conn)
            if not vehicles:
                raise UserError("--all: the key registry has no vehicle with a usable key")
        else:
            vehicles = [validate_vehicle_id(v) for v in dict.fromkeys(args.vehicle)]
        if conn is not None:
            from firmware_agent.fleet.campaigns import last_serials

            stale = {v: s for v, s in last_serials(conn, vehicles).items() if s >= args.serial}
            if stale:
                vehicle, last = next(iter(sorted(stale.items())))
                raise UserError(
                    f"--serial {args.serial}: {len(stale)} vehicle(s) already got serial {last} or higher "
                    f"(e.g. {vehicle}); the car would ignore or reject it; "
                    f"use --serial {max(stale.values()) + 1}"
                )
        result = publish_campaign(broker, key, args.serial, vehicles, text)
        if conn is not None:
            from firmware_agent.fleet.campaigns import record_published

            record_published(conn, vehicles, args.serial, result.kid)
    finally:
        if conn is not None:
            conn.close()
    print(
        f"campaign publish: serial {result.serial} to {result.vehicles} vehicle(s), signed by kid "
        f"{result.kid.hex()}",
        file=sys.stderr,
    )
    return 0
