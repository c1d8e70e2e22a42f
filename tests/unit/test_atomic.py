"""The one atomic write: content, exact mode whatever the umask, nothing left behind on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from firmware_agent.atomic import write_atomic


@pytest.mark.parametrize("durable", [True, False])
def test_write_replaces_the_file_with_the_exact_mode(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    previous = os.umask(0o077)
    try:
        write_atomic(target, b"new", 0o644, durable=durable)
    finally:
        os.umask(previous)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_atomic(target, b"secret")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_rename_leaves_the_target_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "folder-in-the-way"
    (target / "child").mkdir(parents=True)
    with pytest.raises(OSError):
        write_atomic(target, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder-in-the-way"]
