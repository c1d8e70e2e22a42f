"""Correctness oracle: both fast decoders give what cantools' `Message.decode` gives, on every real DBC.

Payloads are random plus crafted ones per message: all zeros, all ones, the sign bit of every signal,
NaN and infinities in float signals, every defined multiplexer value and an undefined one, and lengths
one byte short and one byte long. Frames cantools refuses must be skipped by us, and the others must
match value for value (floats within 1e-9 relative, NaN equal to NaN, ints staying ints).
"""

from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path
from typing import Any

import can
import pytest
from cantools.database.can import Message

from firmware_agent.decode.catalog import Catalog, load_database
from firmware_agent.decode.compiled import DecodeSkip, FrameDecoder, compile_message
from firmware_agent.decode.layout import NodeLayout, SignalLayout, message_layout
from firmware_agent.decode.readers.frames import batch_from_messages
from firmware_agent.decode.vectorised import VectorDecoder
from firmware_agent.decode.writers import JsonlWriter
from tests.conftest import data_files

DBC_FILES = data_files("dbc", "*.dbc")
RANDOM_PAYLOADS = 24


def _signals(node: NodeLayout) -> list[SignalLayout]:
    found = list(node.signals)
    for mux in node.muxes:
        for child in mux.nodes.values():
            found.extend(_signals(child))
    return found


def _with_raw(payload: bytes, signal: SignalLayout, raw: int) -> bytes:
    """`payload` with `signal`'s bits set to `raw` (where cantools' layout reads them)."""
    if signal.shift < 0:
        return payload
    order = "little" if signal.integer == "le" else "big"
    value = int.from_bytes(payload, order)
    mask = signal.mask << signal.shift
    value = (value & ~mask) | ((raw & signal.mask) << signal.shift)
    return value.to_bytes(len(payload), order)


def _crafted_payloads(message: Message, rng: random.Random) -> list[bytes]:
    length = message.length
    layout = message_layout(message)
    payloads = [
        bytes(length),
        b"\xff" * length,
        bytes(max(0, length - 1)),
        bytes(rng.getrandbits(8) for _ in range(length + 1)),
    ]
    payloads += [bytes(rng.getrandbits(8) for _ in range(length)) for _ in range(RANDOM_PAYLOADS)]
    for signal in _signals(layout.root):
        base = bytes(rng.getrandbits(8) for _ in range(length))
        payloads.append(_with_raw(base, signal, 1 << (signal.length - 1)))  # sign bit / top bit
        if signal.kind == "f" and signal.length in (32, 64):
            exponent_all_ones = {32: 0x7F800000, 64: 0x7FF0000000000000}[signal.length]
            for raw in (
                exponent_all_ones | 1,
                exponent_all_ones,
                exponent_all_ones | (1 << (signal.length - 1)),
            ):
                payloads.append(_with_raw(base, signal, raw))  # NaN, +inf, -inf
        for raw in list(signal.choices)[:3]:
            payloads.append(_with_raw(base, signal, raw))
    payloads.extend(_mux_payloads(layout.root, bytes(length), rng))
    return payloads


def _mux_payloads(node: NodeLayout, base: bytes, rng: random.Random) -> list[bytes]:
    payloads = []
    for mux in node.muxes:
        signal = next(s for s in node.signals if s.name == mux.signal)
        undefined = next((v for v in range(signal.mask + 1) if v not in mux.nodes), None)
        for value in [*mux.nodes, *([] if undefined is None else [undefined])]:
            noise = bytes(rng.getrandbits(8) for _ in range(len(base)))
            payload = _with_raw(noise, signal, value)
            payloads.append(payload)
            child = mux.nodes.get(value)
            if child is not None:
                payloads.extend(_mux_payloads(child, payload, rng))
    return payloads


def _cantools(message: Message, data: bytes, decode_choices: bool) -> dict[str, Any] | None:
    try:
        return message.decode(data, decode_choices=decode_choices)
    except Exception:  # every way cantools refuses a frame: we must refuse it too
        return None


