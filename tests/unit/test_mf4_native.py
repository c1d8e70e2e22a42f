"""The built-in MF4 reader (io/mf4.py, io/mdf4_blocks.py): frame for frame what asammdf reads, and its errors.

asammdf is the reference: `AsammdfReader` is the previous reader of `io/mf4.py` (asammdf's `MDF.get` of
each CAN bus-event group, the frames python-can's `MF4Reader` gives: `test_decode_readers.py`). The files:
both CSS samples (CANedge: unfinalised, unsorted, bit fields, virtual channels, conversions, VLSD data
bytes in a VLSD channel group), the same resaved by asammdf (sorted; DT, deflate and transposed-deflate
DZ; VLSD data bytes in ##SD blocks), python-can's `MF4Writer` files (DT and both DZ), files big enough
for ##DL and ##HL lists, and `firmware-agent convert` output.
"""

from __future__ import annotations

import gzip
import importlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from firmware_agent.cli import main
from firmware_agent.io import open_capture
from firmware_agent.io.frames import FrameBatch, concatenate
from firmware_agent.io.mdf4_blocks import Mdf4Unsupported, untranspose, walk_records
from firmware_agent.io.mf4 import AsammdfReader, read_frames
from tests.conftest import TEST_DATA

pytest.importorskip("asammdf")

CSS = sorted((TEST_DATA / "captures" / "css_mf4").glob("*.MF4"))
J1939 = TEST_DATA / "dbc" / "css__CSS-Electronics-SAE-J1939-DEMO.dbc"
#: python-can's MF4Writer layout of a data frame (can/io/mf4.py STD_DTYPE)
PYTHON_CAN_DTYPE = np.dtype(
    [
        ("CAN_DataFrame.BusChannel", "<u1"),
        ("CAN_DataFrame.ID", "<u4"),
        ("CAN_DataFrame.IDE", "<u1"),
        ("CAN_DataFrame.DLC", "<u1"),
        ("CAN_DataFrame.DataLength", "<u1"),
        ("CAN_DataFrame.DataBytes", "(64,)u1"),
        ("CAN_DataFrame.Dir", "<u1"),
        ("CAN_DataFrame.EDL", "<u1"),
        ("CAN_DataFrame.BRS", "<u1"),
        ("CAN_DataFrame.ESI", "<u1"),
    ]
)


def _asammdf(path: Path) -> FrameBatch:
    return concatenate(list(AsammdfReader(path, 10**9)))


def _assert_same(ours: FrameBatch | None, theirs: FrameBatch) -> None:
    """Every column equal, dtype and all; channels compared by name (each reader numbers its own)."""
    assert ours is not None
    assert len(ours) == len(theirs)
    for name in ("timestamp", "arbitration_id", "is_extended", "is_fd", "is_remote", "is_error", "length"):
        mine, reference = getattr(ours, name), getattr(theirs, name)
        assert mine.dtype == reference.dtype, name
        assert np.array_equal(mine, reference), name  # timestamps too: the same float64 to the bit
    assert ours.bitrate_switch is not None and theirs.bitrate_switch is not None
    assert np.array_equal(ours.bitrate_switch, theirs.bitrate_switch)
    assert ours.data.shape == theirs.data.shape and np.array_equal(ours.data, theirs.data)
    assert np.array_equal(
        np.array(ours.channels, object)[ours.channel], np.array(theirs.channels, object)[theirs.channel]
    )


def _blocks(path: Path) -> dict[bytes, int]:
    """How many blocks of each data kind the file holds (8-aligned `##XX` ids)."""
    found: dict[bytes, int] = {}
    for match in re.finditer(rb"##(?:DT|DZ|DL|HL|SD)", path.read_bytes()):
        if match.start() % 8 == 0:
            found[match.group()] = found.get(match.group(), 0) + 1
    return found


@pytest.mark.parametrize("path", CSS, ids=[path.name[:30] for path in CSS])
def test_css_samples_read_like_asammdf(path: Path) -> None:
    assert path.read_bytes()[:8] == b"UnFinMF "  # CANedge: unfinalised, one unsorted data group
    ours = read_frames(path)
    _assert_same(ours, _asammdf(path))
    assert ours is not None and len(ours) > 50_000


@pytest.mark.parametrize("compression", [0, 1, 2])
@pytest.mark.parametrize("path", CSS, ids=[path.name[:30] for path in CSS])
def test_files_resaved_by_asammdf_read_like_asammdf(tmp_path: Path, path: Path, compression: int) -> None:
    from asammdf import MDF

    resaved = tmp_path / "resaved.mf4"
    MDF(str(path)).save(str(resaved), compression=compression, overwrite=True)
    blocks = _blocks(resaved)
    assert (b"##DT" in blocks) == (compression == 0) and (b"##DZ" in blocks) == (compression > 0)
    if "matlab" in path.name:  # its VLSD data bytes: a VLSD channel group before, ##SD data now
        assert b"##SD" in blocks or compression > 0
    _assert_same(read_frames(resaved), _asammdf(resaved))


