"""E2E checks: which frames are dropped, which only counted, and one event per burst."""

from __future__ import annotations

from firmware_agent.e2e_protection import E2EProfile
from firmware_agent.pipeline.e2e_check import E2EChecker, E2ESettings
from firmware_agent.values import Event

PROFILE = E2EProfile("VEHICLE_SPEED", data_id=256, crc_byte=0, counter_start_bit=8, counter_bits=4)


def payload(counter: int, corrupt: bool = False) -> bytes:
    data = PROFILE.protect(bytearray(8), counter)
    if corrupt:
        data[0] ^= 0x55
    return bytes(data)


def make(settings: E2ESettings | None = None) -> tuple[E2EChecker, list[Event]]:
    events: list[Event] = []
    return E2EChecker(settings or E2ESettings(), events.append), events


def test_counter_rules() -> None:
    checker, events = make(E2ESettings(max_jump=3))
    guard = checker.guard("powertrain", 0x100, PROFILE)
    sequence = [5, 6, 6, 7, 9, 12, 3, 4, 5]
    verdicts = [guard.accept(float(i), payload(c)) for i, c in enumerate(sequence)]
    # first, +1, repeated, +1, +2 (one lost), +3 (two lost), +7 (out of sequence), then resynced
    assert verdicts == [True, True, False, True, True, True, False, True, True]
    assert checker.counts["e2e_repeated"] == 1
    assert checker.counts["e2e_out_of_sequence"] == 1
    assert checker.counts["e2e_lost_frames"] == 3
    assert checker.counts["e2e_dropped"] == 2
    assert events == []


def test_counter_wraps_around_its_modulo() -> None:
    checker, _ = make()
    guard = checker.guard("powertrain", 0x100, PROFILE)
    assert all(guard.accept(float(i), payload(i % 16)) for i in range(40))
    assert checker.counts["e2e_dropped"] == 0


def test_bad_crc_is_dropped_and_leaves_the_counter_state_alone() -> None:
    checker, _ = make()
    guard = checker.guard("powertrain", 0x100, PROFILE)
    assert guard.accept(0.0, payload(1))
    assert not guard.accept(0.1, payload(2, corrupt=True))
    assert guard.accept(0.2, payload(2))
    assert checker.counts["e2e_crc_errors"] == 1 and checker.counts["e2e_lost_frames"] == 0


def test_each_channel_keeps_its_own_counter() -> None:
    checker, _ = make()
    first = checker.guard("powertrain", 0x100, PROFILE)
    second = checker.guard("backup", 0x100, PROFILE)
    assert first.accept(0.0, payload(1)) and second.accept(0.0, payload(9))
    assert first.accept(0.1, payload(2)) and second.accept(0.1, payload(10))


def test_reset_after_a_gap_accepts_any_counter() -> None:
    checker, _ = make()
    guard = checker.guard("powertrain", 0x100, PROFILE)
    assert guard.accept(0.0, payload(1))
    checker.reset_bus("powertrain")
    assert guard.accept(5.0, payload(11))
    assert checker.counts["e2e_dropped"] == 0


def test_one_event_per_burst() -> None:
    checker, events = make(E2ESettings(burst_count=3, burst_seconds=1.0))
    guard = checker.guard("powertrain", 0x100, PROFILE)
    guard.accept(0.0, payload(0))
    # Burst 1: ten CRC errors within 0.5 s -> one event.
    for i in range(10):
        guard.accept(0.05 * i + 0.01, payload(1, corrupt=True))
    assert len(events) == 1
    event = events[0]
    assert event.kind == "e2e_fault"
    assert event.detail["bus"] == "powertrain" and event.detail["message"] == "VEHICLE_SPEED"
    assert event.detail["reasons"] == {"crc": 3} and event.detail["bad_frames"] == 3
    # Two isolated bad frames far apart: no burst.
    guard.accept(10.0, payload(1, corrupt=True))
    guard.accept(12.0, payload(1, corrupt=True))
    assert len(events) == 1
    # Burst 2, repeated counters this time.
    guard.accept(20.0, payload(3))
    for i in range(3):
        guard.accept(20.1 + i / 10, payload(3))
    assert len(events) == 2 and events[1].detail["reasons"] == {"repeated": 3}
    assert checker.counts["e2e_bursts"] == 2


def test_guards_are_bounded_and_the_oldest_is_forgotten() -> None:
    events: list[Event] = []
    checker = E2EChecker(E2ESettings(), events.append, max_guards=3)
    # a J1939 PGN seen from five source addresses: five identifiers
    guards = [checker.guard("j1939", 0x18FEF100 | address, PROFILE) for address in range(5)]
    assert checker.counts["e2e_guards_evicted"] == 2
    assert checker.guard("j1939", 0x18FEF104, PROFILE) is guards[4]  # kept: the newest three
    assert guards[0].accept(0.0, payload(1))
    again = checker.guard("j1939", 0x18FEF100, PROFILE)  # forgotten: starts over, like after a gap
    assert again is not guards[0] and again.accept(1.0, payload(9))
    assert checker.counts["e2e_guards_evicted"] == 3 and checker.counts["e2e_dropped"] == 0
