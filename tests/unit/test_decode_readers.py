"""Capture readers: every format python-can reads gives the same frames through ours, plus what it cannot."""

from __future__ import annotations

import gzip
import io
import random
from pathlib import Path

import can
import numpy as np
import pytest

from firmware_agent.errors import UserError
from firmware_agent.io import detect_format, open_capture
from firmware_agent.io.candump_console import CandumpConsoleReader
from firmware_agent.io.candump_log import CandumpLogReader, _parse_fast, _uniform_head, parse_line
from firmware_agent.io.frames import FrameBatch, ReadStats
from tests.conftest import TEST_DATA, data_files

PYTHON_CAN_FILES = data_files("captures/python-can")


def _frames(batches: list[FrameBatch]) -> list[can.Message]:
    return [batch.message(row) for batch in batches for row in range(len(batch))]


def _same_frame(ours: can.Message, theirs: can.Message) -> None:
    assert ours.timestamp == theirs.timestamp
    assert ours.is_error_frame == theirs.is_error_frame
    if theirs.is_error_frame:
        return  # python-can's candump reader drops the channel and ID of error frames
    assert ours.channel == ("" if theirs.channel is None else str(theirs.channel))
    assert (ours.arbitration_id, ours.is_extended_id) == (theirs.arbitration_id, theirs.is_extended_id)
    assert ours.is_remote_frame == theirs.is_remote_frame
    assert ours.is_fd == theirs.is_fd
    if not theirs.is_remote_frame:
        assert bytes(ours.data) == bytes(theirs.data)


@pytest.mark.parametrize("path", PYTHON_CAN_FILES, ids=[p.name for p in PYTHON_CAN_FILES])
def test_python_can_formats_read_like_python_can(path: Path) -> None:
    capture = open_capture(str(path))
    assert capture.format_name in ("ASC", "BLF", "TRC")
    ours = _frames(list(capture))
    theirs = list(can.LogReader(str(path)))
    assert len(ours) == len(theirs) > 0
    for mine, reference in zip(ours, theirs, strict=True):
        _same_frame(mine, reference)


@pytest.mark.parametrize(("suffix", "writer"), [(".csv", "CSVWriter"), (".db", "SqliteWriter")])
def test_formats_python_can_writes_are_read_back(tmp_path: Path, suffix: str, writer: str) -> None:
    path = tmp_path / f"capture{suffix}"
    written = [
        can.Message(
            timestamp=1.5 + i, arbitration_id=0x100 + i, is_extended_id=i % 2 == 1, data=bytes([i] * (i % 9))
        )
        for i in range(20)
    ]
    with getattr(can, writer)(str(path)) as log:
        for message in written:
            log.on_message_received(message)
    capture = open_capture(str(path))
    assert capture.format_name == {".csv": "CSV", ".db": "SQLite"}[suffix]
    ours = _frames(list(capture))
    assert [(m.timestamp, m.arbitration_id, m.is_extended_id, bytes(m.data)) for m in ours] == [
        (m.timestamp, m.arbitration_id, m.is_extended_id, bytes(m.data)) for m in written
    ]


@pytest.mark.parametrize(
    "name",
    ["other_matlab-basics_LOG_11111111_00000012_00000001.MF4", "other_asammdf-basics_input_00000001.MF4"],
)
def test_mf4_files_read_like_python_can(test_data: Path, name: str) -> None:
    """The bulk MF4 reader (io/mf4.py) gives python-can's MF4Reader's frames, every one, in its order."""
    path = test_data / "captures" / "css_mf4" / name
    capture = open_capture(str(path))
    assert capture.format_name == "MF4"
    ours = _frames(list(capture))
    theirs = list(can.LogReader(str(path)))
    assert len(ours) == len(theirs) > 50_000
    for mine, reference in zip(ours, theirs, strict=True):
        _same_frame(mine, reference)
    if "matlab" in name:
        assert {frame.channel for frame in ours} == {"1", "2"}


def test_candump_log_matches_python_can_on_the_rav4_capture(rav4_capture: Path) -> None:
    ours = _frames(list(open_capture(str(rav4_capture))))
    theirs = list(can.LogReader(str(rav4_capture)))
    assert len(ours) == len(theirs) == 135_468
    for mine, reference in zip(ours, theirs, strict=True):
        _same_frame(mine, reference)


