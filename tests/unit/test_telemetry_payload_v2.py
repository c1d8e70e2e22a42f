"""Payload version 2: exact round trips, the published test vector, an independent decoder, refusals.

The test vector (`docs/telemetry-v2-vector.json`) is what a receiver in another language tests against;
`python -m tests.unit.test_telemetry_payload_v2` writes it again after a deliberate format change.
"""

from __future__ import annotations

import json
import math
import random
import struct
import sys
import zlib
from itertools import accumulate
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from firmware_agent.telemetry import payload_v2
from firmware_agent.telemetry.cose import Signer, unverified_payload
from firmware_agent.telemetry.payload import Payload, PayloadError, decode_payload, encode_payload
from firmware_agent.telemetry.payload_v2 import encode_payload_v2, scale_hints
from firmware_agent.telemetry.sealer import BatchSealer
from firmware_agent.telemetry.topics import telemetry_topic
from firmware_agent.values import Batch, Event, Sample

VECTOR = Path(__file__).resolve().parents[2] / "docs" / "telemetry-v2-vector.json"
#: RFC 8032 §7.1, test 1: a published Ed25519 secret key, so that anyone can reproduce the signature.
VECTOR_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
VECTOR_VEHICLE = "veh-0001"
VECTOR_SEQ = 42
VECTOR_SCALES = {"Vehicle.Speed": (0.01, 0), "Vehicle.OBD.CoolantTemperature": (1, -40)}
T = 1_785_000_000.25


def _bits(value: Any) -> Any:
    """A value as compared to the bit: floats by their IEEE 754 pattern (so -0.0 != 0.0).

    Except NaN: canonical CBOR writes every NaN as the one quiet NaN (version 1 too), so a NaN arrives as
    a NaN without its payload bits.
    """
    if type(value) is float:
        return ("f", b"nan" if math.isnan(value) else struct.pack(">d", value))
    return (type(value).__name__, value)


def _assert_exact(batch: Batch, payload: Payload) -> None:
    v1 = decode_payload(encode_payload(batch, payload.vehicle, payload.seq))
    assert sorted(payload.signals) == sorted(batch.samples)
    for name, (times, values) in batch.samples.items():
        got_times, got_values = payload.signals[name]
        assert [_bits(v) for v in got_values] == [_bits(v) for v in values], name
        assert got_times == v1.signals[name][0], f"{name}: times differ from version 1"
        assert all(abs(a - b) < 1e-6 for a, b in zip(got_times, times, strict=True)), name


def vector_batch() -> Batch:
    """The batch of the test vector: a scaled float, an offset integer, a counter, names, IEEE floats."""
    batch = Batch(
        campaign="vector",
        driver={"profile": "p-0123456789abcdef", "source": "explicit", "confidence": 0.9, "model": "active"},
    )
    for i, raw in enumerate([5000, 5001, 5002, 4999]):
        batch.add(Sample(T + 0.01 * i, "Vehicle.Speed", raw * 0.01 + 0))  # as the decoder computes it
    for i, raw in enumerate([130, 131]):
        batch.add(Sample(T + 0.005 + 0.5 * i, "Vehicle.OBD.CoolantTemperature", raw * 1 - 40))
    for i, counter in enumerate([14, 15, 0, 1]):
        batch.add(Sample(T + 0.01 * i, "BRAKE.COUNTER", counter))  # shares the time column of the speed
    for i, gear in enumerate(["P", "D", 7]):
        batch.add(Sample(T + 0.2 * i, "Vehicle.Powertrain.Transmission.SelectedGear", gear))
    for i, accel in enumerate([-0.0, 1.5, 3.14159, 1e-300]):
        batch.add(Sample(T + 0.25 * i + 0.000001, "IMU.AccelX", accel))
    batch.events.append(Event(T + 0.5, "trigger", {"condition": "brake"}))
    batch.events.append(
        Event(T + 0.75, "driver_identified", {"profile": "p-0123456789abcdef", "source": "explicit",
                                              "confidence": 0.9, "seconds": 30, "confirmed": True})
    )  # fmt: skip
    return batch


def _vector_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTOR_SEED))