def _assert_same(ours: dict[str, Any], theirs: dict[str, Any], where: str, names_as_str: bool) -> None:
    assert list(ours) == list(theirs), where
    for name, expected in theirs.items():
        got = ours[name]
        if hasattr(expected, "name") and hasattr(expected, "value"):  # a value-table entry
            assert (got == str(expected)) if names_as_str else (got is expected), f"{where} {name}"
        elif isinstance(expected, float):
            assert isinstance(got, float), f"{where} {name}: {got!r} is not a float"
            if math.isnan(expected):
                assert math.isnan(got), f"{where} {name}"
            else:
                assert got == pytest.approx(expected, rel=1e-9, abs=0), f"{where} {name}"
        else:
            assert type(got) is type(expected) and got == expected, f"{where} {name}: {got!r} != {expected!r}"


@pytest.mark.parametrize("dbc", DBC_FILES, ids=[path.stem for path in DBC_FILES])
def test_fast_decoders_match_cantools(dbc: Path) -> None:
    database = load_database(dbc)
    catalog = Catalog()
    catalog.add(database)
    rng = random.Random(dbc.stem)
    frames: list[can.Message] = []
    for message in database.messages:
        for data in _crafted_payloads(message, rng):
            frames.append(
                can.Message(
                    timestamp=len(frames) / 1000,
                    channel="bus",
                    arbitration_id=message.frame_id,
                    is_extended_id=message.is_extended_frame,
                    is_fd=len(data) > 8,
                    data=data,
                    check=False,
                )
            )
    batch = batch_from_messages(frames)
    for decode_choices in (True, False):
        compiled = {id(m): compile_message(m, decode_choices) for m in database.messages}
        out = io.StringIO()
        JsonlWriter(out).write(VectorDecoder(catalog, decode_choices).decode(batch).groups)
        lines = iter(json.loads(line) for line in out.getvalue().splitlines())
        decoded = skipped = 0
        for frame in frames:
            message = catalog.lookup("bus", frame.arbitration_id, frame.is_extended_id)
            assert message is not None
            where = f"{dbc.name} {message.name} {bytes(frame.data).hex()} choices={decode_choices}"
            expected = _cantools(message, bytes(frame.data), decode_choices)
            try:
                per_frame: dict[str, Any] | None = compiled[id(message)].decode(bytes(frame.data))
            except DecodeSkip:
                per_frame = None
            if expected is None:
                assert per_frame is None, where
                skipped += 1
                continue
            decoded += 1
            assert per_frame is not None, where
            _assert_same(per_frame, expected, where + " (compiled)", names_as_str=False)
            record = next(lines)
            assert (record["timestamp"], record["id"], record["message"]) == (
                frame.timestamp,
                frame.arbitration_id,
                message.name,
            ), where
            _assert_same(record["signals"], expected, where + " (vectorised)", names_as_str=True)
        assert next(lines, None) is None, "the vectorised path decoded a frame cantools refuses"
        assert decoded > 0


def test_frame_decoder_counts_why_frames_are_skipped(test_data: Path) -> None:
    catalog = Catalog.from_specs([str(test_data / "dbc" / "cantools__motohawk.dbc")], warn_stream=None)
    decoder = FrameDecoder(catalog)
    (message,) = catalog.messages()
    data = bytes.fromhex("c001400000000000")
    good = decoder.decode(can.Message(arbitration_id=message.frame_id, is_extended_id=False, data=data))
    assert good is not None and good[0] is message
    assert good[1] == message.decode(data)
    assert decoder.decode(can.Message(arbitration_id=0x7FF, is_extended_id=False, data=bytes(8))) is None
    short = can.Message(arbitration_id=message.frame_id, is_extended_id=False, data=bytes(2))
    assert decoder.decode(short) is None
    assert decoder.decode(can.Message(arbitration_id=1, is_remote_frame=True)) is None
    assert decoder.skips == {"unknown id": 1, "too short": 1, "remote frame": 1}


def test_layout_reproduces_cantools_refusal_of_overlapping_signals(test_data: Path) -> None:
    # PCS_HUD (0x411) in the generated Toyota DBC overlaps; cantools cannot unpack it at all
    database = load_database(test_data / "dbc" / "opendbc__toyota_new_mc_pt_generated.dbc")
    message = database.get_message_by_frame_id(0x411)
    assert message_layout(message).root.unpack_fails
    with pytest.raises(DecodeSkip, match="do not fit"):
        compile_message(message).decode(bytes(8))
