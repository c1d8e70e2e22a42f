"""Benchmark: the behavioural driver model on real drives, against a simple baseline in the same run.

Data: the OCS Lab driving dataset, first halves of one trip of each of 8 drivers (A-H), 1 Hz. It is
academic data that may not be redistributed, so it lives outside the repository:

    .venv/bin/python bench/driver_id.py [--data ../shared/data/driving/ocslab_train_first_halves_A-H.csv]
                                        [--sim]   # then the simulated-drives section (bench/driver_id_sim.py)

Protocol (never random splits: neighbouring windows are near-copies): the first 70 % of each trip's rows
(by time) train, the last 30 % test. Windows are 60 s long every 10 s. Reported:
- window accuracy and macro-F1 over the 8 drivers on the test blocks;
- unknown-driver AUROC, leave-one-driver-out: fit on 7 drivers' train blocks, score the test windows of
  all 8; the left-out driver's windows are "unknown"; AUROC of the known score, mean of the 8 folds;
- accuracy of the running decision after 1, 2 and 5 min of each test block (sum of `log_likelihoods`
  over the windows that end by then; a block shorter than 5 min uses all its windows);
- the tempering check: over every 2 minutes (12 consecutive windows) of each test block, the share
  where the summed `log_likelihoods` give another driver a posterior above 0.99 (flat prior), and the
  share where a prior of 0.9 on the true driver falls below 0.05 (a false "mismatch");
- microseconds per window for features + model, one window at a time as the agent does it; the fit
  time for 4 drivers x 2000 windows and the size of the model file;
- ablations: the accelerator pedal blanked (it reads 0 throughout for 5 of the 8 drivers), the brake
  pressure's resting level removed (pressure below 2 bar set to 0: with the brake released it sits at
  a per-recording level), and both;
- a baseline: per-channel window mean and standard deviation, nearest centroid after standardising.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from firmware_agent.identity.features import CHANNELS, RATE_HZ, sliding_windows, window_features
from firmware_agent.identity.model import DriverModel

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "driving" / "ocslab_train_first_halves_A-H.csv"
#: OCS Lab column of each channel of `CHANNELS`, in order.
OCSLAB_COLUMNS = (
    "Accelerator_Pedal_value",
    "Throttle_position_signal",
    "Vehicle_speed",
    "Acceleration_speed_-_Longitudinal",
    "Acceleration_speed_-_Lateral",
    "Indication_of_brake_switch_ON/OFF",
    "Master_cylinder_pressure",
    "Steering_wheel_speed",
    "Steering_wheel_angle",
    "Engine_speed",
    "Current_Gear",
)
TRAIN_FRACTION = 0.7
WINDOW_S, STEP_S = 60.0, 10.0
RESTING_PRESSURE_BAR = 2.0  # the "no pressure level" ablation sets pressure below this to 0
STRETCH_WINDOWS = 12  # 2 minutes of windows every 10 s, for the tempering check

Drives = dict[str, tuple[np.ndarray, np.ndarray]]  # driver -> (times, rows (T, 11))


def load_ocslab(path: Path) -> Drives:
    """One (times, rows) per driver, rows in `CHANNELS` order; the brake switch mapped from 1/2 to 0/1."""
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        records: dict[str, list[list[float]]] = {}
        for row in reader:
            values = [float(row["Time(s)"])] + [float(row[column]) for column in OCSLAB_COLUMNS]
            records.setdefault(row["Class"], []).append(values)
    drives: Drives = {}
    for driver, samples in sorted(records.items()):
        table = np.asarray(samples)
        table = table[np.argsort(table[:, 0], kind="stable")]
        rows = table[:, 1:].copy()
        rows[:, CHANNELS.index("brake_switch")] -= 1.0  # OCS Lab: 1 = released, 2 = pressed
        drives[driver] = (table[:, 0], rows)
    return drives


def split_by_time(drives: Drives, fraction: float = TRAIN_FRACTION) -> tuple[Drives, Drives]:
    """First `fraction` of each drive's rows, and the rest."""
    head, tail = {}, {}
    for driver, (times, rows) in drives.items():
        cut = round(len(times) * fraction)
        head[driver] = (times[:cut], rows[:cut])
        tail[driver] = (times[cut:], rows[cut:])
    return head, tail