def _vector_message() -> bytes:
    counters = {"decode.samples": 17, "outbox.evicted": 0}
    sealer = BatchSealer(VECTOR_VEHICLE, Signer(_vector_key()), lambda: counters, scales=VECTOR_SCALES)
    return sealer(vector_batch(), VECTOR_SEQ)


def expected_decode(payload: Payload) -> dict[str, Any]:
    """What a receiver must get from the vector, as JSON (floats in their shortest exact form)."""
    return {
        "vehicle": payload.vehicle,
        "seq": payload.seq,
        "t0": payload.t0,
        "campaign": payload.campaign,
        "driver": payload.driver,
        "counters": payload.counters,
        "events": [{"time": e.timestamp, "kind": e.kind, "detail": e.detail} for e in payload.events],
        "samples": [{"signal": s.name, "time": s.timestamp, "value": s.value} for s in payload.samples()],
    }


def write_vector() -> None:
    message = _vector_message()
    payload = unverified_payload(message)
    body = zlib.decompress(cbor2.loads(payload)["z"])
    public = (
        _vector_key().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    vector = {
        "description": "firmware-agent telemetry payload version 2 (docs/telemetry-format.md)",
        "ed25519_private_seed_hex": VECTOR_SEED,
        "ed25519_public_key_hex": public.hex(),
        "topic": telemetry_topic(VECTOR_VEHICLE),
        "message_hex": message.hex(),
        "payload_hex": payload.hex(),
        "body_hex": body.hex(),
        "zlib_version": zlib.ZLIB_VERSION,
        "expected": expected_decode(decode_payload(payload)),
    }
    VECTOR.write_text(json.dumps(vector, indent=1) + "\n")


def independent_decode(message: bytes, topic: str, public: bytes) -> dict[str, Any]:
    """The vector read as the spec says, with pycose, cbor2 and zlib only (no firmware_agent code)."""
    sign1 = Sign1Message.decode(message)
    sign1.key = OKPKey(crv=Ed25519, x=public)
    sign1.external_aad = topic.encode()  # type: ignore[misc]
    assert sign1.verify_signature()
    outer = cbor2.loads(sign1.payload)
    assert outer["v"] == 2
    body = cbor2.loads(zlib.decompress(outer["z"]))
    t0 = body["t0"]
    times = [[t0 + us / 1e6 for us in accumulate(column)] for column in body["times"]]
    samples = []
    for name, entry in body["signals"].items():
        if len(entry) == 2:
            values = entry[1]
        else:
            scale, offset, diffs = entry[1:]
            values = [raw * scale + offset for raw in accumulate(diffs)]
        samples += [
            {"signal": name, "time": t, "value": v} for t, v in zip(times[entry[0]], values, strict=True)
        ]
    return {
        "vehicle": outer["vehicle"],
        "seq": outer["seq"],
        "t0": t0,
        "campaign": body.get("campaign"),
        "driver": body.get("driver"),
        "counters": body.get("counters"),
        "events": [
            {"time": t0 + e["dt"] / 1e6, "kind": e["kind"], "detail": e.get("detail", {})}
            for e in body["events"]
        ],
        "samples": samples,
    }


def _exact_json(document: Any) -> Any:
    """`document` with floats as their bit patterns (JSON keeps 5 and 5.0 apart in Python, and -0.0)."""
    if isinstance(document, dict):
        return {k: _exact_json(v) for k, v in document.items()}
    if isinstance(document, list):
        return [_exact_json(v) for v in document]
    return _bits(document)


def test_the_code_reproduces_the_published_test_vector_exactly() -> None:
    vector = json.loads(VECTOR.read_text())
    message = _vector_message()
    payload = unverified_payload(message)
    assert zlib.decompress(cbor2.loads(payload)["z"]).hex() == vector["body_hex"]
    if vector["zlib_version"] == zlib.ZLIB_VERSION:
        # Ed25519 is deterministic: the same payload bytes give the same message, signature included.
        # Another deflate implementation may compress the same body to other bytes (equally valid).
        assert message.hex() == vector["message_hex"]
    decoded = decode_payload(bytes.fromhex(vector["payload_hex"]))
    assert _exact_json(expected_decode(decoded)) == _exact_json(vector["expected"])
    assert decoded.version == 2 and decoded.sample_count() == 17


def test_an_independent_decoder_following_the_spec_gets_the_same_samples() -> None:
    vector = json.loads(VECTOR.read_text())
    got = independent_decode(
        bytes.fromhex(vector["message_hex"]), vector["topic"], bytes.fromhex(vector["ed25519_public_key_hex"])
    )
    assert _exact_json(got) == _exact_json(vector["expected"])
    # and both decoders agree with the batch that was sealed (the vector is not just self-consistent)
    _assert_exact(vector_batch(), decode_payload(bytes.fromhex(vector["payload_hex"])))


def test_the_vector_uses_every_column_kind() -> None:
    body = cbor2.loads(bytes.fromhex(json.loads(VECTOR.read_text())["body_hex"]))
    signals = body["signals"]
    assert signals["Vehicle.Speed"][1:3] == [0.01, 0] and signals["BRAKE.COUNTER"][1:3] == [1, 0]
    assert signals["Vehicle.OBD.CoolantTemperature"][1:3] == [1, -40]
    assert signals["Vehicle.Speed"][0] == signals["BRAKE.COUNTER"][0], "one time column for both"
    assert (
        len(signals["IMU.AccelX"]) == 2 and len(signals["Vehicle.Powertrain.Transmission.SelectedGear"]) == 2
    )


def _random_value_series(rng: random.Random, n: int) -> tuple[list[Any], tuple[Any, Any] | None]:
    kind = rng.randrange(7)
    if kind == 0:  # DBC-scaled floats, as the decoder computes them
        scale = rng.choice([0.01, 0.1, 0.5, 1 / 3, 1e-5, -0.25, 0.0625, 1.0])
        offset = rng.choice([0, -40, 0.5, -273.15, 1e6])
        return [rng.randrange(-(2**20), 2**20) * scale + offset for _ in range(n)], (scale, offset)
    if kind == 1:  # integers with an integer scale and offset
        scale, offset = rng.choice([(1, 0), (2, -100), (-1, 7), (5, 3)])
        return [rng.randrange(-1000, 1000) * scale + offset for _ in range(n)], (scale, offset)
    if kind == 2:  # any float64 at all: NaN, infinities, -0.0, subnormals
        return [struct.unpack(">d", rng.randbytes(8))[0] for _ in range(n)], (0.01, 0)
    if kind == 3:  # value-table names mixed with numbers
        return [rng.choice(["P", "R", "N", "D", 3, 4.5]) for _ in range(n)], (1, 0)
    if kind == 4:  # integers beyond what a raw column carries (2**53, bignums)
        return [rng.choice([2**53, -(2**53), 2**70, -5, 0]) for _ in range(n)], None
    if kind == 5:  # floats with the wrong hint
        return [rng.random() for _ in range(n)], (0.01, 0)
    return [rng.choice([-0.0, 0.0, 0.5]) for _ in range(n)], (0.5, 0)


def test_random_batches_round_trip_to_the_bit() -> None:
    rng = random.Random(11)
    for _ in range(150):
        batch = Batch()
        hints = {}
        shared = sorted(T + rng.random() for _ in range(rng.randrange(1, 30)))
        for s in range(rng.randrange(1, 8)):
            times = shared if rng.random() < 0.5 else sorted(T + rng.random() * 5 for _ in range(len(shared)))
            values, hint = _random_value_series(rng, len(times))
            batch.samples[f"S{s}"] = (list(times), values)
            if hint is not None:
                hints[f"S{s}"] = hint
        payload = decode_payload(encode_payload_v2(batch, "veh-0001", 3, {"c": 1}, hints))
        _assert_exact(batch, payload)
        assert payload.counters == {"c": 1} and payload.version == 2


def test_driver_events_campaign_and_extras_survive_unchanged() -> None:
    batch = vector_batch()
    payload = decode_payload(encode_payload_v2(batch, "veh-0001", 1, {"outbox.evicted": 3}, VECTOR_SCALES))
    v1 = decode_payload(encode_payload(batch, "veh-0001", 1, {"outbox.evicted": 3}))
    assert payload.driver == batch.driver == v1.driver
    assert payload.events == v1.events and [e.detail for e in payload.events] == [
        e.detail for e in batch.events
    ]
    assert (payload.campaign, payload.counters, payload.t0) == ("vector", {"outbox.evicted": 3}, v1.t0)
    empty = decode_payload(encode_payload_v2(Batch(), "veh-0001", 2, {"committed": 1}))
    assert empty.signals == {} and empty.counters == {"committed": 1}


def test_raw_columns_are_what_make_it_small() -> None:
    batch = Batch()
    for i in range(1000):
        batch.add(Sample(T + i / 100, "Vehicle.Speed", (3000 + i % 7) * 0.01 + 0))
        batch.add(Sample(T + i / 100, "COUNTER", i % 16))
    hinted = encode_payload_v2(batch, "v", 1, None, {"Vehicle.Speed": (0.01, 0)})
    plain = encode_payload_v2(batch, "v", 1)
    v1 = encode_payload(batch, "v", 1)
    assert len(hinted) < len(plain) < len(v1) / 5
    assert len(hinted) / batch.sample_count() < 0.25


def test_scale_hints_leave_out_names_with_two_conversions() -> None:
    class Signal:
        def __init__(self, name: str, scale: Any, offset: Any) -> None:
            self.name, self.scale, self.offset = name, scale, offset

    class Message:
        def __init__(self, name: str, *signals: Signal) -> None:
            self.name, self.signals = name, list(signals)

    messages = [Message("A", Signal("X", 0.1, 0), Signal("Y", 1, 0)), Message("B", Signal("X", 0.1, 0))]
    assert scale_hints(messages, lambda m, s: s) == {"X": (0.1, 0), "Y": (1, 0)}
    messages.append(Message("C", Signal("Y", 1.0, 0)))  # same number, other type: values would differ
    assert scale_hints(messages, lambda m, s: s) == {"X": (0.1, 0)}


def _outer(body: Any, **changes: Any) -> bytes:
    doc = {"v": 2, "vehicle": "v", "seq": 1, "z": zlib.compress(cbor2.dumps(body))}
    doc.update(changes)
    return cbor2.dumps(doc)


GOOD_BODY = {"t0": T, "times": [[0, 10]], "signals": {"s": [0, [1, 2]]}}


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (_outer(GOOD_BODY, z=b"not zlib"), "not a zlib stream"),
        (_outer(GOOD_BODY, z=zlib.compress(cbor2.dumps(GOOD_BODY))[:-3]), "not one complete zlib stream"),
        (_outer(GOOD_BODY, z=zlib.compress(cbor2.dumps(GOOD_BODY)) + b"x"), "not one complete zlib stream"),
        (_outer(GOOD_BODY, z="text"), "'z'"),
        (_outer(GOOD_BODY, seq=-1), "'seq'"),
        (_outer([1, 2]), "not a CBOR map"),
        (_outer({**GOOD_BODY, "t0": math.inf}), "'t0'"),
        (_outer({**GOOD_BODY, "times": [[0, 1.5]]}), "time column"),
        (_outer({**GOOD_BODY, "signals": {"s": [1, [1, 2]]}}), "names no time column"),
        (_outer({**GOOD_BODY, "signals": {"s": [0, [1]]}}), "1 values for 2 times"),
        (_outer({**GOOD_BODY, "signals": {"s": [0, 0.1, 0]}}), "is not"),
        (_outer({**GOOD_BODY, "signals": {"s": [0, math.nan, 0, [1, 2]]}}), "scale"),
        (_outer({**GOOD_BODY, "signals": {"s": [0, 0.1, 0, [1, 2**60]]}}), "beyond 2\\*\\*53"),
        (_outer({**GOOD_BODY, "events": [{"dt": 1}]}), "an event"),
        (_outer({**GOOD_BODY, "driver": {"profile": "Anna"}}), "'driver'"),
    ],
)
def test_malformed_version_2_payloads_are_refused(payload: bytes, problem: str) -> None:
    with pytest.raises(PayloadError, match=problem):
        decode_payload(payload)


def test_a_body_that_inflates_too_far_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payload_v2, "MAX_BODY_BYTES", 1000)
    body = {**GOOD_BODY, "campaign": "x" * 2000}
    with pytest.raises(PayloadError, match="inflates beyond 1000 bytes"):
        decode_payload(_outer(body))
    assert decode_payload(_outer(GOOD_BODY)).signals["s"][1] == [1, 2]


if __name__ == "__main__" and "--write" in sys.argv:
    write_vector()
    print(f"wrote {VECTOR}")