def _python_can_messages(count: int) -> list:
    import can

    rng = np.random.default_rng(7)
    messages = []
    for number in range(count):
        kind = rng.random()
        fd = 0.1 < kind < 0.3
        size = int(rng.choice([0, 1, 8, 12, 64])) if fd else int(rng.integers(0, 9))
        messages.append(
            can.Message(
                timestamp=1_700_000_000 + number * 0.000731,
                arbitration_id=int(rng.integers(0, 0x1FFFFFFF if kind > 0.5 else 0x7FF)),
                is_extended_id=kind > 0.5,
                is_remote_frame=kind < 0.05,
                is_error_frame=0.05 <= kind < 0.08,
                is_fd=fd,
                bitrate_switch=fd and kind > 0.2,
                data=bytes(rng.integers(0, 256, 0 if kind < 0.05 else size).tolist()),
                dlc=int(rng.integers(0, 9)) if kind < 0.05 else None,
                channel=int(rng.integers(0, 3)),
            )
        )
    return messages


@pytest.mark.parametrize("compression", [0, 1, 2])
def test_python_can_writer_files_read_like_asammdf(tmp_path: Path, compression: int) -> None:
    from firmware_agent.io.python_can import _mf4_module

    writer_class = _mf4_module(importlib.import_module("can.io.mf4")).MF4Writer
    path = tmp_path / "python-can.mf4"
    written = _python_can_messages(400)
    with writer_class(str(path), compression_level=compression) as writer:
        for message in written:
            writer.on_message_received(message)
    ours = read_frames(path)
    _assert_same(ours, _asammdf(path))
    assert ours is not None
    back = list(ours.messages())  # in time order, as written
    assert len(back) == 400
    for mine, message in zip(back, written, strict=True):
        assert mine.timestamp == pytest.approx(message.timestamp, abs=1e-6)
        assert (mine.arbitration_id, mine.is_remote_frame, mine.is_error_frame, mine.channel) == (
            message.arbitration_id,
            message.is_remote_frame,
            message.is_error_frame,
            str(message.channel),
        )
        if not (message.is_remote_frame or message.is_error_frame):
            assert (mine.is_extended_id, mine.is_fd, mine.bitrate_switch) == (
                message.is_extended_id,
                message.is_fd,
                message.bitrate_switch,
            )
            assert bytes(mine.data) == bytes(message.data)


@pytest.mark.parametrize("compression", [0, 2])
def test_data_lists_read_like_asammdf(tmp_path: Path, compression: int) -> None:
    # 60 k records of 84 bytes: more than asammdf's 4 MB blocks, so a ##DL list (behind a ##HL when zipped)
    from asammdf import MDF, Signal
    from asammdf.blocks.v4_blocks import SourceInformation
    from asammdf.blocks.v4_constants import BUS_TYPE_CAN, SOURCE_BUS

    count = 60_000
    rng = np.random.default_rng(3)
    samples = np.zeros(count, PYTHON_CAN_DTYPE)
    samples["CAN_DataFrame.BusChannel"] = rng.integers(0, 3, count)
    samples["CAN_DataFrame.ID"] = rng.integers(0, 0x800, count)
    samples["CAN_DataFrame.DataLength"] = rng.integers(0, 9, count)
    samples["CAN_DataFrame.DataBytes"] = rng.integers(0, 256, (count, 64))
    mdf = MDF(version="4.10")
    mdf.append(
        Signal(
            name="CAN_DataFrame",
            samples=samples,
            timestamps=np.cumsum(rng.random(count) * 1e-3),
            source=SourceInformation(source_type=SOURCE_BUS, bus_type=BUS_TYPE_CAN),
        )
    )
    path = tmp_path / "big.mf4"
    mdf.save(str(path), compression=compression, overwrite=True)
    blocks = _blocks(path)
    assert blocks.get(b"##DL") == 1 and blocks.get(b"##DT" if compression == 0 else b"##DZ") == 2
    assert (b"##HL" in blocks) == (compression == 2)
    ours = read_frames(path)
    _assert_same(ours, _asammdf(path))
    assert ours is not None and len(ours) == count
    assert np.array_equal(ours.arbitration_id, samples["CAN_DataFrame.ID"])


