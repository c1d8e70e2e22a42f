"""`firmware-agent decode CAPTURE... --dbc [CHANNEL=]FILE ...`: decode recorded bus captures."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from firmware_agent.errors import UserError

if TYPE_CHECKING:
    from firmware_agent.decode.catalog import Catalog
    from firmware_agent.progress import CaptureProgress

FORMATS = ("jsonl", "csv", "wide-csv", "parquet")
#: Captures at least this big get a progress line when stderr is a terminal.
PROGRESS_MIN_BYTES = 32 << 20
#: Formats (as `detect_format` names them) read without python-can.
_OWN_READERS = {"candump -L", "candump output", "stdin", "MF4"}


def add_subparser(subparsers: Any) -> None:
    """Register `decode`."""
    parser = subparsers.add_parser(
        "decode",
        help="decode CAN captures (candump, ASC, BLF, TRC, CSV, MF4) through DBC files",
        description=(
            "Decode recorded CAN captures through DBC/ARXML/KCD/SYM databases. Output is jsonl by default "
            "(the summary table when stdout is a terminal); frames that cannot be decoded are skipped and "
            "counted on stderr."
        ),
    )
    parser.add_argument(
        "captures", nargs="+", metavar="CAPTURE", help="capture file, or - for candump on stdin"
    )
    parser.add_argument(
        "--dbc",
        action="append",
        metavar="[CHANNEL=]FILE",
        help="database for every channel, or CHANNEL=FILE for one (repeatable; one channel's files merge); "
        "default: the vehicle's own DBCs",
    )
    parser.add_argument("--format", choices=FORMATS, help="output format (default jsonl)")
    parser.add_argument(
        "--wide",
        action="store_true",
        help="csv with one row per frame and one column per signal (same as --format wide-csv)",
    )
    parser.add_argument(
        "--resample",
        type=float,
        metavar="SECONDS",
        help="wide csv on one time grid: a row every SECONDS, each signal's last value held",
    )
    parser.add_argument(
        "--single-file",
        action="store_true",
        help="parquet as one tidy file (-o FILE.parquet: one row per value) instead of a folder",
    )
    parser.add_argument("--summary", action="store_true", help="print a table per message instead of records")
    parser.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="with --summary: bus load per channel in intervals of SECONDS, with the peak",
    )
    parser.add_argument(
        "-o", "--output", metavar="PATH", help="write to PATH instead of stdout (a folder for parquet)"
    )
    parser.add_argument("--message", action="append", metavar="NAME", help="only this message (repeatable)")
    parser.add_argument(
        "--signal",
        action="append",
        metavar="NAME",
        help="only this signal, NAME or MESSAGE.NAME (repeatable)",
    )
    parser.add_argument("--no-choices", action="store_true", help="raw numbers instead of value-table names")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="malformed lines and frames of known messages that fail are fatal",
    )
    parser.add_argument(
        "--bitrate",
        type=int,
        metavar="BPS",
        help="bitrate for the bus-load estimate on every channel (default: the channel's DBC "
        "Baudrate, and BaudrateCANFD for CAN FD data phases; else 500000)",
    )
    parser.set_defaults(func=_do_decode)


def _do_decode(args: argparse.Namespace) -> int:
    from firmware_agent.decode.startup import defer_python_can, import_python_can
    from firmware_agent.io import detect_format

    args.captures = expand_captures(args.captures)
    formats = {detect_format(path) for path in args.captures}
    if formats <= _OWN_READERS:
        defer_python_can()  # our own parsers read these: python-can is imported only if used
    else:
        import_python_can(need_mf4=False)  # MF4 is read without asammdf (io/mf4.py)

    from firmware_agent.decode.captures import DecodeOptions, decode_captures
    from firmware_agent.decode.summary import Summary

    if args.captures.count("-") > 1:
        raise UserError("stdin (-) can be read only once")
    catalog = load_catalog(args.dbc)
    _check_filters(catalog, args.message, args.signal)
    progress = _progress(args.captures)
    summary_only = args.summary or (args.format is None and args.output is None and sys.stdout.isatty())
    options = DecodeOptions(
        summary_settings=(args.bitrate, catalog.bitrate, args.interval),
        decode_choices=not args.no_choices,
        messages=set(args.message) if args.message else None,
        signals=set(args.signal) if args.signal else None,
        strict=args.strict,
        progress=progress,
    )
    if args.bitrate is not None and args.bitrate <= 0:
        raise UserError(f"--bitrate must be a positive number of bit/s, not {args.bitrate}")
    if args.interval is not None and not (0 < args.interval < float("inf")):
        raise UserError(f"--interval must be a positive number of seconds, not {args.interval}")
    summary = Summary(bitrate=args.bitrate, bus_bitrate=catalog.bitrate, interval=args.interval)
    format_name = _format_name(args)
    text_output = args.output if summary_only or format_name != "parquet" else None
    vss = _vss_names(args.dbc)
    with _Output(text_output) as out:
        writer: Any = None
        if summary_only:
            pass
        elif format_name == "wide-csv":
            from firmware_agent.io.wide_csv import WideCsvWriter, wide_columns

            columns = wide_columns(
                (message for _, message in catalog.all_messages()), options.messages, options.signals
            )
            writer = WideCsvWriter(out, columns, args.resample)
        elif args.single_file:
            from firmware_agent.io.parquet_single import SingleParquetWriter

            if args.output is None:
                raise UserError("--format parquet --single-file needs -o FILE.parquet")
            writer = SingleParquetWriter(Path(args.output), not args.no_choices)
        else:
            writer = _writer(format_name, args.output, out, not args.no_choices, vss)
        try:
            decode_captures(args.captures, catalog, options, writer, summary)
            if progress is not None:
                progress.finish()  # 100 % and the time taken
        finally:
            if progress is not None:
                progress.close()
            if writer is not None:
                writer.close()
        if summary_only:
            if len(options.reports) > 1:
                for report in options.reports:
                    out.write(f"== {report.name}\n")
                    report.summary.render(out)
                    out.write("\n")
                out.write(f"== all {len(options.reports)} captures\n{summary.skip_line()}\n")
            else:
                summary.render(out)
    for line in options.malformed:
        print(line, file=sys.stderr)
    if not summary_only:
        print(summary.skip_line(), file=sys.stderr)
    if getattr(writer, "late", 0):
        print(
            f"--resample: {writer.late:,} frames came after grid rows later than their time were written;"
            " those rows do not hold them",
            file=sys.stderr,
        )
    if not summary_only and args.output is not None and format_name != "parquet":
        _write_schema_sidecar(Path(args.output + ".schema.json"), catalog, summary, vss)
    report_coverage(options.reports, catalog, builtin=not args.dbc, strict=args.strict)
    return 0


def _format_name(args: argparse.Namespace) -> str:
    """The output format, after checking that the layout options fit it."""
    format_name: str = args.format or ("wide-csv" if args.wide or args.resample is not None else "jsonl")
    if args.wide or args.resample is not None:
        if format_name == "csv":
            format_name = "wide-csv"
        if format_name != "wide-csv":
            option = "--wide" if args.wide else "--resample"
            raise UserError(f"{option} is a csv layout; use --format csv (not {format_name})")
    if args.resample is not None and not (args.resample > 0 and args.resample < float("inf")):
        raise UserError(f"--resample must be a positive number of seconds, not {args.resample}")
    if args.single_file and format_name != "parquet":
        raise UserError(f"--single-file is a parquet layout; use --format parquet (not {format_name})")
    return format_name


def _vss_names(given: list[str] | None) -> dict[str, str]:
    """The vehicle's VSS names when its own DBCs are used, else none."""
    if given:
        return {}
    from firmware_agent.vehicle import default_dbc_dir
    from firmware_agent.vss import VssMap

    return VssMap.load(default_dbc_dir() / "vss.toml").to_vss


