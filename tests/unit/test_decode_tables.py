"""Tables analysts load (issue 10, part 3): wide csv, a resampled grid, one tidy parquet file."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from firmware_agent.cli import main

CAPTURE = b"""\
(1533226487.000018) can0 1F0#C001400000000000
(1533226487.400018) can0 7FF#11
(1533226488.250000) can0 1F0#0000000000000000
"""


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    path = tmp_path / "drive.log"
    path.write_bytes(CAPTURE)
    return path


@pytest.fixture
def motohawk(test_data: Path) -> str:
    return str(test_data / "dbc" / "cantools__motohawk.dbc")


def _rows(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, str]]:
    assert main(["decode", *argv]) == 0
    return list(csv.DictReader(capsys.readouterr().out.splitlines()))


def test_wide_csv_one_row_per_frame_with_iso_time_and_units(
    capsys: pytest.CaptureFixture[str], capture: Path, motohawk: str
) -> None:
    rows = _rows(capsys, str(capture), "--dbc", motohawk, "--format", "csv", "--wide")
    assert rows == _rows(capsys, str(capture), "--dbc", motohawk, "--format", "wide-csv")
    assert len(rows) == 2
    assert rows[0] == {
        "time": "2018-08-02T16:14:47.000018Z",
        "timestamp": "1533226487.000018",
        "channel": "can0",
        "message": "ExampleMessage",
        "ExampleMessage.Temperature [degK]": "250.1",
        "ExampleMessage.AverageRadius [m]": "3.2",
        "ExampleMessage.Enable [-]": "Enabled",
    }
    assert rows[1]["ExampleMessage.Enable [-]"] == "Disabled"


def test_resample_holds_the_last_value_on_a_grid(
    capsys: pytest.CaptureFixture[str], capture: Path, motohawk: str
) -> None:
    rows = _rows(capsys, str(capture), "--dbc", motohawk, "--format", "csv", "--resample", "0.5")
    assert [row["time"] for row in rows] == [
        "2018-08-02T16:14:47.000000Z",
        "2018-08-02T16:14:47.500000Z",
        "2018-08-02T16:14:48.000000Z",
    ]
    # the grid's first point precedes the first frame by 18 us: empty; then the first value is held
    assert [row["ExampleMessage.Enable [-]"] for row in rows] == ["", "Enabled", "Enabled"]
    assert "channel" not in rows[0]


def test_resample_orders_frames_that_come_out_of_time_order(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, motohawk: str
) -> None:
    capture = tmp_path / "merged.log"  # e.g. two loggers' lines pasted together
    capture.write_bytes(
        b"(1533226487.000018) can0 1F0#C001400000000000\n"
        b"(1533226488.250000) can0 1F0#C001400000000000\n"
        b"(1533226487.400000) can0 1F0#0000000000000000\n"
    )
    rows = _rows(capsys, str(capture), "--dbc", motohawk, "--format", "csv", "--resample", "0.5")
    # 47.5 and 48.0 hold the frame of 47.4 (the newest at or before them), not the one of 48.25
    assert [row["ExampleMessage.Enable [-]"] for row in rows] == ["", "Disabled", "Disabled"]


def test_resample_names_frames_older_than_rows_already_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, motohawk: str
) -> None:
    later, earlier = tmp_path / "a.log", tmp_path / "b.log"  # given in this order: b is read second
    later.write_bytes(b"(1533226488.250000) can0 1F0#C001400000000000\n")
    earlier.write_bytes(
        b"(1533226487.400000) can0 1F0#0000000000000000\n(1533226489.100000) can0 1F0#0000000000000000\n"
    )
    argv = ["decode", str(later), str(earlier), "--dbc", motohawk, "--format", "csv", "--resample", "0.5"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(captured.out.splitlines()))
    # 48.0: nothing yet; 48.5 and 49.0 hold the frame of 48.25, not the older one of 47.4 read after it
    assert [row["ExampleMessage.Enable [-]"] for row in rows] == ["", "Enabled", "Enabled"]
    assert "--resample: 1 frames came after grid rows later than their time were written" in captured.err


def test_layout_options_that_do_not_fit_the_format_are_one_line(
    capsys: pytest.CaptureFixture[str], capture: Path, motohawk: str
) -> None:
    assert main(["decode", str(capture), "--dbc", motohawk, "--format", "jsonl", "--wide"]) == 2
    assert "--wide is a csv layout; use --format csv (not jsonl)" in capsys.readouterr().err
    assert main(["decode", str(capture), "--dbc", motohawk, "--resample", "0"]) == 2
    assert "--resample must be a positive number of seconds, not 0.0" in capsys.readouterr().err
    assert main(["decode", str(capture), "--dbc", motohawk, "--single-file"]) == 2
    assert "--single-file is a parquet layout" in capsys.readouterr().err


def test_single_parquet_file_is_tidy_and_matches_the_csv(
    capsys: pytest.CaptureFixture[str], rav4_capture: Path, rav4_dbc_specs: list[str], tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    small = tmp_path / "rav4.log"
    with rav4_capture.open("rb") as source:
        small.write_bytes(b"".join(source.readline() for _ in range(2000)))
    dbcs = [arg for spec in rav4_dbc_specs for arg in ("--dbc", spec)]
    target = tmp_path / "all.parquet"
    assert main(["decode", str(small), *dbcs, "--format", "parquet", "--single-file", "-o", str(target)]) == 0
    long_rows = _rows(capsys, str(small), *dbcs, "--format", "csv")
    table = pq.read_table(target)
    assert table.num_rows == len(long_rows)
    assert str(table.schema.field("time").type) == "timestamp[us, tz=UTC]"
    first = table.slice(0, 1).to_pylist()[0]
    assert (first["message"], first["signal"], first["unit"]) == (
        long_rows[0]["message"],
        long_rows[0]["signal"],
        long_rows[0]["unit"],
    )
    labelled = [row for row in table.to_pylist() if row["label"] is not None]
    assert labelled and all(isinstance(row["value"], float) for row in labelled)
