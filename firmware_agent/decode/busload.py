"""The one bus-load model: how long a frame occupies the bus (`decode --summary`, the simulator's faults).

An estimate, as documented for `decode --summary`: nominal frame bits without bit stuffing, interframe
space included (classic CAN: 47 + 8 x bytes for 11-bit IDs, 67 + 8 x bytes for 29-bit IDs). A CAN FD frame
sent with a bit-rate switch has its payload bits at the data-phase bitrate and the rest at the nominal
one; without the switch (or without a declared data bitrate) every bit is at the nominal bitrate. The
longer CRC of CAN FD frames is not counted (docs/architecture.md: kept from the decoder's model when the
simulator's copy was folded in).
"""

from __future__ import annotations

from cantools.database.can import Database

from firmware_agent.decode.catalog import BusBitrate, database_bitrate

#: The nominal bitrate of a bus whose database declares none.
DEFAULT_BITRATE = 500_000


def header_bits(extended: bool) -> int:
    """The bits of a frame besides its payload (identifier, control, CRC, ACK, EOF, interframe space)."""
    return 67 if extended else 47


def frame_seconds(length: int, extended: bool, bitrate: BusBitrate, switched: bool = False) -> float:
    """Seconds one frame of `length` payload bytes occupies the bus; `switched`: CAN FD with BRS."""
    payload = 8 * length
    if switched and bitrate.data:
        return header_bits(extended) / bitrate.nominal + payload / bitrate.data
    return (header_bits(extended) + payload) / bitrate.nominal


def bus_bitrate(database: Database) -> BusBitrate:
    """The bitrate a database declares, else `DEFAULT_BITRATE` (and no data phase)."""
    return database_bitrate(database) or BusBitrate(DEFAULT_BITRATE)
