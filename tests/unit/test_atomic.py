"""The one atomic write: content, exact mode whatever the umask, nothing left behind on failure."""

from __future__ import annotations

import os
import stat
import sys
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


def test_the_unique_temporary_name_is_never_interned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pathlib up to Python 3.12 interns every part of a path it parses, and 3.12.0-3.12.6 never free
    interned strings (cpython#121780): a `Path` of each write's new temporary name grew the daemon by
    about 100 bytes per write (health.json every second: 9 MB a day)."""
    interned: list[str] = []
    intern = sys.intern

    def recording(text: str) -> str:
        interned.append(text)
        return intern(text)

    monkeypatch.setattr(sys, "intern", recording)
    for _ in range(3):
        write_atomic(tmp_path / "health.json", b"{}", 0o644, durable=False)
    assert not [text for text in interned if text.endswith(".tmp")]
    assert (tmp_path / "health.json").read_bytes() == b"{}"
