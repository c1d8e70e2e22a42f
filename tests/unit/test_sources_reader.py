"""Reader threads: virtual buses, replay, the bounded queue's policies and recovery from a lost bus."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import can
import pytest

from firmware_agent.errors import UserError
from firmware_agent.sources import Source, SourceSpec, open_source
from firmware_agent.sources.reader import EventBox, FrameQueue, ReaderSettings, SourceReader
from firmware_agent.sources.virtual import VirtualSource

WAIT = 10.0


def wait_for(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def drain(frames: FrameQueue) -> list[can.Message]:
    out: list[can.Message] = []
    while (chunk := frames.get_nowait()) is not None:
        out.extend(chunk)
    return out


def channel_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def frame(i: int) -> can.Message:
    return can.Message(arbitration_id=0x100 + (i % 8), data=i.to_bytes(4, "little"), is_extended_id=False)


def test_virtual_bus_frames_arrive_in_order_named_after_the_bus() -> None:
    name = channel_name()
    frames, events = FrameQueue(ReaderSettings()), EventBox()
    reader = SourceReader(open_source(f"powertrain=virtual:{name}"), frames, events)
    reader.start()
    try:
        wait_for(lambda: reader.source._bus is not None)  # type: ignore[attr-defined]
        with can.Bus(interface="virtual", channel=name) as sender:
            for i in range(500):
                sender.send(frame(i))
        received: list[can.Message] = []
        wait_for(lambda: len(received.__iadd__(drain(frames))) >= 500)
    finally:
        reader.stop()
    assert [int.from_bytes(m.data, "little") for m in received] == list(range(500))
    assert {m.channel for m in received} == {"powertrain"}
    assert reader.frames_in == 500 and reader.frames_dropped == 0
    assert all(m.timestamp > 0 for m in received)


def test_live_bus_drops_newest_chunks_when_the_pipeline_falls_behind() -> None:
    name = channel_name()
    settings = ReaderSettings(max_frames=64, chunk_frames=16)
    frames, events = FrameQueue(settings), EventBox()
    reader = SourceReader(open_source(f"virtual:{name}"), frames, events)
    reader.start()
    try:
        wait_for(lambda: reader.source._bus is not None)  # type: ignore[attr-defined]
        with can.Bus(interface="virtual", channel=name) as sender:
            for i in range(1000):
                sender.send(frame(i))
        wait_for(lambda: reader.frames_in == 1000)
    finally:
        reader.stop()
    kept = drain(frames)
    assert len(kept) <= 64
    assert reader.frames_dropped == 1000 - len(kept) > 0
    # The oldest frames are kept: the queue holds the beginning of the stream, in order.
    values = [int.from_bytes(m.data, "little") for m in kept]
    assert values == sorted(values) and values[0] == 0


def test_lost_virtual_bus_is_reopened_and_the_gap_reported() -> None:
    name = channel_name()
    frames, events = FrameQueue(ReaderSettings(backoff_initial=0.05, backoff_max=0.2)), EventBox()
    source = open_source(f"body=virtual:{name}")
    assert isinstance(source, VirtualSource)
    reader = SourceReader(source, frames, events)
    reader.start()
    try:
        with can.Bus(interface="virtual", channel=name) as sender:
            wait_for(lambda: source._bus is not None)
            sender.send(frame(1))
            wait_for(lambda: reader.frames_in == 1)
            lost_at = time.time()
            bus = source._bus
            assert bus is not None
            bus.shutdown()  # the interface disappears under the reader
            wait_for(lambda: reader.reconnects == 1)
            assert not reader.done.is_set()
            sender.send(frame(2))
            wait_for(lambda: reader.gaps == 1)
    finally:
        reader.stop()
    gaps = events.drain()
    assert [event.kind for event in gaps] == ["bus_gap"]
    detail = gaps[0].detail
    assert detail["bus"] == "body"
    assert lost_at <= detail["from"] <= detail["to"]
    assert "closed" in detail["reason"].lower()
    assert [int.from_bytes(m.data, "little") for m in drain(frames)] == [1, 2]


T0 = 1_767_225_600.0


def write_capture(path: Path, count: int) -> None:
    lines = [f"({T0 + i / 100:.6f}) can{i % 2} {0x100 + i % 4:03X}#{i:08X}\n" for i in range(count)]
    path.write_text("".join(lines))


def test_replay_waits_for_the_pipeline_instead_of_dropping(tmp_path: Path) -> None:
    capture = tmp_path / "drive.log"
    write_capture(capture, 300)
    frames, events = FrameQueue(ReaderSettings(max_frames=32, chunk_frames=8)), EventBox()
    reader = SourceReader(open_source(f"replay:{capture}"), frames, events)
    reader.start()
    received: list[can.Message] = []
    try:
        wait_for(lambda: len(received.__iadd__(drain(frames))) >= 300 and reader.done.is_set())
    finally:
        reader.stop()
    assert reader.frames_dropped == 0
    assert [round(m.timestamp, 6) for m in received] == [round(T0 + i / 100, 6) for i in range(300)]
    assert [m.channel for m in received[:2]] == ["can0", "can1"]


def test_replay_loops_move_time_forward(tmp_path: Path) -> None:
    capture = tmp_path / "drive.log"
    write_capture(capture, 50)
    frames = FrameQueue(ReaderSettings())
    reader = SourceReader(open_source(f"bench=replay:{capture}?loop=3"), frames, EventBox())
    reader.start()
    wait_for(reader.done.is_set)
    received = drain(frames)
    assert len(received) == 150
    stamps = [m.timestamp for m in received]
    assert stamps == sorted(stamps) and len(set(stamps)) == 150
    assert {m.channel for m in received} == {"bench"}


def test_paced_replay_hands_each_frame_over_within_the_chunk_time(tmp_path: Path) -> None:
    # issue 9: 10 frames 0.5 s apart at speed=1 reached the pipeline as one chunk after 4.5 s
    capture = tmp_path / "slow.log"
    capture.write_text("".join(f"({T0 + i / 2:.6f}) can0 100#{i:02X}\n" for i in range(10)))
    frames = FrameQueue(ReaderSettings())
    reader = SourceReader(open_source(f"replay:{capture}?speed=1"), frames, EventBox())
    started = time.monotonic()
    reader.start()
    arrivals: list[tuple[float, int]] = []
    try:
        while len(arrivals) < 10 and time.monotonic() - started < 15:
            chunk = frames.get(0.05)
            arrivals += [(time.monotonic() - started, m.data[0]) for m in chunk or []]
    finally:
        reader.stop()
    assert [data for _, data in arrivals] == list(range(10))
    for at, data in arrivals:
        assert data / 2 - 0.01 <= at < data / 2 + 0.3, f"frame {data} arrived at {at:.2f} s"


def test_paced_sim_source_keeps_pace_and_stops_promptly() -> None:
    source = open_source("sim:duration=30,speed=1,seed=1")
    frames = FrameQueue(ReaderSettings())
    reader = SourceReader(source, frames, EventBox())
    reader.start()
    time.sleep(1.0)
    stopping = time.monotonic()
    reader.stop()
    assert time.monotonic() - stopping < 1.0
    received = drain(frames)
    span = received[-1].timestamp - received[0].timestamp
    assert received and 0.5 < span < 1.3  # about one second of simulated driving in one second


def test_replay_skips_malformed_lines_and_counts_them(tmp_path: Path) -> None:
    capture = tmp_path / "drive.log"
    capture.write_text(
        "(1000.000000) can0 100#0011\n(1000.010000) can0 10Z#zz\ngarbage line\n(1000.020000) can0 101#22\n"
    )
    source = open_source(f"replay:{capture}?loop=2")
    frames = FrameQueue(ReaderSettings())
    reader = SourceReader(source, frames, EventBox())
    reader.start()
    wait_for(reader.done.is_set)
    assert [m.arbitration_id for m in drain(frames)] == [0x100, 0x101, 0x100, 0x101]
    assert source.counters() == {"malformed_lines": 4}  # two per pass


def test_replay_of_a_file_that_is_no_capture_is_refused_at_once(tmp_path: Path) -> None:
    capture = tmp_path / "drive.blf"
    capture.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(UserError) as error:
        open_source(f"replay:{capture}")
    assert str(capture) in str(error.value) and "not a CAN capture" in str(error.value)


class UnreadableAfterOneFrame(Source):
    """A finite source whose file turns out to be unreadable after its first frame."""

    live = False

    def __init__(self) -> None:
        super().__init__(SourceSpec.parse("replay:broken.log"))
        self.sent = False

    def open(self) -> None:
        pass

    def read(self, timeout: float) -> can.Message | None:
        if not self.sent:
            self.sent = True
            return frame(1)
        raise UserError("broken.log:2: unreadable")

    def close(self) -> None:
        pass


def test_a_finite_source_that_fails_is_fatal_not_retried() -> None:
    frames = FrameQueue(ReaderSettings())
    reader = SourceReader(UnreadableAfterOneFrame(), frames, EventBox())
    reader.start()
    wait_for(reader.done.is_set)
    assert str(reader.fatal) == "broken.log:2: unreadable"
    assert reader.reconnects == 0
    assert len(drain(frames)) == 1  # what was read before the failure is still handed over


class FailsUnexpectedly(UnreadableAfterOneFrame):
    """A source with a bug: its read raises something that is neither a bus error nor a `UserError`."""

    def read(self, timeout: float) -> can.Message | None:
        raise RuntimeError("a bug in the source")


def test_an_unexpected_error_in_a_source_is_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    seen: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    reader = SourceReader(FailsUnexpectedly(), FrameQueue(ReaderSettings()), EventBox())
    reader.start()
    wait_for(reader.done.is_set)
    assert str(reader.fatal) == "source 'replay:broken.log': RuntimeError: a bug in the source"
    reader.stop()
    assert [type(exc) for exc in seen] == [RuntimeError]  # and its traceback is not hidden


@pytest.mark.parametrize("maxlen", [3])
def test_event_box_is_bounded_and_counts_what_it_dropped(maxlen: int) -> None:
    from firmware_agent.values import Event

    box = EventBox(maxlen)
    for i in range(5):
        box.add(Event(float(i), "bus_gap"))
    assert [e.timestamp for e in box.drain()] == [2.0, 3.0, 4.0]
    assert box.dropped == 2
