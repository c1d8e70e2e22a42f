"""Ed25519 signing keys: PKCS#8 PEM files with mode 0600, their key ids, and a rotating keyring.

A key id (`kid`) is the first 8 bytes of SHA-256 over the raw 32-byte public key; verifiers use it to pick
the public key. A keyring is a directory (mode 0700) holding one `<kid-hex>.pem` per key and a file
`active` naming the key that signs; rotation adds a key and switches `active`, and the retired keys stay so
that batches signed before the rotation (still in the outbox) can be verified.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware_agent.atomic import write_atomic
from firmware_agent.errors import UserError

#: Name of the keyring file that holds the hex kid of the signing key.
ACTIVE_FILE = "active"


class KeyFileError(UserError):
    """A key file that is missing, unreadable, too widely readable, or not an Ed25519 key."""


def kid_of(public_key: Ed25519PublicKey) -> bytes:
    """The 8-byte key id of `public_key`: SHA-256 of its raw 32 bytes, truncated."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:8]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """The SubjectPublicKeyInfo PEM text of `public_key`."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write `key` as unencrypted PKCS#8 PEM to a new file created with mode 0600; never overwrite."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key") from exc
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # the umask may have narrowed it further, never widened; make it exact
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_private_key(path: Path) -> Ed25519PrivateKey:
    """Create a new Ed25519 key in a new 0600 PEM file at `path` and return it."""
    key = Ed25519PrivateKey.generate()
    write_private_key(path, key)
    return key


def check_secret(path: Path, what: str = "private key") -> None:
    """The one rule for every secret (signing key, keyring folder, TLS client key): owned by the user the
    agent runs as, and not accessible by group or others; else a one-line `KeyFileError` saying the fix."""
    try:
        info = path.stat()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read {what}: {exc.strerror}") from exc
    fix = "chmod 700" if stat.S_ISDIR(info.st_mode) else "chmod 600"
    if info.st_uid != os.geteuid():
        raise KeyFileError(
            f"{path}: {what} is owned by uid {info.st_uid}, not by the agent's user (uid {os.geteuid()}); "
            f"run: chown {os.geteuid()} {path} && {fix} {path}"
        )
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: {what} is accessible by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run: {fix} {path}"
        )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an Ed25519 PKCS#8 PEM private key, refusing files readable by group or others."""
    check_secret(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read private key: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a PEM file (SubjectPublicKeyInfo, or a private key's public half)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read public key: {exc.strerror}") from exc
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


class Keyring:
    """A directory of signing keys: one active, the rest retired but kept for verification."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @classmethod
    def create(cls, directory: Path) -> Keyring:
        """Create a keyring with one fresh active key; `directory` may exist but must hold no keyring."""
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if (directory / ACTIVE_FILE).exists():
            raise KeyFileError(f"{directory}: already holds a keyring; use `keys rotate` for a new key")
        keyring = cls(directory)
        keyring._add_active_key()
        return keyring

    def active_kid(self) -> bytes:
        """The kid of the signing key."""
        path = self.directory / ACTIVE_FILE
        try:
            text = path.read_text().strip()
            return bytes.fromhex(text)
        except FileNotFoundError as exc:
            raise KeyFileError(f"{self.directory}: not a keyring (no '{ACTIVE_FILE}' file)") from exc
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"{path}: cannot read the active key id: {exc}") from exc

    def active_key(self) -> Ed25519PrivateKey:
        """Load the signing key (the folder itself must be private too: a key planted there would sign)."""
        check_secret(self.directory, "keyring folder")
        return load_private_key(self._path_of(self.active_kid()))

    def public_keys(self) -> dict[bytes, Ed25519PublicKey]:
        """Every key's public half (active and retired), by kid."""
        keys = {}
        for path in sorted(self.directory.glob("*.pem")):
            public = load_private_key(path).public_key()
            keys[kid_of(public)] = public
        return keys

    def rotate(self) -> bytes:
        """Make a new active key and return its kid; the previous keys stay in the directory."""
        self.active_kid()  # fail clearly when this is not a keyring
        return self._add_active_key()

    def _path_of(self, kid: bytes) -> Path:
        return self.directory / f"{kid.hex()}.pem"

    def _add_active_key(self) -> bytes:
        key = Ed25519PrivateKey.generate()
        kid = kid_of(key.public_key())
        write_private_key(self._path_of(kid), key)
        # Switch atomically: a crash leaves either the old or the new key active, never neither.
        write_atomic(self.directory / ACTIVE_FILE, (kid.hex() + "\n").encode(), 0o644)
        return kid


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The signing key named by `path`: a PEM private key file, or a keyring directory's active key
    (`keys rotate`). The one loader of the agent, `keys` and the tests."""
    path = Path(path)
    if path.is_dir():
        return Keyring(path).active_key()
    if not path.exists():
        raise KeyFileError(
            f"{path}: no signing key; create one with `firmware-agent keys generate --out {path}`"
        )
    return load_private_key(path)


def load_verification_keys(paths: list[Path]) -> dict[bytes, Ed25519PublicKey]:
    """Public keys by kid from PEM files (public or private) and keyring directories (every key)."""
    keys: dict[bytes, Ed25519PublicKey] = {}
    for path in map(Path, paths):
        if path.is_dir():
            keys.update(Keyring(path).public_keys())
        else:
            public = load_public_key(path)
            keys[kid_of(public)] = public
    return keys
