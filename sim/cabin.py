"""Body and infotainment: key, locks, doors, ignition, seat memory, windows and the head unit.

The trip begins the way a person starts one: the key comes into range, the car unlocks and the seat
module recalls the key's memory slot, the driver opens the door, sits down (a borrower then moves the seat
to their own position), switches on (ACC, the head unit selects the key's profile, then ON/ready), and
at the end parks, switches off, gets out and locks. While driving the person uses windows, volume, media
source and mute the way their persona does. Windows move only while their switch is held, or to the end
stop after a one-shot press.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from sim.personas import Behaviour, Identity

WINDOW_SPEED = 25.0  #: % of travel per second
SEAT_SPEED = 15.0  #: % per second for memory recall and manual adjustment
INACTIVE, CLOSE, OPEN, ONE_SHOT_CLOSE, ONE_SHOT_OPEN = 0, 1, 2, 3, 4
LOCK, OFF, ACC, ON, START = 0, 1, 2, 3, 4
PROFILE_SELECTED = 1

#: Seconds from the start of the capture at which the opening sequence happens.
KEY_IN_RANGE, UNLOCK, DOOR_OPEN, SEAT_ADJUST, DOOR_CLOSE, IGNITION_ACC = 0.6, 1.0, 2.0, 3.0, 4.2, 4.8
PROFILE_SELECT, IGNITION_START, IGNITION_ON, DEPART = 5.8, 6.4, 6.9, 7.6
#: Seconds the closing sequence takes after the car is parked, and its steps.
PARK_OFF, PARK_DOOR_OPEN, PARK_DOOR_CLOSE, PARK_LOCK, PARK_KEY_GONE = 2.0, 3.0, 5.0, 6.0, 7.0
CLOSING_TIME = 8.0


def profile_user_hash(identity: Identity) -> int:
    """The 64-bit user hash the head unit sends with a profile event (stable per key owner)."""
    digest = hashlib.sha256(f"profile:{identity.profile}:{identity.key_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass
class ProfileEvent:
    """A HU_PROFILE_EVENT to send at `time`."""

    time: float
    event_type: int
    index: int
    user_hash: int


@dataclass
class Window:
    """One window: position (0 closed, 100 open), the switch as reported, and where a one-shot goes."""

    position: float = 0.0
    switch: int = INACTIVE
    held_until: float = 0.0
    one_shot_target: float | None = None


@dataclass
class CabinState:
    """What the body and infotainment buses report."""

    key_present: bool = False
    central_lock: int = 1
    doors: list[bool] = field(default_factory=lambda: [False] * 5)  # FL FR RL RR trunk
    ignition: int = LOCK
    memory_slot: int = 0
    recall_active: bool = False
    seat_position: float = 50.0
    seat_height: float = 50.0
    recline: float = 15.0
    mirror_left: float = 50.0
    mirror_right: float = 50.0
    windows: list[Window] = field(default_factory=lambda: [Window() for _ in range(4)])
    child_lock: bool = False
    profile: int = 0
    source: int = 0
    volume: int = 0
    muted: bool = False
    nav_active: bool = False
    nav_distance: float = 0.0
    phone_connected: bool = False
    brightness: float = 0.0
    cabin_temp: float = 21.0
    fan_level: int = 0


class Cabin:
    """Runs the opening/closing sequence and the persona's cabin habits on a `CabinState`."""

    def __init__(
        self,
        behaviour: Behaviour,
        key_owner: Identity,
        driver: Identity,
        rng: random.Random,
        profile_volume: int | None = None,
    ) -> None:
        self.b = behaviour
        self.key = key_owner
        self.driver = driver
        self._profile_volume = behaviour.volume if profile_volume is None else profile_volume
        self._rng = rng
        self.state = CabinState(
            seat_position=rng.uniform(20, 80), seat_height=rng.uniform(30, 70), child_lock=rng.random() < 0.3
        )
        self.events: list[ProfileEvent] = []
        self._seat_target: tuple[float, float, float] | None = None
        self._presses: list[tuple[float, int]] = []  # (time, volume delta) still to press
        self._unmute_at: float | None = None
        self._nav_planned = rng.random() < behaviour.nav_probability
        self._seated = False
        self._recall_done = 0.0

    def step(self, now: float, dt: float, speed_kmh: float, road: str, parked_at: float | None) -> None:
        """Advance the cabin to `now` (seconds since the start of the capture)."""
        s = self.state
        self._opening(now)
        if parked_at is not None:
            self._closing(now - parked_at)
        self._move_seat(now, dt)
        if s.ignition >= ACC:
            self._windows(now, dt, speed_kmh, road)
        if s.ignition >= ON and parked_at is None:
            self._infotainment(now, dt, speed_kmh, road)

    def _opening(self, now: float) -> None:
        s, key = self.state, self.key
        if now >= KEY_IN_RANGE and not s.key_present and s.ignition == LOCK and s.central_lock:
            s.key_present = True
        if UNLOCK <= now < UNLOCK + 1 and s.central_lock:
            s.central_lock = 0
            s.ignition = OFF
            s.memory_slot = key.seat_slot
            if key.seat_slot:
                s.recall_active = True
                self._seat_target = (key.seat_position, key.seat_height, key.backrest_recline)
                s.mirror_left, s.mirror_right = key.mirror_left, key.mirror_right
        if DOOR_OPEN <= now < DOOR_CLOSE:
            s.doors[0] = True
        if DOOR_CLOSE <= now < DOOR_CLOSE + 1:
            s.doors[0] = False
        settled = now >= SEAT_ADJUST and now >= self._recall_done + 1.5  # sat down, felt the seat
        if settled and not s.recall_active and self._seat_target is None and not self._seated:
            d = self.driver
            self._seated = True
            if abs(s.seat_position - d.seat_position) > 0.5:
                self._seat_target = (d.seat_position, d.seat_height, d.backrest_recline)  # adjusts by hand
        if IGNITION_ACC <= now < IGNITION_START and s.ignition < ACC:
            s.ignition = ACC
            s.brightness = self.b.brightness
            s.source = 0
        if now >= PROFILE_SELECT and s.profile == 0 and s.ignition >= ACC:
            self._select_profile(now)
        if IGNITION_START <= now < IGNITION_ON and s.ignition == ACC:
            s.ignition = START
        if IGNITION_ON <= now < IGNITION_ON + 1 and s.ignition == START:
            s.ignition = ON
            s.fan_level = self.b.fan_level
            s.phone_connected = self.driver.key_type == 2 or self.b.sources[0] == 4
            if self._nav_planned:
                s.nav_active = True
                s.nav_distance = self._rng.uniform(3, 40)

    def _select_profile(self, now: float) -> None:
        """The head unit recognises the key and selects its owner's profile with that owner's settings."""
        s = self.state
        s.profile = self.key.profile
        self.events.append(ProfileEvent(now, PROFILE_SELECTED, self.key.profile, profile_user_hash(self.key)))
        # The profile restores its owner's volume; a borrower turns it to their own taste while driving.
        s.volume = self._profile_volume
        s.source = self.b.sources[0]
        s.cabin_temp = self.b.cabin_temp

    def _closing(self, since_parked: float) -> None:
        s = self.state
        if since_parked >= PARK_OFF and s.ignition > OFF:
            s.ignition = OFF
            s.nav_active = False
            s.fan_level = 0
        if PARK_DOOR_OPEN <= since_parked < PARK_DOOR_CLOSE:
            s.doors[0] = True
        if since_parked >= PARK_DOOR_CLOSE:
            s.doors[0] = False
        if since_parked >= PARK_LOCK and not s.central_lock:
            s.central_lock = 1
            s.ignition = LOCK
            s.profile, s.source, s.volume, s.brightness = 0, 0, 0, 0.0
            for window in s.windows:
                window.switch, window.one_shot_target = INACTIVE, None
        if since_parked >= PARK_KEY_GONE:
            s.key_present = False

    def _move_seat(self, now: float, dt: float) -> None:
        if self._seat_target is None:
            return
        s = self.state
        step = SEAT_SPEED * dt
        done = True
        for name, target in zip(("seat_position", "seat_height", "recline"), self._seat_target, strict=True):
            value = getattr(s, name)
            new = value + max(-step, min(step, target - value))
            setattr(s, name, new)
            done = done and abs(new - target) < 1e-6
        if done:
            self._seat_target = None
            if s.recall_active:
                s.recall_active = False
                self._recall_done = now

    # -- habits while driving ---------------------------------------------------------------------------

    def _chance(self, per_minute: float, dt: float) -> bool:
        return self._rng.random() < per_minute / 60.0 * dt

    def _windows(self, now: float, dt: float, speed_kmh: float, road: str) -> None:
        s = self.state
        b = self.b
        if s.ignition >= ON and road == "city" and speed_kmh < 60 and self._chance(b.window_uses_per_min, dt):
            choices = (0, 2, 3) if b.window_rear else (0,)
            index = self._rng.choice(choices)
            window = s.windows[index]
            if window.switch == INACTIVE:
                opening = window.position < 50
                if b.window_one_shot:
                    window.switch = ONE_SHOT_OPEN if opening else ONE_SHOT_CLOSE
                    window.held_until = now + 0.3
                    window.one_shot_target = 100.0 if opening else 0.0
                else:
                    window.switch = OPEN if opening else CLOSE
                    window.held_until = now + self._rng.uniform(0.8, 2.5)
        if speed_kmh > 75:
            for window in s.windows:  # too loud: close what is open
                if window.position > 0 and window.switch == INACTIVE and window.one_shot_target is None:
                    window.switch = ONE_SHOT_CLOSE if b.window_one_shot else CLOSE
                    window.held_until = now + (
                        0.3 if b.window_one_shot else window.position / WINDOW_SPEED + 0.2
                    )
                    window.one_shot_target = 0.0 if b.window_one_shot else None
        for window in s.windows:
            moving = window.switch
            if window.switch != INACTIVE and now >= window.held_until:
                window.switch = INACTIVE
            direction = 0.0
            if moving in (OPEN, CLOSE):
                direction = 1.0 if moving == OPEN else -1.0
            elif window.one_shot_target is not None:
                direction = 1.0 if window.one_shot_target > window.position else -1.0
            if direction:
                window.position = max(0.0, min(100.0, window.position + direction * WINDOW_SPEED * dt))
                if window.one_shot_target is not None and window.position == window.one_shot_target:
                    window.one_shot_target = None

    def _infotainment(self, now: float, dt: float, speed_kmh: float, road: str) -> None:
        s = self.state
        b = self.b
        while self._presses and self._presses[0][0] <= now:
            _, delta = self._presses.pop(0)
            s.volume = max(0, min(100, s.volume + delta))
        wanted = b.volume + (8 if b.louder_on_highway and road == "highway" else 0)
        if not self._presses and (self._chance(b.volume_changes_per_min, dt) or abs(s.volume - wanted) > 6):
            if s.volume != wanted and (abs(s.volume - wanted) > 2 or self._rng.random() < 0.5):
                delta = 1 if wanted > s.volume else -1
            else:
                delta = self._rng.choice((-1, 1))
            presses = (
                min(b.volume_step, max(1, abs(wanted - s.volume))) if wanted != s.volume else b.volume_step
            )
            start = now + self._rng.uniform(0.2, 1.0)
            self._presses = [(start + 0.25 * i, delta) for i in range(presses)]
        if len(b.sources) > 1 and self._chance(b.source_changes_per_min, dt):
            s.source = self._rng.choice([x for x in b.sources if x != s.source])
        if self._unmute_at is not None and now >= self._unmute_at:
            s.muted, self._unmute_at = False, None
        elif self._unmute_at is None and self._chance(b.mutes_per_hour / 60.0, dt):
            s.muted, self._unmute_at = True, now + self._rng.uniform(15, 60)
        if s.nav_active:
            s.nav_distance = max(0.0, s.nav_distance - speed_kmh / 3600.0 * dt)
            if s.nav_distance == 0.0:
                s.nav_active = False  # arrived: the route guidance ends
