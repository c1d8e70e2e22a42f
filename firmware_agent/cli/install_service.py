"""`firmware-agent install-service`: install (or remove) the agent as a hardened systemd service."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_subparser(subparsers: Any) -> None:
    """Register `install-service`."""
    parser = subparsers.add_parser(
        "install-service",
        help="install the systemd unit, the reference configuration, and enable the service",
        description="Install firmware-agent.service (ExecStart= pointing at this environment's "
        "firmware-agent), a drop-in for the CAN interfaces, /etc/firmware-agent/agent.toml when there is "
        "none, then daemon-reload and enable. Idempotent. --uninstall undoes it (keeping the state "
        "directory and configuration unless --purge).",
    )
    parser.add_argument(
        "--can",
        metavar="IFACE",
        action="append",
        default=[],
        help="a CAN interface the service waits for (repeatable; default can0)",
    )
    parser.add_argument("--now", action="store_true", help="also start (or restart, if anything changed) it")
    parser.add_argument("--no-enable", action="store_true", help="do not enable it at boot")
    parser.add_argument(
        "--no-systemctl", action="store_true", help="only write files (image builds, no running systemd)"
    )
    parser.add_argument("--unit-dir", metavar="DIR", type=Path, default=Path("/etc/systemd/system"))
    parser.add_argument("--config-dir", metavar="DIR", type=Path, default=Path("/etc/firmware-agent"))
    parser.add_argument("--uninstall", action="store_true", help="stop, disable and remove the unit")
    parser.add_argument(
        "--purge", action="store_true", help="with --uninstall: also remove the configuration and the state"
    )
    parser.set_defaults(func=_do_install_service)


def _do_install_service(args: argparse.Namespace) -> int:
    from firmware_agent.errors import UserError
    from firmware_agent.service.install import InstallPlan, install, uninstall

    if args.purge and not args.uninstall:
        raise UserError("--purge only goes with --uninstall")
    plan = InstallPlan(
        unit_dir=args.unit_dir,
        config_dir=args.config_dir,
        can_interfaces=tuple(args.can) or ("can0",),
        systemctl=not args.no_systemctl,
        enable=not args.no_enable,
        start=args.now,
    )
    changes = uninstall(plan, purge=args.purge) if args.uninstall else install(plan)
    for line in changes:
        print(f"firmware-agent install-service: {line}")
    if not changes:
        print(
            "firmware-agent install-service: nothing to do, already "
            + ("removed" if args.uninstall else "installed")
        )
    return 0
