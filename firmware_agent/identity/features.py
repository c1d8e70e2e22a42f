"""Behavioural features of one window of driving, for the driver-fingerprint model.

A window is a (T, len(CHANNELS)) float64 array on the 1 Hz grid, NaN where a channel is missing. The
channels are in canonical units (see `CHANNELS`); the model standardises every feature, so units only
matter where a feature uses a threshold (stopped, pedal pressed, brake on), and those thresholds are
written next to the feature.

The feature groups, and why each is there (measured in `docs/identity-model.md`):
- distribution of every channel (mean, spread, quantiles): how hard, how fast, which gear;
- distribution of every channel's first difference: how abruptly the driver moves the controls;
- pedal/brake state machine: how often each state is entered, coasting between pedal and brake;
- speed-conditioned statistics: the same pedal at 20 km/h and at 80 km/h says different things;
- control response: acceleration per unit of pedal, engine speed per km/h (gear choice), shift points;
- stops: how the last seconds before the car comes to rest are braked.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

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

#: A window with fewer rows than this is skipped by `sliding_windows`: half a minute at 1 Hz is the
#: shortest stretch whose statistics were still stable in the benchmark (see docs/identity-model.md).
MIN_ROWS = 30

_PEDAL, _THROTTLE, _SPEED, _LONG, _LAT, _BRAKE, _PRESSURE, _STEER_RATE, _STEER, _RPM, _GEAR = range(11)

STOPPED_KMH = 1.0  # below this the car is at rest
PEDAL_ON_PCT = 1.0  # accelerator counts as pressed above this
BRAKE_ON = 0.5  # brake switch counts as pressed above this (0/1 encoding)
SPEED_BANDS_KMH = (1.0, 25.0, 50.0)  # edges of the speed bands of the conditioned statistics
_QUANTILES = (10.0, 50.0, 90.0)


def _fill_gaps(window: np.ndarray) -> np.ndarray:
    """Interpolate partial gaps of each channel; a channel missing in the whole window stays NaN."""
    missing = np.isnan(window)
    if not missing.any():
        return window
    filled = window.copy()
    index = np.arange(window.shape[0])
    for column in np.flatnonzero(missing.any(axis=0)):
        present = ~missing[:, column]
        if present.any():
            filled[:, column] = np.interp(index, index[present], window[present, column])
    return filled


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of `values` where `mask` holds; NaN when the mask is empty (the model imputes it)."""
    count = int(mask.sum())
    return float(values[mask].sum() / count) if count else float("nan")


def _rate(events: np.ndarray, seconds: float) -> float:
    """Events per minute."""
    return float(events.sum()) * 60.0 / seconds


def _onsets(state: np.ndarray) -> np.ndarray:
    """True where a boolean state switches on."""
    return state[1:] & ~state[:-1]


def _group_distribution(window: np.ndarray, diffs: np.ndarray) -> list[float]:
    quantiles = np.percentile(window, _QUANTILES, axis=0)  # (3, C)
    values = [window.mean(axis=0), window.std(axis=0), *quantiles]
    abs_diffs = np.abs(diffs)
    values += [abs_diffs.mean(axis=0), diffs.std(axis=0), np.percentile(abs_diffs, 90.0, axis=0)]
    return np.concatenate(values).tolist()


def _names_distribution() -> list[str]:
    names = []
    for stat in ("mean", "std", "q10", "q50", "q90", "dabs_mean", "d_std", "dabs_q90"):
        names += [f"{channel}.{stat}" for channel in CHANNELS]
    return names


def _group_states(window: np.ndarray, diffs: np.ndarray, seconds: float) -> list[float]:
    pedal, speed, brake = window[:, _PEDAL], window[:, _SPEED], window[:, _BRAKE]
    moving = speed >= STOPPED_KMH
    on_pedal = pedal > PEDAL_ON_PCT
    on_brake = brake > BRAKE_ON
    coasting = moving & ~on_pedal & ~on_brake
    pedal_rise = diffs[:, _PEDAL] > 0
    pedal_fall = diffs[:, _PEDAL] < 0
    # NaN pedal or brake channel: the comparisons above are all False, so mark the features missing.
    pedal_ok = 1.0 if np.isfinite(pedal[0]) else float("nan")
    brake_ok = 1.0 if np.isfinite(brake[0]) else float("nan")
    both_ok = pedal_ok * brake_ok
    return [
        float(moving.mean()),
        float(on_pedal.mean()) * pedal_ok,
        float(on_brake.mean()) * brake_ok,
        float(coasting.mean()) * both_ok,
        _rate(_onsets(on_pedal), seconds) * pedal_ok,
        _rate(_onsets(on_brake), seconds) * brake_ok,
        _rate(_onsets(coasting), seconds) * both_ok,
        _rate(_onsets(~moving), seconds),
        _masked_mean(pedal, on_pedal),
        _masked_mean(diffs[:, _PEDAL], pedal_rise),
        _masked_mean(diffs[:, _PEDAL], pedal_fall),
        float(pedal_rise.mean()) * pedal_ok,
        _masked_mean(window[:, _PRESSURE], on_brake),
        float((on_pedal & on_brake).mean()) * both_ok,
    ]