def _write_schema_sidecar(path: Path, catalog: Catalog, summary: Any, vss: dict[str, str]) -> None:
    """`OUTPUT.schema.json` beside jsonl/csv output: the `signals --json` entries of the decoded messages."""
    from firmware_agent.atomic import write_atomic
    from firmware_agent.decode.schema import describe_messages, schema_json

    decoded = {name for _, name in summary.messages}
    bindings = [(channel, message) for channel, message in catalog.all_messages() if message.name in decoded]
    write_atomic(
        path, schema_json(describe_messages(bindings, vss)).encode("utf-8"), mode=0o644, durable=False
    )


def expand_captures(paths: list[str]) -> list[str]:
    """Capture paths with each folder replaced by the captures in it (by extension, sorted by name)."""
    from firmware_agent.io import capture_extension

    expanded = []
    for path in paths:
        folder = Path(path)
        if path == "-" or not folder.is_dir():
            expanded.append(path)
            continue
        found = sorted(str(item) for item in folder.iterdir() if item.is_file() and capture_extension(item))
        if not found:
            raise UserError(f"{folder}: a folder without captures (.log, .asc, .blf, .trc, .csv, .mf4, .db)")
        expanded.extend(found)
    return expanded


def load_catalog(given: list[str] | None) -> Catalog:
    """The databases of `--dbc`, else the vehicle's own bound to its buses and their ASC/BLF numbers."""
    from firmware_agent.decode.catalog import Catalog

    catalog = Catalog.from_specs(_dbc_specs(given))
    if not given:
        from firmware_agent.vehicle import default_channel_aliases

        for number, bus in default_channel_aliases().items():
            catalog.alias(number, bus)
    return catalog