def windows_of(drives: Drives) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(windows, driver of each, seconds from the block start to each window's end)."""
    windows, drivers, ends = [], [], []
    for driver, (times, rows) in drives.items():
        for _, end, window in sliding_windows(times, rows, WINDOW_S, STEP_S):
            windows.append(window)
            drivers.append(driver)
            ends.append(end - times[0] + 1.0 / RATE_HZ)  # seconds of the block seen once the window ends
    return windows, np.asarray(drivers), np.asarray(ends)


def macro_f1(truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> float:
    """Mean over `labels` of the per-label F1."""
    scores = []
    for label in labels:
        tp = np.sum((predicted == label) & (truth == label))
        fp = np.sum((predicted == label) & (truth != label))
        fn = np.sum((predicted != label) & (truth == label))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a positive outscores a negative (ties count one half)."""
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((greater + 0.5 * ties) / (positive.size * negative.size))


def evaluate(
    train_features: np.ndarray,
    train_drivers: np.ndarray,
    test_features: np.ndarray,
    test_drivers: np.ndarray,
    test_ends: np.ndarray,
) -> dict[str, Any]:
    """The protocol's figures for `DriverModel` on precomputed features."""
    labels = sorted(set(train_drivers.tolist()))
    model = DriverModel.fit(train_features, train_drivers.tolist())
    posteriors, _ = model.scores(test_features)
    predicted = np.asarray(model.labels)[posteriors.argmax(axis=1)]
    evidence = model.log_likelihoods(test_features)[:, :-1]
    running = {}
    for minutes in (1, 2, 5):
        correct = 0
        for driver in labels:
            mine = test_drivers == driver
            upto = mine & (test_ends <= minutes * 60.0 + 1e-9)
            if not upto.any():  # the first window of a short block ends after `minutes`
                upto = mine & (test_ends == test_ends[mine].min())
            if minutes == 5 and test_ends[mine].max() < 300.0:
                upto = mine  # block shorter than 5 min: all of it
            correct += model.labels[int(evidence[upto].sum(axis=0).argmax())] == driver
        running[minutes] = correct / len(labels)
    folds = []
    for unknown in labels:
        keep = train_drivers != unknown
        fold_model = DriverModel.fit(train_features[keep], train_drivers[keep].tolist())
        _, known = fold_model.scores(test_features)
        folds.append(auroc(known[test_drivers != unknown], known[test_drivers == unknown]))
    return {
        "accuracy": float(np.mean(predicted == test_drivers)),
        "macro_f1": macro_f1(test_drivers, predicted, labels),
        "auroc": float(np.mean(folds)),
        "auroc_folds": dict(zip(labels, folds, strict=True)),
        "running": running,
        "model": model,
    }


def baseline_features(window: np.ndarray) -> np.ndarray:
    """The baseline's window statistics: per-channel mean and standard deviation (0 for a blank channel)."""
    filled = np.where(np.isfinite(window), window, 0.0)
    return np.concatenate([filled.mean(axis=0), filled.std(axis=0)])


def baseline_accuracy(train: Drives, test: Drives) -> tuple[float, float]:
    """(accuracy, macro-F1) of nearest centroid on standardised mean/std window statistics."""
    train_windows, train_drivers, _ = windows_of(train)
    test_windows, test_drivers, _ = windows_of(test)
    a = np.stack([baseline_features(w) for w in train_windows])
    b = np.stack([baseline_features(w) for w in test_windows])
    center, scale = a.mean(axis=0), a.std(axis=0)
    scale[scale == 0] = 1.0
    a, b = (a - center) / scale, (b - center) / scale
    labels = sorted(set(train_drivers.tolist()))
    centroids = np.stack([a[train_drivers == label].mean(axis=0) for label in labels])
    predicted = np.asarray(labels)[((b[:, None, :] - centroids[None]) ** 2).sum(axis=2).argmin(axis=1)]
    return float(np.mean(predicted == test_drivers)), macro_f1(test_drivers, predicted, labels)


def microseconds_per_window(model: DriverModel, windows: list[np.ndarray], rounds: int = 3) -> float:
    """Best-of-`rounds` time of features + scores for one window at a time."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for window in windows:
            model.scores(window_features(window)[None, :])
        best = min(best, (time.perf_counter() - started) / len(windows))
    return best * 1e6


def _ablated(drives: Drives, pedal: bool, pressure_level: bool) -> Drives:
    """`drives` without the pedal channel (NaN) and/or without the brake pressure's resting level."""
    changed = {}
    for driver, (times, rows) in drives.items():
        copy = rows.copy()
        if pedal:
            copy[:, CHANNELS.index("pedal")] = np.nan
        if pressure_level:
            column = CHANNELS.index("brake_pressure")
            copy[:, column] = np.where(copy[:, column] < RESTING_PRESSURE_BAR, 0.0, copy[:, column])
        changed[driver] = (times, copy)
    return changed


def tempering_check(model: DriverModel, features: np.ndarray, drivers: np.ndarray) -> tuple[float, float]:
    """(share of 2-min stretches where another driver's posterior > 0.99 under a flat prior,
    share where a 0.9 prior on the true driver falls below 0.05), over every 12 consecutive windows."""
    evidence = model.log_likelihoods(features)
    over, mismatch, stretches = 0, 0, 0
    for driver in model.labels:
        mine = evidence[drivers == driver]
        truth = model.labels.index(driver)
        for start in range(len(mine) - STRETCH_WINDOWS + 1):
            total = mine[start : start + STRETCH_WINDOWS].sum(axis=0)
            flat = np.exp(total - total.max())
            flat /= flat.sum()
            prior = np.full(len(total), 0.1 / (len(total) - 1))
            prior[truth] = 0.9
            keyed = np.log(prior) + total
            keyed = np.exp(keyed - keyed.max())
            keyed /= keyed.sum()
            others = np.delete(flat, truth)
            over += bool(others.max() > 0.99)
            mismatch += bool(keyed[truth] < 0.05)
            stretches += 1
    return over / max(stretches, 1), mismatch / max(stretches, 1)


def fit_cost(features: np.ndarray, drivers: np.ndarray) -> tuple[float, int]:
    """(seconds to fit 4 drivers x 2000 windows, bytes of the saved model): real windows, repeated."""
    rng = np.random.default_rng(0)
    chosen, labels, blocks = [], [], []
    for driver in sorted(set(drivers.tolist()))[:4]:
        mine = features[drivers == driver]
        for repeat in range(0, 2000, len(mine)):
            take = mine[: min(len(mine), 2000 - repeat)]
            chosen.append(take + rng.normal(0.0, 0.01, take.shape))  # not bit-identical copies
            labels += [driver] * len(take)
            blocks += [f"{driver}/{repeat}"] * len(take)
    stacked = np.concatenate(chosen)
    started = time.perf_counter()
    model = DriverModel.fit(stacked, labels, blocks)
    seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "drivers.model"
        model.save(path)
        size = path.stat().st_size
    return seconds, size


VARIANTS = {
    "all_11_signals": (False, False),
    "no_pedal": (True, False),
    "no_pressure_level": (False, True),
    "no_pedal_no_pressure_level": (True, True),
}


def real_data_report(
    path: Path = DEFAULT_DATA, variants: tuple[str, ...] = tuple(VARIANTS)
) -> dict[str, Any]:
    """All figures of the real-data protocol on the OCS Lab file at `path` (see the module docstring)."""
    drives = load_ocslab(path)
    train, test = split_by_time(drives)
    report: dict[str, Any] = {"drivers": len(drives)}
    for name in variants:
        pedal, pressure_level = VARIANTS[name]
        head, tail = _ablated(train, pedal, pressure_level), _ablated(test, pedal, pressure_level)
        train_windows, train_drivers, _ = windows_of(head)
        test_windows, test_drivers, test_ends = windows_of(tail)
        started = time.perf_counter()
        train_features = np.stack([window_features(w) for w in train_windows])
        test_features = np.stack([window_features(w) for w in test_windows])
        figures = evaluate(train_features, train_drivers, test_features, test_drivers, test_ends)
        figures["seconds"] = time.perf_counter() - started
        model = figures.pop("model")
        figures["wrong_over_099"], figures["false_mismatch"] = tempering_check(
            model, test_features, test_drivers
        )
        figures["microseconds_per_window"] = microseconds_per_window(model, test_windows)
        if name == variants[0]:
            figures["fit_seconds_4x2000"], figures["model_bytes"] = fit_cost(train_features, train_drivers)
        figures["baseline_accuracy"], figures["baseline_macro_f1"] = baseline_accuracy(head, tail)
        figures["train_windows"], figures["test_windows"] = len(train_windows), len(test_windows)
        report[name] = figures
    return report


def _print_real(report: dict[str, Any]) -> None:
    for name, figures in report.items():
        if not isinstance(figures, dict):
            continue
        running = figures["running"]
        print(f"[{name}] {figures['train_windows']} train / {figures['test_windows']} test windows")
        print(
            f"  accuracy {figures['accuracy']:.3f}  macro-F1 {figures['macro_f1']:.3f}  "
            f"unknown AUROC {figures['auroc']:.3f}  "
            f"(folds {' '.join(f'{k}:{v:.2f}' for k, v in figures['auroc_folds'].items())})"
        )
        print(f"  running decision after 1/2/5 min: {running[1]:.3f} / {running[2]:.3f} / {running[5]:.3f}")
        print(
            f"  2-min stretches: another driver > 0.99 (flat prior) {figures['wrong_over_099']:.3f}, "
            f"true driver < 0.05 from a 0.9 prior {figures['false_mismatch']:.3f}"
        )
        if "fit_seconds_4x2000" in figures:
            print(
                f"  fit 4 drivers x 2000 windows: {figures['fit_seconds_4x2000']:.2f} s, "
                f"model file {figures['model_bytes'] / 1e6:.2f} MB"
            )
        print(
            f"  {figures['microseconds_per_window']:.0f} µs per window (features + model)  "
            f"baseline mean/std nearest centroid: accuracy {figures['baseline_accuracy']:.3f} "
            f"macro-F1 {figures['baseline_macro_f1']:.3f}  "
            f"ratio {figures['accuracy'] / max(figures['baseline_accuracy'], 1e-9):.2f}x"
        )


def main(argv: list[str] | None = None) -> int:
    """Print every section of the benchmark; exit 0 with "skipped: no data" when the data is absent."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the OCS Lab CSV")
    parser.add_argument(
        "--sim", action="store_true", help="also the simulated drives (learning, owners, borrowed keys)"
    )
    args = parser.parse_args(argv)
    print(f"# driver identification  python {platform.python_version()}  {platform.machine()}")
    if not args.data.is_file():
        print(f"skipped: no data ({args.data})")
    else:
        _print_real(real_data_report(args.data))
    if args.sim:
        print("\n# simulated drives (bench/driver_id_sim.py)", flush=True)
        from driver_id_sim import main as simulated_drives

        return simulated_drives([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
