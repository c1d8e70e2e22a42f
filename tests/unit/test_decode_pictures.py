"""Pictures and bus load over time (issue 10, parts 4 and 5): plot, --summary --interval, folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_agent.cli import main

# 10 s on can0 at 500 kbit/s: one 8-byte frame every 10 ms (2.2 %), then a 2 s flood of back-to-back
# frames (111 bits each: 4,500 frames per second fill the bus)
_QUIET = [f"({1000 + n * 0.01:.6f}) can0 1F0#C001400000000000\n" for n in range(1000)]
_FLOOD = [f"({1004 + n * 111 / 500_000:.6f}) can0 7FF#0000000000000000\n" for n in range(9000)]


@pytest.fixture
def flood(tmp_path: Path) -> Path:
    path = tmp_path / "flood.log"
    lines = sorted(_QUIET + _FLOOD, key=lambda line: float(line[1:].split(")")[0]))
    path.write_text("".join(lines))
    return path


@pytest.fixture
def motohawk(test_data: Path) -> str:
    return str(test_data / "dbc" / "cantools__motohawk.dbc")


def test_summary_interval_shows_the_flood_peak(
    capsys: pytest.CaptureFixture[str], flood: Path, motohawk: str
) -> None:
    assert main(["decode", str(flood), "--dbc", motohawk, "--summary", "--interval", "1"]) == 0
    out = capsys.readouterr().out
    whole = next(line for line in out.splitlines() if "frames over" in line)
    assert "  can0" in whole and " 22.2 %" in whole  # averaged over 10 s the flood reads as 22 %
    peak = next(line for line in out.splitlines() if "peak" in line and "can0" in line)
    # the flood fills the bus; the quiet frames written over it (a synthetic overlap) add their 2.2 %
    assert float(peak.split("peak")[1].split("%")[0]) == pytest.approx(102.2, abs=0.2)
    assert "at 4.0 s (of 10 intervals" in peak


def test_plot_signals_and_bus_load(
    capsys: pytest.CaptureFixture[str], rav4_capture: Path, rav4_dbc_specs: list[str], tmp_path: Path
) -> None:
    small = tmp_path / "rav4.log"
    with rav4_capture.open("rb") as source:
        small.write_bytes(b"".join(source.readline() for _ in range(6000)))
    dbcs = [arg for spec in rav4_dbc_specs for arg in ("--dbc", spec)]
    png = tmp_path / "speeds.png"
    argv = ["plot", str(small), *dbcs, "--signal", "WHEEL_SPEED_FL", "--signal", "GEAR", "-o", str(png)]
    assert main(argv) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = tmp_path / "load.html"
    assert main(["plot", str(small), *dbcs, "--bus-load", "--interval", "0.5", "-o", str(html)]) == 0
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert main(["plot", str(small), *dbcs, "--signal", "wheel_speed_fl"]) == 2
    assert "did you mean 'WHEEL_SPEED_FL'?" in capsys.readouterr().err


def test_matplotlib_stays_an_extra_the_daemon_never_imports() -> None:
    root = Path(__file__).resolve().parents[2]
    pyproject = (root / "pyproject.toml").read_text()
    assert 'plot = ["matplotlib' in pyproject
    dependencies = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "matplotlib" not in dependencies
    for path in (root / "firmware_agent").rglob("*.py"):
        if path.name != "plot.py":
            assert "import matplotlib" not in path.read_text(), path


def test_a_folder_of_captures_gets_a_table_per_capture(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, motohawk: str
) -> None:
    folder = tmp_path / "sessions"
    folder.mkdir()
    (folder / "a.log").write_text("(1000.000000) can0 1F0#C001400000000000\n(1001.000000) can0 1F0#00\n")
    (folder / "b.log").write_text("(9000000.000000) can0 1F0#C001400000000000\n(9000002.0) can0 1F0#C0\n")
    (folder / "notes.txt").write_text("not a capture")
    assert main(["decode", str(folder), "--dbc", motohawk, "--summary"]) == 0
    out = capsys.readouterr().out
    assert f"== {folder / 'a.log'}" in out and f"== {folder / 'b.log'}" in out
    durations = [line for line in out.splitlines() if "frames over" in line]
    assert "over      1.0 s" in durations[0] and "over      2.0 s" in durations[1]
    assert "== all 2 captures" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["decode", str(empty), "--dbc", motohawk]) == 2
    assert "a folder without captures" in capsys.readouterr().err
