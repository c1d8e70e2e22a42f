"""Window vectors, per-second features and sliding windows of the driver model, on synthetic drives."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from firmware_agent.identity.features import (
    CHANNELS,
    MIN_ROWS,
    WINDOW_ROWS,
    as_seconds,
    feature_names,
    second_feature_names,
    second_features,
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


def test_window_vector_keeps_the_rows_and_pads_short_windows() -> None:
    window = synthetic_drive(1, 60, pedal_peak=40, decel=2.5)
    features = window_features(window)
    assert features.shape == (len(feature_names()),) == (WINDOW_ROWS * len(CHANNELS),)
    assert len(set(feature_names())) == len(feature_names())
    np.testing.assert_array_equal(features.reshape(WINDOW_ROWS, len(CHANNELS)), window)
    short = window_features(window[:40])
    windows, valid = as_seconds(short)
    assert valid[0, :40].all() and not valid[0, 40:].any()
    np.testing.assert_array_equal(windows[0, :40], window[:40])
    longer = np.concatenate([window, window[:15]])  # a longer window keeps its last WINDOW_ROWS seconds
    np.testing.assert_array_equal(window_features(longer).reshape(WINDOW_ROWS, -1), longer[-WINDOW_ROWS:])


def test_partial_gaps_are_interpolated_and_a_missing_channel_stays_missing() -> None:
    window = synthetic_drive(3, 60, pedal_peak=40, decel=2.5)
    gappy = window.copy()
    speed = CHANNELS.index("speed")
    gappy[10:13, speed] = np.nan
    gappy[:, CHANNELS.index("throttle")] = np.nan
    rows = window_features(gappy).reshape(WINDOW_ROWS, len(CHANNELS))
    assert np.isfinite(rows[:, speed]).all()
    assert rows[11, speed] == pytest.approx((window[9, speed] + window[13, speed]) / 2, abs=1e-9)
    assert np.isnan(rows[:, CHANNELS.index("throttle")]).all()


def test_second_features_match_names_and_follow_the_window() -> None:
    windows, valid = as_seconds(
        np.stack([window_features(synthetic_drive(seed, 60, pedal_peak=40, decel=2.5)) for seed in (1, 2)])
    )
    rows = second_features(windows, valid)
    names = second_feature_names()
    assert rows.shape == (2, WINDOW_ROWS, len(names)) and len(set(names)) == len(names)
    assert np.isfinite(rows).all()
    column = {name: index for index, name in enumerate(names)}
    pressure = windows[:, :, CHANNELS.index("brake_pressure")]
    np.testing.assert_allclose(rows[:, 20, column["brake_pressure.min10"]], pressure[:, 11:21].min(axis=1))
    np.testing.assert_allclose(rows[:, 20, column["d.speed"]], windows[:, 20, 2] - windows[:, 19, 2])
    np.testing.assert_allclose(rows[:, 20, column["lag5.throttle"]], windows[:, 15, 1])
    # a context feature is the same on every second of its window
    assert np.ptp(rows[:, :, column["window.pedal_max"]], axis=1).max() == 0.0


def test_second_features_of_a_missing_channel_are_nan_without_warnings() -> None:
    window = synthetic_drive(2, 60, pedal_peak=40, decel=2.5)
    window[:, CHANNELS.index("throttle")] = np.nan
    windows, valid = as_seconds(window_features(window[:45]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = second_features(windows, valid)[0, :45]
    column = {name: index for index, name in enumerate(second_feature_names())}
    assert (
        np.isnan(rows[:, column["throttle"]]).all() and np.isnan(rows[:, column["window.throttle_min"]]).all()
    )
    assert np.isfinite(rows[:, column["speed"]]).all() and np.isfinite(rows[:, column["d.pedal"]]).all()


def test_abrupt_pedal_shows_in_the_pedal_changes() -> None:
    def pedal_changes(peak: float, decel: float) -> float:
        windows, valid = as_seconds(window_features(synthetic_drive(4, 60, pedal_peak=peak, decel=decel)))
        rows = second_features(windows, valid)[0]
        return float(np.abs(rows[:, second_feature_names().index("d.pedal")]).mean())

    assert pedal_changes(60, 3.5) > 2 * pedal_changes(15, 1.5)


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
