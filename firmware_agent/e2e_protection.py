"""End-to-end protection of safety-relevant messages: alive counter and CRC-8 SAE J1850.

A message is protected when its DBC sets the `E2E_CrcSignal` and `E2E_CounterSignal` attributes (and
`E2E_DataID`). The CRC byte is computed, AUTOSAR profile 1 style, over the data ID (2 bytes, little endian)
followed by every payload byte except the CRC's own byte, so a frame copied onto another ID fails the
check. The simulator uses `E2EProfile.protect` to send; the agent uses `E2EProfile.check` to receive.
"""

from __future__ import annotations

from dataclasses import dataclass

from cantools.database.can import Message

_POLY = 0x1D


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ _POLY) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc8_j1850(data: bytes | bytearray, initial: int = 0xFF) -> int:
    """CRC-8 SAE J1850: polynomial 0x1D, initial value 0xFF, final XOR 0xFF (check("123456789") = 0x4B)."""
    crc = initial
    for byte in data:
        crc = _TABLE[crc ^ byte]
    return crc ^ 0xFF


@dataclass(frozen=True)
class E2EProfile:
    """Where a message keeps its CRC byte and alive counter, and its data ID."""

    message_name: str
    data_id: int
    crc_byte: int
    counter_start_bit: int
    counter_bits: int

    @property
    def counter_modulo(self) -> int:
        """Counter values wrap at this number (16 for a 4-bit counter)."""
        return 1 << self.counter_bits

    def crc(self, payload: bytes | bytearray) -> int:
        """The CRC the payload must carry."""
        covered = bytes(payload[: self.crc_byte]) + bytes(payload[self.crc_byte + 1 :])
        return crc8_j1850(self.data_id.to_bytes(2, "little") + covered)

    def counter(self, payload: bytes | bytearray) -> int:
        """The alive counter the payload carries (little-endian bit numbering, as in the DBC)."""
        value = int.from_bytes(payload, "little") >> self.counter_start_bit
        return value & (self.counter_modulo - 1)

    def protect(self, payload: bytearray, counter: int) -> bytearray:
        """Write the alive counter and then the CRC into `payload` (in place) and return it."""
        as_int = int.from_bytes(payload, "little")
        mask = (self.counter_modulo - 1) << self.counter_start_bit
        as_int = (as_int & ~mask) | ((counter % self.counter_modulo) << self.counter_start_bit)
        payload[:] = as_int.to_bytes(len(payload), "little")
        payload[self.crc_byte] = self.crc(payload)
        return payload

    def crc_ok(self, payload: bytes | bytearray) -> bool:
        """True when the CRC byte matches the rest of the payload."""
        return len(payload) > self.crc_byte and payload[self.crc_byte] == self.crc(payload)


def profile_for(message: Message) -> E2EProfile | None:
    """The E2E profile a DBC message declares through its attributes, or None if it is unprotected."""
    attributes = message.dbc.attributes if message.dbc is not None else {}
    crc_attr = attributes.get("E2E_CrcSignal")
    counter_attr = attributes.get("E2E_CounterSignal")
    if crc_attr is None or counter_attr is None or not crc_attr.value or not counter_attr.value:
        return None
    crc_signal = message.get_signal_by_name(str(crc_attr.value))
    counter_signal = message.get_signal_by_name(str(counter_attr.value))
    if crc_signal.length != 8 or crc_signal.start % 8 or crc_signal.byte_order != "little_endian":
        raise ValueError(f"{message.name}: E2E CRC signal {crc_signal.name} must be one aligned byte")
    if counter_signal.byte_order != "little_endian":
        raise ValueError(f"{message.name}: E2E counter signal {counter_signal.name} must be little endian")
    data_id_attr = attributes.get("E2E_DataID")
    data_id = int(data_id_attr.value) if data_id_attr is not None else message.frame_id & 0xFFFF
    return E2EProfile(
        message_name=message.name,
        data_id=data_id,
        crc_byte=crc_signal.start // 8,
        counter_start_bit=counter_signal.start,
        counter_bits=counter_signal.length,
    )