_STATE_NAMES = [
    "state.moving_frac",
    "state.pedal_frac",
    "state.brake_frac",
    "state.coast_frac",
    "state.pedal_onsets_pm",
    "state.brake_onsets_pm",
    "state.coast_onsets_pm",
    "state.stops_pm",
    "state.pedal_when_on",
    "state.pedal_rise_rate",
    "state.pedal_fall_rate",
    "state.pedal_rise_frac",
    "state.pressure_when_braking",
    "state.pedal_and_brake_frac",
]


def _group_speed_bands(window: np.ndarray) -> list[float]:
    speed = window[:, _SPEED]
    band = np.searchsorted(np.asarray(SPEED_BANDS_KMH), speed, side="right")  # 0 = stopped
    values = []
    for index in range(1, len(SPEED_BANDS_KMH) + 1):
        mask = band == index
        values.append(float(mask.mean()))
        for channel in (_PEDAL, _LONG, _RPM, _GEAR, _PRESSURE):
            values.append(_masked_mean(window[:, channel], mask))
        values.append(_masked_mean(np.abs(window[:, _LAT]), mask))
    return values


def _names_speed_bands() -> list[str]:
    names = []
    edges = (*SPEED_BANDS_KMH, float("inf"))
    for index in range(1, len(SPEED_BANDS_KMH) + 1):
        band = f"v{edges[index - 1]:g}-{edges[index]:g}"
        names.append(f"band.{band}.frac")
        names += [f"band.{band}.{CHANNELS[c]}" for c in (_PEDAL, _LONG, _RPM, _GEAR, _PRESSURE)]
        names.append(f"band.{band}.abs_lat_accel")
    return names


def _group_response(window: np.ndarray, diffs: np.ndarray) -> list[float]:
    pedal, speed, accel, rpm = (window[:, c] for c in (_PEDAL, _SPEED, _LONG, _RPM))
    on_pedal = pedal > PEDAL_ON_PCT
    moving = speed >= STOPPED_KMH
    pushing = on_pedal & moving
    # Acceleration bought per % of pedal: a driver who floors it gets less per % than one who feeds it.
    accel_per_pedal = _masked_mean(accel, pushing) / max(_masked_mean(pedal, pushing), 1.0)
    rpm_per_kmh = _masked_mean(rpm / np.maximum(speed, 1.0), moving)
    upshift = diffs[:, _GEAR] > 0
    downshift = diffs[:, _GEAR] < 0
    rpm_before = rpm[:-1]
    return [
        accel_per_pedal,
        rpm_per_kmh,
        _masked_mean(rpm_before, upshift),
        _masked_mean(rpm_before, downshift),
        _masked_mean(speed[:-1], upshift),
        _masked_mean(speed[:-1], downshift),
        _masked_mean(window[:, _THROTTLE] - pedal, on_pedal),
        _masked_mean(np.abs(window[:, _STEER_RATE]) / np.maximum(speed, 5.0), moving),
    ]


_RESPONSE_NAMES = [
    "response.accel_per_pedal",
    "response.rpm_per_kmh",
    "response.rpm_at_upshift",
    "response.rpm_at_downshift",
    "response.speed_at_upshift",
    "response.speed_at_downshift",
    "response.throttle_minus_pedal",
    "response.steer_rate_per_kmh",
]


def _group_stops(window: np.ndarray) -> list[float]:
    """How the car is brought to rest: deceleration and pressure in the 5 s before the stop."""
    speed = window[:, _SPEED]
    stopped = speed < STOPPED_KMH
    arrivals = np.flatnonzero(stopped[1:] & ~stopped[:-1]) + 1
    lead = 5
    decel, pressure, speed_before = [], [], []
    for arrival in arrivals:
        if arrival >= lead:
            decel.append(window[arrival - lead : arrival, _LONG].mean())
            pressure.append(window[arrival - lead : arrival, _PRESSURE].max())
            speed_before.append(speed[arrival - lead])
    if not decel:
        return [float("nan")] * 3
    return [float(np.mean(decel)), float(np.mean(pressure)), float(np.mean(speed_before))]


_STOP_NAMES = ["stop.decel_5s", "stop.max_pressure_5s", "stop.speed_5s_before"]


def window_features(window: np.ndarray) -> np.ndarray:
    """Feature vector of one window: `window` is (T, len(CHANNELS)) float64 on the 1 Hz grid.

    NaN marks a missing value; a channel missing in the whole window gives NaN features, which the model
    drops or imputes. Features that need an event the window lacks (a stop, a gear change) are NaN too.
    """
    window = np.asarray(window, dtype=np.float64)
    if window.ndim != 2 or window.shape[1] != len(CHANNELS) or window.shape[0] < 2:
        raise ValueError(f"window must be (T >= 2, {len(CHANNELS)}), got {window.shape}")
    window = _fill_gaps(window)
    diffs = np.diff(window, axis=0) * RATE_HZ
    seconds = window.shape[0] / RATE_HZ
    values = (
        _group_distribution(window, diffs)
        + _group_states(window, diffs, seconds)
        + _group_speed_bands(window)
        + _group_response(window, diffs)
        + _group_stops(window)
    )
    return np.asarray(values, dtype=np.float64)


def feature_names() -> list[str]:
    """Names of the entries of `window_features`, in order."""
    return _names_distribution() + _STATE_NAMES + _names_speed_bands() + _RESPONSE_NAMES + _STOP_NAMES


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
