"""Turning decoded groups into per-frame records and text, in capture order.

The jsonl contract, one line per decoded frame:
`{"timestamp": 1533226487.000018, "channel": "can0", "id": 740, "message": "STEERING_LKA",
"signals": {"COUNTER": 31, "LKA_STATE": "ok"}}` with the values `Message.decode(data, decode_choices=True)`
gives (value-table names as strings; floats as Python prints them; NaN and infinities as `NaN`,
`Infinity`, `-Infinity` like Python's json module).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from firmware_agent.decode.vectorised import DecodedGroup, SignalColumn
from firmware_agent.values import SignalValue

_dumps = json.dumps


def column_text(column: SignalColumn) -> list[str]:
    """JSON text of a column's value per row (value-table names quoted); '' where the signal is absent."""
    values = column.values.tolist()
    if column.values.dtype.kind == "f":
        text = [_float_text(value) for value in values]
    else:
        text = [str(value) for value in values]
    if column.label is not None and column.labels:
        names = [_dumps(name) for name in column.labels]
        for row in np.flatnonzero(column.label >= 0).tolist():
            text[row] = names[column.label[row]]
    if column.present is not None:
        for row in np.flatnonzero(~column.present).tolist():
            text[row] = ""
    return text


def _float_text(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def column_values(column: SignalColumn) -> list[SignalValue | None]:
    """Python values per row (value-table names as str); None where the signal is absent."""
    values: list[SignalValue | None] = column.values.tolist()
    if column.label is not None and column.labels:
        for row in np.flatnonzero(column.label >= 0).tolist():
            values[row] = column.labels[column.label[row]]
    if column.present is not None:
        for row in np.flatnonzero(~column.present).tolist():
            values[row] = None
    return values


def group_json_lines(group: DecodedGroup) -> list[str]:
    """The jsonl lines (with trailing newline) of a group's frames."""
    head = (
        f', "channel": {_dumps(group.channel)}, "id": {group.arbitration_id},'
        f' "message": {_dumps(group.message.name)}, "signals": {{'
    )
    keys = [f"{_dumps(name)}: " for name in group.signals]
    columns = [column_text(column) for column in group.signals.values()]
    stamps = [_float_text(value) for value in group.timestamp.tolist()]
    partial = any(column.present is not None for column in group.signals.values())
    lines = []
    for stamp, *values in zip(stamps, *columns, strict=False) if columns else ((s,) for s in stamps):
        if partial:
            body = ", ".join(key + value for key, value in zip(keys, values, strict=False) if value)
        else:
            body = ", ".join(key + value for key, value in zip(keys, values, strict=False))
        lines.append(f'{{"timestamp": {stamp}{head}{body}}}}}\n')
    return lines


def in_capture_order(groups: list[DecodedGroup], texts: list[list[str]]) -> Iterator[str]:
    """Interleave per-group texts (one per decoded frame) back into capture order."""
    if not groups:
        return iter(())
    rows = np.concatenate([group.rows for group in groups])
    flat = [text for group_texts in texts for text in group_texts]
    return (flat[position] for position in np.argsort(rows, kind="stable").tolist())