def test_convert_output_reads_like_asammdf(tmp_path: Path) -> None:
    log = tmp_path / "drive.log"
    lines = [
        f"({1533226487 + i * 0.01:.6f}) can{i % 2} {0x100 + i:03X}#{bytes(range(i % 9)).hex().upper()}"
        for i in range(50)
    ]
    lines += ["(1533226488.000000) can0 12345678#DEADBEEF", "(1533226488.100000) can1 123#R"]
    log.write_text("\n".join(lines) + "\n")
    converted = tmp_path / "drive.mf4"
    assert main(["convert", str(log), str(converted)]) == 0
    ours = read_frames(converted)
    _assert_same(ours, _asammdf(converted))
    assert ours is not None and len(ours) == 52
    original = [m for batch in open_capture(str(log)) for m in batch.messages()]
    assert sorted((m.arbitration_id, bytes(m.data)) for m in original) == sorted(
        (int(ours.arbitration_id[row]), bytes(ours.data[row, : ours.length[row]])) for row in range(52)
    )


def test_gzipped_mf4_reads_like_the_file(tmp_path: Path) -> None:
    path = CSS[-1]
    zipped = tmp_path / "capture.mf4.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    capture = open_capture(str(zipped))
    assert capture.format_name == "MF4"
    _assert_same(concatenate(list(capture)), concatenate(list(open_capture(str(path)))))


def test_unfinalised_file_cut_short_reads_the_records_before_the_cut(tmp_path: Path) -> None:
    # a CANedge file whose last data block runs to the end: cut mid-record, the whole records before it
    cut = tmp_path / "cut.mf4"
    data = CSS[0].read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 7])
    ours = read_frames(cut)
    _assert_same(ours, _asammdf(cut))
    assert ours is not None and 0 < len(ours) < len(read_frames(CSS[0]) or [])


def test_progress_advances_with_the_frames_handed_out() -> None:
    capture = open_capture(str(CSS[0]), chunk_size=20_000)
    positions = [capture.position()]
    frames = 0
    for batch in capture:
        frames += len(batch)
        positions.append(capture.position())
    assert positions[0] == 0 and positions[-1] == capture.size
    assert positions == sorted(positions) and len(set(positions)) == len(positions)  # a step per batch
    assert frames == 150_411


def test_unsupported_feature_falls_back_to_asammdf(monkeypatch: pytest.MonkeyPatch) -> None:
    import firmware_agent.io.mf4 as mf4

    def refuse(source: object) -> None:
        raise Mdf4Unsupported("a feature")

    native = concatenate(list(open_capture(str(CSS[-1]))))
    monkeypatch.setattr(mf4, "read_frames", refuse)
    _assert_same(concatenate(list(open_capture(str(CSS[-1])))), native)


def _first_block(data: bytes, ident: bytes) -> int:
    return next(m.start() for m in re.finditer(re.escape(ident), data) if m.start() % 8 == 0)


def _zipped(tmp_path: Path) -> bytes:
    from asammdf import MDF

    path = tmp_path / "zipped.mf4"
    MDF(str(CSS[-1])).save(str(path), compression=2, overwrite=True)
    return path.read_bytes()


def _decode(path: Path, *env_code: str) -> subprocess.CompletedProcess[str]:
    argv = ["decode", str(path), "--dbc", str(J1939), "--format", "jsonl", "-o", str(path) + ".out"]
    run = f"from firmware_agent.cli import main\nsys.exit(main({argv!r}))\n"
    script = "".join(["import sys\n", *env_code, run])
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def _broken(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"{case}.mf4"
    if case == "not-mf4":
        path.write_bytes(b"MDF     4.10    " + bytes(range(256)) * 4)
    elif case == "header-cut":
        path.write_bytes(CSS[0].read_bytes()[:5000])
    elif case == "file-cut":  # a finalised file cut short (asammdf writes its metadata after the data)
        data = _zipped(tmp_path)
        path.write_bytes(data[: _first_block(data, b"##DZ") + 500])
    elif case == "block-too-long":  # a data block that says it is longer than what is left of the file
        data = bytearray(_zipped(tmp_path))
        block = _first_block(bytes(data), b"##DZ")
        data[block + 8 : block + 16] = (len(data) - block + 8).to_bytes(8, "little")
        path.write_bytes(bytes(data))
    elif case == "corrupt-zip":
        data = bytearray(_zipped(tmp_path))
        start = _first_block(bytes(data), b"##DZ") + 48
        data[start + 100 : start + 140] = bytes(40)
        path.write_bytes(bytes(data))
    elif case == "loop":  # the first channel group's channel links back to itself
        data = bytearray(CSS[0].read_bytes())
        channel = _first_block(bytes(data), b"##CN")
        data[channel + 24 : channel + 32] = channel.to_bytes(8, "little")
        path.write_bytes(bytes(data))
    elif case == "member-loop":  # a channel whose structure members start with the channel itself
        data = bytearray(CSS[0].read_bytes())
        channel = _first_block(bytes(data), b"##CN")
        data[channel + 32 : channel + 40] = channel.to_bytes(8, "little")
        path.write_bytes(bytes(data))
    elif case == "empty":
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("not-mf4", "cannot read as MF4: expected a ##HD block at 0x40"),
        ("header-cut", "points outside the file (truncated?)"),
        ("file-cut", "points outside the file (truncated?)"),
        ("block-too-long", "runs past the end of the file"),
        ("corrupt-zip", "(corrupt"),
        ("loop", "the ##CN chain loops"),
        ("member-loop", "the ##CN chain loops"),
        ("empty", "cannot read as MF4: too short for an MF4 file (0 bytes)"),
    ],
)
def test_broken_files_are_one_line(tmp_path: Path, case: str, expected: str) -> None:
    path = _broken(tmp_path, case)
    result = _decode(path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"firmware-agent decode: error: {path}: "), result.stderr
    assert expected in lines[0]


