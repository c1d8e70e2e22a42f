"""`virtual:NAME`: a python-can in-process virtual bus (tests, demos, the simulator in the same process)."""

from __future__ import annotations

import can

from firmware_agent.sources.base import BusSource


class VirtualSource(BusSource):
    """python-can's `virtual` interface; frames are stamped with the receive time, as a kernel would.

    Frames carry the bus name given with `BUS=` in the spec, else the virtual channel's name.
    """

    def create_bus(self) -> can.BusABC:
        """Join the virtual channel."""
        return can.Bus(interface="virtual", channel=self.spec.arg, receive_own_messages=False)

    @property
    def channel(self) -> str:
        """The virtual channel name unless a bus name is given."""
        return self.spec.bus or self.spec.arg
