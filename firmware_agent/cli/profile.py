"""`firmware-agent profile`: the driver profiles the car has learned, and the model for tabular data.

    firmware-agent profile list   --state-dir DIR [--json]
    firmware-agent profile learn  --state-dir DIR CAPTURE... [--dbc ...]
    firmware-agent profile forget --state-dir DIR PROFILE
    firmware-agent profile train  --data CSV --label COL --group COL --time COL --signals A,B,... --out MODEL
    firmware-agent profile predict --model MODEL --data CSV --group COL --time COL

`list`, `learn` and `forget` work on the agent's state directory (stop the agent first: the registry has
one writer). `--config` reads `state_dir`, `dbc`, `vss` and `[identity]` from the agent's configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_agent.cli.profile_tabular import add_tabular_parsers

if TYPE_CHECKING:
    from firmware_agent.identity.stage import DriveOutcome
    from firmware_agent.service.config import IdentityContext


def add_subparser(subparsers: Any) -> None:
    """Register `profile` and its subcommands."""
    parser = subparsers.add_parser(
        "profile",
        help="driver profiles: list, learn from captures, forget; train/predict on tabular data",
        description="Manage the driver profiles of the identity stage (see docs/identity.md).",
    )
    commands = parser.add_subparsers(title="profile commands", dest="profile_command", metavar="COMMAND")
    parser.set_defaults(func=lambda args: _usage(parser))

    listing = commands.add_parser("list", help="profiles, minutes learned, whether the model is active")
    _add_state_options(listing)
    listing.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    listing.set_defaults(func=_do_list)

    learn = commands.add_parser(
        "learn",
        help="learn from recorded drives, as the agent would have live",
        description="Replay captures through the identity stage: every drive (ignition on to off) is "
        "learned under its own explicit identity, unless its driving contradicted it.",
    )
    _add_state_options(learn)
    learn.add_argument("captures", nargs="+", metavar="CAPTURE", help="candump -L, ASC, BLF, TRC, MF4, ...")
    learn.add_argument(
        "--dbc", metavar="[CHANNEL=]FILE", action="append", default=[], help="as for run (repeatable)"
    )
    learn.set_defaults(func=_do_learn)

    forget = commands.add_parser("forget", help="erase a profile's data; the model no longer knows it")
    _add_state_options(forget)
    forget.add_argument("profile", metavar="PROFILE", help="a profile id from `profile list`")
    forget.set_defaults(func=_do_forget)

    add_tabular_parsers(commands)


def _add_state_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", metavar="DIR", help="the agent's state directory")
    parser.add_argument("--config", metavar="FILE", type=Path, help="the agent's TOML configuration")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _context(args: argparse.Namespace) -> IdentityContext:
    from firmware_agent.service.config import load_identity_context

    return load_identity_context(args.config, args.state_dir, getattr(args, "dbc", []))


def _do_list(args: argparse.Namespace) -> int:
    from firmware_agent.identity.learning import active_profiles
    from firmware_agent.identity.registry import ProfileRegistry

    context = _context(args)
    registry = ProfileRegistry(context.state_dir)
    activation = context.settings.activation_minutes
    active = set(active_profiles(registry, context.settings))
    rows = [
        {
            "profile": profile,
            "minutes": record.minutes,
            "drives": record.drives,
            "windows": record.windows,
            "active": profile in active,
            "last_learned": record.last_learned or None,
        }
        for profile, record in sorted(registry.profiles.items())
    ]
    if args.json:
        print(json.dumps({"activation_minutes": activation, "profiles": rows}, indent=2))
        return 0
    if not rows:
        print(f"no profiles in {registry.folder}")
        return 0
    print(f"{'PROFILE':<20} {'MINUTES':>8} {'DRIVES':>6}  MODEL")
    for row in rows:
        state = "active" if row["active"] else f"learning ({activation:g} min needed)"
        print(f"{row['profile']:<20} {row['minutes']:>8.1f} {row['drives']:>6}  {state}")
    return 0


def _do_learn(args: argparse.Namespace) -> int:
    from firmware_agent.decode.catalog import Catalog
    from firmware_agent.identity.stage import IdentityStage
    from firmware_agent.io import open_capture
    from firmware_agent.values import Event
    from firmware_agent.vss import VssMap

    context = _context(args)
    catalog = Catalog.from_specs(context.dbc)
    events: list[Event] = []
    outcomes: list[tuple[str, DriveOutcome, list[Event]]] = []
    current = [""]

    def drive_ended(outcome: DriveOutcome) -> None:
        outcomes.append((current[0], outcome, list(events)))
        events.clear()

    stage = IdentityStage(
        context.settings,
        catalog,
        VssMap.load(context.vss),
        context.state_dir,
        emit=events.append,
        set_driver=lambda driver, timestamp: None,
        on_drive_end=drive_ended,
        background_refit=False,
    )
    for path in args.captures:
        current[0] = path
        capture = open_capture(path)
        last = None
        for batch in capture:
            stage.observe_frames(batch.messages())
            if len(batch):
                last = float(batch.timestamp[-1])
        stage.finish(last)
        if not any(name == path for name, _, _ in outcomes):
            print(f"{path}: no drive found (no ignition on in the capture)")
    for path, outcome, drive_events in outcomes:
        print(_describe(path, outcome, drive_events))
    learned = sum(1 for _, outcome, _ in outcomes if outcome.result == "learned")
    counts = stage.counters()
    print(
        f"learned {learned} of {len(outcomes)} drive(s); {counts['profiles']} profile(s), "
        f"{counts['active_profiles']} with the behavioural model active"
    )
    return 0


def _describe(path: str, outcome: DriveOutcome, events: list[Any]) -> str:
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(outcome.start))
    minutes = (outcome.end - outcome.start) / 60
    head = f"{path}: drive at {start} UTC ({minutes:.1f} min)"
    mismatch = next((e.detail for e in events if e.kind == "driver_mismatch"), None)
    if outcome.result == "learned":
        learned = ", ".join(
            f"{windows} windows for {profile}" for profile, windows in outcome.learned.items()
        )
        return f"{head}: learned {learned}"
    if mismatch is not None:
        return (
            f"{head}: not learned: driver_mismatch (key of {mismatch['explicit']}, driving like "
            f"{mismatch['behaviour']}, confidence {mismatch['confidence']:.2f} "
            f"after {mismatch['after']:.0f} s)"
        )
    return f"{head}: not learned: {outcome.detail}"


def _do_forget(args: argparse.Namespace) -> int:
    from firmware_agent.identity.learning import refit
    from firmware_agent.identity.registry import ProfileRegistry

    context = _context(args)
    registry = ProfileRegistry(context.state_dir)
    registry.forget(args.profile)
    model = refit(registry, context.settings)
    active = 0 if model is None else len(model.labels)
    print(
        f"forgot {args.profile}: registry entry and windows erased; "
        f"model refitted ({active} active profile(s))"
    )
    return 0
