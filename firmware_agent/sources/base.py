"""The small interface every source implements, python-can `BusABC` style.

A source is opened, read frame by frame, and closed, always from its own reader thread
(`firmware_agent.sources.reader.SourceReader`). Live sources (a real or virtual bus) raise `OSError` or
`can.CanError` when the bus goes away; the reader closes them, waits, and opens them again. Finite sources
(a replay, a simulation with a duration) raise `EndOfSource` when they have nothing more to give.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import ClassVar, TypedDict

import can

from firmware_agent.sources.spec import SourceSpec


class EndOfSource(Exception):
    """A finite source (replay, simulation) has delivered its last frame."""


class KernelFilter(TypedDict):
    """One SocketCAN receive filter, as python-can's `can_filters` takes it."""

    can_id: int
    can_mask: int
    extended: bool


class Source(ABC):
    """Where frames come from. Subclasses exist per kind, one module each, named after the kind."""

    #: Options the spec may carry for this kind (anything else is refused).
    OPTIONS: ClassVar[tuple[str, ...]] = ()
    #: Live sources never make the reader wait: frames are dropped when the pipeline falls behind.
    #: Replays and simulations are not live: the reader waits, so nothing is lost.
    live: ClassVar[bool] = True

    def __init__(self, spec: SourceSpec) -> None:
        spec.check_options(self.OPTIONS)
        self.spec = spec
        #: Set before `open()` by the pipeline: the identifiers it needs on this source's channel(s), or
        #: None for every frame. Sources that can filter in the kernel or the adapter use it.
        self.kernel_filters: list[KernelFilter] | None = None

    @property
    def name(self) -> str:
        """The label counters and events use for this source (its bus name)."""
        return self.spec.bus or self.spec.arg or self.spec.kind

    @property
    def channel(self) -> str | None:
        """The channel stamped on every frame, or None when frames keep their own (replay, sim)."""
        return self.spec.bus

    def available(self) -> bool:
        """Whether opening can succeed now (e.g. the network interface is up); checked before reopening."""
        return True

    def counters(self) -> dict[str, int]:
        """Counters of the source's own (reported as `bus.NAME.<key>`); none by default."""
        return {}

    @abstractmethod
    def open(self) -> None:
        """Acquire the bus or file; raises `OSError`/`can.CanError` when it is not there (retried)."""

    @abstractmethod
    def read(self, timeout: float) -> can.Message | None:
        """The next frame, or None after `timeout` seconds without one.

        Raises `EndOfSource` when a finite source is exhausted, `OSError`/`can.CanError` when the bus is lost.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the bus or file; safe to call twice and after a failure."""


class BusSource(Source):
    """A source backed by one python-can bus; subclasses say how to create it."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._bus: can.BusABC | None = None

    @abstractmethod
    def create_bus(self) -> can.BusABC:
        """Create and open the python-can bus."""

    def open(self) -> None:
        """Create the bus."""
        self._bus = self.create_bus()

    def read(self, timeout: float) -> can.Message | None:
        """Receive one frame, stamped with this source's channel name when one is set."""
        bus = self._bus
        if bus is None:
            raise can.CanOperationError(f"{self.name}: bus is not open")
        frame = bus.recv(timeout)
        channel = self.channel
        if frame is not None and channel is not None:
            frame.channel = channel
        return frame

    def close(self) -> None:
        """Shut the bus down (errors while closing a bus that is already gone are ignored)."""
        bus, self._bus = self._bus, None
        if bus is not None:
            with contextlib.suppress(OSError, can.CanError):
                bus.shutdown()
