"""Key files (mode 0600, refusal of loose permissions) and keyring rotation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from firmware_agent.telemetry.keys import (
    KeyFileError,
    Keyring,
    generate_private_key,
    kid_of,
    load_private_key,
    load_public_key,
    public_key_pem,
)


def test_generated_key_is_0600_pkcs8_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    key = generate_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert kid_of(load_private_key(path).public_key()) == kid_of(key.public_key())
    with pytest.raises(KeyFileError, match="already exists"):
        generate_private_key(path)


def test_group_readable_private_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    generate_private_key(path)
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_private_key(path)


def test_public_key_pem_loads_back(tmp_path: Path) -> None:
    key = generate_private_key(tmp_path / "k.pem")
    (tmp_path / "k.pub").write_text(public_key_pem(key.public_key()))
    assert kid_of(load_public_key(tmp_path / "k.pub")) == kid_of(key.public_key())
    (tmp_path / "bad.pub").write_text("nope")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(tmp_path / "bad.pub")


def test_rotation_keeps_retired_keys_for_verification(tmp_path: Path) -> None:
    ring = Keyring.create(tmp_path / "keys")
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    first = ring.active_kid()
    second = ring.rotate()
    assert second != first and ring.active_kid() == second
    assert kid_of(ring.active_key().public_key()) == second
    assert set(ring.public_keys()) == {first, second}
    with pytest.raises(KeyFileError, match="already holds a keyring"):
        Keyring.create(tmp_path / "keys")
    with pytest.raises(KeyFileError, match="not a keyring"):
        Keyring(tmp_path).rotate()
