"""The `firmware-agent` command line: one module per subcommand, argument parsing only.

Each subcommand module exposes `add_subparser(subparsers)`, which registers its parser and sets
`func` to a `_do_<name>(args) -> int` function. Heavy imports happen inside those functions so that
`firmware-agent --help` stays fast on a small ECU.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from firmware_agent import __version__
from firmware_agent.errors import UserError

#: Subcommand modules under `firmware_agent.cli`, in the order `--help` lists them.
SUBCOMMANDS: tuple[str, ...] = (
    "decode",
    "convert",
    "signals",
    "plot",
    "sim",
    "run",
    "keys",
    "verify",
    "profile",
    "status",
    "install_service",
    "ingest",
    "campaign",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="firmware-agent",
        description="In-vehicle telemetry agent: decode CAN captures, simulate a vehicle, "
        "upload signed telemetry.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"firmware_agent.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"firmware_agent.cli.{name}":
                continue  # subcommand not part of this build
            raise
        module.add_subparser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `firmware-agent` console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"firmware-agent {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `firmware-agent decode big.log | head`: the reader went away, which is not an error.
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
