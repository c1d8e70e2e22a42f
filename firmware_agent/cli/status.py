"""`firmware-agent status`: is the agent running, and how are its buses, uplink and outbox doing?"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def add_subparser(subparsers: Any) -> None:
    """Register `status`."""
    parser = subparsers.add_parser(
        "status",
        help="show the running agent's health, buses and outbox",
        description="Read health.json (RuntimeDirectory under systemd, else the state directory) and the "
        "outbox. Exit status 0 ok, 1 degraded, 3 not running or stale (for monitoring checks).",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        default=Path(os.environ.get("STATE_DIRECTORY") or "/var/lib/firmware-agent"),
        help="the agent's state directory (default /var/lib/firmware-agent)",
    )
    parser.add_argument(
        "--runtime-dir",
        metavar="DIR",
        type=Path,
        help="where the agent writes health.json under systemd (default /run/firmware-agent)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    parser.add_argument(
        "--watch",
        nargs="?",
        const=1.0,
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS (default 1) until Ctrl-C",
    )
    parser.set_defaults(func=_do_status)


def _do_status(args: argparse.Namespace) -> int:
    from firmware_agent.service.status import build_report, render

    while True:
        report = build_report(args.state_dir, args.runtime_dir)
        text = json.dumps(report.as_json(), sort_keys=True) if args.json else render(report)
        if args.watch is None:
            print(text)
            return report.exit_code
        if sys.stdout.isatty():
            sys.stdout.write("\x1b[H\x1b[2J")  # home and clear: a live view, like watch(1)
        print(time.strftime("%H:%M:%S"), text, sep="  ", flush=True)
        try:
            time.sleep(max(args.watch, 0.1))
        except KeyboardInterrupt:
            return report.exit_code