# Lines python-can's own candump reader accepts: its parse is the reference for each.
ACCEPTED_LINES = [
    b"(1533226487.000018) can0 2E4#BE000000A9 T",
    b"(0.000000) vcan0 001#8d00100100820100",
    b"(1.000100) vcan0 002#01",
    b"(123456.000001) vcan0 003#02",
    b"(987654321.999999) vcan0 004#03",
    b"(12.5) can1 7FF#",
    b"(1700000000.123456789) can0 123#1122",
    b"(1533226487.000100) can0 12345678#DEADBEEF R",
    b"(1533226487.000200) can0 123##1" + b"AB" * 64,
    b"(1533226487.000300) can0 1FFFFFFF##0" + b"01" * 12,
    b"(1533226487.000400) can0 123#R",
    b"(1533226487.000500) can0 123#R8",
    b"(1533226487.000600) can0 20000080#0000000000000000",
    b"(1533226487.000700) averyverylongchannelname 123#11",
    b"(1533226487.000800)  can0  123#11",
    b"(1533226487.000900) can0 123#11\r",
]


def _read_log(text: bytes, strict: bool = False) -> tuple[list[can.Message], ReadStats]:
    stats = ReadStats()
    reader = CandumpLogReader(io.BytesIO(text), "test.log", stats, strict)
    return _frames(list(reader)), stats


def test_candump_log_lines_parse_like_python_can(tmp_path: Path) -> None:
    path = tmp_path / "lines.log"
    path.write_bytes(b"\n".join(ACCEPTED_LINES) + b"\n")
    theirs = list(can.io.CanutilsLogReader(str(path)))
    ours, stats = _read_log(path.read_bytes())
    assert stats.malformed == 0
    assert len(ours) == len(theirs) == len(ACCEPTED_LINES)
    for mine, reference in zip(ours, theirs, strict=True):
        _same_frame(mine, reference)


def test_fd_flags_written_as_hex_letters_are_read() -> None:
    # python-can 4.6.1 parses the flags nibble base 10 and raises on these
    line = b"(1533226487.000018) can0 123##F1122334455667788990011\n"
    with pytest.raises(ValueError):
        list(can.io.CanutilsLogReader(io.StringIO(line.decode())))
    frames, stats = _read_log(line + b"(1533226487.000019) can0 124##B" + b"00" * 64 + b"\n")
    assert stats.malformed == 0
    assert [(f.arbitration_id, f.is_fd, len(f.data)) for f in frames] == [
        (0x123, True, 11),
        (0x124, True, 64),
    ]
    assert bytes(frames[0].data) == bytes.fromhex("1122334455667788990011")


def test_malformed_lines_are_counted_with_their_numbers() -> None:
    text = b"\n".join(
        [
            b"(1.000000) can0 123#11",
            b"garbage",
            b"",
            b"(1.000001) can0 123#1",  # odd number of hex digits
            b"(1.000002) can0 12G#11",
            b"(1.000003) can0 123#22",
        ]
    )
    frames, stats = _read_log(text)
    assert [bytes(f.data) for f in frames] == [b"\x11", b"\x22"]
    assert stats.malformed == 3
    assert stats.malformed_lines == [2, 4, 5]


def test_strict_makes_a_malformed_line_fatal_naming_file_and_line() -> None:
    with pytest.raises(UserError, match=r"^test\.log:2: malformed candump line"):
        _read_log(b"(1.000000) can0 123#11\nnot a frame\n", strict=True)


def test_a_malformed_asc_frame_line_is_skipped_and_counted_not_fatal(tmp_path: Path) -> None:
    original = TEST_DATA / "captures" / "python-can" / "logfile.asc"
    lines = original.read_text().splitlines()
    frame_lines = [i for i, line in enumerate(lines) if " Rx " in line and " d " in line]
    broken = frame_lines[1]
    damaged = lines.copy()
    damaged[broken] = damaged[broken].replace(" d ", " d 8 zz ", 1)
    path = tmp_path / "damaged.asc"
    path.write_text("\n".join(damaged) + "\n")
    expected = list(can.ASCReader(str(original)))
    capture = open_capture(str(path))
    frames = _frames(list(capture))
    assert len(frames) == len(expected) - 1  # every other frame is still read
    assert capture.stats.malformed == 1 and capture.stats.malformed_lines == [broken + 1]
    with pytest.raises(UserError, match=rf"damaged\.asc:{broken + 1}: malformed ASC frame line"):
        list(open_capture(str(path), strict=True))


