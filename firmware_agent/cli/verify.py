"""`firmware-agent verify`: check signed telemetry from a broker or from saved dumps, export its samples."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from firmware_agent.errors import UserError

if TYPE_CHECKING:
    from firmware_agent.telemetry.subscriber import Subscriber


def add_subparser(subparsers: Any) -> None:
    """Register `verify` and its flags."""
    parser = subparsers.add_parser(
        "verify",
        help="verify signed telemetry and export its samples",
        description="Check COSE signatures (by kid), the topic binding, replays and gaps in seq of telemetry "
        "read from saved dumps (FILE or DIR: lines of TOPIC<TAB>BASE64) or received from a broker. Prints "
        "the samples; reports one line per problem on stderr and exits 1 if there was any.",
    )
    parser.add_argument("inputs", nargs="*", metavar="DUMP", type=Path, help="dump file or folder of dumps")
    parser.add_argument(
        "--public-key",
        metavar="[VEHICLE=]PEM",
        action="append",
        default=[],
        required=True,
        help="public key PEM file, or a keyring folder (repeatable; matched by kid); with VEHICLE=, the key "
        "is accepted only on that vehicle's topic",
    )
    broker = parser.add_argument_group("broker")
    broker.add_argument(
        "--broker", metavar="URL", help="subscribe at mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
    )
    broker.add_argument("--topic", default="vehicles/+/telemetry", help="topic filter (default: %(default)s)")
    broker.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    broker.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    broker.add_argument("--ca", metavar="FILE", type=Path, help="CA certificate of the broker (mqtts)")
    broker.add_argument("--cert", metavar="FILE", type=Path, help="client certificate (mqtts)")
    broker.add_argument("--key", metavar="FILE", type=Path, help="client certificate's private key (mqtts)")
    broker.add_argument("--save", metavar="DUMP", type=Path, help="also append every message to this dump")
    output = parser.add_argument_group("output")
    output.add_argument(
        "--format",
        choices=("jsonl", "csv", "parquet", "none"),
        default="jsonl",
        help="sample format (parquet: -o FOLDER gets samples, events and batches .parquet)",
    )
    output.add_argument(
        "--batches", metavar="FILE", type=Path, help="one JSON line per batch: campaign, counters, driver"
    )
    output.add_argument("-o", "--output", metavar="FILE", type=Path, help="write samples here, not to stdout")
    output.add_argument(
        "--events",
        metavar="FILE",
        type=Path,
        help="write the verified batches' events (driver_identified, driver_mismatch, ...) as JSON lines "
        "to FILE ('-' for stdout)",
    )
    output.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="accept byte-identical re-deliveries of a batch (MQTT QoS 1 is at-least-once)",
    )
    parser.set_defaults(func=_do_verify)


def _open_output(path: Path | None, stack: contextlib.ExitStack, mode: str = "w") -> IO[str]:
    if path is None:
        return sys.stdout
    try:
        return stack.enter_context(path.open(mode, encoding="utf-8", newline=""))
    except OSError as exc:
        raise UserError(f"{path}: cannot open for writing: {exc.strerror}") from exc


def _split_key_spec(spec: str) -> tuple[str | None, Path]:
    """`[VEHICLE=]PEM` -> (vehicle or None, path); a path that exists as given is never split."""
    from firmware_agent.telemetry.topics import VEHICLE_ID_PATTERN

    vehicle, sep, path = spec.partition("=")
    if sep and VEHICLE_ID_PATTERN.fullmatch(vehicle) and not Path(spec).exists():
        return vehicle, Path(path)
    return None, Path(spec)


def _do_verify(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from firmware_agent.telemetry.keys import load_verification_keys
    from firmware_agent.telemetry.verify import (
        DumpWriter,
        EventWriter,
        Problem,
        SampleWriter,
        TelemetryVerifier,
        read_dump,
    )

    if bool(args.inputs) == bool(args.broker):
        raise UserError("give either dump files or --broker URL")
    if not args.broker and (args.save or args.count is not None or args.timeout is not None):
        raise UserError("--save, --count and --timeout need --broker")
    if args.count is not None and args.count < 1:
        raise UserError(f"--count {args.count}: must be at least 1")
    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout {args.timeout}: must be a positive number of seconds")
    keys: dict[bytes, Ed25519PublicKey] = {}
    owners: dict[bytes, str] = {}
    for spec in args.public_key:
        vehicle, path = _split_key_spec(spec)
        found = load_verification_keys([path])
        keys.update(found)
        if vehicle is not None:
            owners.update(dict.fromkeys(found, vehicle))
    verifier = TelemetryVerifier(keys, allow_duplicates=args.allow_duplicates, owners=owners)
    with contextlib.ExitStack() as stack:
        samples: Any = None
        if args.format == "parquet":
            from firmware_agent.telemetry.export import ParquetExport

            if args.output is None:
                raise UserError("--format parquet needs -o FOLDER")
            samples = stack.enter_context(contextlib.closing(ParquetExport(args.output)))
        elif args.format != "none":
            samples = SampleWriter(_open_output(args.output, stack), args.format)
        if args.batches is not None:
            from firmware_agent.telemetry.export import BatchWriter

            batches = BatchWriter(_open_output(None if str(args.batches) == "-" else args.batches, stack))
        saver = DumpWriter(_open_output(args.save, stack, "a")) if args.save else None
        events = None
        if args.events is not None:
            events = EventWriter(_open_output(None if str(args.events) == "-" else args.events, stack))
        if args.broker:
            # A subscriber in the background of a script is stopped with SIGTERM (SIGINT is ignored
            # there): report what arrived, like on Ctrl-C.
            signal.signal(signal.SIGTERM, _interrupt)
            subscriber = _subscribe(args, stack)
            messages = (
                (topic, message, "") for topic, message in subscriber.messages(args.count, args.timeout)
            )
        else:
            subscriber = None

            def bad_line(error: UserError) -> None:
                verifier.problems.append(Problem("malformed", "-", str(error)))
                print(f"{error}", file=sys.stderr)

            messages = (item for path in args.inputs for item in read_dump(path, bad_line))
        expected = args.count
        try:
            for topic, message, source in messages:
                if saver is not None:
                    saver.write(topic, message)
                result = verifier.check(topic, message, source)
                if isinstance(result, Problem):
                    print(result, file=sys.stderr)
                else:
                    if samples is not None:
                        samples.write(result)
                    if events is not None:
                        events.write(result)
                    if args.batches is not None:
                        batches.write(result)
        except KeyboardInterrupt:
            pass  # report what arrived so far
        for gap in verifier.finish():
            print(gap, file=sys.stderr)
        if subscriber is not None and subscriber.dropped:
            # Our own receive queue overflowed: those gaps in seq are not the vehicle's doing.
            overflow = f"{subscriber.dropped} messages dropped by this verifier's full receive queue"
            verifier.problems.append(Problem("local_overflow", args.topic, overflow))
            print(verifier.problems[-1], file=sys.stderr)
        if expected is not None and verifier.received < expected:
            problem = f"timeout: received {verifier.received} of {expected} messages"
            verifier.problems.append(Problem("timeout", args.topic, problem))
            print(verifier.problems[-1], file=sys.stderr)
    duplicates = f", {verifier.duplicates} duplicates" if verifier.duplicates else ""
    missing = f", {verifier.missing} missing" if verifier.missing else ""
    if verifier.counted_lost:
        missing += f" ({verifier.counted_lost} counted as lost by the vehicle)"
    print(
        f"verify: {verifier.received} messages, {verifier.verified} verified{duplicates}{missing}, "
        f"{len(verifier.problems)} problems",
        file=sys.stderr,
    )
    return 1 if verifier.problems else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _subscribe(args: argparse.Namespace, stack: contextlib.ExitStack) -> Subscriber:
    from firmware_agent.telemetry.broker import BrokerConfig
    from firmware_agent.telemetry.subscriber import Subscriber

    config = BrokerConfig(args.broker, ca_file=args.ca, cert_file=args.cert, key_file=args.key)
    subscriber = stack.enter_context(Subscriber(config, [args.topic]))
    print(f"verify: subscribed to {args.topic} at {args.broker}", file=sys.stderr, flush=True)
    return subscriber
