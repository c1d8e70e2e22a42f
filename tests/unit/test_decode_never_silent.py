"""`decode` never succeeds silently (issue 10): each case asserts the one line and the exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_agent.cli import main

ADAS = "opendbc__toyota_adas.dbc"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["decode", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def small_rav4(tmp_path: Path, rav4_capture: Path) -> Path:
    """The RAV4 capture's first 4,000 lines (both buses)."""
    path = tmp_path / "rav4.log"
    with rav4_capture.open("rb") as source:
        path.write_bytes(b"".join(source.readline() for _ in range(4000)))
    return path


def test_builtin_dbcs_decoding_nothing_is_reported(
    capsys: pytest.CaptureFixture[str], small_rav4: Path
) -> None:
    status, out, err = _run(capsys, str(small_rav4), "--format", "jsonl")
    assert status == 0 and out == ""
    line = next(line for line in err.splitlines() if line.startswith("warning:"))
    assert "decoded none of its 4,000 frames" in line
    assert "channels can0 (" in line and "can1 (" in line
    assert "built-in DBCs: no --dbc given" in line


def test_strict_makes_decoding_nothing_an_error(capsys: pytest.CaptureFixture[str], small_rav4: Path) -> None:
    status, _, err = _run(capsys, str(small_rav4), "--strict", "--format", "jsonl")
    assert status == 2
    assert "decoded none of its 4,000 frames" in err and "[--strict]" in err


def test_binding_to_an_absent_channel_is_reported(
    capsys: pytest.CaptureFixture[str], small_rav4: Path, test_data: Path
) -> None:
    dbc = test_data / "dbc" / ADAS
    status, _, err = _run(capsys, str(small_rav4), "--dbc", f"vcan0={dbc}", "--format", "jsonl")
    assert status == 0
    assert (
        f"warning: --dbc vcan0={dbc}: no channel 'vcan0' in the captures (their channels: can0, can1)" in err
    )
    assert "DBCs bound to vcan0" in err


def test_a_channel_that_decodes_nothing_is_reported(
    capsys: pytest.CaptureFixture[str], small_rav4: Path, test_data: Path
) -> None:
    dbc = test_data / "dbc" / ADAS
    status, out, err = _run(capsys, str(small_rav4), "--dbc", f"can1={dbc}", "--format", "jsonl")
    assert status == 0 and out
    assert "channel can0 (" in err and "frames) decoded nothing; DBCs bound to can1" in err
    assert "channel can1" not in err


@pytest.mark.parametrize("suffix", [".asc", ".blf", ".log"])
def test_simulator_captures_decode_with_the_builtin_dbcs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, suffix: str
) -> None:
    capture = tmp_path / f"drive{suffix}"
    assert main(["sim", "--duration", "2", "--out", str(capture)]) == 0
    capsys.readouterr()
    status, out, err = _run(capsys, str(capture), "--format", "jsonl")
    assert status == 0
    assert "warning" not in err
    frames = int(err.split(" of ")[1].split()[0].replace(",", ""))
    assert f"decoded {frames:,} of {frames:,} frames" in err
    assert {json.loads(line)["message"] for line in out.splitlines()} >= {"VEHICLE_SPEED", "GEAR_STATUS"}


def test_lower_case_signal_suggests_the_right_case(
    capsys: pytest.CaptureFixture[str], small_rav4: Path, test_data: Path
) -> None:
    status, _, err = _run(
        capsys, str(small_rav4), "--dbc", str(test_data / "dbc" / ADAS), "--signal", "long_dist"
    )
    assert status == 2
    assert "--signal 'long_dist': no such signal in the databases given (did you mean 'LONG_DIST'?" in (err)


def test_message_and_signal_that_exclude_each_other(
    capsys: pytest.CaptureFixture[str], small_rav4: Path, test_data: Path
) -> None:
    dbc = str(test_data / "dbc" / ADAS)
    status, _, err = _run(
        capsys, str(small_rav4), "--dbc", dbc, "--message", "STATUS_MSG", "--signal", "LONG_DIST"
    )
    assert status == 2
    assert "--signal 'LONG_DIST' is in none of the --message STATUS_MSG (it is in TRACK_A_0" in err


def test_folder_as_dbc_is_one_line(
    capsys: pytest.CaptureFixture[str], small_rav4: Path, test_data: Path
) -> None:
    status, _, err = _run(capsys, str(small_rav4), "--dbc", str(test_data / "dbc"))
    assert status == 2
    err = err.strip()
    assert err.endswith(
        "dbc: is a folder, not a database; give its files (--dbc "
        + str(test_data / "dbc")
        + "/NAME.dbc, or CHANNEL=FILE for each bus)"
    )
    assert len(err.splitlines()) == 1
