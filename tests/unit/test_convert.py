"""`firmware-agent convert IN OUT`: round trips through every format python-can writes, and its errors."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from firmware_agent.cli import main
from firmware_agent.io import open_capture


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# microsecond timestamps, two channels, standard and extended IDs, 0 to 8 bytes, a remote frame
CAPTURE = b"""\
(1533226487.000018) can0 1F0#C001400000000000
(1533226487.010019) can1 12345678#0102
(1533226487.020020) can0 7FF#
(1533226487.030021) can0 123#R
(1533226488.500999) can1 00000001#DEADBEEF
"""


def _frames(path: Path) -> list[tuple[float, str, int, bool, bool, bytes]]:
    return [
        (m.timestamp, str(m.channel), m.arbitration_id, m.is_extended_id, m.is_remote_frame, bytes(m.data))
        for batch in open_capture(str(path))
        for m in batch.messages()
    ]


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    path = tmp_path / "drive.log"
    path.write_bytes(CAPTURE)
    return path


#: extension -> (timestamps absolute, channel offset as read back (None: no channel), holds remote frames)
ROUND_TRIPS = {
    "asc": (False, 0, True),  # python-can's ASC reader gives times relative to the measurement start
    "blf": (True, 0, True),
    "trc": (False, 1, False),  # TRC: offsets from the start; python-can reads the 1-based bus number back
    "csv": (True, None, True),  # CSV has no channel column
    "mf4": (True, 0, True),
}


@pytest.mark.parametrize("extension", sorted(ROUND_TRIPS))
def test_round_trip_from_candump(
    capsys: pytest.CaptureFixture[str], capture: Path, tmp_path: Path, extension: str
) -> None:
    absolute, channel_offset, remote = ROUND_TRIPS[extension]
    converted = tmp_path / f"drive.{extension}"
    assert main(["convert", str(capture), str(converted)]) == 0
    err = capsys.readouterr().err
    original = _frames(capture)
    written = len(original) - (0 if remote else 1)
    assert err.splitlines()[0].startswith(f"{capture} -> {converted} (")
    assert f": {written} frames written, 0 malformed lines skipped" in err
    expected = [frame for frame in original if remote or not frame[4]]
    back = _frames(converted)
    assert len(back) == len(expected)
    start, back_start = expected[0][0], back[0][0]
    for (time, channel, *rest), (back_time, back_channel, *back_rest) in zip(expected, back, strict=True):
        if absolute:
            assert back_time == pytest.approx(time, abs=1e-6)
        else:
            assert back_time - back_start == pytest.approx(time - start, abs=1e-6)
        if channel_offset is not None:
            assert int(back_channel.removeprefix("can")) == int(channel.removeprefix("can")) + channel_offset
        assert back_rest == rest
    # and back to candump: the same frames again (where the format kept them)
    again = tmp_path / "again.log"
    assert main(["convert", str(converted), str(again)]) == 0
    assert [frame[2:] for frame in _frames(again)] == [frame[2:] for frame in expected]


def test_malformed_line_skipped_and_counted(
    capsys: pytest.CaptureFixture[str], capture: Path, tmp_path: Path
) -> None:
    capture.write_bytes(CAPTURE.replace(b"(1533226487.020020)", b"this line is broken\n(1533226487.020020)"))
    assert main(["convert", str(capture), str(tmp_path / "out.blf")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{capture} -> {tmp_path / 'out.blf'} (BLF): 5 frames written, 1 malformed line(s) skipped (line 3)"
    ]
    assert len(_frames(tmp_path / "out.blf")) == 5


def test_strict_makes_a_malformed_line_fatal(
    capsys: pytest.CaptureFixture[str], capture: Path, tmp_path: Path
) -> None:
    capture.write_bytes(CAPTURE + b"garbage\n")
    assert main(["convert", "--strict", str(capture), str(tmp_path / "out.asc")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"firmware-agent convert: error: {capture}:6: malformed")
    assert len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive.log"]  # nothing half-written left


def test_unknown_extension_is_one_line(
    capsys: pytest.CaptureFixture[str], capture: Path, tmp_path: Path
) -> None:
    assert main(["convert", str(capture), str(tmp_path / "out.xyz")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"firmware-agent convert: error: {tmp_path / 'out.xyz'}: unknown output format "
        "(.xyz; use .log, .asc, .blf, .trc, .csv, .mf4 or --format)\n"
    )


def test_format_forces_the_writer(capsys: pytest.CaptureFixture[str], capture: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.dat"
    assert main(["convert", "--format", "blf", str(capture), str(target)]) == 0
    assert target.read_bytes().startswith(b"LOGG")
    assert [frame[2:] for frame in _frames(target)] == [frame[2:] for frame in _frames(capture)]


def test_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.log"
    assert main(["convert", str(missing), str(tmp_path / "out.asc")]) == 2
    assert capsys.readouterr().err == f"firmware-agent convert: error: {missing}: no such file\n"
    same = tmp_path / "same.log"
    same.write_bytes(CAPTURE)
    assert main(["convert", str(same), str(same)]) == 2
    assert "the output is the input" in capsys.readouterr().err
    assert same.read_bytes() == CAPTURE


def test_trc_counts_the_remote_frames_it_cannot_hold(
    capsys: pytest.CaptureFixture[str], capture: Path, tmp_path: Path
) -> None:
    assert main(["convert", str(capture), str(tmp_path / "out.trc")]) == 0
    assert "4 frames written, 0 malformed lines skipped, 1 remote/error frame(s) not written (TRC cannot" in (
        capsys.readouterr().err
    )


def test_candump_on_stdin_streams_into_a_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, capture: Path, tmp_path: Path
) -> None:
    converted = tmp_path / "live.blf"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(CAPTURE + b"not a frame\n")))
    assert main(["convert", "-", str(converted)]) == 0
    err = capsys.readouterr().err
    summary = f"stdin -> {converted} (BLF): 5 frames written, 1 malformed line(s) skipped (line 6)"
    assert err.splitlines()[0] == summary
    # BLF keeps times and channel numbers (can0 reads back as 0)
    assert [(t, f"can{c}", *rest) for t, c, *rest in _frames(converted)] == _frames(capture)


def test_progress_on_a_terminal_reaches_100_percent(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, capture: Path, tmp_path: Path
) -> None:
    assert main(["convert", str(capture), str(tmp_path / "quiet.asc")]) == 0
    assert "\r" not in capsys.readouterr().err  # captured stderr is no terminal
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["convert", str(capture), str(tmp_path / "shown.asc")]) == 0
    last = terminal.getvalue().split("\r")[-1]
    assert last.startswith(f"{capture}: 100.0 % 5 frames in 0:0")
    assert f"{capture} -> {tmp_path / 'shown.asc'} (" in last  # the summary follows on its own line
