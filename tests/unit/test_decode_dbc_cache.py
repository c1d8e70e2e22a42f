"""The parsed-database cache: hits give what a parse gives (warnings too), any change parses again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from firmware_agent.decode import dbc_cache
from firmware_agent.decode.catalog import load_database

DBC = """\
VERSION ""
BS_:
BU_: ECU
BO_ 291 Speed: 8 ECU
 SG_ Value : 0|16@1+ (0.01,0) [0|655.35] "km/h" Vector__XXX
 SG_ Overlap : 8|16@1+ (1,0) [0|65535] "" Vector__XXX
BO_ 292 Gear: 1 ECU
 SG_ Gear : 0|4@1+ (2,1) [1|31] "" Vector__XXX
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FIRMWARE_AGENT_NO_CACHE", raising=False)
    return tmp_path / "cache" / "firmware-agent" / "dbc"


def _load(path: Path) -> tuple[object, list[str]]:
    warnings: list[str] = []
    return load_database(path, warnings.append), warnings


def test_a_hit_gives_the_parsed_database_and_its_warning(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "speed.dbc"
    path.write_text(DBC)
    parsed, warnings = _load(path)
    assert len(list(cache.glob("*.pickle"))) == 1
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    cached, cached_warnings = _load(path)
    assert cached is not parsed  # unpickled, not the same object
    assert cached_warnings == warnings and "strict=False" in warnings[0]  # the overlap, shown again
    assert cached.get_message_by_name("Gear").decode(b"\x03") == {"Gear": 7}  # type: ignore[attr-defined]


def test_a_changed_file_is_parsed_again(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "speed.dbc"
    path.write_text(DBC)
    _load(path)
    path.write_text(DBC.replace("Speed", "Velocity"))
    os.utime(path, ns=(1, 1))  # a different modification time even within the clock's resolution
    database, _ = _load(path)
    assert [m.name for m in database.messages] == ["Velocity", "Gear"]  # type: ignore[attr-defined]
    assert len(list(cache.glob("*.pickle"))) == 1  # one entry per path, replaced


def test_entries_others_could_have_written_are_not_unpickled(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "speed.dbc"
    path.write_text(DBC)
    _load(path)
    (entry,) = cache.glob("*.pickle")
    entry.write_bytes(b"not a pickle")  # what would run if it were loaded
    entry.chmod(0o666)
    database, warnings = _load(path)
    assert [m.name for m in database.messages] == ["Speed", "Gear"] and warnings  # type: ignore[attr-defined]
    assert entry.stat().st_mode & 0o777 == 0o600  # rewritten by us


def test_the_cache_holds_at_most_max_entries(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbc_cache, "MAX_ENTRIES", 3)
    for number in range(5):
        path = tmp_path / f"speed{number}.dbc"
        path.write_text(DBC)
        _load(path)
    assert len(list(cache.glob("*.pickle"))) == 3


def test_turned_off(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRMWARE_AGENT_NO_CACHE", "1")
    path = tmp_path / "speed.dbc"
    path.write_text(DBC)
    _load(path)
    assert not cache.exists()