def test_unsupported_feature_without_asammdf_is_one_line(tmp_path: Path) -> None:
    data = bytearray(_zipped(tmp_path))
    data[_first_block(bytes(data), b"##DZ") + 26] = 2  # zstd, an MDF 4.2 compression
    path = tmp_path / "zstd.mf4"
    path.write_bytes(bytes(data))
    result = _decode(path, "sys.modules['asammdf'] = None  # not installed\n")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"firmware-agent decode: error: {path}: MF4 feature not supported by the built-in reader: zstd"
        " compressed ##DZ blocks; install asammdf to read it (pip install 'firmware-agent[mf4]')\n"
    )


def test_decoding_mf4_imports_no_asammdf_pandas_or_python_can(tmp_path: Path) -> None:
    argv = ["decode", str(CSS[0]), "--dbc", str(J1939), "--format", "parquet", "-o", str(tmp_path / "out")]
    script = (
        "import sys\n"
        "from firmware_agent.cli import main\n"
        f"status = main({argv!r})\n"
        "print(status, sorted(name for name in ('asammdf', 'pandas', 'can.bus') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0 []"
    assert any((tmp_path / "out").iterdir())


def test_walk_records_sizes_vlsd_and_stops() -> None:
    # id 1: 3 bytes; id 2: VLSD (uint32 length + bytes); id 3 is unknown
    stream = b"\x01abc" + b"\x02" + (2).to_bytes(4, "little") + b"xy" + b"\x01def" + b"\x03zzz"

    def walk(data: bytes, id_size: int, sizes: dict[int, int | None]) -> tuple[list[int], int]:
        starts, stop = walk_records(data, id_size, sizes)
        return starts.tolist(), stop

    assert walk(stream, 1, {1: 3, 2: None}) == ([0, 4, 11], 15)
    assert walk(stream[:13], 1, {1: 3, 2: None}) == ([0, 4], 11)  # the last record is cut
    wide = b"\x01\x01abc" + b"\x02\x01" + (1).to_bytes(4, "little") + b"q" + b"\x01\x01d"
    assert walk(wide, 2, {0x101: 3, 0x102: None}) == ([0, 5], 12)


def test_untranspose_keeps_the_tail() -> None:
    records = np.arange(7 * 10, dtype=np.uint8).reshape(7, 10)
    tail = b"\xfa\xfb\xfc"
    assert untranspose(records.T.tobytes() + tail, 10) == records.tobytes() + tail


def test_damaged_files_raise_mdf4_error_or_read() -> None:
    # Seeded damage to the blocks of a CANedge file (bytes, links, lengths) and cuts: every outcome is
    # frames or Mdf4Error (one line through the CLI), never another exception.
    from firmware_agent.io.mdf4_blocks import Mdf4Error

    original = CSS[-1].read_bytes()
    metadata = original.index(b"##DT")  # the blocks before CANedge's one data block
    rng = np.random.default_rng(11)
    outcomes = {"read": 0, "error": 0}
    for _ in range(150):
        damaged = bytearray(
            original[: int(rng.integers(0, len(original)))] if rng.random() < 0.25 else original
        )
        for _ in range(int(rng.integers(1, 6))):
            position = int(rng.integers(0, min(metadata + 64, len(damaged) or 1)))
            if rng.random() < 0.5:
                damaged[position : position + 1] = bytes([int(rng.integers(0, 256))])
            else:
                position -= position % 8
                value = int(rng.choice([0, 1, 64, len(damaged), 2**40, int(rng.integers(0, 2**31)) // 8 * 8]))
                damaged[position : position + 8] = value.to_bytes(8, "little")
        try:
            read_frames(bytes(damaged))
            outcomes["read"] += 1
        except Mdf4Error:
            outcomes["error"] += 1
    assert outcomes["read"] > 10 and outcomes["error"] > 10
