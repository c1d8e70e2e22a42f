"""Window features and sliding windows of the behavioural driver model, on synthetic drives."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_agent.identity.features import (
    CHANNELS,
    MIN_ROWS,
    feature_names,
    sliding_windows,
    window_features,
)


def synthetic_drive(seed: int, seconds: int, pedal_peak: float, decel: float) -> np.ndarray:
    """A 1 Hz drive of stop-and-go legs: press to `pedal_peak`, cruise, brake at `decel` m/s² to rest."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((seconds, len(CHANNELS)))
    speed, phase, timer, target = 0.0, "stand", 5, 50.0
    for t in range(seconds):
        pedal, brake, pressure = 0.0, 0.0, 1.0
        if phase == "stand":
            accel = 0.0
            brake, pressure = 1.0, 15.0
            timer -= 1
            if timer <= 0:
                phase, target = "go", rng.uniform(30, 70)
        elif phase == "go":
            pedal = pedal_peak * (0.8 + 0.2 * rng.random())
            accel = pedal / 20.0
            if speed >= target:
                phase, timer = "cruise", int(rng.integers(15, 40))
        elif phase == "cruise":
            pedal = pedal_peak * 0.3 + rng.normal(0, 1)
            accel = rng.normal(0, 0.1)
            timer -= 1
            if timer <= 0:
                phase = "brake"
        else:
            accel = -decel * (0.8 + 0.4 * rng.random())
            brake, pressure = 1.0, decel * 12.0
            if speed + accel * 3.6 <= 0:
                phase, timer = "stand", int(rng.integers(5, 20))
        speed = max(speed + accel * 3.6, 0.0)
        gear = min(1 + int(speed // 20), 6) if speed > 0 else 0
        rows[t] = [
            max(pedal, 0.0),
            5.0 + max(pedal, 0.0) * 0.9,
            speed,
            accel,
            rng.normal(0, 0.3),
            brake,
            pressure,
            abs(rng.normal(0, 5)),
            rng.normal(0, 10),
            700 + speed * 30 / max(gear, 1),
            gear,
        ]
    return rows


def test_feature_vector_matches_names_and_is_finite_for_a_full_window() -> None:
    window = synthetic_drive(1, 60, pedal_peak=40, decel=2.5)
    features = window_features(window)
    assert features.shape == (len(feature_names()),)
    assert len(set(feature_names())) == len(feature_names())
    names = feature_names()
    # Every feature that does not need a particular event (a stop, a gear change) is finite.
    for name, value in zip(names, features, strict=True):
        if not name.startswith(("stop.", "response.rpm_at", "response.speed_at", "band.")):
            assert np.isfinite(value), name


def test_missing_channel_gives_nan_features_for_that_channel_only() -> None:
    window = synthetic_drive(2, 60, pedal_peak=40, decel=2.5)
    window[:, CHANNELS.index("throttle")] = np.nan
    features = dict(zip(feature_names(), window_features(window), strict=True))
    assert np.isnan(features["throttle.mean"])
    assert np.isnan(features["throttle.d_std"])
    assert np.isfinite(features["speed.mean"])
    assert np.isfinite(features["pedal.d_std"])


def test_partial_gaps_are_interpolated() -> None:
    window = synthetic_drive(3, 60, pedal_peak=40, decel=2.5)
    gappy = window.copy()
    gappy[10:13, CHANNELS.index("speed")] = np.nan
    features = dict(zip(feature_names(), window_features(gappy), strict=True))
    assert np.isfinite(features["speed.mean"])
    assert features["speed.mean"] == pytest.approx(window[:, CHANNELS.index("speed")].mean(), rel=0.05)


def test_abrupt_pedal_shows_in_the_pedal_dynamics() -> None:
    calm = dict(
        zip(feature_names(), window_features(synthetic_drive(4, 120, pedal_peak=15, decel=1.5)), strict=True)
    )
    harsh = dict(
        zip(feature_names(), window_features(synthetic_drive(4, 120, pedal_peak=60, decel=3.5)), strict=True)
    )
    assert harsh["pedal.d_std"] > 2 * calm["pedal.d_std"]
    assert harsh["pedal.q90"] > calm["pedal.q90"]


def test_window_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="window must be"):
        window_features(np.zeros((60, 3)))


def test_sliding_windows_cover_the_drive_with_rows_inside_their_span() -> None:
    times = np.arange(0.0, 300.0)
    rows = np.arange(300.0)[:, None] * np.ones((1, len(CHANNELS)))
    windows = list(sliding_windows(times, rows, 60.0, 10.0))
    assert [w[0] for w in windows] == [float(s) for s in range(0, 241, 10)]
    for start, end, window in windows:
        assert end - start <= 60.0
        assert start <= window[0, 0] and window[-1, 0] <= end
        assert len(window) == 60


def test_sliding_windows_skip_windows_with_too_few_rows() -> None:
    times = np.concatenate([np.arange(0.0, 100.0), np.arange(200.0, 300.0)])  # a 100-s hole
    rows = np.zeros((times.size, len(CHANNELS)))
    for _, _, window in sliding_windows(times, rows):
        assert len(window) >= MIN_ROWS
    starts = [start for start, _, _ in sliding_windows(times, rows)]
    assert 130.0 not in starts  # [130, 190) holds no row at all


def test_short_drive_gives_one_window_and_unsorted_times_are_refused() -> None:
    times = np.arange(0.0, 45.0)
    rows = np.zeros((45, len(CHANNELS)))
    assert len(list(sliding_windows(times, rows))) == 1
    assert list(sliding_windows(times[: MIN_ROWS - 1], rows[: MIN_ROWS - 1])) == []
    with pytest.raises(ValueError, match="sorted"):
        list(sliding_windows(times[::-1], rows))
