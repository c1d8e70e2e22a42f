"""Where each signal's bits sit, worked out once per cantools message, for both fast decoders.

cantools unpacks a message with two bitstruct formats per multiplexer node (one over the payload for
big-endian signals, one over the reversed payload for little-endian ones). Those formats place each
signal right after the previous one when signals overlap (DBCs that only load with `strict=False`), and
unpacking fails outright when the formats need more bits than the message has. To give exactly what
`Message.decode()` gives, this module replays that layout and describes every signal as
`(integer, shift, length)`: take the payload as a little-endian (`le`) or big-endian (`be`) unsigned
integer of `message.length` bytes, shift right by `shift` and keep `length` bits.

It also captures each signal's conversion as cantools applies it (identity, integer-linear, float-linear,
value table) and how a multiplexer's decoded value selects the next node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cantools.database.can import Message, Signal
from cantools.database.conversion import IdentityConversion, LinearIntegerConversion, NamedSignalConversion

from firmware_agent.decode.cantools_private import message_codec, numeric_conversion


@dataclass(frozen=True)
class SignalLayout:
    """One signal: where its bits are, how they read (u/s/f) and how they scale."""

    name: str
    integer: str  # "le" or "be": which view of the payload the shift applies to
    shift: int
    length: int
    kind: str  # "u" unsigned, "s" two's complement, "f" IEEE float
    scale: Any
    offset: Any
    #: "identity" (raw value), "int" (raw * scale + offset in Python ints), "float" (the same in floats)
    conversion: str
    #: raw value -> choice object (cantools' NamedSignalValue), empty when the signal has no value table
    choices: Mapping[int, Any]

    @property
    def mask(self) -> int:
        """The bit mask of `length` bits."""
        return (1 << self.length) - 1


@dataclass(frozen=True)
class MuxLayout:
    """A multiplexer signal of a node and the node each of its defined values selects."""

    signal: str
    #: raw value with a choice -> the multiplexer number cantools derives from the choice's name
    choice_numbers: Mapping[int, int]
    nodes: Mapping[int, NodeLayout]


@dataclass(frozen=True)
class NodeLayout:
    """The signals cantools unpacks together, then the multiplexers that choose the child nodes."""

    signals: tuple[SignalLayout, ...]
    muxes: tuple[MuxLayout, ...] = ()
    #: cantools' unpack fails for every payload of this node ("unpacking failed"): the layout overruns
    unpack_fails: bool = False


@dataclass(frozen=True)
class MessageLayout:
    """A whole message: its length in bytes and the root node."""

    name: str
    length: int
    root: NodeLayout
    signal_names: tuple[str, ...] = field(default=())
    #: an AUTOSAR container PDU: cantools' `decode` refuses it, so every frame is skipped (SKIP_CONTAINER)
    container: bool = False


def message_layout(message: Message) -> MessageLayout:
    """Describe `message` the way its cantools codec unpacks it."""
    codec = message_codec(message)  # cantools keeps the codec tree private; it is the oracle we match
    length = message.length
    root = _node_layout(codec, length)
    container = bool(message.is_container)
    return MessageLayout(message.name, length, root, tuple(s.name for s in message.signals), container)


def _node_layout(codec: Any, length: int) -> NodeLayout:
    signals: list[Signal] = codec["signals"]
    total_bits = 8 * length
    positions: dict[str, tuple[str, int]] = {}

    # bitstruct has no negative padding: each signal goes right after the previous item in the format
    # (`position`), while the padding before the next one is measured from this signal's nominal end.
    # Overlapping signals therefore shift, and the format can outgrow the payload (unpack then fails).
    position = 0
    nominal_end = 0
    big = sorted((s for s in signals if s.byte_order == "big_endian"), key=_network_start)
    for signal in big:
        position += max(0, _network_start(signal) - nominal_end)
        positions[signal.name] = ("be", total_bits - position - signal.length)
        position += signal.length
        nominal_end = _network_start(signal) + signal.length
    overrun = position + max(0, total_bits - nominal_end) > total_bits

    # Little-endian signals: walked from the last to the first over the reversed payload.
    position = 0
    nominal_start = total_bits
    for signal in reversed(signals):
        if signal.byte_order == "big_endian":
            continue
        position += max(0, nominal_start - (signal.start + signal.length))
        positions[signal.name] = ("le", total_bits - position - signal.length)
        position += signal.length
        nominal_start = signal.start
    overrun |= position + max(0, nominal_start) > total_bits

    muxes = tuple(
        MuxLayout(
            signal=name,
            choice_numbers=_choice_numbers(next(s for s in signals if s.name == name)),
            nodes={value: _node_layout(child, length) for value, child in children.items()},
        )
        for name, children in codec["multiplexers"].items()
    )
    return NodeLayout(
        signals=tuple(_signal_layout(s, *positions[s.name]) for s in signals),
        muxes=muxes,
        unpack_fails=overrun,
    )


def _network_start(signal: Signal) -> int:
    # The network bit number (0 = most significant bit of byte 0) of a big-endian signal's MSB.
    return 8 * (signal.start // 8) + (7 - signal.start % 8)


def _signal_layout(signal: Signal, integer: str, shift: int) -> SignalLayout:
    conversion = signal.conversion
    choices: Mapping[int, Any] = {}
    if isinstance(conversion, NamedSignalConversion):
        choices = conversion.choices
        conversion = numeric_conversion(conversion)  # what cantools applies to a raw value without a name
    if isinstance(conversion, IdentityConversion):
        kind_of_conversion = "identity"
    elif isinstance(conversion, LinearIntegerConversion):
        kind_of_conversion = "int"
    else:
        kind_of_conversion = "float"
    if signal.conversion.is_float:
        kind = "f"
    elif signal.is_signed:
        kind = "s"
    else:
        kind = "u"
    return SignalLayout(
        name=signal.name,
        integer=integer,
        shift=shift,
        length=signal.length,
        kind=kind,
        scale=getattr(conversion, "scale", 1),
        offset=getattr(conversion, "offset", 0),
        conversion=kind_of_conversion,
        choices=choices,
    )


def _choice_numbers(signal: Signal) -> dict[int, int]:
    # cantools turns a decoded choice back into a number by name (`choice_to_number`), so two raw
    # values sharing one name select the same node.
    choices: Mapping[int, Any] = signal.conversion.choices or {}
    numbers: dict[int, int] = {}
    for raw, choice in choices.items():
        try:
            numbers[raw] = int(signal.conversion.choice_to_number(str(choice)))
        except (KeyError, TypeError, ValueError):
            continue
    return numbers
