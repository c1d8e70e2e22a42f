"""`firmware-agent keys`: create, show and rotate the Ed25519 keys that sign telemetry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from firmware_agent.errors import UserError


def add_subparser(subparsers: Any) -> None:
    """Register `keys generate|public|rotate`."""
    parser = subparsers.add_parser(
        "keys",
        help="manage telemetry signing keys",
        description="Ed25519 signing keys as PKCS#8 PEM files (mode 0600), or a keyring folder holding the "
        "active key and the retired ones. The key id (kid) is the first 8 bytes of SHA-256 of the raw "
        "public key.",
    )
    commands = parser.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)

    generate = commands.add_parser("generate", help="create a new key file or keyring folder")
    target = generate.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="PEM", type=Path, help="new private key file (never overwritten)")
    target.add_argument("--key-dir", metavar="DIR", type=Path, help="new keyring folder with one active key")
    generate.set_defaults(func=_do_generate)

    public = commands.add_parser("public", help="print the public key PEM (stdout) and its kid (stderr)")
    source = public.add_mutually_exclusive_group(required=True)
    source.add_argument("--key", metavar="PEM", type=Path, help="private key file")
    source.add_argument("--key-dir", metavar="DIR", type=Path, help="keyring folder (its active key)")
    public.add_argument("--all", action="store_true", help="with --key-dir: every key, retired ones too")
    public.add_argument("-o", "--output", metavar="FILE", type=Path, help="write the PEM here, not to stdout")
    public.set_defaults(func=_do_public)

    rotate = commands.add_parser("rotate", help="make a new active key in a keyring; old keys are kept")
    rotate.add_argument("--key-dir", metavar="DIR", type=Path, required=True, help="keyring folder")
    rotate.set_defaults(func=_do_rotate)


def _do_generate(args: argparse.Namespace) -> int:
    from firmware_agent.telemetry.keys import Keyring, generate_private_key, kid_of

    if args.out is not None:
        kid = kid_of(generate_private_key(args.out).public_key())
        print(f"{args.out}: new Ed25519 key, kid {kid.hex()}")
    else:
        ring = Keyring.create(args.key_dir)
        print(f"{args.key_dir}: new keyring, active kid {ring.active_kid().hex()}")
    return 0


def _do_public(args: argparse.Namespace) -> int:
    from firmware_agent.telemetry.keys import Keyring, kid_of, load_private_key, public_key_pem

    if args.all and args.key_dir is None:
        raise UserError("--all needs --key-dir")
    if args.key is not None:
        publics = [load_private_key(args.key).public_key()]
    else:
        ring = Keyring(args.key_dir)
        everything = ring.public_keys()
        publics = list(everything.values()) if args.all else [everything[ring.active_kid()]]
    text = "".join(public_key_pem(public) for public in publics)
    if args.output is not None:
        try:
            args.output.write_text(text)
        except OSError as exc:
            raise UserError(f"{args.output}: cannot write: {exc.strerror}") from exc
    else:
        sys.stdout.write(text)
    for public in publics:
        print(f"kid {kid_of(public).hex()}", file=sys.stderr)
    return 0


def _do_rotate(args: argparse.Namespace) -> int:
    from firmware_agent.telemetry.keys import Keyring

    ring = Keyring(args.key_dir)
    old = ring.active_kid()
    new = ring.rotate()
    print(f"{args.key_dir}: active kid {new.hex()} (was {old.hex()}, kept for verification)")
    return 0
