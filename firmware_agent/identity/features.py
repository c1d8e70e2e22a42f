"""What the driver-fingerprint model sees of one window of driving, and the per-second features it uses.

A window is a (T, len(CHANNELS)) float64 array on the 1 Hz grid, NaN where a channel is missing, in the
units of `CHANNELS`. `window_features` keeps the window itself (gaps interpolated, padded to
`WINDOW_ROWS` seconds): the agent stores these vectors per window and refits from them, so a later model
with other derived features can still learn from windows stored today.

The model classifies every second and adds up the seconds of a window (see `model.py`). `second_features`
turns a batch of stored windows into one feature row per second:
- the 11 channels and their first differences: how hard and how abruptly the controls are used;
- relations between channels: engine speed per km/h (gear choice), throttle minus pedal, acceleration per
  % throttle (load and road);
- trailing statistics over 5-10 s: the brake-pressure level (its rolling minimum is the level with the
  brake released, which differs between recordings), the throttle and engine-speed floor, steering
  activity, the pedal's recent peak;
- the values 2 and 5 s earlier of throttle, speed, pressure, engine speed and acceleration;
- a few statistics of the whole window repeated on each of its seconds (pressure with the brake
  released, pedal peak, idle throttle and engine speed, activity of throttle, speed and steering), so
  that a second is judged in the context of its minute.
Measured in `docs/identity-model.md`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: Canonical channel order: the columns of a window, with the units the thresholds below assume.
CHANNELS: tuple[str, ...] = (
    "pedal",  # accelerator pedal, % (0..100)
    "throttle",  # throttle position, % (absent on an EV: all NaN or constant)
    "speed",  # vehicle speed, km/h
    "long_accel",  # longitudinal acceleration, m/s², positive forwards
    "lat_accel",  # lateral acceleration, m/s²
    "brake_switch",  # brake pedal switch, 0 = released, 1 = pressed
    "brake_pressure",  # master cylinder pressure, bar
    "steer_rate",  # steering wheel speed, deg/s
    "steer_angle",  # steering wheel angle, deg
    "rpm",  # engine (or motor) speed, 1/min
    "gear",  # current gear, integer
)

#: The grid rate windows are sampled on.
RATE_HZ = 1.0

#: A window with fewer rows than this is skipped by `sliding_windows`: half a minute at 1 Hz.
MIN_ROWS = 30

#: Seconds kept per window by `window_features` (the longest window the agent makes, 60 s at 1 Hz);
#: a longer window keeps its last WINDOW_ROWS rows, a shorter one is padded with NaN rows.
WINDOW_ROWS = 60

_PEDAL, _THROTTLE, _SPEED, _LONG, _LAT, _BRAKE, _PRESSURE, _STEER_RATE, _STEER, _RPM, _GEAR = range(11)

STOPPED_KMH = 1.0  # below this the car is at rest
BRAKE_ON = 0.5  # brake switch counts as pressed above this (0/1 encoding)

#: Trailing statistics: (name, channel, seconds, statistic); "abs" statistics use the absolute value.
_ROLLING: tuple[tuple[str, int, int, str], ...] = (
    ("brake_pressure.min10", _PRESSURE, 10, "min"),
    ("brake_pressure.mean5", _PRESSURE, 5, "mean"),
    ("speed.std10", _SPEED, 10, "std"),
    ("steer_rate.absmean5", _STEER_RATE, 5, "absmean"),
    ("steer_angle.absmean5", _STEER, 5, "absmean"),
    ("throttle.mean5", _THROTTLE, 5, "mean"),
    ("throttle.min10", _THROTTLE, 10, "min"),
    ("rpm.min10", _RPM, 10, "min"),
    ("long_accel.std5", _LONG, 5, "std"),
    ("pedal.max10", _PEDAL, 10, "max"),
)
_LAGS = (2, 5)
_LAGGED = (_THROTTLE, _SPEED, _PRESSURE, _RPM, _LONG)
_CONTEXT_NAMES = (
    "window.pressure_released_q50",
    "window.pressure_released_q20",
    "window.pedal_max",
    "window.pedal_mean",
    "window.throttle_min",
    "window.throttle_q10",
    "window.rpm_stopped_q50",
    "window.throttle_stopped_q50",
    "window.throttle_dabs_mean",
    "window.speed_dabs_mean",
    "window.speed_std",
    "window.steer_rate_abs_mean",
    "window.lat_accel_std",
    "window.long_accel_std",
)


def _fill_gaps(window: np.ndarray) -> np.ndarray:
    """Interpolate partial gaps of each channel; a channel missing in the whole window stays NaN."""
    missing = np.isnan(window)
    if not missing.any():
        return window
    filled: np.ndarray = window.copy()
    index = np.arange(window.shape[0])
    for column in np.flatnonzero(missing.any(axis=0)):
        present = ~missing[:, column]
        if present.any():
            filled[:, column] = np.interp(index, index[present], window[present, column])
    return filled


def window_features(window: np.ndarray) -> np.ndarray:
    """The vector the model consumes for one window: `window` is (T, len(CHANNELS)) on the 1 Hz grid.

    The rows (gaps interpolated, a channel missing throughout stays NaN) are kept as they are, the last
    `WINDOW_ROWS` of them, padded with NaN rows to `WINDOW_ROWS` and flattened row by row.
    """
    window = np.asarray(window, dtype=np.float64)
    if window.ndim != 2 or window.shape[1] != len(CHANNELS) or window.shape[0] < 2:
        raise ValueError(f"window must be (T >= 2, {len(CHANNELS)}), got {window.shape}")
    window = _fill_gaps(window[-WINDOW_ROWS:])
    padded = np.full((WINDOW_ROWS, len(CHANNELS)), np.nan)
    padded[: len(window)] = window
    return padded.ravel()


def feature_names() -> list[str]:
    """Names of the entries of `window_features`, in order (`t00.pedal` is the first second's pedal)."""
    return [f"t{second:02d}.{channel}" for second in range(WINDOW_ROWS) for channel in CHANNELS]


def as_seconds(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(windows (N, WINDOW_ROWS, len(CHANNELS)), valid (N, WINDOW_ROWS)) from `window_features` vectors.

    A second is valid when any channel has a value there (padding rows are all NaN).
    """
    matrix = np.asarray(features, dtype=np.float64)
    matrix = matrix[None, :] if matrix.ndim == 1 else matrix
    if matrix.ndim != 2 or matrix.shape[1] != WINDOW_ROWS * len(CHANNELS):
        raise ValueError(f"features have {matrix.shape[-1]} columns, expected {WINDOW_ROWS * len(CHANNELS)}")
    windows = matrix.reshape(len(matrix), WINDOW_ROWS, len(CHANNELS))
    valid = np.asarray(np.isfinite(windows).any(axis=2))
    return windows, valid


def _trailing(values: np.ndarray, seconds: int, statistic: str) -> np.ndarray:
    """Statistic over the last `seconds` seconds of each second, (N, S) -> (N, S).

    The window's first value stands in for the seconds before the window starts.
    """
    front = np.repeat(values[:, :1], seconds - 1, axis=1)
    view: np.ndarray = sliding_window_view(np.concatenate([front, values], axis=1), seconds, axis=1)
    result: np.ndarray
    if statistic == "min":
        result = view.min(axis=2)
    elif statistic == "max":
        result = view.max(axis=2)
    elif statistic == "std":
        result = view.std(axis=2)
    elif statistic == "absmean":
        result = np.abs(view).mean(axis=2)
    else:
        result = view.mean(axis=2)
    return result


def _lagged(values: np.ndarray, lag: int) -> np.ndarray:
    return np.concatenate([np.repeat(values[:, :1], lag, axis=1), values[:, :-lag]], axis=1)


def _masked_quantile(values: np.ndarray, mask: np.ndarray, q: float) -> np.ndarray:
    """Per-row `q` % quantile (the nearest lower rank) of `values` (N, S) where `mask` holds; NaN if none.

    Sorting whole rows at once: numpy's nanpercentile works row by row and dominated the fit time.
    """
    ordered = np.sort(np.where(mask & np.isfinite(values), values, np.inf), axis=1)
    count = (mask & np.isfinite(values)).sum(axis=1)
    rank = np.floor(q / 100.0 * np.maximum(count - 1, 0)).astype(np.int64)
    picked = ordered[np.arange(len(values)), rank]
    return np.where(count > 0, picked, np.nan)


def _context(windows: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Whole-window statistics (N, len(_CONTEXT_NAMES)), NaN-aware."""
    ch = {index: windows[:, :, index] for index in range(len(CHANNELS))}
    released = valid & (ch[_BRAKE] < BRAKE_ON)
    stopped = valid & (ch[_SPEED] < STOPPED_KMH)
    # All-NaN rows (a channel the car lacks) give NaN statistics by design; numpy warns about each.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        diffs = np.abs(np.diff(windows, axis=1))

        columns = [
            _masked_quantile(ch[_PRESSURE], released, 50.0),
            _masked_quantile(ch[_PRESSURE], released, 20.0),
            np.nanmax(np.where(valid, ch[_PEDAL], np.nan), axis=1),
            np.nanmean(ch[_PEDAL], axis=1),
            np.nanmin(np.where(valid, ch[_THROTTLE], np.nan), axis=1),
            _masked_quantile(ch[_THROTTLE], valid, 10.0),
            _masked_quantile(ch[_RPM], stopped, 50.0),
            _masked_quantile(ch[_THROTTLE], stopped, 50.0),
            np.nanmean(diffs[:, :, _THROTTLE], axis=1),
            np.nanmean(diffs[:, :, _SPEED], axis=1),
            np.nanstd(ch[_SPEED], axis=1),
            np.nanmean(np.abs(ch[_STEER_RATE]), axis=1),
            np.nanstd(ch[_LAT], axis=1),
            np.nanstd(ch[_LONG], axis=1),
        ]
    return np.stack(columns, axis=1)


def second_features(windows: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Feature rows per second (N, S, len(second_feature_names())) of windows (N, S, len(CHANNELS)).

    Rows of invalid seconds hold garbage or NaN; the model ignores them. A channel missing throughout
    gives NaN in every feature that uses it.
    """
    ch = {index: windows[:, :, index] for index in range(len(CHANNELS))}
    with np.errstate(all="ignore"):
        diffs = np.diff(windows, axis=1, prepend=windows[:, :1, :])  # the first second's difference is 0
        columns = [windows[:, :, index] for index in range(len(CHANNELS))]
        columns += [diffs[:, :, index] for index in range(len(CHANNELS))]
        columns += [
            ch[_RPM] / np.maximum(ch[_SPEED], 1.0),
            ch[_THROTTLE] - ch[_PEDAL],
            ch[_LONG] / np.maximum(ch[_THROTTLE], 1.0),
        ]
        columns += [_trailing(ch[channel], seconds, stat) for _, channel, seconds, stat in _ROLLING]
        columns += [_lagged(ch[channel], lag) for lag in _LAGS for channel in _LAGGED]
        context = _context(windows, valid)
    columns += [
        np.repeat(context[:, index : index + 1], windows.shape[1], axis=1)
        for index in range(len(_CONTEXT_NAMES))
    ]
    return np.stack(columns, axis=2)


def second_feature_names() -> list[str]:
    """Names of the last axis of `second_features`, in order."""
    names = list(CHANNELS) + [f"d.{channel}" for channel in CHANNELS]
    names += ["rpm_per_kmh", "throttle_minus_pedal", "accel_per_throttle"]
    names += [name for name, _, _, _ in _ROLLING]
    names += [f"lag{lag}.{CHANNELS[channel]}" for lag in _LAGS for channel in _LAGGED]
    return names + list(_CONTEXT_NAMES)


def sliding_windows(
    times: np.ndarray, rows: np.ndarray, length_s: float = 60.0, step_s: float = 10.0
) -> Iterator[tuple[float, float, np.ndarray]]:
    """Windows of one drive: (start, end, rows) with every row's time in [start, end].

    Windows start every `step_s` from the first time and cover [start, start + length_s); `end` is the
    time of the last row taken, so end - start < length_s. Only windows whose span fits in the drive
    are made (a drive shorter than one window gives one window of what there is), and a window with
    fewer than `MIN_ROWS` rows (gaps in the data) is skipped. `times` must be sorted.
    """
    times = np.asarray(times, dtype=np.float64)
    if times.size == 0:
        return
    if np.any(np.diff(times) < 0):
        raise ValueError("times must be sorted")
    first, last = float(times[0]), float(times[-1])
    grid = 1.0 / RATE_HZ
    count = max(int(np.floor((last + grid - first - length_s) / step_s + 1e-9)) + 1, 1)
    for index in range(count):
        start = first + index * step_s
        lo = int(np.searchsorted(times, start, side="left"))
        hi = int(np.searchsorted(times, start + length_s, side="left"))
        if hi - lo >= MIN_ROWS:
            yield start, float(times[hi - 1]), rows[lo:hi]
