"""Real SocketCAN (vcan) behaviour, run inside the QEMU VM by `make test-vcan` (see docs/vm-tests.md).

The VM's init creates vcan0 and vcan1 and runs these tests as root, so they may add, remove and toggle
interfaces. Outside the VM they fail (never skip): a missing AF_CAN is a broken test environment.
"""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import can
import pytest
from can.interfaces.socketcan import SocketcanBus
from can.interfaces.socketcan.socketcan import capture_message

from firmware_agent.decode.catalog import Catalog
from tests.vm.helpers import WAIT_S, Frame, drain, frame_of, hold_everything, ip_link, open_bus, wait_for

pytestmark = pytest.mark.vcan

#: struct can_frame: can_id (with EFF/RTR/ERR flags), len, 3 padding bytes, 8 data bytes.
CAN_FRAME = struct.Struct("=IB3x8s")
CAN_FILTER = struct.Struct("=II")


def test_frames_cross_vcan_with_kernel_timestamps() -> None:
    sent = [
        can.Message(arbitration_id=0x123, data=b"\x01\x02\x03", is_extended_id=False),
        can.Message(arbitration_id=0x7FF, data=bytes(range(8)), is_extended_id=False),
        can.Message(arbitration_id=0x18FEF100, data=b"\xaa" * 8, is_extended_id=True),
        can.Message(arbitration_id=0x000, data=b"", is_extended_id=False),
    ]
    with open_bus("vcan0") as receiver, open_bus("vcan0") as sender:
        for msg in sent:
            before = time.time()
            sender.send(msg)
            after = time.time()
            # A timestamp taken in user space by recv() would be later than `after`: sleep to make that
            # unmistakable. The kernel stamps the frame while send() delivers it over vcan.
            time.sleep(0.2)
            received = receiver.recv(timeout=WAIT_S)
            assert received is not None, f"frame {msg.arbitration_id:#x} never arrived"
            assert frame_of(received) == frame_of(msg)
            assert received.channel == "vcan0"
            # 1 µs of slack for float rounding only: both clocks are CLOCK_REALTIME in nanoseconds.
            assert before - 1e-6 <= received.timestamp <= after + 1e-6, (
                f"timestamp {received.timestamp:.6f} outside the send() call [{before:.6f}, {after:.6f}]"
            )


def test_can_filters_are_applied_in_the_kernel() -> None:
    # Standard 0x120-0x12F only; the EFF flag in the mask also rejects the extended 0x120.
    filters: can.typechecking.CanFilters = [{"can_id": 0x120, "can_mask": 0x7F0, "extended": False}]
    to_send = [
        (0x120, False),
        (0x100, False),
        (0x125, False),
        (0x120, True),
        (0x7FF, False),
        (0x130, False),
        (0x12F, False),
    ]
    wanted = [(0x120, False), (0x125, False), (0x12F, False)]
    with (
        open_bus("vcan0", can_filters=filters) as filtered,
        open_bus("vcan0", can_filters=filters) as filtered_raw,
        open_bus("vcan0") as unfiltered,
        open_bus("vcan0") as sender,
    ):
        # The kernel holds the filter: read it back from the socket.
        installed = filtered_raw.socket.getsockopt(socket.SOL_CAN_RAW, socket.CAN_RAW_FILTER, CAN_FILTER.size)
        assert CAN_FILTER.unpack(installed) == (0x120, 0x7F0 | socket.CAN_EFF_FLAG)

        for arbitration_id, extended in to_send:
            sender.send(can.Message(arbitration_id=arbitration_id, is_extended_id=extended, data=b"\x00"))

        assert [(m.arbitration_id, m.is_extended_id) for m in drain(unfiltered)] == to_send
        assert [(m.arbitration_id, m.is_extended_id) for m in drain(filtered)] == wanted
        # Below python-can (which would also filter in software if the kernel had refused): the raw
        # socket itself only ever sees the matching frames.
        raw_ids = []
        while select.select([filtered_raw.socket], [], [], 1.0)[0]:
            can_id, _length, _data = CAN_FRAME.unpack(filtered_raw.socket.recv(CAN_FRAME.size))
            raw_ids.append((can_id & socket.CAN_EFF_MASK, bool(can_id & socket.CAN_EFF_FLAG)))
        assert raw_ids == wanted


class RecoveringReader(threading.Thread):
    """Reads one SocketCAN interface until stopped, surviving the interface going down or away.

    When the bus raises (ENETDOWN when the link goes down, ENODEV when it is deleted, a failed bind while
    it is missing), the reader closes the bus and re-opens it after an exponential backoff, reset by the
    next frame that arrives: python-can alone, as a baseline for the agent's `SourceReader`, which
    test_agent_socketcan.py puts through the same.
    """

    BACKOFF_INITIAL_S = 0.05
    BACKOFF_MAX_S = 1.0

    def __init__(self, channel: str) -> None:
        super().__init__(name=f"reader-{channel}", daemon=True)
        self.channel = channel
        self.received: list[can.Message] = []
        self.errors: list[str] = []
        self.opened = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        backoff = self.BACKOFF_INITIAL_S
        while not self._stopping.is_set():
            try:
                with open_bus(self.channel) as bus:
                    self.opened += 1
                    while not self._stopping.is_set():
                        msg = bus.recv(timeout=0.1)
                        if msg is not None:
                            self.received.append(msg)
                            backoff = self.BACKOFF_INITIAL_S
            except (can.CanError, OSError) as error:
                self.errors.append(str(error))
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.BACKOFF_MAX_S)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=WAIT_S)