def report_coverage(reports: list[Any], catalog: Catalog, builtin: bool, strict: bool) -> None:
    """Say on stderr what decoded nothing (`decode/coverage.py`); with `strict`, the first is an error."""
    from firmware_agent.decode.coverage import coverage_findings

    findings = coverage_findings(reports, catalog, builtin)
    if strict and findings:
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise UserError(f"{findings[0]}{more} [--strict]")
    for line in findings:
        print(f"warning: {line}", file=sys.stderr)


def _check_filters(catalog: Catalog, messages: list[str] | None, signals: list[str] | None) -> None:
    """A `--message`/`--signal` name no database defines is a typo, not an empty result."""
    known = [message for _, message in catalog.all_messages()]
    message_names = {message.name for message in known}
    signal_names = {signal.name for message in known for signal in message.signals} | {
        f"{message.name}.{signal.name}" for message in known for signal in message.signals
    }
    for option, given, names in (("--message", messages, message_names), ("--signal", signals, signal_names)):
        by_case = {name.casefold(): name for name in names}
        for name in given or ():
            if name not in names:
                close = [by_case[name.casefold()]] if name.casefold() in by_case else []
                close = close or difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {close[0]!r}? names are case-sensitive)" if close else ""
                raise UserError(f"{option} {name!r}: no such {option[2:]} in the databases given{hint}")
    if messages and signals:
        chosen = [message for message in known if message.name in messages]
        for name in signals:
            owner, _, signal = name.rpartition(".")
            if not any(
                (not owner or message.name == owner) and any(s.name == signal for s in message.signals)
                for message in chosen
            ):
                holders = sorted(
                    {message.name for message in known if any(s.name == signal for s in message.signals)}
                )
                raise UserError(
                    f"--signal {name!r} is in none of the --message {', '.join(sorted(messages))} "
                    f"(it is in {', '.join(holders)}): the two filters together select nothing for it"
                )


def _dbc_specs(given: list[str] | None) -> list[str]:
    if given:
        return given
    from firmware_agent.vehicle import default_dbc_specs

    try:
        return default_dbc_specs()
    except FileNotFoundError as exc:
        raise UserError(f"no --dbc given and {exc}") from None


def _progress(paths: list[str]) -> CaptureProgress | None:
    """A progress line (percent of bytes, frames, ETA) for big captures when stderr is a terminal."""
    from firmware_agent.progress import CaptureProgress

    if not sys.stderr.isatty():
        return None
    sizes = [os.path.getsize(path) for path in paths if path != "-" and os.path.isfile(path)]
    if sum(sizes) < PROGRESS_MIN_BYTES or "-" in paths:
        return None
    return CaptureProgress(paths[0], sum(sizes))


def _writer(
    format_name: str, output: str | None, out: TextIO, decode_choices: bool, vss: dict[str, str]
) -> Any:
    from firmware_agent.io.csv import CsvWriter
    from firmware_agent.io.jsonl import JsonlWriter
    from firmware_agent.io.parquet import ParquetWriter

    if format_name == "parquet":
        if output is None:
            raise UserError("--format parquet needs -o FOLDER (one file per message)")
        return ParquetWriter(Path(output), decode_choices, vss=vss)
    return CsvWriter(out) if format_name == "csv" else JsonlWriter(out)


class _Output:
    """stdout, or the `-o` file for text output."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._file: TextIO | None = None

    def __enter__(self) -> TextIO:
        if self.path is None:
            return sys.stdout
        try:
            self._file = open(self.path, "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write: {exc.strerror or exc}") from None
        return self._file

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
