"""Train and apply the driver model on a CSV of decoded signals (one row per sample, 1 Hz or so).

Signals name the CSV columns that feed the model's channels (`features.CHANNELS`), in one of two forms:
- exactly 11 column names, taken in the order of CHANNELS; a name of `-` marks a channel the car lacks;
- any number of `CHANNEL=COLUMN` pairs (e.g. `speed=VehicleSpeed,rpm=EngineRPM`); channels not named
  are missing (all NaN), and the model drops their features.
The model file records the column of every channel, so `predict` reads the same columns and needs no
label column. An empty cell is a missing sample (NaN); any other non-numeric cell is an error.

The brake switch is rescaled to 0..1 with the minimum and maximum seen in training (recorded in the model
file): cars encode it as 0/1, 1/2 or 0/255, and the features expect 0 = released, 1 = pressed.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from firmware_agent.errors import UserError
from firmware_agent.identity.features import CHANNELS, MIN_ROWS, sliding_windows, window_features
from firmware_agent.identity.model import DriverModel

WINDOW_S = 60.0
STEP_S = 10.0
_BRAKE = CHANNELS.index("brake_switch")


def parse_signals(signals: Sequence[str]) -> dict[str, str]:
    """Map channel -> CSV column from a `--signals` list (see the module docstring for the two forms)."""
    items = [item.strip() for item in signals]
    if items and all("=" in item for item in items):
        mapping: dict[str, str] = {}
        for item in items:
            channel, _, column = item.partition("=")
            channel, column = channel.strip(), column.strip()
            if channel not in CHANNELS:
                raise UserError(f"--signals: unknown channel {channel!r}; channels are {', '.join(CHANNELS)}")
            if not column:
                raise UserError(f"--signals: channel {channel!r} has no column")
            if channel in mapping:
                raise UserError(f"--signals: channel {channel!r} named twice")
            mapping[channel] = column
        return mapping
    if any("=" in item for item in items):
        raise UserError("--signals: use either 11 column names in channel order or CHANNEL=COLUMN pairs")
    if len(items) != len(CHANNELS):
        raise UserError(
            f"--signals: {len(items)} names given; give {len(CHANNELS)} columns in the order "
            f"{','.join(CHANNELS)} (- for a missing channel) or CHANNEL=COLUMN pairs"
        )
    mapping = {
        channel: column for channel, column in zip(CHANNELS, items, strict=True) if column not in ("", "-")
    }
    if not mapping:
        raise UserError("--signals: every channel is marked missing")
    return mapping


def _read_columns(
    path: Path, numeric: Sequence[str], text: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, list[str]], list[int]]:
    """Read the named columns of a CSV: numbers as float arrays, others as strings, plus line numbers."""
    try:
        stream = open(path, newline="", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from exc
    with stream:
        reader = csv.reader(stream)
        header = next(reader, None)
        if not header:
            raise UserError(f"{path}: empty file (no header line)")
        header = [name.strip() for name in header]
        index: dict[str, int] = {}
        for name in (*numeric, *text):
            if name not in header:
                raise UserError(f"{path}:1: no column {name!r}; columns are {', '.join(header)}")
            index[name] = header.index(name)
        values: dict[str, list[float]] = {name: [] for name in numeric}
        strings: dict[str, list[str]] = {name: [] for name in text}
        lines: list[int] = []
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            line = reader.line_num
            if len(row) < len(header):
                raise UserError(f"{path}:{line}: {len(row)} cells, the header has {len(header)}")
            for name in numeric:
                cell = row[index[name]].strip()
                try:
                    number = float(cell) if cell else math.nan
                except ValueError:
                    raise UserError(
                        f"{path}:{line}: column {name!r} (column {index[name] + 1}): not a number: {cell!r}"
                    ) from None
                values[name].append(number)
            for name in text:
                strings[name].append(row[index[name]].strip())
            lines.append(line)
    if not lines:
        raise UserError(f"{path}: no data rows after the header")
    return {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}, strings, lines


def _grid(mapping: dict[str, str], numbers: dict[str, np.ndarray], rows: int) -> np.ndarray:
    grid = np.full((rows, len(CHANNELS)), np.nan)
    for channel, column in mapping.items():
        grid[:, CHANNELS.index(channel)] = numbers[column]
    return grid


def _groups(
    path: Path, groups: list[str], times: np.ndarray, lines: list[int], time_col: str
) -> dict[str, np.ndarray]:
    """Row indices of each group, sorted by time; checks times and group sizes."""
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        if not math.isfinite(times[index]):
            raise UserError(f"{path}:{lines[index]}: column {time_col!r}: missing time")
        members.setdefault(group, []).append(index)
    ordered = {}
    for group, rows in members.items():
        if len(rows) < MIN_ROWS:
            raise UserError(
                f"{path}:{lines[rows[0]]}: group {group!r} has {len(rows)} rows; a window needs {MIN_ROWS}"
            )
        members_of_group = np.asarray(rows)
        ordered[group] = members_of_group[np.argsort(times[members_of_group], kind="stable")]
    return ordered


def _windows(times: np.ndarray, grid: np.ndarray) -> list[tuple[float, float, np.ndarray]]:
    return list(sliding_windows(times, grid, WINDOW_S, STEP_S))


def train_from_csv(
    path: Path, label_col: str, group_col: str, time_col: str, signals: list[str]
) -> DriverModel:
    """Fit a `DriverModel` on a CSV: one driver label per group (drive), windows of 60 s every 10 s."""
    path = Path(path)
    mapping = parse_signals(signals)
    columns = list(dict.fromkeys(mapping.values()))
    numbers, strings, lines = _read_columns(path, [*columns, time_col], [label_col, group_col])
    grid = _grid(mapping, numbers, len(lines))
    brake_range: list[float] | None = None
    if "brake_switch" in mapping:
        brake = grid[:, _BRAKE]
        if np.isfinite(brake).any():
            brake_range = [float(np.nanmin(brake)), float(np.nanmax(brake))]
            grid[:, _BRAKE] = _rescale(brake, brake_range)
    groups = _groups(path, strings[group_col], numbers[time_col], lines, time_col)
    features, labels, blocks = [], [], []
    for group, rows in groups.items():
        names = {strings[label_col][i] for i in rows}
        if len(names) != 1:
            raise UserError(
                f"{path}:{lines[rows[0]]}: group {group!r} has several labels in column {label_col!r}: "
                f"{', '.join(sorted(names))}"
            )
        label = names.pop()
        if not label:
            raise UserError(f"{path}:{lines[rows[0]]}: group {group!r} has an empty label")
        for _, _, window in _windows(numbers[time_col][rows], grid[rows]):
            features.append(window_features(window))
            labels.append(label)
            blocks.append(group)
    if not features:
        raise UserError(f"{path}: no group has a window of {MIN_ROWS} rows within {WINDOW_S:g} s")
    model = DriverModel.fit(np.asarray(features), labels, blocks)
    model.meta = {"channels": mapping, "time_column": time_col, "brake_switch_range": brake_range}
    return model


def _rescale(values: np.ndarray, value_range: list[float]) -> np.ndarray:
    low, high = value_range
    return (values - low) / (high - low) if high > low else values - low


def predict_csv(model: DriverModel, path: Path, group_col: str, time_col: str, out: TextIO) -> None:
    """Write `group,start,end,predicted,score` for every window of every group of the CSV to `out`."""
    path = Path(path)
    mapping = model.meta.get("channels")
    if not isinstance(mapping, dict) or not mapping:
        raise UserError("the model was not trained from a CSV (it records no columns); use `profile train`")
    columns = list(dict.fromkeys(str(column) for column in mapping.values()))
    numbers, strings, lines = _read_columns(path, [*columns, time_col], [group_col])
    grid = _grid({str(k): str(v) for k, v in mapping.items()}, numbers, len(lines))
    brake_range = model.meta.get("brake_switch_range")
    if brake_range:
        grid[:, _BRAKE] = _rescale(grid[:, _BRAKE], [float(x) for x in brake_range])
    groups = _groups(path, strings[group_col], numbers[time_col], lines, time_col)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["group", "start", "end", "predicted", "score"])
    for group, rows in groups.items():
        windows = _windows(numbers[time_col][rows], grid[rows])
        if not windows:
            continue
        features = np.stack([window_features(window) for _, _, window in windows])
        _, known = model.scores(features)
        predicted = model.predict(features)
        for (start, end, _), label, score in zip(windows, predicted, known, strict=True):
            writer.writerow([group, f"{start:g}", f"{end:g}", label, f"{score:.4f}"])
