"""What each signal is: unit, type, range, value table, cycle time, comment and VSS path.

One description serves `firmware-agent signals` (table and `--json`: the schema a backend needs to read
telemetry), the units in decode's jsonl/csv output and the field metadata of its parquet files.

Types: `datatype` is what the output and the telemetry wire carry: `"string"` for a signal with a value
table (its label; the number where the raw value has no name), `"integer"` where cantools gives
integers, else `"number"`. VSS names follow the DBC, not VSS datatypes: where the VSS standard types a
path otherwise (`SelectedGear` is an int8 in VSS, the wire carries `"P"`), `vss_datatype` says so and
`choices` gives the numbers, so a backend that wants VSS values can map them. Kept this way on purpose:
campaign conditions compare labels (`SelectedGear == 'D'`), the fleet ingest stores labels in
`value_text`, and the identity stage decodes its own raw numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from cantools.database.can import Message, Signal

from firmware_agent.decode.cantools_private import numeric_conversion

#: VSS 4.x datatypes of the mapped paths whose DBC signal carries a value table and whose VSS type is
#: not a string: the wire carries the label, VSS would carry this type.
VSS_DATATYPE_DIFFERS = {
    "Vehicle.Powertrain.Transmission.SelectedGear": "int8",
    "Vehicle.ADAS.ABS.IsEngaged": "boolean",
    "Vehicle.Chassis.Axle.Row1.Wheel.Left.Brake.IsBrakesWorn": "boolean",
    "Vehicle.Chassis.Axle.Row1.Wheel.Right.Brake.IsBrakesWorn": "boolean",
    "Vehicle.Chassis.Axle.Row2.Wheel.Left.Brake.IsBrakesWorn": "boolean",
    "Vehicle.Chassis.Axle.Row2.Wheel.Right.Brake.IsBrakesWorn": "boolean",
}


@dataclass
class SignalInfo:
    """One signal as the schema describes it."""

    name: str
    telemetry_name: str
    unit: str
    datatype: str
    minimum: float | None
    maximum: float | None
    vss: str | None = None
    vss_datatype: str | None = None
    choices: dict[str, str] = field(default_factory=dict)
    comment: str | None = None


@dataclass
class MessageInfo:
    """One message of one channel (None: every channel) with its signals."""

    channel: str | None
    name: str
    frame_id: int
    is_extended: bool
    length: int
    cycle_time_ms: int | None
    signals: list[SignalInfo]


def signal_datatype(signal: Signal, decode_choices: bool = True) -> str:
    """What the output carries for `signal`: "string" (value-table labels), "integer" or "number"."""
    if decode_choices and signal.choices:
        return "string"
    conversion = numeric_conversion(signal.conversion)
    if signal.conversion.is_float or type(conversion).__name__ == "LinearConversion":
        return "number"
    return "integer"


def describe_signal(message: Message, signal: Signal, vss: dict[str, str] | None = None) -> SignalInfo:
    """The schema entry of one signal."""
    key = f"{message.name}.{signal.name}"
    path = (vss or {}).get(key)
    return SignalInfo(
        name=signal.name,
        telemetry_name=path or key,
        unit=signal.unit or "",
        datatype=signal_datatype(signal),
        minimum=signal.minimum,
        maximum=signal.maximum,
        vss=path,
        vss_datatype=VSS_DATATYPE_DIFFERS.get(path or ""),
        choices={str(int(number)): str(name) for number, name in (signal.choices or {}).items()},
        comment=signal.comment if isinstance(signal.comment, str) else None,
    )


def describe_messages(
    bindings: Iterable[tuple[str | None, Message]], vss: dict[str, str] | None = None
) -> list[MessageInfo]:
    """Schema entries for (channel, message) bindings, sorted by channel and identifier."""
    infos = [
        MessageInfo(
            channel=channel,
            name=message.name,
            frame_id=message.frame_id,
            is_extended=message.is_extended_frame,
            length=message.length,
            cycle_time_ms=message.cycle_time or None,
            signals=[describe_signal(message, signal, vss) for signal in message.signals],
        )
        for channel, message in bindings
    ]
    return sorted(infos, key=lambda info: (info.channel or "", info.frame_id, info.name))


def schema_json(messages: list[MessageInfo]) -> str:
    """The `signals --json` document."""
    document = {"version": 1, "messages": [asdict(info) for info in messages]}
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def units_of(message: Message) -> dict[str, str]:
    """Signal name to unit, for the signals that have one."""
    return {signal.name: signal.unit for signal in message.signals if signal.unit}