def test_line_numbers_continue_across_blocks() -> None:
    good = b"(1.000000) can0 123#11\n"
    text = good * 5000 + b"broken\n" + good
    stats = ReadStats()
    reader = CandumpLogReader(io.BytesIO(text), "x.log", stats, block_bytes=4096)
    assert sum(len(batch) for batch in reader) == 5001
    assert stats.malformed_lines == [5001]


CONSOLE = (
    b"""\
  can0  123   [8]  11 22 33 44 55 66 77 88
  can0  12345678   [2]  DE AD
 (1533226487.000018)  can1  2E4   [5]  BE 00 00 00 A9
  can0  321  [64]  """
    + b" ".join(b"%02X" % i for i in range(64))
    + b"""
  can0  321  [08]  01 02 03 04 05 06 07 08
  can0  7FF   [0]  remote request
  can0  20000080   [8]  00 00 00 00 00 00 00 00   ERRORFRAME
this is not candump
"""
)


def test_console_candump_output() -> None:
    stats = ReadStats()
    frames = _frames(list(CandumpConsoleReader(io.BytesIO(CONSOLE), "stdin", stats)))
    assert [(f.channel, f.arbitration_id, f.is_extended_id, f.is_fd, len(f.data)) for f in frames] == [
        ("can0", 0x123, False, False, 8),
        ("can0", 0x12345678, True, False, 2),
        ("can1", 0x2E4, False, False, 5),
        ("can0", 0x321, False, True, 64),
        ("can0", 0x321, False, True, 8),
        ("can0", 0x7FF, False, False, 0),
        ("can0", 0x80, True, False, 8),
    ]
    assert frames[2].timestamp == 1533226487.000018
    assert frames[5].is_remote_frame and frames[6].is_error_frame
    assert stats.malformed_lines == [8]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.log", b"(1.0) can0 123#11\n", "candump -L"),
        ("capture.txt", b"  can0  123   [1]  11\n", "candump output"),
        ("noext", b"date Sam Sep 30 15:06:13.191 2017\nbase hex  timestamps absolute\n", "ASC"),
        ("x", b"timestamp,arbitration_id,extended,remote,error,dlc,data\n", "CSV"),
        ("y.dat", b";$FILEVERSION=2.1\n", "TRC"),
        ("z.bin", b"LOGG" + bytes(100), "BLF"),
        ("empty.asc", b"", "ASC"),
    ],
)
def test_format_detection_by_content_then_extension(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert detect_format(str(path)) == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)) * 8, "binary file that is not a CAN capture"),
        (b"hello world\nthis is text\n", "unknown capture format"),
    ],
)
def test_unreadable_files_are_user_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "capture.log"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        open_capture(str(path))


def test_missing_capture_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        open_capture(str(tmp_path / "nope.log"))


def test_block_parser_agrees_with_the_per_line_parser_on_random_lines() -> None:
    # the vectorised path must give, line for line, what the per-line (python-can compatible) parser gives
    rng = random.Random(7)
    lines = []
    for _ in range(3000):
        seconds = rng.randrange(10 ** rng.randint(1, 10))
        stamp = f"({seconds}.{rng.randrange(10**6):06d})"
        channel = rng.choice(["can0", "can1", "vcan12", "c", "averyverylongchannelname", "0"])
        extended = rng.random() < 0.3
        frame_id = f"{rng.randrange(1 << (29 if extended else 11)):0{8 if extended else 3}X}"
        if rng.random() < 0.2:
            frame_id = frame_id.lower()
        if rng.random() < 0.2:
            payload = (
                "#"
                + rng.choice("0123456789ABCDEF")
                + bytes(rng.randrange(256) for _ in range(rng.choice([0, 8, 12, 64]))).hex()
            )
        else:
            payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 8))).hex().upper()
        trailer = rng.choice(["", "", " R", " T"])
        lines.append(f"{stamp} {channel} {frame_id}#{payload}{trailer}".encode())
    text = b"\n".join(lines) + b"\n"
    newlines = np.flatnonzero(np.frombuffer(text, np.uint8) == 10)
    fast = _parse_fast(text, np.concatenate(([0], newlines[:-1] + 1)), newlines)
    assert fast.ok.mean() > 0.75  # most lines really take the vectorised path
    frames, stats = _read_log(text)
    assert stats.malformed == 0
    expected = [parse_line(line) for line in lines]
    assert len(frames) == len(expected)
    for ours, reference in zip(frames, expected, strict=True):
        assert reference is not None
        assert (ours.timestamp, ours.channel, ours.arbitration_id, ours.is_extended_id, ours.is_fd) == (
            reference.timestamp,
            reference.channel,
            reference.arbitration_id,
            reference.is_extended,
            reference.is_fd,
        )
        assert bytes(ours.data) == reference.data


