"""The E2E check stage: CRC and alive counter of protected messages, per channel and identifier.

For every frame of a message whose DBC declares an E2E profile (`firmware_agent.e2e_protection.profile_for`):

============================  =========  ==========================================================
what                          frame      counted as
============================  =========  ==========================================================
CRC byte wrong                dropped    `e2e_crc_errors` (the counter state is left untouched)
first frame (or after a gap)  accepted   (starts the counter state)
counter + 1                   accepted   —
counter repeated              dropped    `e2e_repeated` (stale data: the sender did not update it)
counter + 2 .. + max_jump     accepted   `e2e_lost_frames` += jump - 1 (frames missing in between)
any other step                dropped    `e2e_out_of_sequence`; the state restarts from this counter
============================  =========  ==========================================================

Dropped frames are "bad frames". When `burst_count` bad frames of one message on one channel fall within
`burst_seconds` (frame time), one `Event(kind="e2e_fault")` is raised; the burst ends after
`burst_seconds` without a bad frame, and the next burst raises a new event.

Guards are bounded: at most `MAX_GUARDS` (channel, identifier) pairs keep a counter state. A J1939
protected PGN can arrive under many identifiers (priority and source address are part of the ID); past
the bound the oldest guard is forgotten (`e2e_guards_evicted`) and its identifier starts over like after
a bus gap, where it next appears.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from firmware_agent.e2e_protection import E2EProfile
from firmware_agent.values import Event

#: Every counter the checker keeps (reported even while zero).
E2E_COUNTERS = (
    "e2e_crc_errors",
    "e2e_repeated",
    "e2e_out_of_sequence",
    "e2e_lost_frames",
    "e2e_dropped",
    "e2e_bursts",
    "e2e_guards_evicted",
)
#: (channel, identifier) pairs with a counter state at most; the oldest is forgotten past it.
MAX_GUARDS = 4096

CRC_ERROR = "crc"
REPEATED = "repeated"
OUT_OF_SEQUENCE = "out_of_sequence"


@dataclass(frozen=True)
class E2ESettings:
    """Thresholds from the `[e2e]` configuration section."""

    burst_count: int = 5
    burst_seconds: float = 1.0
    max_jump: int = 3

    def __post_init__(self) -> None:
        if self.burst_count < 1 or self.burst_seconds <= 0 or self.max_jump < 1:
            raise ValueError("e2e: burst_count and max_jump must be >= 1, burst_seconds > 0")


class E2EGuard:
    """The check for one message on one channel; `accept(timestamp, data)` says whether to keep a frame."""

    __slots__ = ("_bad", "_burst", "_reasons", "bus", "checker", "frame_id", "last_counter", "profile")

    def __init__(self, checker: E2EChecker, bus: str, frame_id: int, profile: E2EProfile) -> None:
        self.checker = checker
        self.bus = bus
        self.frame_id = frame_id
        self.profile = profile
        self.last_counter: int | None = None
        self._bad: deque[float] = deque()
        self._burst = False
        self._reasons: Counter[str] = Counter()

    def accept(self, timestamp: float, data: bytes | bytearray) -> bool:
        """Check one frame; False means drop it (already counted)."""
        profile = self.profile
        if not profile.crc_ok(data):
            return self._reject(timestamp, CRC_ERROR)
        counter = profile.counter(data)
        last = self.last_counter
        self.last_counter = counter
        if last is None:
            return True
        step = (counter - last) % profile.counter_modulo
        if step == 1:
            return True
        if step == 0:
            return self._reject(timestamp, REPEATED)
        if step <= self.checker.settings.max_jump:
            self.checker.counts["e2e_lost_frames"] += step - 1
            return True
        return self._reject(timestamp, OUT_OF_SEQUENCE)

    def reset(self) -> None:
        """Forget the counter state (after a bus gap the next frame starts afresh)."""
        self.last_counter = None

    def _reject(self, timestamp: float, reason: str) -> bool:
        checker = self.checker
        checker.counts[f"e2e_{reason}" if reason != CRC_ERROR else "e2e_crc_errors"] += 1
        checker.counts["e2e_dropped"] += 1
        window = checker.settings.burst_seconds
        bad = self._bad
        if bad and timestamp - bad[-1] > window:
            self._burst = False
            self._reasons.clear()
        bad.append(timestamp)
        self._reasons[reason] += 1
        while bad and timestamp - bad[0] > window:
            bad.popleft()
        if not self._burst and len(bad) >= checker.settings.burst_count:
            self._burst = True
            checker.counts["e2e_bursts"] += 1
            detail = {
                "bus": self.bus,
                "message": self.profile.message_name,
                "id": self.frame_id,
                "bad_frames": len(bad),
                "seconds": window,
                "reasons": dict(self._reasons),
            }
            checker.emit(Event(timestamp=bad[0], kind="e2e_fault", detail=detail))
        return False


class E2EChecker:
    """Creates one `E2EGuard` per (channel, message) and holds the shared counters."""

    def __init__(
        self, settings: E2ESettings, emit: Callable[[Event], None], max_guards: int = MAX_GUARDS
    ) -> None:
        self.settings = settings
        self.emit = emit
        self.max_guards = max_guards
        self.counts: Counter[str] = Counter(dict.fromkeys(E2E_COUNTERS, 0))
        self._guards: dict[tuple[str, int], E2EGuard] = {}

    def guard(self, bus: str, frame_id: int, profile: E2EProfile) -> E2EGuard:
        """The guard for `profile`'s message on `bus` (created on first use)."""
        key = (bus, frame_id)
        guard = self._guards.get(key)
        if guard is None:
            if len(self._guards) >= self.max_guards:
                del self._guards[next(iter(self._guards))]  # the oldest made
                self.counts["e2e_guards_evicted"] += 1
            guard = self._guards[key] = E2EGuard(self, bus, frame_id, profile)
        return guard

    def reset_bus(self, bus: str) -> None:
        """Restart counter checking on a channel (after a bus gap)."""
        for (guard_bus, _), guard in self._guards.items():
            if guard_bus == bus:
                guard.reset()
