"""The driver-fingerprint model, its file format and the CSV front door, on synthetic drivers."""

from __future__ import annotations

import argparse
import io
import json
import stat
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from firmware_agent.cli.profile_tabular import add_tabular_parsers
from firmware_agent.errors import UserError
from firmware_agent.identity import model as model_module
from firmware_agent.identity.features import (
    CHANNELS,
    feature_names,
    second_feature_names,
    sliding_windows,
    window_features,
)
from firmware_agent.identity.model import DriverModel, ModelFileError
from firmware_agent.identity.tabular import predict_csv, train_from_csv
from tests.unit.test_identity_features import synthetic_drive

STYLES = {"calm": (15.0, 1.2), "harsh": (60.0, 3.5), "stranger": (35.0, 2.2)}


def drive_features(style: str, seed: int, seconds: int = 1500) -> np.ndarray:
    pedal, decel = STYLES[style]
    rows = synthetic_drive(seed, seconds, pedal_peak=pedal, decel=decel)
    times = np.arange(float(seconds))
    return np.stack([window_features(w) for _, _, w in sliding_windows(times, rows)])


@pytest.fixture(scope="module")
def two_drivers() -> tuple[DriverModel, dict[str, np.ndarray]]:
    train = {style: drive_features(style, seed=10 + i) for i, style in enumerate(STYLES)}
    features = np.concatenate([train["calm"], train["harsh"]])
    labels = ["calm"] * len(train["calm"]) + ["harsh"] * len(train["harsh"])
    model = DriverModel.fit(features, labels)
    test = {style: drive_features(style, seed=100 + i, seconds=600) for i, style in enumerate(STYLES)}
    return model, test


def test_two_drivers_with_different_pedal_dynamics_are_separated(two_drivers) -> None:
    model, test = two_drivers
    assert model.labels == ("calm", "harsh")
    for index, style in enumerate(model.labels):
        posteriors, _ = model.scores(test[style])
        np.testing.assert_allclose(posteriors.sum(axis=1), 1.0)
        assert np.mean(posteriors.argmax(axis=1) == index) >= 0.9


def test_an_unseen_driver_scores_lower_than_known_ones(two_drivers) -> None:
    model, test = two_drivers
    known = np.concatenate([model.scores(test["calm"])[1], model.scores(test["harsh"])[1]])
    stranger = model.scores(test["stranger"])[1]
    assert ((known >= 0) & (known <= 1)).all() and ((stranger >= 0) & (stranger <= 1)).all()
    assert np.mean(known[:, None] > stranger[None, :]) >= 0.8  # AUROC
    assert model.predict(test["stranger"]).count("unknown") > len(stranger) // 2


def test_log_likelihoods_have_an_unknown_column_and_add_up_to_the_right_driver(two_drivers) -> None:
    model, test = two_drivers
    evidence = model.log_likelihoods(test["harsh"])
    assert evidence.shape == (len(test["harsh"]), 3)
    assert evidence.sum(axis=0).argmax() == 1
    stranger = model.log_likelihoods(test["stranger"]).sum(axis=0)
    assert stranger.argmax() == 2


def test_save_and_load_give_identical_scores_and_a_private_file(two_drivers, tmp_path: Path) -> None:
    model, test = two_drivers
    model.meta = {"note": "round trip"}
    path = tmp_path / "drivers.model"
    model.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = DriverModel.load(path)
    assert loaded.labels == model.labels and loaded.meta == model.meta
    for got, want in zip(loaded.scores(test["calm"]), model.scores(test["calm"]), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loaded.log_likelihoods(test["calm"]), model.log_likelihoods(test["calm"]))
    assert not list(tmp_path.glob(".*.tmp"))


def _rewrite_header(source: Path, target: Path, **changes: object) -> None:
    with np.load(source, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes().decode())
    header.update(changes)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with target.open("wb") as stream:
        np.savez(stream, **arrays)


