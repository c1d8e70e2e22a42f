"""`firmware-agent profile train|predict`: driver profiles from a CSV of decoded signals.

    firmware-agent profile train --data drives.csv --label Driver --group Trip --time Time \\
        --signals pedal,throttle,speed,... --out drivers.model
    firmware-agent profile predict --model drivers.model --data new.csv --group Trip --time Time > out.csv

`--signals` takes 11 column names in the channel order of `firmware_agent.identity.features.CHANNELS`
(`-` for a channel the car lacks) or CHANNEL=COLUMN pairs; see `firmware_agent/identity/tabular.py`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_tabular_parsers(subparsers: Any) -> None:
    """Register `train` and `predict` on the `profile` command's subparsers."""
    train = subparsers.add_parser(
        "train",
        help="fit a driver model on a CSV of decoded signals",
        description="Fit a driver model on a CSV with one row per sample and one label per group (drive).",
    )
    train.add_argument("--data", required=True, type=Path, metavar="CSV", help="the training CSV")
    train.add_argument("--label", required=True, metavar="COLUMN", help="column naming the driver")
    train.add_argument("--group", required=True, metavar="COLUMN", help="column naming the drive (trip)")
    train.add_argument("--time", required=True, metavar="COLUMN", help="column of the time in seconds")
    train.add_argument(
        "--signals",
        required=True,
        metavar="A,B,...",
        help="11 columns in channel order (- for a missing one) or CHANNEL=COLUMN pairs",
    )
    train.add_argument("--out", required=True, type=Path, metavar="MODEL", help="where to write the model")
    train.set_defaults(func=_do_train)

    predict = subparsers.add_parser(
        "predict",
        help="name the driver of every 60-s window of a CSV",
        description="Write group,start,end,predicted,score for every window (CSV on stdout).",
    )
    predict.add_argument("--model", required=True, type=Path, metavar="MODEL", help="a model from `train`")
    predict.add_argument("--data", required=True, type=Path, metavar="CSV", help="the CSV to label")
    predict.add_argument("--group", required=True, metavar="COLUMN", help="column naming the drive (trip)")
    predict.add_argument("--time", required=True, metavar="COLUMN", help="column of the time in seconds")
    predict.set_defaults(func=_do_predict)


def _do_train(args: argparse.Namespace) -> int:
    from firmware_agent.identity.tabular import train_from_csv

    signals = [item for item in args.signals.split(",")]
    model = train_from_csv(args.data, args.label, args.group, args.time, signals)
    model.save(args.out)
    print(f"{args.out}: driver model of {', '.join(model.labels)}", file=sys.stderr)
    return 0


def _do_predict(args: argparse.Namespace) -> int:
    from firmware_agent.identity.model import DriverModel
    from firmware_agent.identity.tabular import predict_csv

    model = DriverModel.load(args.model)
    predict_csv(model, args.data, args.group, args.time, sys.stdout)
    return 0
