"""Regression guard of the driver model on real drives (OCS Lab, 8 drivers), by the bench's protocol.

The data may not be redistributed, so it lives outside the repository; the test skips without it.
The thresholds sit a little below the figures measured in docs/identity-model.md.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "driving" / "ocslab_train_first_halves_A-H.csv"


def test_real_drives_meet_the_measured_figures() -> None:
    if not DATA.is_file():
        pytest.skip("needs ../shared/data/driving")
    spec = importlib.util.spec_from_file_location("bench_driver_id", REPO / "bench" / "driver_id.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.real_data_report(DATA)["as_recorded"]
    assert report["accuracy"] >= 0.45
    assert report["macro_f1"] >= 0.42
    assert report["auroc"] >= 0.55
    assert report["accuracy"] >= 2 * report["baseline_accuracy"]