def test_gzipped_candump_log_reads_like_the_plain_one(tmp_path: Path, rav4_capture: Path) -> None:
    text = b"".join(rav4_capture.read_bytes().splitlines(keepends=True)[:20_000])
    plain, packed = tmp_path / "part.log", tmp_path / "part.log.gz"
    plain.write_bytes(text)
    packed.write_bytes(gzip.compress(text))
    assert detect_format(str(packed)) == "candump -L"
    ours, theirs = _frames(list(open_capture(str(packed)))), _frames(list(open_capture(str(plain))))
    assert len(ours) == len(theirs) == 20_000
    for mine, reference in zip(ours, theirs, strict=True):
        _same_frame(mine, reference)


@pytest.mark.parametrize("odd_line", [None, "(1533226487.5) can0 123#11", "(1533226487.000001) vcan0 123#11"])
def test_blocks_of_one_line_shape_parse_like_the_per_line_parser(odd_line: str | None) -> None:
    # candump's usual output (ten-digit seconds, one channel-name length, one ID length) is read at fixed
    # columns; one line of another shape sends the block through the general path: same frames either way
    rng = random.Random(11)
    lines = []
    for _ in range(2000):
        stamp = f"({rng.randrange(10**9, 10**10)}.{rng.randrange(10**6):06d})"
        frame_id = f"{rng.randrange(1 << 11):03X}"
        if rng.random() < 0.2:
            flags = rng.choice("0123456789ABCDEFabcdef")
            payload = "#" + flags + bytes(rng.randrange(256) for _ in range(rng.choice([0, 8, 12, 64]))).hex()
        else:
            payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 8))).hex()
        trailer = rng.choice(["", " R", " T"])
        lines.append(f"{stamp} {rng.choice(['can0', 'can1'])} {frame_id}#{payload}{trailer}".encode())
    if odd_line is not None:
        lines.insert(1000, odd_line.encode())
    text = b"\n".join(lines) + b"\n"
    buf = np.frombuffer(text, np.uint8)
    newlines = np.flatnonzero(buf == 10)
    uniform = _uniform_head(buf, np.concatenate(([0], newlines[:-1] + 1)), newlines)
    assert (uniform is None) == (odd_line is not None)
    frames, stats = _read_log(text)
    assert stats.malformed == 0
    expected = [parse_line(line) for line in lines]
    assert len(frames) == len(expected)
    for ours, reference in zip(frames, expected, strict=True):
        assert reference is not None
        assert (ours.timestamp, ours.channel, ours.arbitration_id, ours.is_fd, ours.bitrate_switch) == (
            reference.timestamp,
            reference.channel,
            reference.arbitration_id,
            reference.is_fd,
            reference.bitrate_switch,
        )
        assert bytes(ours.data) == reference.data


def test_line_shapes_python_can_misreads_are_reported_as_malformed(tmp_path: Path) -> None:
    # docs/decode.md: python-can 4.6.1 reads these two lines, but not as the frames written on them
    capture = tmp_path / "odd.log"
    capture.write_text("(1.0) can0 123#112\n(2.0) can0 1FFFFFFFF#11\n(3.0) can0 123#11\n")
    odd_digits, nine_digits, good = list(can.LogReader(str(capture)))
    assert bytes(odd_digits.data) == b"\x11\x02"  # the lone last nibble becomes a byte of its own
    assert nine_digits.is_error_frame and nine_digits.arbitration_id == 0 and not nine_digits.data
    assert bytes(good.data) == b"\x11"
    opened = open_capture(str(capture))
    frames = _frames(list(opened))
    assert [(f.timestamp, f.arbitration_id, bytes(f.data)) for f in frames] == [(3.0, 0x123, b"\x11")]
    assert opened.stats.malformed_lines == [1, 2]
    with pytest.raises(UserError, match=r"odd.log:1: malformed candump line"):
        list(open_capture(str(capture), strict=True))
