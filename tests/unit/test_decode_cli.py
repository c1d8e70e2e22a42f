"""`firmware-agent decode` as a user runs it: outputs, filters, summary, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_agent.cli import main

CAPTURE = b"""\
(1533226487.000018) can0 1F0#C001400000000000
(1533226487.010018) can0 1F0#0000000000000000 R
(1533226487.020018) can0 7FF#11
(1533226487.030018) can1 1F0#C0014000000000
this line is broken
(1533226487.040018) can0 1F0#C001400000000000
"""


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    path = tmp_path / "drive.log"
    path.write_bytes(CAPTURE)
    return path


@pytest.fixture
def motohawk(test_data: Path) -> Path:
    return test_data / "dbc" / "cantools__motohawk.dbc"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["decode", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _cli(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware_agent", "decode", *argv],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_jsonl_contract(capsys: pytest.CaptureFixture[str], capture: Path, motohawk: Path) -> None:
    status, out, err = _run(capsys, str(capture), "--dbc", str(motohawk))
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == (
        '{"timestamp": 1533226487.000018, "channel": "can0", "id": 496, "message": "ExampleMessage", '
        '"signals": {"Enable": "Enabled", "AverageRadius": 3.2, "Temperature": 250.1}}'
    )
    assert [json.loads(line)["timestamp"] for line in lines] == [
        1533226487.000018,
        1533226487.010018,
        1533226487.040018,
    ]
    assert "drive.log: skipped 1 malformed line(s) (line 5)" in err
    assert "decoded 3 of 5 frames; skipped 2 (" in err
    assert "unknown id: 1" in err and "too short: 1" in err


def test_no_choices_gives_raw_numbers(
    capsys: pytest.CaptureFixture[str], capture: Path, motohawk: Path
) -> None:
    _, out, _ = _run(capsys, str(capture), "--dbc", str(motohawk), "--no-choices")
    assert json.loads(out.splitlines()[0])["signals"]["Enable"] == 1


def test_channel_binding_and_filters(
    capsys: pytest.CaptureFixture[str], capture: Path, motohawk: Path
) -> None:
    _, out, _ = _run(capsys, str(capture), "--dbc", f"can1={motohawk}")
    assert out == ""  # the only can1 frame is one byte short
    _, out, _ = _run(
        capsys, str(capture), "--dbc", f"can0={motohawk}", "--signal", "ExampleMessage.Temperature"
    )
    assert [json.loads(line)["signals"] for line in out.splitlines()] == [
        {"Temperature": 250.1},
        {"Temperature": 250.0},
        {"Temperature": 250.1},
    ]
    for option, name in (("--message", "ExampleMesage"), ("--signal", "Temprature")):
        status, out, err = _run(capsys, str(capture), "--dbc", str(motohawk), option, name)
        assert status == 2 and out == ""
        assert err.count("\n") == 1 and f"{option} {name!r}" in err and "did you mean" in err


def test_repeated_dbc_for_one_channel_merges(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, motohawk: Path, test_data: Path
) -> None:
    path = tmp_path / "two.log"
    path.write_bytes(b"(1.000000) can0 1F0#C001400000000000\n(1.000001) can0 000#0100000000000000\n")
    choices = test_data / "dbc" / "cantools__choices.dbc"
    _, out, _ = _run(capsys, str(path), "--dbc", f"can0={motohawk}", "--dbc", f"can0={choices}")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["message"] for r in records] == ["ExampleMessage", "Foo"]
    assert records[1]["signals"] == {"Foo": "#%=*ä'"}


def test_csv_output(
    capsys: pytest.CaptureFixture[str], capture: Path, motohawk: Path, tmp_path: Path
) -> None:
    target = tmp_path / "out.csv"
    status, out, _ = _run(capsys, str(capture), "--dbc", str(motohawk), "--format", "csv", "-o", str(target))
    assert status == 0 and out == ""
    lines = target.read_text().splitlines()
    assert lines[0] == "timestamp,channel,id,message,signal,value,unit"
    assert lines[1:4] == [
        "1533226487.000018,can0,496,ExampleMessage,Enable,Enabled,-",
        "1533226487.000018,can0,496,ExampleMessage,AverageRadius,3.2,m",
        "1533226487.000018,can0,496,ExampleMessage,Temperature,250.1,degK",
    ]
    assert len(lines) == 1 + 3 * 3


def test_parquet_output_holds_the_same_values(
    capsys: pytest.CaptureFixture[str], rav4_capture: Path, rav4_dbc_specs: list[str], tmp_path: Path
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    dbcs = [arg for spec in rav4_dbc_specs for arg in ("--dbc", spec)]
    folder = tmp_path / "parquet"
    status, _, _ = _run(capsys, str(rav4_capture), *dbcs, "--format", "parquet", "-o", str(folder))
    assert status == 0
    _, out, _ = _run(capsys, str(rav4_capture), *dbcs, "--message", "GEAR_PACKET")
    records = [json.loads(line) for line in out.splitlines()]
    table = pq.read_table(folder / "can0.GEAR_PACKET.parquet").to_pylist()
    assert len(table) == len(records) > 0
    for row, record in zip(table, records, strict=True):
        assert row["timestamp"] == record["timestamp"] and row["id"] == record["id"]
        for name, value in record["signals"].items():
            if isinstance(value, str):
                assert row[f"{name}_label"] == value
            else:
                assert row[name] == value
    assert len(list(folder.glob("*.parquet"))) > 50


def test_summary_table(capsys: pytest.CaptureFixture[str], capture: Path, motohawk: Path) -> None:
    status, out, _ = _run(capsys, str(capture), "--dbc", str(motohawk), "--summary")
    assert status == 0
    assert "can0       ExampleMessage" in out
    assert "too short 1" in out  # the short can1 frame
    assert "unknown IDs (1, 1 frames)" in out and "7FF" in out
    assert "bus load" in out and "can0" in out


def test_stdin_console_candump(motohawk: Path) -> None:
    console = (
        b"  can0  1F0   [8]  C0 01 40 00 00 00 00 00\n"
        b" (1533226487.5)  can0  1F0   [8]  00 00 00 00 00 00 00 00\n"
    )
    result = _cli("-", "--dbc", str(motohawk), stdin=console)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["signals"]["Enable"] for r in records] == ["Enabled", "Disabled"]
    assert records[1]["timestamp"] == 1533226487.5


def test_strict_makes_malformed_lines_fatal(
    capsys: pytest.CaptureFixture[str], capture: Path, motohawk: Path
) -> None:
    status, _, err = _run(capsys, str(capture), "--dbc", str(motohawk), "--strict")
    assert status == 2
    assert err.strip().endswith("drive.log:5: malformed candump line: 'this line is broken'")


def test_strict_makes_frames_cantools_refuses_fatal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, motohawk: Path
) -> None:
    path = tmp_path / "short.log"
    path.write_bytes(b"(1.000000) can0 7FF#11\n(1.000001) can0 1F0#C0014000\n")
    status, _, err = _run(capsys, str(path), "--dbc", str(motohawk), "--strict")
    assert status == 2
    assert "short.log: frame 2 (can0 0x1F0 ExampleMessage at 1.000001): too short" in err


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing", "nope.log: no such file"),
        ("binary", "binary file that is not a CAN capture"),
        ("unknown", "unknown capture format"),
        ("bad_dbc", "broken.dbc:3:"),
        ("parquet_without_output", "--format parquet needs -o FOLDER"),
    ],
)
def test_bad_input_is_one_line_without_traceback(
    tmp_path: Path, motohawk: Path, setup: str, expected: str
) -> None:
    capture = tmp_path / "ok.log"
    capture.write_bytes(CAPTURE)
    dbc = motohawk
    extra: list[str] = []
    if setup == "missing":
        capture = tmp_path / "nope.log"
    elif setup == "binary":
        capture = tmp_path / "firmware.bin"
        capture.write_bytes(bytes(range(256)) * 64)
    elif setup == "unknown":
        capture = tmp_path / "notes.txt"
        capture.write_text("dear diary\n")
    elif setup == "bad_dbc":
        dbc = tmp_path / "broken.dbc"
        dbc.write_text('VERSION ""\n\nBO_ 1 M 8 X\n SG_ S : 0|8@1+ (1,0) [0|0] "" X\n')
    else:
        extra = ["--format", "parquet"]
    result = _cli(str(capture), "--dbc", str(dbc), *extra)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_candump_input_does_not_import_python_can(capture: Path, motohawk: Path, tmp_path: Path) -> None:
    # python-can is a tenth of a second of start-up; for candump input it is imported only when used
    argv = ["decode", str(capture), "--dbc", str(motohawk), "-o", str(tmp_path / "out.jsonl")]
    script = (
        "import sys\n"
        "from firmware_agent.cli import main\n"
        f"main({argv!r})\n"
        "print('can.bus' in sys.modules)\n"
        "import can\n"
        "print(can.Message(arbitration_id=5).arbitration_id, 'can.bus' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "5", "True"]
    assert (tmp_path / "out.jsonl").read_text().count("\n") == 3  # the three 1F0 frames on can0
