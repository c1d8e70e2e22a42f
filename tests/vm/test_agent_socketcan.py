"""The project's own SocketCAN parts on real vcan: the simulator sending, the agent's source reading.

The simulator and the CLI run in this process (`firmware_agent.cli.main`): a second emulated Python
would spend 20 s importing before it sent a frame.
"""

from __future__ import annotations

import time
from pathlib import Path

import can
import pytest

from firmware_agent.cli import main as firmware_agent
from firmware_agent.decode.catalog import Catalog
from firmware_agent.sources import KernelFilter, open_source
from firmware_agent.sources.reader import EventBox, FrameQueue, ReaderSettings, SourceReader
from tests.vm.helpers import drain, frame_of, hold_everything, open_bus, wait_for

pytestmark = pytest.mark.vcan

DBC_DIR = Path(__file__).resolve().parents[2] / "dbc"
#: A fixed start so the live run and the capture simulate the very same drive.
START_TIME = "1767225600"


def project_catalog() -> Catalog:
    return Catalog.from_specs(
        [f"{bus}={DBC_DIR / f'{bus}.dbc'}" for bus in ("body", "powertrain", "chassis", "infotainment")],
        warn_stream=None,
    )


def test_simulator_on_vcan0_sends_its_capture_with_kernel_timestamps(tmp_path: Path) -> None:
    drive = ["--duration", "6", "--seed", "7", "--driver", "2", "--start-time", START_TIME]
    capture = tmp_path / "drive.log"
    assert firmware_agent(["sim", *drive, "--out", str(capture)]) == 0
    expected = list(can.CanutilsLogReader(capture))

    with open_bus("vcan0", fd=True) as receiver:
        hold_everything(receiver)
        before = time.time()
        # All four buses on one interface; paced at 5x real time.
        assert firmware_agent(["sim", *drive, "--bus", "socketcan:vcan0", "--speed", "5"]) == 0
        after = time.time()
        received = drain(receiver)

    assert len(received) == len(expected)
    assert [frame_of(m) for m in received] == [frame_of(m) for m in expected]
    assert [m.is_fd for m in received] == [m.is_fd for m in expected]
    stamps = [m.timestamp for m in received]
    assert stamps == sorted(stamps), "kernel timestamps must follow the sending order"
    assert before <= stamps[0] and stamps[-1] <= after, "timestamps are the kernel's, taken during the run"

    catalog = project_catalog()
    undecoded = []
    for got, sent in zip(received, expected, strict=True):
        message = catalog.lookup(str(sent.channel), got.arbitration_id, got.is_extended_id)
        if message is None:
            undecoded.append((sent.channel, hex(got.arbitration_id), "unknown id"))
            continue
        try:
            message.decode(bytes(got.data), decode_choices=True)
        except Exception as error:
            undecoded.append((sent.channel, hex(got.arbitration_id), str(error)))
    assert not undecoded, f"{len(undecoded)} frames do not decode, e.g. {undecoded[:3]}"


def start_reader(
    spec: str, kernel_filters: list[KernelFilter] | None = None
) -> tuple[SourceReader, FrameQueue]:
    source = open_source(spec)
    source.kernel_filters = kernel_filters
    # Nothing drains the queue while the simulator runs in the test's thread, and a live source drops
    # chunks when its queue is full: make it hold every chunk of the run (one chunk per frame at worst).
    settings = ReaderSettings(
        max_frames=1_000_000, chunk_frames=256, chunk_seconds=0.01, backoff_initial=0.05, backoff_max=0.2
    )
    frames = FrameQueue(settings)
    reader = SourceReader(source, frames, EventBox())
    reader.start()
    return reader, frames


def collect(frames: FrameQueue, into: list[can.Message]) -> list[can.Message]:
    while (chunk := frames.get_nowait()) is not None:
        into.extend(chunk)
    return into


def filter_entries(interface: str) -> list[list[str]]:
    """The kernel's mask/value receive filters on `interface` (/proc/net/can/rcvlist_fil), one list of
    columns each: device can_id can_mask function userdata matches ident."""
    lines = Path("/proc/net/can/rcvlist_fil").read_text().splitlines()
    return [line.split() for line in lines if line.split()[:1] == [interface]]


def test_socketcan_source_filters_in_the_kernel(scratch_interface: str) -> None:
    wanted = KernelFilter(can_id=0x101, can_mask=0x7FF, extended=False)
    reader, frames = start_reader(f"socketcan:{scratch_interface}", [wanted])
    received: list[can.Message] = []
    try:
        # python-can binds the socket before it sets CAN_RAW_FILTER, so frames sent in between would pass
        # unfiltered: send only once the kernel holds the source's filter. The EFF bit in its mask keeps
        # extended frames out.
        wait_for(lambda: bool(filter_entries(scratch_interface)), "the source's filter in the kernel")
        entries = filter_entries(scratch_interface)
        assert [(e[1], e[2], e[6]) for e in entries] == [("101", "800007ff", "raw")], entries
        with open_bus(scratch_interface) as sender:
            for arbitration_id in (0x100, 0x102, 0x101):
                sender.send(can.Message(arbitration_id=arbitration_id, data=b"\x01", is_extended_id=False))
            wait_for(
                lambda: any(m.arbitration_id == 0x101 for m in collect(frames, received)),
                f"frame 0x101 through the source on {scratch_interface}",
            )
        # The kernel counted exactly one match for the filter: the rejection happened there.
        assert int(filter_entries(scratch_interface)[0][5]) == 1
    finally:
        reader.stop()
    collect(frames, received)
    assert [m.arbitration_id for m in received] == [0x101]
    assert reader.frames_in == 1
    assert received[0].channel == scratch_interface


def test_socketcan_source_survives_the_simulators_link_down(scratch_interface: str) -> None:
    reader, frames = start_reader(f"socketcan:{scratch_interface}")
    received: list[can.Message] = []
    try:
        with open_bus(scratch_interface) as sender:
            probe = can.Message(arbitration_id=0x7DF, data=b"\x02\x01\x00", is_extended_id=False)

            def probe_arrived() -> bool:
                sender.send(probe)
                return bool(collect(frames, received))

            wait_for(probe_arrived, f"the source to read {scratch_interface}")
        # The simulator really sets the interface down 2 s into the drive and up 1.5 s later.
        status = firmware_agent(
            [
                "sim",
                "--duration", "6",
                "--seed", "3",
                "--map", f"powertrain={scratch_interface}",
                "--bus", f"socketcan:{scratch_interface}",
                "--fault", "link-down@2+1.5:powertrain",
            ]
        )  # fmt: skip
        assert status == 0
        wait_for(lambda: reader.gaps >= 1, "the source reader to report the gap")
        gaps = [event for event in reader.events.drain() if event.kind == "bus_gap"]
        assert len(gaps) == 1, gaps
        gap = gaps[0].detail
        # The frame that ended the gap reaches the queue with its chunk, a moment after the event.
        wait_for(
            lambda: any(m.timestamp >= gap["to"] for m in collect(frames, received)),
            "the frames after the link came back",
        )
    finally:
        reader.stop()

    assert reader.frames_dropped == 0
    assert gap["bus"] == scratch_interface
    assert "down" in gap["reason"].lower(), gap
    assert reader.reconnects >= 1
    assert any(m.timestamp < gap["from"] for m in received), "frames before the link went down"
