"""`socketcan:IFACE`: a Linux SocketCAN interface, with kernel ID filters and kernel timestamps.

The pipeline sets `kernel_filters` to exactly the identifiers its campaigns need on this channel before the
source is opened, so the kernel drops every other frame before Python sees it. Timestamps are the kernel's
(`SO_TIMESTAMP`, taken when the frame arrived), which python-can puts in `Message.timestamp`.
"""

from __future__ import annotations

from pathlib import Path

import can

from firmware_agent.sources.base import BusSource, KernelFilter
from firmware_agent.sources.spec import SourceSpec

#: The kernel refuses more filters than this per socket (`CAN_RAW_FILTER_MAX`); beyond it, take all frames.
MAX_KERNEL_FILTERS = 512
_IFF_UP = 0x1


class SocketcanSource(BusSource):
    """`socketcan:can0`; option `fd=1` enables CAN FD frames."""

    OPTIONS = ("fd",)

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.interface = spec.arg
        self.fd = spec.flag("fd")

    @property
    def name(self) -> str:
        """The bus name, else the interface name."""
        return self.spec.bus or self.interface

    def available(self) -> bool:
        """True when the interface exists and is administratively up (read from sysfs)."""
        try:
            flags = int((Path("/sys/class/net") / self.interface / "flags").read_text().strip(), 16)
        except (OSError, ValueError):
            return False
        return bool(flags & _IFF_UP)

    def set_kernel_filters(self, filters: list[KernelFilter] | None) -> None:
        """Change the filters, also on the open socket (a reload whose campaigns want other messages)."""
        self.kernel_filters = filters
        bus = self._bus
        if bus is not None:
            if filters is not None and len(filters) > MAX_KERNEL_FILTERS:
                filters = None
            bus.set_filters(list(filters) if filters is not None else None)  # type: ignore[arg-type]

    def create_bus(self) -> can.BusABC:
        """Bind a raw CAN socket to the interface with the kernel filters."""
        filters = self.kernel_filters
        if filters is not None and len(filters) > MAX_KERNEL_FILTERS:
            filters = None
        return can.Bus(
            interface="socketcan",
            channel=self.interface,
            fd=self.fd,
            can_filters=list(filters) if filters is not None else None,
            receive_own_messages=False,
        )
