"""`slcan:DEVICE@BITRATE`: a serial-line CAN adapter (CANable, USBtin, ...) via python-can and pyserial."""

from __future__ import annotations

import can

from firmware_agent.errors import UserError
from firmware_agent.sources.base import BusSource
from firmware_agent.sources.spec import SourceSpec


class SlcanSource(BusSource):
    """`slcan:/dev/ttyACM0@500000`; options: `tty_baudrate` (serial speed, default 115200)."""

    OPTIONS = ("tty_baudrate",)

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        device, at, bitrate = spec.arg.rpartition("@")
        if not at or not device or not bitrate.isdigit() or int(bitrate) <= 0:
            raise UserError(
                f"source {spec.text!r}: expected slcan:DEVICE@BITRATE, e.g. slcan:/dev/ttyACM0@500000"
            )
        self.device = device
        self.bitrate = int(bitrate)
        self.tty_baudrate = spec.integer("tty_baudrate", 115200)

    @property
    def name(self) -> str:
        """The bus name, else the serial device."""
        return self.spec.bus or self.device

    @property
    def channel(self) -> str:
        """The bus name, else the serial device."""
        return self.name

    def create_bus(self) -> can.BusABC:
        """Open the serial port and the CAN channel at the configured bitrate."""
        return can.Bus(
            interface="slcan",
            channel=self.device,
            bitrate=self.bitrate,
            tty_baudrate=self.tty_baudrate,
            sleep_after_open=0.5,
        )
