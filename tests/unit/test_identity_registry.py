"""The profile registry: pseudonymous ids, permissions, atomic writes, caps, forget, hand-edited files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from firmware_agent.cli import main
from firmware_agent.identity.learning import feature_width
from firmware_agent.identity.registry import IdentityStateError, ProfileRegistry

KEY = "KEY_STATUS.KeyId=439041025"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_profile_ids_are_stable_per_vehicle_and_differ_between_vehicles(tmp_path: Path) -> None:
    first = ProfileRegistry(tmp_path / "car-a").profile_id(KEY)
    assert first == ProfileRegistry(tmp_path / "car-a").profile_id(KEY)  # after a restart
    other = ProfileRegistry(tmp_path / "car-b").profile_id(KEY)
    assert first != other
    assert first.startswith("p-") and len(first) == 18 and "439041025" not in first
    assert ProfileRegistry(tmp_path / "car-a").profile_id("KEY_STATUS.KeyId=2") != first


def test_files_are_private_and_hold_no_raw_identity(tmp_path: Path) -> None:
    registry = ProfileRegistry(tmp_path)
    profile = registry.profile_id(KEY)
    registry.add_windows(profile, np.ones((3, 5)), step_seconds=10, cap=100)
    folder = tmp_path / "identity"
    assert mode(folder) == 0o700 and mode(folder / "windows") == 0o700
    for path in (folder / "secret", folder / "profiles.json", folder / "windows" / f"{profile}.npy"):
        assert mode(path) == 0o600, path
    assert len((folder / "secret").read_bytes()) == 32
    assert "439041025" not in (folder / "profiles.json").read_text()
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_windows_are_capped_oldest_out_and_minutes_follow(tmp_path: Path) -> None:
    registry = ProfileRegistry(tmp_path)
    profile = registry.profile_id(KEY)
    registry.add_windows(profile, np.full((6, 4), 1.0), step_seconds=10, cap=10)
    record = registry.add_windows(profile, np.full((6, 4), 2.0), step_seconds=10, cap=10)
    assert (record.windows, record.drives, record.minutes) == (10, 2, round(10 * 10 / 60, 2))
    drives, windows = ProfileRegistry(tmp_path).windows(profile) or (None, None)
    assert windows is not None and drives is not None
    assert windows[:, 0].tolist() == [1.0] * 4 + [2.0] * 6  # the two oldest of drive 0 went
    assert drives.tolist() == [0.0] * 4 + [1.0] * 6


def test_the_training_set_holds_only_the_newest_windows(tmp_path: Path) -> None:
    """A fit takes the newest windows of a profile that keeps more: a view would keep them all in memory
    while the fit runs."""
    registry = ProfileRegistry(tmp_path)
    profile = registry.profile_id(KEY)
    width = feature_width()
    registry.add_windows(profile, np.arange(30.0 * width).reshape(30, width), step_seconds=60, cap=100)
    [(name, drives, windows)] = registry.training_set(20.0, width, newest=10)
    assert name == profile and windows.shape == (10, width) and len(drives) == 10
    assert windows[0, 0] == 20.0 * width  # the newest ten
    assert windows.base is None and drives.base is None, "copies, not views of the kept windows"


def test_forget_erases_the_record_and_the_windows(tmp_path: Path) -> None:
    registry = ProfileRegistry(tmp_path)
    keep, gone = registry.profile_id(KEY), registry.profile_id("KEY_STATUS.KeyId=7")
    for profile in (keep, gone):
        registry.add_windows(profile, np.ones((2, 3)), step_seconds=10, cap=100)
    registry.forget(gone)
    reloaded = ProfileRegistry(tmp_path)
    assert set(reloaded.profiles) == {keep}
    assert reloaded.windows(gone) is None and reloaded.windows(keep) is not None
    with pytest.raises(IdentityStateError, match="no profile 'p-0000000000000000'"):
        reloaded.forget("p-0000000000000000")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"version": 1, "profiles": {', "line 1: not valid JSON"),
        ('{"version": 2, "profiles": {}}', "not a version-1 profile registry"),
        ('{"version": 1, "profiles": {"anna": {}}}', "profiles.anna: not a profile id"),
        (
            '{"version": 1, "profiles": {"p-0123456789abcdef": {"minutes": "many"}}}',
            "p-0123456789abcdef: expected",
        ),
    ],
)
def test_a_hand_edited_registry_is_one_error_line_and_is_never_overwritten(
    tmp_path: Path, content: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "identity" / "profiles.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(IdentityStateError, match=problem):
        ProfileRegistry(tmp_path)
    assert main(["profile", "list", "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and problem.split(":")[0] in err[0]
    assert main(["profile", "forget", "--state-dir", str(tmp_path), "p-0123456789abcdef"]) == 2
    assert path.read_text() == content  # nothing lost, nothing rewritten


def test_a_truncated_windows_file_is_named(tmp_path: Path) -> None:
    registry = ProfileRegistry(tmp_path)
    profile = registry.profile_id(KEY)
    registry.add_windows(profile, np.ones((2, 3)), step_seconds=10, cap=100)
    path = tmp_path / "identity" / "windows" / f"{profile}.npy"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(IdentityStateError, match=f"{path}: cannot read the profile's windows"):
        registry.windows(profile)


def test_profile_list_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = ProfileRegistry(tmp_path)
    profile = registry.profile_id(KEY)
    registry.add_windows(profile, np.ones((150, feature_width())), step_seconds=10, cap=1000)  # 25 minutes
    assert main(["profile", "list", "--state-dir", str(tmp_path), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["activation_minutes"] == 20
    assert listing["profiles"] == [
        {
            "profile": profile,
            "minutes": 25.0,
            "drives": 1,
            "windows": 150,
            "active": True,
            "last_learned": listing["profiles"][0]["last_learned"],
        }
    ]
    assert main(["profile", "list", "--state-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["PROFILE", "MINUTES", "DRIVES", "MODEL"]
    assert table[1].split() == [profile, "25.0", "1", "active"]
