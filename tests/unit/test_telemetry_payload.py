"""The CBOR payload: round trip, compactness, and refusal of malformed input."""

from __future__ import annotations

import cbor2
import pytest

from firmware_agent.telemetry.payload import PayloadError, decode_payload, encode_payload
from firmware_agent.values import Batch, Event, Sample

T = 1_785_000_000.0


def _batch() -> Batch:
    batch = Batch(
        campaign="brakes", driver={"profile": "p-0123456789abcdef", "source": "explicit", "confidence": 0.9}
    )
    for i in range(5):
        batch.add(Sample(T + 0.010 * i + 0.5, "Vehicle.Speed", 50.0 + i / 4))
        batch.add(Sample(T + 0.020 * i, "GEAR.Gear", "D" if i else "N"))
    batch.events.append(Event(T + 0.25, "driver_change", {"from": None, "to": "d1"}))
    return batch


def test_round_trip_keeps_every_sample_to_the_microsecond() -> None:
    batch = _batch()
    payload = decode_payload(encode_payload(batch, "veh-0001", 7, counters={"evicted": 3}))
    assert (payload.vehicle, payload.seq, payload.t0) == ("veh-0001", 7, T)
    assert payload.campaign == "brakes" and payload.driver == {
        "profile": "p-0123456789abcdef",
        "source": "explicit",
        "confidence": 0.9,
    }
    assert payload.counters == {"evicted": 3}
    assert payload.sample_count() == batch.sample_count()
    for name, (times, values) in batch.samples.items():
        got_times, got_values = payload.signals[name]
        assert got_values == values
        assert got_times == pytest.approx(times, abs=1e-6)
    assert payload.events[0].kind == "driver_change"
    assert payload.events[0].timestamp == pytest.approx(T + 0.25, abs=1e-6)


def test_wire_shape_is_the_documented_map() -> None:
    doc = cbor2.loads(encode_payload(_batch(), "veh-0001", 7))
    assert doc["v"] == 1 and doc["t0"] == T
    assert doc["signals"]["GEAR.Gear"] == [[0, 20000, 40000, 60000, 80000], ["N", "D", "D", "D", "D"]]
    assert doc["signals"]["Vehicle.Speed"][0][0] == 500000
    assert doc["events"] == [{"dt": 250000, "kind": "driver_change", "detail": {"from": None, "to": "d1"}}]
    assert "counters" not in doc


def test_numpy_scalars_and_bools_become_plain_numbers() -> None:
    np = pytest.importorskip("numpy")
    batch = Batch()
    batch.add(Sample(T, "a", np.int64(3)))
    batch.add(Sample(T, "b", np.float32(1.5)))
    batch.add(Sample(T, "c", True))
    signals = decode_payload(encode_payload(batch, "v", 0)).signals
    assert (signals["a"][1], signals["b"][1], signals["c"][1]) == ([3], [1.5], [1])


def test_empty_batch_is_a_heartbeat() -> None:
    payload = decode_payload(encode_payload(Batch(), "v", 1, counters={"committed": 1}))
    assert payload.signals == {} and payload.counters == {"committed": 1}


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ([1], "not a CBOR map"),
        ({"v": 3}, "unsupported payload version"),
        ({"v": 2}, "'vehicle'"),  # version 2 is read (payload_v2), and this one is incomplete
        ({"v": 1, "vehicle": "", "seq": 1, "t0": 1.0, "signals": {}}, "'vehicle'"),
        ({"v": 1, "vehicle": "v", "seq": -1, "t0": 1.0, "signals": {}}, "'seq'"),
        ({"v": 1, "vehicle": "v", "seq": 1, "t0": "x", "signals": {}}, "'t0'"),
        ({"v": 1, "vehicle": "v", "seq": 1, "t0": 1.0, "signals": {"s": [[1, 2], [1]]}}, "differ in length"),
        ({"v": 1, "vehicle": "v", "seq": 1, "t0": 1.0, "signals": {"s": [[1.5], [1]]}}, "microseconds"),
        ({"v": 1, "vehicle": "v", "seq": 1, "t0": 1.0, "signals": {}, "events": [{"dt": 1}]}, "an event"),
    ],
)
def test_malformed_payloads_are_refused(doc: object, problem: str) -> None:
    with pytest.raises(PayloadError, match=problem):
        decode_payload(cbor2.dumps(doc))


def test_garbage_is_refused() -> None:
    with pytest.raises(PayloadError, match="not CBOR"):
        decode_payload(b"\x82\x01")


def test_signals_with_equal_or_look_alike_timestamps_each_get_their_own() -> None:
    """Microseconds are computed once per distinct timestamp list; a list with the same length, first and
    last time but other times in between must not reuse them."""
    times = [T, T + 0.001, T + 0.002]
    other = [T, T + 0.0015, T + 0.002]
    batch = Batch(
        samples={
            "a": (times, [1, 2, 3]),
            "b": (list(times), [4.5, 5.5, 6.5]),
            "c": (other, ["x", "y", "z"]),
            "d": (times[:2], [True, False]),
        }
    )
    doc = cbor2.loads(encode_payload(batch, "veh-0001", 1))
    assert doc["signals"] == {
        "a": [[0, 1000, 2000], [1, 2, 3]],
        "b": [[0, 1000, 2000], [4.5, 5.5, 6.5]],
        "c": [[0, 1500, 2000], ["x", "y", "z"]],
        "d": [[0, 1000], [1, 0]],
    }
