"""`firmware-agent signals [--dbc [CHANNEL=]FILE ...] [--json]`: every message and signal in use."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_subparser(subparsers: Any) -> None:
    """Register `signals`."""
    parser = subparsers.add_parser(
        "signals",
        help="list messages and signals: VSS path, unit, type, range, value table, cycle time",
        description=(
            "Every message and signal of the databases (default: the vehicle's own DBCs with their VSS "
            "names). --json prints the schema a backend needs to read telemetry (docs/telemetry-format.md)."
        ),
    )
    parser.add_argument("--dbc", action="append", metavar="[CHANNEL=]FILE", help="databases, as for decode")
    parser.add_argument("--vss", metavar="FILE", help="DBC-to-VSS mapping (default: the vehicle's vss.toml)")
    parser.add_argument("--json", action="store_true", help="the schema as JSON")
    parser.set_defaults(func=_do_signals)


def _do_signals(args: argparse.Namespace) -> int:
    from pathlib import Path

    from firmware_agent.cli.decode import load_catalog
    from firmware_agent.decode.schema import describe_messages, schema_json
    from firmware_agent.vss import VssMap

    catalog = load_catalog(args.dbc)
    vss_path = Path(args.vss) if args.vss else None
    if vss_path is None and not args.dbc:
        from firmware_agent.vehicle import default_dbc_dir

        vss_path = default_dbc_dir() / "vss.toml"
    vss = VssMap.load(vss_path).to_vss if vss_path is not None else {}
    messages = describe_messages(catalog.all_messages(), vss)
    if args.json:
        sys.stdout.write(schema_json(messages))
        return 0
    for message in messages:
        cycle = f", every {message.cycle_time_ms} ms" if message.cycle_time_ms else ""
        channel = message.channel if message.channel is not None else "*"
        print(f"{channel} 0x{message.frame_id:X} {message.name} ({message.length} bytes{cycle})")
        for signal in message.signals:
            span = ""
            if signal.minimum is not None or signal.maximum is not None:
                span = f" [{_number(signal.minimum)}..{_number(signal.maximum)}]"
            unit = f" {signal.unit}" if signal.unit else ""
            vss_text = f"  -> {signal.vss}" if signal.vss else ""
            if signal.vss_datatype:
                vss_text += f" (VSS type {signal.vss_datatype}; carried as the label)"
            print(f"  {signal.name}: {signal.datatype}{unit}{span}{vss_text}")
            if signal.choices:
                print("    " + ", ".join(f"{number}={name}" for number, name in signal.choices.items()))
    return 0


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"
