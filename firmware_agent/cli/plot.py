"""`firmware-agent plot CAPTURE... --signal NAME... [-o out.png|svg|html]`: signals over time as a picture."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from firmware_agent.errors import UserError


def add_subparser(subparsers: Any) -> None:
    """Register `plot`."""
    parser = subparsers.add_parser(
        "plot",
        help="plot signals (one axis per unit) or bus load over time from captures (needs matplotlib)",
        description=(
            "Decode captures and draw the named signals over time: one axis per unit, value-table signals "
            "as steps with their labels; or --bus-load: bus load per channel over time. Needs the plot "
            "extra: pip install 'firmware-agent[plot]'."
        ),
    )
    parser.add_argument("captures", nargs="+", metavar="CAPTURE", help="capture files or folders")
    parser.add_argument("--dbc", action="append", metavar="[CHANNEL=]FILE", help="databases, as for decode")
    parser.add_argument("--signal", action="append", metavar="NAME", help="signal, NAME or MESSAGE.NAME")
    parser.add_argument("--bus-load", action="store_true", help="plot bus load per channel over time")
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="bus-load interval (default 1 s)"
    )
    parser.add_argument("-o", "--output", default="plot.png", metavar="PATH", help="png, svg or html")
    parser.add_argument("--bitrate", type=int, metavar="BPS", help="bitrate for the bus load, as for decode")
    parser.set_defaults(func=_do_plot)


def _do_plot(args: argparse.Namespace) -> int:
    from firmware_agent.cli.decode import _check_filters, expand_captures, load_catalog
    from firmware_agent.decode.captures import DecodeOptions, decode_captures
    from firmware_agent.decode.summary import Summary
    from firmware_agent.plot import SeriesCollector, render_bus_load, render_signals

    output = Path(args.output)
    if output.suffix.lower() not in (".png", ".svg", ".html"):
        raise UserError(f"-o {output}: plot writes .png, .svg or .html")
    if not args.signal and not args.bus_load:
        raise UserError("name at least one --signal, or --bus-load")
    if not args.interval > 0:
        raise UserError(f"--interval must be a positive number of seconds, not {args.interval}")
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise UserError("plot needs matplotlib: pip install 'firmware-agent[plot]'")
    catalog = load_catalog(args.dbc)
    _check_filters(catalog, None, args.signal)
    captures = expand_captures(args.captures)
    collector = SeriesCollector(set(args.signal or ()))
    summary = Summary(bitrate=args.bitrate, bus_bitrate=catalog.bitrate, interval=args.interval)
    options = DecodeOptions(signals=set(args.signal) if args.signal else None)
    decode_captures(captures, catalog, options, collector if args.signal else None, summary)
    if args.bus_load:
        if not summary.load_bins:
            raise UserError("no frames in the captures: no bus load to plot")
        render_bus_load(summary.load_over_time(), args.interval, output)
    else:
        missing = [name for name in args.signal if not any(_matches(name, key) for key in collector.series)]
        if len(missing) == len(args.signal):
            raise UserError(f"no frame carried {', '.join(args.signal)} in {', '.join(captures)}")
        for name in missing:
            print(f"warning: no frame carried {name}")
        title = ", ".join(Path(capture).name for capture in captures)
        render_signals(list(collector.series.values()), title, output, summary.load_origin)
    print(f"wrote {output}")
    return 0


def _matches(name: str, key: str) -> bool:
    return key == name or key.endswith(f".{name}")
