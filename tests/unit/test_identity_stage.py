"""The identity stage's policy, driven through the sampler's callbacks with synthetic 1 Hz rows of two
distinct driving styles: learning, activation, confirmation, mismatch, no key, forget, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firmware_agent.decode.catalog import Catalog
from firmware_agent.identity.features import CHANNELS
from firmware_agent.identity.settings import IdentitySettings
from firmware_agent.identity.stage import DriveOutcome, IdentityStage
from firmware_agent.values import Batch, Event
from firmware_agent.vehicle import default_dbc_dir, default_dbc_specs
from firmware_agent.vss import VssMap

KEY_A, KEY_B = "KEY_STATUS.KeyId=1", "KEY_STATUS.KeyId=2"
SETTINGS = IdentitySettings(activation_minutes=3.0, mismatch_seconds=60.0)


def style_rows(style: str, seconds: int, seed: int) -> np.ndarray:
    """1 Hz rows of a stop-and-go drive: 'calm' accelerates and brakes gently, 'harsh' hard and late."""
    rng = np.random.default_rng(seed)
    gentle = style == "calm"
    t = np.arange(seconds, dtype=float)
    cycle = 40.0 if gentle else 25.0
    phase = (t % cycle) / cycle
    speed = np.where(phase < 0.7, 50 * np.sin(np.pi * phase / 0.7), 0.0) * (0.8 if gentle else 1.3)
    speed = np.clip(speed + rng.normal(0, 1, seconds), 0, None)
    accel = np.gradient(speed) / 3.6
    rows = np.full((seconds, len(CHANNELS)), np.nan)
    column = {name: i for i, name in enumerate(CHANNELS)}
    rows[:, column["speed"]] = speed
    rows[:, column["long_accel"]] = accel
    rows[:, column["pedal"]] = np.clip(accel * (15 if gentle else 40), 0, 100) + rng.normal(0, 1, seconds)
    braking = accel < -0.3
    rows[:, column["brake_switch"]] = braking.astype(float)
    rows[:, column["brake_pressure"]] = np.where(braking, -accel * (8 if gentle else 20), 0.0)
    rows[:, column["steer_angle"]] = rng.normal(0, 5 if gentle else 20, seconds)
    rows[:, column["steer_rate"]] = np.gradient(rows[:, column["steer_angle"]])
    rows[:, column["lat_accel"]] = rng.normal(0, 0.3 if gentle else 1.2, seconds)
    rows[:, column["rpm"]] = speed * 60
    rows[:, column["gear"]] = 3.0
    return rows


class Harness:
    """An `IdentityStage` with a recording collector (events, driver changes, drive outcomes)."""

    def __init__(self, state: Path, settings: IdentitySettings = SETTINGS, background: bool = False) -> None:
        catalog = Catalog.from_specs(default_dbc_specs(), warn_stream=None)
        vss = VssMap.load(default_dbc_dir() / "vss.toml")
        self.events: list[Event] = []
        self.drivers: list[dict[str, Any] | None] = []
        self.outcomes: list[DriveOutcome] = []
        self.stage = IdentityStage(
            settings,
            catalog,
            vss,
            state,
            emit=self.events.append,
            set_driver=lambda driver, timestamp: self.drivers.append(driver),
            on_drive_end=self.outcomes.append,
            background_refit=background,
        )
        self.clock = 1_767_225_600.0

    def drive(self, key: str | None, rows: np.ndarray, finish: bool = True) -> DriveOutcome | None:
        stage = self.stage
        stage.on_explicit(self.clock, key)
        stage.on_ignition(self.clock, True)
        for row in rows:
            self.clock += 1.0
            stage.on_row(self.clock, row)
        self.clock += 1.0
        if finish:
            stage.on_ignition(self.clock, False)
            stage.on_explicit(self.clock, None)
        self.clock += 3600.0
        return self.outcomes[-1] if finish else None

    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]

    def profile(self, key: str) -> str:
        return self.stage.registry.profile_id(key)


@pytest.fixture
def trained(tmp_path: Path) -> Harness:
    """Profiles A (calm) and B (harsh), each active after two 4-minute drives."""
    harness = Harness(tmp_path)
    for seed in (1, 2):
        assert harness.drive(KEY_A, style_rows("calm", 240, seed)).result == "learned"  # type: ignore[union-attr]
        assert harness.drive(KEY_B, style_rows("harsh", 240, seed)).result == "learned"  # type: ignore[union-attr]
    harness.events.clear()
    return harness


def test_explicit_identity_only_until_the_profile_is_active(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    outcome = harness.drive(KEY_A, style_rows("calm", 120, 1))
    a = harness.profile(KEY_A)
    assert outcome is not None and outcome.result == "learned" and outcome.learned == {a: 10}
    identified = [e.detail for e in harness.events if e.kind == "driver_identified"]
    assert identified == [
        {
            "profile": a,
            "source": "explicit",
            "confidence": SETTINGS.explicit_prior,
            "seconds": 0.0,
            "confirmed": False,
        }
    ]
    assert harness.stage.model is None  # 1.7 minutes learned, 3 needed
    assert {"profile": a, "source": "explicit"} in harness.drivers and harness.drivers[-1] == {
        "profile": None,
        "source": "none",
    }


def test_an_owner_is_confirmed_by_behaviour_and_learned(trained: Harness) -> None:
    a = trained.profile(KEY_A)
    assert trained.stage.model is not None and set(trained.stage.model.labels) == {a, trained.profile(KEY_B)}
    batch = Batch(driver={"profile": a, "source": "explicit"})
    outcome = trained.drive(KEY_A, style_rows("calm", 300, 7), finish=False)
    assert outcome is None
    trained.stage.annotate(batch)
    assert batch.driver is not None and batch.driver["model"] == "active" and batch.driver["behaviour"] == a
    assert batch.driver["confidence"] >= SETTINGS.identify_confidence
    trained.stage.on_ignition(trained.clock, False)
    identified = [e.detail for e in trained.events if e.kind == "driver_identified"]
    assert len(identified) == 1 and identified[0]["profile"] == a and identified[0]["confirmed"] is True
    assert "driver_mismatch" not in trained.kinds()
    assert trained.outcomes[-1].result == "learned"
    assert trained.stage.registry.profiles[a].drives == 3


def test_a_borrowed_key_raises_one_mismatch_and_is_not_learned(trained: Harness) -> None:
    a, b = trained.profile(KEY_A), trained.profile(KEY_B)
    outcome = trained.drive(KEY_A, style_rows("harsh", 300, 8))
    mismatches = [e.detail for e in trained.events if e.kind == "driver_mismatch"]
    assert len(mismatches) == 1
    assert mismatches[0]["explicit"] == a and mismatches[0]["behaviour"] == b
    assert mismatches[0]["confidence"] >= SETTINGS.mismatch_confidence
    assert mismatches[0]["seconds"] >= SETTINGS.mismatch_seconds
    assert outcome is not None and outcome.result == "mismatch" and outcome.learned == {}
    assert trained.stage.registry.profiles[a].drives == 2  # the owner's fingerprint is not poisoned
    assert trained.stage.counters()["drives_not_learned_mismatch"] == 1
    assert all(d is None or d["profile"] in (a, None) for d in trained.drivers[-3:])  # never replaced by b


def test_without_any_key_the_behaviour_names_the_driver(trained: Harness) -> None:
    b = trained.profile(KEY_B)
    outcome = trained.drive(None, style_rows("harsh", 240, 9))
    assert {"profile": b, "source": "behaviour"} in trained.drivers
    identified = [e.detail for e in trained.events if e.kind == "driver_identified"]
    assert len(identified) == 1 and identified[0]["profile"] == b and identified[0]["source"] == "behaviour"
    assert outcome is not None and outcome.result == "no_identity"


def test_a_drive_cut_short_is_not_learned(trained: Harness) -> None:
    a = trained.profile(KEY_A)
    trained.drive(KEY_A, style_rows("calm", 120, 10), finish=False)
    trained.stage.finish(trained.clock)
    assert trained.outcomes[-1].result == "unfinished"
    assert trained.stage.registry.profiles[a].drives == 2


def test_forget_removes_the_profile_from_the_model(trained: Harness, tmp_path: Path) -> None:
    a, b = trained.profile(KEY_A), trained.profile(KEY_B)
    trained.stage.forget(a)
    assert trained.stage.model is not None and list(trained.stage.model.labels) == [b]
    restarted = Harness(tmp_path)
    assert restarted.stage.model is not None and list(restarted.stage.model.labels) == [b]
    assert a not in restarted.stage.registry.profiles


def test_learning_that_cannot_be_saved_is_counted_not_raised(trained: Harness) -> None:
    windows = trained.stage.registry.windows_folder
    for path in windows.iterdir():
        path.unlink()
    windows.rmdir()
    windows.write_text("not a folder")  # as a full or broken file system would refuse the write
    outcome = trained.drive(KEY_A, style_rows("calm", 120, 11))
    assert outcome is not None and outcome.result == "error"
    assert trained.stage.counters()["learn_errors"] == 1


def test_a_corrupt_model_file_is_refitted_from_the_windows(trained: Harness, tmp_path: Path) -> None:
    model = trained.stage.registry.model_path
    model.write_bytes(model.read_bytes()[:100])
    restarted = Harness(tmp_path)
    assert restarted.stage.model is not None and len(restarted.stage.model.labels) == 2


def test_the_agent_refits_in_the_background_and_swaps_the_model_between_drives(tmp_path: Path) -> None:
    harness = Harness(tmp_path, background=True)
    harness.drive(KEY_A, style_rows("calm", 240, 1))
    harness.drive(KEY_B, style_rows("harsh", 240, 1))
    harness.stage.finish()  # waits for the refit in progress
    assert harness.stage.model is not None
    assert set(harness.stage.model.labels) == {harness.profile(KEY_A), harness.profile(KEY_B)}
    assert harness.stage.counters()["model_fits"] >= 1


def test_with_learning_off_drives_change_nothing(trained: Harness, tmp_path: Path) -> None:
    frozen = Harness(tmp_path, IdentitySettings(activation_minutes=3.0, learn=False))
    before = (tmp_path / "identity" / "profiles.json").read_bytes()
    outcome = frozen.drive(KEY_A, style_rows("calm", 240, 12))
    assert outcome is not None and outcome.result == "not_learning"
    assert (tmp_path / "identity" / "profiles.json").read_bytes() == before
