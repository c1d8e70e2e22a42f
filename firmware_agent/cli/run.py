"""`firmware-agent run`: the in-vehicle daemon (sources → decode → collect → sign → outbox → MQTT)."""

from __future__ import annotations

import argparse
import contextlib
import signal
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
        "--exit-at-end",
        action="store_true",
        help="with replay/sim sources: exit 0 once the data is read and every batch is acknowledged",
    )
    parser.set_defaults(func=_do_run)


def _needs_mf4(args: argparse.Namespace) -> bool:
    """Whether a replay source may read an MF4 file (the only format that needs asammdf)."""
    texts = list(args.source)
    if args.config is not None:
        with contextlib.suppress(OSError):  # load_config reports it
            texts.append(args.config.read_text(encoding="utf-8", errors="replace"))
    return any(".mf4" in text.lower() or ".mdf" in text.lower() for text in texts)


def _do_run(args: argparse.Namespace) -> int:
    if not _needs_mf4(args) and "can" not in sys.modules:
        # `import can` imports asammdf (and pandas, ~100 MB of RSS) whenever the mf4 extra is installed;
        # the daemon needs it only to replay MF4 captures. Marking it absent makes python-can skip it.
        sys.modules.setdefault("asammdf", None)  # type: ignore[arg-type]
    from firmware_agent.service.agent import Agent
    from firmware_agent.service.config import Overrides, load_config

    config = load_config(
        args.config,
        Overrides(
            sources=args.source,
            dbc=args.dbc,
            collect=args.collect,
            broker=args.broker,
            vehicle_id=args.vehicle_id,
            signing_key=args.signing_key,
            state_dir=args.state_dir,
            exit_at_end=args.exit_at_end,
        ),
    )
    agent = Agent(config)
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
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