def test_unusable_model_files_are_named_in_one_line(two_drivers, tmp_path: Path) -> None:
    model, _ = two_drivers
    good = tmp_path / "good.model"
    model.save(good)
    truncated = tmp_path / "truncated.model"
    truncated.write_bytes(good.read_bytes()[:300])
    alien = tmp_path / "alien.model"
    alien.write_bytes(b"hello, not a model\n")
    no_header = tmp_path / "noheader.model"
    with no_header.open("wb") as stream:
        np.savez(stream, keep=np.ones(3))
    other_magic = tmp_path / "magic.model"
    _rewrite_header(good, other_magic, magic="something-else")
    old = tmp_path / "old.model"
    _rewrite_header(good, old, version=99)
    fewer = tmp_path / "fewer.model"
    _rewrite_header(good, fewer, feature_count=len(feature_names()) - 1)
    other_seconds = tmp_path / "seconds.model"
    _rewrite_header(good, other_seconds, second_feature_count=len(second_feature_names()) + 1)
    broken = tmp_path / "broken.model"
    with np.load(good, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["tree_left"] = arrays["tree_left"] + 10**6  # children outside the node arrays
    with broken.open("wb") as stream:
        np.savez(stream, **arrays)
    cases = {
        tmp_path / "missing.model": "no such",
        truncated: "truncated",
        alien: "not a driver-model",
        no_header: "not a driver-model",
        other_magic: "wrong magic",
        old: "version 99",
        fewer: "features",
        other_seconds: "per-second features",
        broken: "inconsistent",
    }
    for path, words in cases.items():
        with pytest.raises(ModelFileError, match=words) as caught:
            DriverModel.load(path)
        message = str(caught.value)
        assert str(path) in message and "\n" not in message
        assert isinstance(caught.value, UserError)
    assert zipfile.is_zipfile(good)


def test_constant_and_missing_channels_are_tolerated() -> None:
    features, labels = [], []
    for style, seed in (("calm", 1), ("harsh", 2)):
        pedal, decel = STYLES[style]
        rows = synthetic_drive(seed, 1200, pedal_peak=pedal, decel=decel)
        rows[:, CHANNELS.index("throttle")] = np.nan  # an EV: no throttle
        rows[:, CHANNELS.index("gear")] = 1.0  # single-speed gearbox
        for _, _, window in sliding_windows(np.arange(1200.0), rows):
            features.append(window_features(window))
            labels.append(style)
    model = DriverModel.fit(np.asarray(features), labels)
    kept = set(np.asarray(second_feature_names())[model.keep])
    assert not kept & {"throttle", "gear", "d.gear", "throttle.min10", "lag2.throttle", "window.throttle_min"}
    posteriors, known = model.scores(np.asarray(features))
    assert np.isfinite(posteriors).all() and np.isfinite(known).all()
    assert np.mean(np.asarray(model.labels)[posteriors.argmax(axis=1)] == np.asarray(labels)) >= 0.9


def test_one_driver_still_scores_strangers_lower() -> None:
    calm = drive_features("calm", seed=5)
    model = DriverModel.fit(calm, ["me"] * len(calm))
    posteriors, known = model.scores(drive_features("calm", seed=6, seconds=600))
    np.testing.assert_allclose(posteriors, 1.0)
    _, stranger = model.scores(drive_features("harsh", seed=7, seconds=600))
    assert np.mean(known[:, None] > stranger[None, :]) >= 0.8


# -- memory of a fit (bench/soak.py: the daemon refits after every learned drive) ---------------------


def _drives(count: int, seconds: int = 900) -> tuple[np.ndarray, list[str], list[str]]:
    """`count` drives of each of calm and harsh: features, labels, blocks (one block per drive)."""
    features, labels, blocks = [], [], []
    for index, style in enumerate(("calm", "harsh")):
        for drive in range(count):
            windows = drive_features(style, seed=200 + 10 * index + drive, seconds=seconds)
            features.append(windows)
            labels += [style] * len(windows)
            blocks += [f"{style}/{drive}"] * len(windows)
    return np.concatenate(features), labels, blocks


def _model_arrays(model: DriverModel) -> dict[str, np.ndarray]:
    forest = model.forest
    return {
        "feature": forest.feature,
        "threshold": forest.threshold,
        "left": forest.left,
        "value": forest.value,
        "roots": forest.roots,
        "keep": model.keep,
        "fill": model.fill,
        "temperature": np.array(model.temperature),
        "calibration": model.calibration,
        "calibration_class": model.calibration_class,
    }


def test_the_fit_in_chunks_of_windows_is_the_fit_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-second rows are computed a chunk of windows at a time; the model must not change with it."""
    features, labels, blocks = _drives(2, seconds=600)
    at_once = DriverModel.fit(features, labels, blocks)
    monkeypatch.setattr(model_module, "CHUNK_WINDOWS", 7)
    chunked = DriverModel.fit(features, labels, blocks)
    for name, array in _model_arrays(at_once).items():
        np.testing.assert_array_equal(_model_arrays(chunked)[name], array, err_msg=name)
    for got, expected in zip(chunked.scores(features), at_once.scores(features), strict=True):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(chunked.log_likelihoods(features), at_once.log_likelihoods(features))


def test_a_fit_does_not_hold_every_second_of_every_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fit computed the per-second rows of all its windows at once (60 x 59 float64, 27.7 KiB each) and
    held about 68 KiB per window at its peak: the daemon's RSS grew with the driving learned, up to the
    fit cap of every profile (`bench/soak.py`: 272 MB at 12 h). Now each added window costs the seconds
    the fit draws from it and what the forest grows on them (small chunks here, so that both fits are
    many chunks long and the difference is what grows with the windows)."""
    monkeypatch.setattr(model_module, "CHUNK_WINDOWS", 32)
    small, large = _drives(2), _drives(4)
    peaks = []
    for features, labels, blocks in (small, large):
        tracemalloc.start()
        DriverModel.fit(features, labels, blocks)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    per_window = (peaks[1] - peaks[0]) / (len(large[0]) - len(small[0]))
    row_bytes = len(second_feature_names()) * 60 * 8
    assert per_window < row_bytes, f"{per_window / 1024:.1f} KiB of fit memory per window"


# -- the CSV front door -------------------------------------------------------------------------------

SIGNALS = [
    "Pedal",
    "Throttle",
    "Speed",
    "AccX",
    "AccY",
    "BrakeSw",
    "BrakeP",
    "SteerRate",
    "Steer",
    "Rpm",
    "Gear",
]


def write_csv(path: Path, drives: list[tuple[str, str, str, int]], with_label: bool = True) -> None:
    """drives: (trip, driver, style, seed); the brake switch coded 1/2 as in the OCS Lab data."""
    lines = [",".join(["Trip", *(["Driver"] if with_label else []), "Time", *SIGNALS])]
    for trip, driver, style, seed in drives:
        pedal, decel = STYLES[style]
        rows = synthetic_drive(seed, 900, pedal_peak=pedal, decel=decel)
        rows[:, CHANNELS.index("brake_switch")] += 1.0
        for t, row in enumerate(rows):
            cells = [trip, *([driver] if with_label else []), str(t + 1), *(f"{v:.3f}" for v in row)]
            lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")


def test_train_and_predict_from_csv(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    write_csv(train, [("t1", "ann", "calm", 1), ("t2", "bob", "harsh", 2)])
    model = train_from_csv(train, "Driver", "Trip", "Time", SIGNALS)
    assert model.meta["channels"]["speed"] == "Speed"
    assert model.meta["brake_switch_range"] == [1.0, 2.0]
    model.save(tmp_path / "m.model")
    new = tmp_path / "new.csv"
    write_csv(new, [("x", "", "calm", 3), ("y", "", "harsh", 4)], with_label=False)
    out = io.StringIO()
    predict_csv(DriverModel.load(tmp_path / "m.model"), new, "Trip", "Time", out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "group,start,end,predicted,score"
    rows = [line.split(",") for line in lines[1:]]
    assert {row[0] for row in rows} == {"x", "y"}
    for _group, start, end, predicted, score in rows:
        assert 0.0 <= float(end) - float(start) <= 60.0 and 0.0 <= float(score) <= 1.0
        assert predicted in ("ann", "bob", "unknown")
    x_rows = [row for row in rows if row[0] == "x"]
    # The new drive starts from a long stand, which the held-out tails of the training drives never
    # show: a few of its first windows may be called unknown, but none may go to the other driver.
    assert sum(row[3] == "ann" for row in x_rows) >= 0.75 * len(x_rows)
    assert sum(row[3] == "bob" for row in x_rows) <= 0.05 * len(x_rows)


def test_csv_with_channel_pairs_and_missing_channels(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    write_csv(train, [("t1", "ann", "calm", 1), ("t2", "bob", "harsh", 2)])
    model = train_from_csv(
        train, "Driver", "Trip", "Time", ["speed=Speed", "pedal=Pedal", "brake_switch=BrakeSw"]
    )
    assert set(model.meta["channels"]) == {"speed", "pedal", "brake_switch"}
    dashed = ["-" if name in ("Throttle", "Gear") else name for name in SIGNALS]
    assert "throttle" not in train_from_csv(train, "Driver", "Trip", "Time", dashed).meta["channels"]
    with pytest.raises(UserError, match="11 columns"):
        train_from_csv(train, "Driver", "Trip", "Time", SIGNALS[:5])
    with pytest.raises(UserError, match="unknown channel 'sped'"):
        train_from_csv(train, "Driver", "Trip", "Time", ["sped=Speed"])


def test_csv_errors_name_file_line_and_column(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    write_csv(good, [("t1", "ann", "calm", 1), ("t2", "bob", "harsh", 2)])
    text = good.read_text().splitlines()

    missing = tmp_path / "missing_col.csv"
    missing.write_text("\n".join(line.rsplit(",", 1)[0] for line in text) + "\n")  # drop Gear
    with pytest.raises(UserError, match=r"missing_col\.csv:1: no column 'Gear'"):
        train_from_csv(missing, "Driver", "Trip", "Time", SIGNALS)

    bad = tmp_path / "bad_cell.csv"
    cells = text[7].split(",")
    cells[5] = "fast"  # Speed on line 8
    bad.write_text("\n".join([*text[:7], ",".join(cells), *text[8:]]) + "\n")
    with pytest.raises(
        UserError, match=r"bad_cell\.csv:8: column 'Speed' \(column 6\): not a number: 'fast'"
    ):
        train_from_csv(bad, "Driver", "Trip", "Time", SIGNALS)

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UserError, match=r"empty\.csv: empty file"):
        train_from_csv(empty, "Driver", "Trip", "Time", SIGNALS)

    short = tmp_path / "short.csv"
    short.write_text("\n".join([*text[:901], *text[901:911]]) + "\n")  # trip t2 has 10 rows
    with pytest.raises(UserError, match=r"short\.csv:902: group 't2' has 10 rows"):
        train_from_csv(short, "Driver", "Trip", "Time", SIGNALS)


def test_cli_train_and_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="profile")
    add_tabular_parsers(parser.add_subparsers(dest="action"))
    train = tmp_path / "train.csv"
    write_csv(train, [("t1", "ann", "calm", 1), ("t2", "bob", "harsh", 2)])
    model = tmp_path / "m.model"
    args = parser.parse_args(
        [
            "train",
            "--data",
            str(train),
            "--label",
            "Driver",
            "--group",
            "Trip",
            "--time",
            "Time",
            "--signals",
            ",".join(SIGNALS),
            "--out",
            str(model),
        ]
    )
    assert args.func(args) == 0
    args = parser.parse_args(
        ["predict", "--model", str(model), "--data", str(train), "--group", "Trip", "--time", "Time"]
    )
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith("group,start,end,predicted,score\n")
