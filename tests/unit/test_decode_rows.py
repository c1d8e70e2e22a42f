"""`compile_row`: only the asked signals, as a tuple, value-table entries as names; refuses what cantools
refuses. Checked against cantools on the vehicle's DBCs and the RAV4 DBCs with random payloads."""

from __future__ import annotations

import math
import random
import struct

import cantools
import pytest
from cantools.database.can import Message

from firmware_agent.decode.catalog import Catalog
from firmware_agent.decode.compiled import SKIP_INVALID_VALUE, SKIP_TOO_SHORT, DecodeSkip, compile_row
from firmware_agent.vehicle import default_dbc_specs

FLOAT_CHOICES_DBC = """VERSION ""
BS_:
BU_: A
BO_ 256 M: 8 A
 SG_ F : 0|32@1- (1,0) [0|0] "" A
 SG_ G : 32|8@1+ (1,0) [0|0] "" A
VAL_ 256 F 1 "One" 0 "Zero" ;
SIG_VALTYPE_ 256 F : 1;
"""


def plain(value: object) -> object:
    """A value as a sample carries it: value-table entries by name; NaN comparable to NaN."""
    if hasattr(value, "name"):
        return str(value.name)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def unmultiplexed(specs: list[str]) -> list[Message]:
    catalog = Catalog.from_specs(specs, warn_stream=None)
    return [message for _, message in catalog.all_messages() if not message.is_multiplexed()]


@pytest.mark.parametrize("which", ["vehicle", "rav4"])
def test_rows_equal_cantools(which: str, rav4_dbc_specs: list[str]) -> None:
    messages = unmultiplexed(default_dbc_specs() if which == "vehicle" else rav4_dbc_specs)
    assert len(messages) > 10
    rng = random.Random(7)
    for message in messages:
        names = [signal.name for signal in message.signals]
        subset = names[::-2]  # another order, not every signal
        whole, part = compile_row(message, names), compile_row(message, subset)
        for _ in range(50):
            data = bytes(rng.getrandbits(8) for _ in range(message.length))
            try:
                expected = message.decode(data, decode_choices=True)
            except Exception:
                with pytest.raises(DecodeSkip):
                    whole(data)
                continue
            row = whole(data)
            assert all(type(value) in (int, float, str) for value in row)
            assert [plain(v) for v in row] == [plain(expected[n]) for n in names], message.name
            assert [plain(v) for v in part(data)] == [plain(expected[n]) for n in subset], message.name


def test_short_payloads_and_multiplexed_messages() -> None:
    catalog = Catalog.from_specs(default_dbc_specs())
    message = catalog.lookup("chassis", 0x210, False)
    assert message is not None and not message.is_multiplexed()
    row = compile_row(message, [message.signals[0].name])
    with pytest.raises(DecodeSkip) as skip:
        row(bytes(message.length - 1))
    assert skip.value.reason == SKIP_TOO_SHORT
    assert row(bytes(message.length + 4)) == row(bytes(message.length))  # extra bytes ignored, as cantools
    seat = next(m for _, m in catalog.all_messages() if m.is_multiplexed())
    with pytest.raises(ValueError, match="without multiplexers"):
        compile_row(seat, [seat.signals[0].name])


def test_a_float_value_table_key_that_cantools_cannot_convert_is_refused_even_when_not_asked() -> None:
    message = cantools.database.load_string(FLOAT_CHOICES_DBC, "dbc").get_message_by_name("M")
    only_g, both = compile_row(message, ["G"]), compile_row(message, ["F", "G"])
    assert both(struct.pack("<f", 1.0) + bytes([7, 0, 0, 0])) == ("One", 7)
    assert only_g(struct.pack("<f", 2.5) + bytes([7, 0, 0, 0])) == (7,)
    for bad in (math.nan, math.inf):
        data = struct.pack("<f", bad) + bytes([7, 0, 0, 0])
        with pytest.raises((ValueError, OverflowError)):
            message.decode(data)
        for row in (only_g, both):
            with pytest.raises(DecodeSkip) as skip:
                row(data)
            assert skip.value.reason == SKIP_INVALID_VALUE
