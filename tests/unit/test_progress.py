"""Progress lines: the formatting, 100 % at the end, and silence when stderr is not a terminal."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from firmware_agent.cli import decode as decode_cli
from firmware_agent.cli import main
from firmware_agent.cli import sim as sim_cli
from firmware_agent.progress import CaptureProgress, ProgressLine, format_duration, format_progress

CAPTURE = b"".join(b"(1533226487.%06d) can0 1F0#C001400000000000\n" % (i * 1000) for i in range(500))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_progress() -> None:
    assert format_progress("drive.log", 25, 100, 3.0, 1234) == "drive.log:  25.0 % 1,234 frames, ETA 0:09"
    assert format_progress("drive.log", 100, 100, 12.4, 5000) == "drive.log: 100.0 % 5,000 frames in 0:12"
    assert format_progress("drive.log", 0, 100, 0.0) == "drive.log:   0.0 %, ETA --:--"
    assert format_progress("-", 7, None, 61.0, 7) == "-: 7 frames, 1:01 elapsed"
    assert format_progress("out.log", 150, 600, 2.0, unit="frames") == "out.log:  25.0 %, ETA 0:06"
    assert format_duration(3723) == "1:02:03"


def test_line_redraws_in_place_and_ends_at_100_percent() -> None:
    stream = Terminal()
    line = ProgressLine("drive.log", total=1000, stream=stream)
    line.update(500, 10)
    line.finish()
    line.close()
    text = stream.getvalue()
    assert text.startswith("\rdrive.log:  50.0 % 10 frames, ETA ")
    assert text.endswith("\rdrive.log: 100.0 % 10 frames in 0:00  \n")  # padded over the longer line


def test_capture_progress_counts_bytes_over_several_captures() -> None:
    stream = Terminal()
    progress = CaptureProgress("a.log", 300, stream)
    progress("a.log", 100, 100, 5)
    progress.line._last_draw = 0.0  # redraw at once (normally at most every 0.2 s)
    progress("b.log", 100, 200, 7)
    assert stream.getvalue().split("\r")[-1].startswith("b.log:  66.7 % 12 frames, ETA")


def test_nothing_when_not_a_terminal() -> None:
    stream = io.StringIO()
    line = ProgressLine("drive.log", total=10, stream=stream)
    line.update(5, 1)
    line.finish()
    line.close()
    assert stream.getvalue() == ""


def test_decode_shows_progress_on_a_terminal_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, test_data: Path
) -> None:
    capture = tmp_path / "drive.log"
    capture.write_bytes(CAPTURE)
    motohawk = str(test_data / "dbc" / "cantools__motohawk.dbc")
    monkeypatch.setattr(decode_cli, "PROGRESS_MIN_BYTES", 0)
    assert (
        main(["decode", str(capture), "--dbc", motohawk, "--format", "csv", "-o", str(tmp_path / "o")]) == 0
    )
    assert "\r" not in capsys.readouterr().err  # captured stderr is no terminal
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert (
        main(["decode", str(capture), "--dbc", motohawk, "--format", "csv", "-o", str(tmp_path / "o")]) == 0
    )
    lines = terminal.getvalue().split("\r")
    assert lines[-1].startswith(f"{capture}: 100.0 % 500 frames in 0:0")
    assert lines[-1].count("\n") == 2  # the progress line ends before the skip line
    assert "\r" not in capsys.readouterr().err


def test_sim_out_shows_progress_on_a_terminal_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sim_cli, "PROGRESS_MIN_SECONDS", 0.0)
    out = tmp_path / "drive.log"
    assert main(["sim", "--duration", "2", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and err.startswith("firmware-agent sim: ")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["sim", "--duration", "2", "--out", str(out)]) == 0
    text = terminal.getvalue()
    assert text.startswith(f"\r{out}:")
    assert f"\r{out}: 100.0 % " in text
    assert text.split("\n")[1].startswith("firmware-agent sim: ")
