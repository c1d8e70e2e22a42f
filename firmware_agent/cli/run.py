"""`firmware-agent run`: the in-vehicle daemon (sources → decode → collect → sign → outbox → MQTT)."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware_agent.service.agent import Agent


def add_subparser(subparsers: Any) -> None:
    """Register `run` and its flags (every flag overrides the configuration file)."""
    parser = subparsers.add_parser(
        "run",
        help="run the telemetry agent",
        description="Read the vehicle's buses, collect what the campaigns ask for, sign it and upload it "
        "over MQTT. Flags override the configuration file (see docs/configuration.md).",
    )
    parser.add_argument("--config", metavar="FILE", type=Path, help="TOML configuration file")
    parser.add_argument(
        "--source",
        metavar="SPEC",
        action="append",
        default=[],
        help="[BUS=]KIND:ARG[?opts]: socketcan:can0, slcan:/dev/ttyACM0@500000, virtual:NAME, "
        "replay:FILE[?speed=X&loop=N], sim:driver=..,scenario=..,seed=..,duration=.. (repeatable)",
    )
    parser.add_argument(
        "--dbc",
        metavar="[CHANNEL=]FILE",
        action="append",
        default=[],
        help="database for every channel or for one (repeatable; default: the vehicle's four DBCs)",
    )
    parser.add_argument("--collect", metavar="all|FILE", help="campaign file, or 'all' (the default)")
    parser.add_argument("--broker", metavar="URL", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    parser.add_argument("--vehicle-id", metavar="ID", help="this vehicle's id (letters, digits, - _ .)")
    parser.add_argument("--signing-key", metavar="PEM", help="Ed25519 PKCS#8 PEM file, or a keyring folder")
    parser.add_argument("--state-dir", metavar="DIR", help="where the outbox and health file live")
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log events at this level and above on stderr (default info; never one line per frame)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (journald adds time and unit) or json, one object per line for log shippers",
    )
    parser.add_argument(
        "--exit-at-end",
        action="store_true",
        help="with replay/sim sources: exit 0 once the data is read and every batch is acknowledged",
    )
    parser.set_defaults(func=_do_run)


def _do_run(args: argparse.Namespace) -> int:
    from firmware_agent.decode.startup import import_python_can

    # `import can` imports asammdf (and pandas, ~100 MB of RSS) whenever the mf4 extra is installed; the
    # daemon needs it only to replay MF4 captures, so python-can is imported without it. A replay whose
    # content turns out to be MF4 (firmware_agent/io detects formats by content, whatever the file name) loads
    # it then, as `decode` does.
    import_python_can(need_mf4=False)
    from firmware_agent.service.agent import Agent
    from firmware_agent.service.config import Overrides, load_config
    from firmware_agent.service.lifecycle import ServiceLink, ensure_signing_key
    from firmware_agent.service.logs import setup_logging
    from firmware_agent.service.notify import Notifier

    setup_logging(args.log_level, args.log_format)
    notifier = Notifier.from_environment()
    overrides = Overrides(
        sources=args.source,
        dbc=args.dbc,
        collect=args.collect,
        broker=args.broker,
        vehicle_id=args.vehicle_id,
        signing_key=args.signing_key,
        state_dir=args.state_dir,
        exit_at_end=args.exit_at_end,
    )
    config = load_config(args.config, overrides)
    ensure_signing_key(config)
    link = ServiceLink(notifier, args.config, overrides)
    agent = Agent(config, on_ready=link.on_ready, on_heartbeat=link.on_heartbeat)
    link.attach(agent)
    stop = threading.Event()
    link.install_signals(stop)
    status = agent.run(stop)
    print(_run_summary(agent), file=sys.stderr)
    return status


def _run_summary(agent: Agent) -> str:
    """One line for the operator when the agent stops: what came in, what went out, what was lost."""
    counts = agent.counters()
    frames = sum(v for k, v in counts.items() if k.startswith("bus.") and k.endswith(".frames_in"))
    dropped = sum(v for k, v in counts.items() if k.startswith("bus.") and k.endswith(".frames_dropped"))
    e2e_dropped = counts.get("e2e.e2e_dropped", 0)
    return (
        f"firmware-agent run: {frames:,} frames from {len(agent.readers)} source(s) ({dropped:,} dropped, "
        f"{e2e_dropped:,} failed E2E), {counts.get('decode.samples', 0):,} samples decoded, "
        f"{counts.get('collect.samples_collected', 0):,} collected; {agent.batches_committed:,} batches "
        f"committed, {counts.get('uploader.acknowledged', 0):,} acknowledged, "
        f"{counts.get('uploader.dead_lettered', 0):,} dead-lettered"
    )
