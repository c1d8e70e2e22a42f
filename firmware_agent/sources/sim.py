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
        """Refuse what the simulation would refuse now rather than when the reader starts (the check is
        the simulation's own, `Simulation.check`)."""
        from sim import Simulation, parse_fault

        try:
            faults = [parse_fault(text) for text in self.faults]
            options = dict(self.options)
            start = self.start if self.start is not None else time.time()
            driver, scenario = options.pop("driver", 1), options.pop("scenario", "city")
            Simulation.check(driver, scenario, faults=faults, start_time=start, **options)
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
