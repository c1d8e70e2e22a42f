"""Correctness oracle: both fast decoders give what cantools' `Message.decode` gives, on every real DBC.

Payloads are random plus crafted ones per message: all zeros, all ones, the sign bit of every signal,
NaN and infinities in float signals, every defined multiplexer value and an undefined one, and lengths
one byte short and one byte long. Frames cantools refuses must be skipped by us, and the others must
match value for value (floats within 1e-9 relative, NaN equal to NaN, ints staying ints).

Besides the real DBCs, `tests/data/oracle/` holds the cases a run over cantools' own test corpus found
(issue 9): J1939 messages sharing a PGN (each frame is decoded as the message of its exact identifier; a
source address no message defines falls back to the PGN), signals wider than 64 bits (Python ints, as
cantools gives), and below, an ARXML-style container message (skipped, as cantools' `decode` refuses it).
This test is also the tripwire for a new cantools release (docs/decode.md).
"""

from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path
from typing import Any

import can
import cantools
import pytest
from cantools.database.can import Database, Message, Signal

from firmware_agent.decode.catalog import Catalog, is_j1939, j1939_pgn, load_database
from firmware_agent.decode.compiled import SKIP_CONTAINER, DecodeSkip, FrameDecoder, compile_message
from firmware_agent.decode.layout import NodeLayout, SignalLayout, message_layout
from firmware_agent.decode.vectorised import VectorDecoder
from firmware_agent.io.frames import batch_from_messages
from firmware_agent.io.jsonl import JsonlWriter
from tests.conftest import data_files

DBC_FILES = data_files("dbc", "*.dbc") + data_files("oracle", "*.dbc")
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
    # The message each frame must decode as: its exact identifier's, else (J1939) its PGN's last definition.
    by_pgn = {j1939_pgn(m.frame_id): m for m in database.messages if is_j1939(m)}
    defined = {m.frame_id for m in database.messages}
    frames: list[can.Message] = []
    expected_message: list[Message] = []
    for message in database.messages:
        identifiers = [message.frame_id]
        if is_j1939(message):  # the same PGN from a source address no message defines: the PGN fallback
            identifiers += [i for i in ((message.frame_id & ~0xFF) | 0xFE,) if i not in defined]
        for frame_id in identifiers:
            for data in _crafted_payloads(message, rng):
                frames.append(
                    can.Message(
                        timestamp=len(frames) / 1000,
                        channel="bus",
                        arbitration_id=frame_id,
                        is_extended_id=message.is_extended_frame,
                        is_fd=len(data) > 8,
                        data=data,
                        check=False,
                    )
                )
                expected_message.append(
                    message if frame_id == message.frame_id else by_pgn[j1939_pgn(frame_id)]
                )
    batch = batch_from_messages(frames)
    for decode_choices in (True, False):
        compiled = {id(m): compile_message(m, decode_choices) for m in database.messages}
        out = io.StringIO()
        JsonlWriter(out).write(VectorDecoder(catalog, decode_choices).decode(batch).groups)
        lines = iter(json.loads(line) for line in out.getvalue().splitlines())
        decoded = skipped = 0
        for frame, message in zip(frames, expected_message, strict=True):
            found = catalog.lookup("bus", frame.arbitration_id, frame.is_extended_id)
            where = f"{dbc.name} {message.name} {bytes(frame.data).hex()} choices={decode_choices}"
            assert found is message, f"{where}: 0x{frame.arbitration_id:x} found {found}"
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


def test_j1939_messages_sharing_a_pgn_are_reported_when_the_catalog_is_built(test_data: Path) -> None:
    warnings = io.StringIO()
    catalog = Catalog.from_specs([str(test_data / "oracle" / "j1939_shared_pgn.dbc")], warn_stream=warnings)
    lines = warnings.getvalue().splitlines()
    assert len(lines) == 2 == len(catalog.ambiguities)
    assert "PGN 0x0FEF1 is defined by CCVS_ENGINE (0x18FEF100) and CCVS_RETARDER (0x18FEF117)" in lines[0]
    assert lines[1].endswith("other source addresses decode as TSC1_RETARDER")
    assert {m.name for m in catalog.messages()} == {
        "CCVS_ENGINE",
        "CCVS_RETARDER",
        "TSC1_ENGINE",
        "TSC1_RETARDER",
        "NOT_J1939",
    }
    # exact identifiers win; another source address falls back to the PGN's last definition
    assert catalog.lookup("can0", 0x18FEF100, True).name == "CCVS_ENGINE"  # type: ignore[union-attr]
    assert catalog.lookup("can0", 0x18FEF117, True).name == "CCVS_RETARDER"  # type: ignore[union-attr]
    assert catalog.lookup("can0", 0x1CFEF121, True).name == "CCVS_RETARDER"  # type: ignore[union-attr]
    assert catalog.lookup("can0", 0x0C002017, True).name == "TSC1_RETARDER"  # type: ignore[union-attr]
    assert catalog.lookup("can0", 0x701, False).name == "NOT_J1939"  # type: ignore[union-attr]


def _container_database() -> tuple[Database, Message, Message]:
    """An AUTOSAR container PDU as cantools' ARXML loader builds it (header id, contained PDUs)."""
    inner = Message(
        frame_id=0x10,
        name="INNER",
        length=2,
        signals=[Signal("A", start=0, length=16)],
        header_id=0x0A0B0C,
        header_byte_order="big_endian",
    )
    container = Message(
        frame_id=0x200,
        name="CONTAINER",
        length=16,
        signals=[],
        contained_messages=[inner],
        header_byte_order="big_endian",
        is_fd=True,
    )
    database = Database(messages=[container, inner])
    database.refresh()
    return database, container, inner


def test_container_messages_are_skipped_as_cantools_refuses_them() -> None:
    database, container, inner = _container_database()
    data = container.encode([(inner, {"A": 5})]).ljust(16, b"\0")
    with pytest.raises(cantools.database.DecodeError, match="container"):
        container.decode(data)
    assert container.decode_container(data)[0][1] == {"A": 5}  # what a later contract could offer
    catalog = Catalog()
    catalog.add(database)
    frame = can.Message(arbitration_id=0x200, is_extended_id=False, is_fd=True, data=data)
    with pytest.raises(DecodeSkip, match=SKIP_CONTAINER):
        compile_message(container).decode(data)
    per_frame = FrameDecoder(catalog)
    assert per_frame.decode(frame) is None and per_frame.skips == {SKIP_CONTAINER: 1}
    result = VectorDecoder(catalog).decode(batch_from_messages([frame, frame]))
    assert result.groups == []
    assert [(s.message, s.reason, s.count) for s in result.skipped] == [("CONTAINER", SKIP_CONTAINER, 2)]
