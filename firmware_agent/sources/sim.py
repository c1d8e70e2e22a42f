"""`sim:driver=NAME,scenario=NAME,seed=N,duration=SECONDS`: the vehicle simulator, in-process.

Frames come straight from `sim.Simulation(...).frames()`, on the vehicle's four buses (`body`,
`powertrain`, `chassis`, `infotainment`), stamped with simulated time starting now (or at `start=EPOCH`).
As fast as possible by default; `speed=X` paces them at X times real time. `fault=SPEC` injects faults
(the simulator's `NAME[@START[+DURATION]][:BUS]`, several separated by `;`). Not live: the reader waits
rather than drop frames.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import can

from firmware_agent.errors import UserError
from firmware_agent.sources.playback import PlaybackSource
from firmware_agent.sources.spec import SourceSpec
from firmware_agent.values import MAX_FRAME_TIME


class SimSource(PlaybackSource):
    """The simulator as a source; `duration` (seconds, default 60) makes it finite."""

    OPTIONS = ("driver", "scenario", "seed", "duration", "speed", "fault", "start")

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.duration = spec.number("duration", 60.0)
        seed = spec.option("seed", "0") or "0"
        if not seed.isdigit():
            raise UserError(f"source {spec.text!r}: option seed={seed!r} must be a non-negative integer")
        self.options: dict[str, Any] = {"seed": int(seed), "duration": self.duration}
        for key in ("driver", "scenario"):
            value = spec.option(key)
            if value:
                self.options[key] = value
        self.start = spec.number("start", 0.0) if "start" in spec.options else None
        self.faults = [text for text in (spec.option("fault") or "").split(";") if text.strip()]
        self._check()

    def _check(self) -> None:
        """Refuse an unknown driver, scenario or fault now rather than when the reader starts."""
        from sim import find_persona, find_scenario, parse_fault

        start = self.start if self.start is not None else time.time()
        if not (0.0 <= self.duration <= MAX_FRAME_TIME and 0.0 <= start <= MAX_FRAME_TIME - self.duration):
            raise UserError(
                f"source {self.spec.text!r}: start={start:g} and duration={self.duration:g} must keep the "
                f"drive between 0 and {MAX_FRAME_TIME:.0f} (2100-01-01) seconds since the epoch"
            )
        try:
            find_persona(self.options.get("driver", 1))
            find_scenario(self.options.get("scenario", "city"))
            for text in self.faults:
                parse_fault(text)
        except UserError as exc:
            raise UserError(f"source {self.spec.text!r}: {exc}") from exc

    @property
    def name(self) -> str:
        """The bus name, else `sim`."""
        return self.spec.bus or "sim"

    def frames(self) -> Iterator[can.Message]:
        """Build the simulation now (not a generator: a bad argument fails at `open`) and run it."""
        try:
            from sim import Simulation, parse_fault
        except ImportError as exc:
            raise UserError(f"source {self.spec.text!r}: the simulator package is not available") from exc
        try:
            faults = [parse_fault(text) for text in self.faults]
            start = self.start if self.start is not None else time.time()
            simulation = Simulation(start_time=start, faults=faults, **self.options)
        except UserError as exc:
            raise UserError(f"source {self.spec.text!r}: {exc}") from exc
        return simulation.frames()