@pytest.mark.parametrize(
    ("take_away", "bring_back", "error_text"),
    [
        pytest.param([("set", "{}", "down")], [("set", "{}", "up")], "Network is down", id="down-up"),
        pytest.param(
            [("del", "{}")],
            [("add", "{}", "type", "vcan"), ("set", "{}", "up")],
            "No such device",
            id="deleted-re-added",
        ),
    ],
)
def test_reader_recovers_when_the_interface_comes_back(
    scratch_interface: str,
    take_away: list[tuple[str, ...]],
    bring_back: list[tuple[str, ...]],
    error_text: str,
) -> None:
    def run_ip(commands: list[tuple[str, ...]]) -> None:
        for command in commands:
            ip_link(*(arg.format(scratch_interface) for arg in command))

    def send_until_received(arbitration_id: int) -> None:
        # A fresh sender each time: a socket on a link that went down reports ENETDOWN once on its own.
        with open_bus(scratch_interface) as sender:
            msg = can.Message(arbitration_id=arbitration_id, data=b"\x01", is_extended_id=False)

            def arrived() -> bool:
                if any(m.arbitration_id == arbitration_id for m in reader.received):
                    return True
                sender.send(msg)
                return False

            wait_for(arrived, f"frame {arbitration_id:#x} on {scratch_interface}")

    reader = RecoveringReader(scratch_interface)
    reader.start()
    try:
        wait_for(lambda: reader.opened >= 1, "the reader to open its bus")
        send_until_received(0x101)

        run_ip(take_away)
        # Deleting a link takes it down first, so ENETDOWN may come before ENODEV: wait for the latter.
        wait_for(
            lambda: any(error_text in error for error in reader.errors),
            f"the reader to see {error_text!r} after {scratch_interface} went away",
        )

        run_ip(bring_back)
        send_until_received(0x202)
        assert reader.opened >= 2, "the reader never re-opened its bus"
        assert reader.is_alive()
    finally:
        reader.stop()


def _read_capture(path: Path) -> dict[str, list[Frame]]:
    frames: dict[str, list[Frame]] = {}
    for msg in can.CanutilsLogReader(path):
        frames.setdefault(str(msg.channel), []).append(frame_of(msg))
    return frames


def _decode_all(catalog: Catalog, channel: str, frames: list[Frame]) -> list[object]:
    """cantools' decode of every frame; a decode error is a result too (RAV4's 0x411 always raises)."""
    decoded: list[object] = []
    for arbitration_id, extended, data in frames:
        message = catalog.lookup(channel, arbitration_id, extended)
        if message is None:
            decoded.append(None)
            continue
        try:
            decoded.append(message.decode(data, decode_choices=True))
        except Exception as error:
            decoded.append((type(error).__name__, str(error)))
    return decoded


def _backlog_drops() -> int:
    """Frames the kernel dropped because a CPU's input backlog was full (/proc/net/softnet_stat)."""
    lines = Path("/proc/net/softnet_stat").read_text().splitlines()
    return sum(int(line.split()[1], 16) for line in lines)


@pytest.fixture
def deep_backlog() -> Iterator[None]:
    """vcan hands each frame to the CPU's input backlog (netdev_max_backlog, 1000 by default). Under
    emulation the kernel may defer draining it to ksoftirqd while canplayer keeps sending, and a full
    backlog drops frames; a real CAN controller paces frames at the bus rate instead."""
    setting = Path("/proc/sys/net/core/netdev_max_backlog")
    default = setting.read_text()
    setting.write_text("1000000")
    yield
    setting.write_text(default)


def _receive_queued(bus: SocketcanBus, idle_s: float = 2.0) -> list[Frame]:
    """Every frame queued on a socketcan bus, until none arrives for `idle_s`.

    python-can's own frame parser on the bus's socket: its `recv()` adds a select() per frame, which
    doubles the cost of 135,000 frames under emulation.
    """
    sock = bus.socket
    sock.settimeout(idle_s)
    frames: list[Frame] = []
    while True:
        try:
            msg = capture_message(sock)
        except can.CanOperationError as error:
            if isinstance(error.__cause__, TimeoutError):
                return frames
            raise
        if msg is not None:
            frames.append(frame_of(msg))


@pytest.mark.usefixtures("deep_backlog")
def test_canplayer_replay_of_the_rav4_capture_decodes_like_the_file(
    rav4_capture: Path, rav4_dbc_specs: list[str]
) -> None:
    expected = _read_capture(rav4_capture)
    assert sorted(expected) == ["can0", "can1"]
    interfaces = {"can0": "vcan0", "can1": "vcan1"}

    drops_before = _backlog_drops()
    buses = {log_channel: open_bus(interface) for log_channel, interface in interfaces.items()}
    try:
        for bus in buses.values():
            hold_everything(bus)
        # -t: ignore the capture's timestamps; -g 0: no gap between frames. Order per bus is kept.
        assignments = [f"{interface}={log_channel}" for log_channel, interface in interfaces.items()]
        subprocess.run(
            ["canplayer", "-I", str(rav4_capture), "-t", "-g", "0", *assignments],
            check=True,
            timeout=240,
        )
        received = {log_channel: _receive_queued(bus) for log_channel, bus in buses.items()}
    finally:
        for bus in buses.values():
            bus.shutdown()

    catalog = Catalog.from_specs(rav4_dbc_specs, warn_stream=None)
    for log_channel in interfaces:
        assert len(received[log_channel]) == len(expected[log_channel]), (
            f"frames lost on {log_channel}; input backlog drops: {_backlog_drops() - drops_before}"
        )
        assert received[log_channel] == expected[log_channel]
        decoded = _decode_all(catalog, log_channel, received[log_channel])
        assert decoded == _decode_all(catalog, log_channel, expected[log_channel])
        assert sum(isinstance(signals, dict) for signals in decoded) > len(decoded) // 2, (
            f"most frames on {log_channel} should decode with the RAV4 DBCs"
        )
