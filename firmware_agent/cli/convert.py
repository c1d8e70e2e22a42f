"""`firmware-agent convert IN OUT`: a capture from one format to another (`io/convert.py`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def add_subparser(subparsers: Any) -> None:
    """Register `convert`."""
    from firmware_agent.io.convert import EXTENSIONS, FORMAT_NAMES

    parser = subparsers.add_parser(
        "convert",
        help="convert a CAN capture between formats (candump -L, ASC, BLF, TRC, CSV, MF4)",
        description=(
            "Convert a capture read like decode reads it (candump, ASC, BLF, TRC, CSV, SQLite, MF4; - for "
            "stdin) into a file python-can writes; the format comes from OUT's extension "
            f"({', '.join(EXTENSIONS)}; MF4 needs asammdf). Streams block by block. Malformed lines are "
            "skipped and counted on stderr (--strict: fatal)."
        ),
    )
    parser.add_argument("input", metavar="IN", help="capture file, or - for candump on stdin")
    parser.add_argument("output", metavar="OUT", type=Path, help="capture file to write")
    parser.add_argument(
        "--format",
        choices=sorted(FORMAT_NAMES),
        type=str.lower,
        help="output format regardless of OUT's extension",
    )
    parser.add_argument("--strict", action="store_true", help="a malformed line is fatal (FILE:LINE)")
    parser.set_defaults(func=_do_convert)


def _do_convert(args: argparse.Namespace) -> int:
    from firmware_agent.decode.startup import import_python_can
    from firmware_agent.io import detect_format
    from firmware_agent.io.convert import convert_capture, output_format
    from firmware_agent.progress import CaptureProgress

    format_name = output_format(args.output, args.format)
    # asammdf only for python-can's MF4 writer: MF4 input is read without it (io/mf4.py)
    import_python_can(need_mf4=format_name == "MF4")
    if args.input != "-":
        detect_format(args.input)  # a missing or unreadable input: one line, before anything else
    size = os.path.getsize(args.input) if args.input != "-" else None
    progress = CaptureProgress(args.input, size)
    try:
        report = convert_capture(
            args.input, args.output, format_name, args.strict, progress if progress.enabled else None
        )
        progress.finish()
    finally:
        progress.close()
    print(report.summary_line(), file=sys.stderr)
    return 0
