"""Batches sized to the broker's Maximum Packet Size: the split policy, split before storing, split after."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.telemetry.cose import Signer, unverified_payload
from firmware_agent.telemetry.outbox import Outbox
from firmware_agent.telemetry.payload import Payload, decode_payload
from firmware_agent.telemetry.sealer import BatchSealer
from firmware_agent.telemetry.sizing import PUBLISH_FIXED_OVERHEAD, message_limit, split_batch
from firmware_agent.values import PRIORITY_HIGH, Batch, Event, Sample

VEHICLE = "veh-0001"
T0 = 1_785_000_000.0


def _batch(samples: int, seed: int = 0, signals: int = 20) -> Batch:
    rng = random.Random(seed)
    batch = Batch(campaign="all", driver={"profile": None, "source": "none", "confidence": 0.0})
    for i in range(samples):
        batch.add(Sample(T0 + seed + i / samples, f"S{i % signals}", rng.random()))
    batch.events.append(Event(T0 + seed + 0.1, "trigger", {"condition": "early"}))
    batch.events.append(Event(T0 + seed + 0.9, "trigger", {"condition": "late"}))
    return batch


def _samples(batch: Batch | Payload) -> list[tuple[str, float, object]]:
    signals = batch.samples if isinstance(batch, Batch) else batch.signals
    return sorted(
        (name, round(t, 6), v)
        for name, (times, values) in signals.items()
        for t, v in zip(times, values, strict=True)
    )


def _outbox(path: Path, counters: dict[str, int] | None = None, version: int = 2) -> Outbox:
    holder: list[Outbox] = []
    report = (lambda: counters) if counters is not None else (lambda: holder[0].counters())
    signer = Signer(Ed25519PrivateKey.generate())
    outbox = Outbox(path, BatchSealer(VEHICLE, signer, counters=report, payload_version=version))
    holder.append(outbox)
    return outbox


def _stored(outbox: Outbox) -> list[tuple[int, Payload, int]]:
    return [(p.seq, decode_payload(unverified_payload(p.data)), len(p.data)) for p in outbox.pending(1000)]


def test_message_limit_leaves_room_for_the_publish_header() -> None:
    assert message_limit(65536, "vehicles/veh-0001/telemetry") == 65536 - PUBLISH_FIXED_OVERHEAD - 27


def test_split_halves_by_time_keeps_every_sample_event_and_the_batch_fields() -> None:
    batch = _batch(1001)
    batch.counters = {"outbox.evicted": 3}
    halves = split_batch(batch)
    assert halves is not None
    first, second = halves
    assert first.sample_count() == 500 and second.sample_count() == 501
    assert max(max(t) for t, _ in first.samples.values()) <= min(min(t) for t, _ in second.samples.values())
    assert sorted(_samples(first) + _samples(second)) == _samples(batch)
    assert [e.detail["condition"] for e in first.events] == ["early"]
    assert [e.detail["condition"] for e in second.events] == ["late"]
    for half in halves:
        assert (half.campaign, half.driver, half.priority) == (batch.campaign, batch.driver, batch.priority)
        for times, _ in half.samples.values():
            assert times == sorted(times)
    assert first.counters == {"outbox.evicted": 3} and second.counters == {}, "counters travel once"


def test_split_of_what_cannot_be_halved() -> None:
    one = Batch()
    one.add(Sample(T0, "x", 1.0))
    assert split_batch(one) is None
    assert split_batch(Batch(events=[Event(T0, "bus_gap")])) is None
    one.events.append(Event(T0, "bus_gap"))
    halves = split_batch(one)
    assert halves is not None
    assert (halves[0].sample_count(), len(halves[0].events)) == (1, 0)
    assert (halves[1].sample_count(), len(halves[1].events)) == (0, 1)


@pytest.mark.parametrize("version", [1, 2])
def test_outbox_splits_before_storing_and_dead_letters_what_cannot_fit(tmp_path: Path, version: int) -> None:
    outbox = _outbox(tmp_path / "o.db", version=version)
    outbox.set_message_limit(4096)
    batch = _batch(2000)
    first = outbox.commit(batch)
    stored = _stored(outbox)
    assert first == 0 and len(stored) >= 4
    assert all(size <= 4096 for _, _, size in stored)
    assert [seq for seq, _, _ in stored] == list(range(len(stored))), "parts take consecutive seqs"
    assert sorted(s for _, p, _ in stored for s in _samples(p)) == _samples(batch)
    assert sum(len(p.events) for _, p, _ in stored) == 2
    assert all(p.campaign == "all" and p.driver == batch.driver for _, p, _ in stored)
    # one sample larger than any packet the broker takes: dead-lettered, counted, never retried
    huge = Batch()
    text = random.Random(1).randbytes(8_000).hex()  # random: zlib (version 2) cannot shrink it
    huge.add(Sample(T0, "Infotainment.Text", text))
    seq = outbox.commit(huge)
    assert seq == len(stored) and outbox.next_seq() == seq + 1
    [dead] = outbox.dead_letters()
    assert dead.seq == seq and dead.reason.startswith("oversize: ")
    counters = outbox.counters()
    assert counters["oversize"] == 1 and counters["dead_lettered"] == 1
    assert counters["split"] == len(stored) - 1
    assert counters["committed"] == len(stored) + 1 == outbox.pending_count() + counters["dead_lettered"]
    outbox.close()
    reopened = _outbox(tmp_path / "o.db")
    assert reopened.message_limit == 4096, "the broker's limit is known before the next connection"
    reopened.close()


@pytest.mark.parametrize("version", [1, 2])
def test_a_batch_stored_before_the_limit_was_known_is_split_in_place(tmp_path: Path, version: int) -> None:
    outbox = _outbox(tmp_path / "o.db", counters={"outbox.evicted": 7}, version=version)
    batches = [_batch(1500, seed=i) for i in range(2)]
    for batch in batches:
        batch.priority = PRIORITY_HIGH
        outbox.commit(batch)
    assert outbox.refit(0) == 1, "no limit: nothing to do"
    outbox.set_message_limit(4096)
    parts = outbox.refit(0)
    assert parts >= 3
    stored = _stored(outbox)
    assert stored[0][0] == 0, "the first part keeps the batch's seq (it was never published)"
    assert [seq for seq, _, _ in stored] == list(range(2 + parts - 1))
    firsts = [p for seq, p, _ in stored if seq != 1]
    assert sorted(s for p in firsts for s in _samples(p)) == _samples(batches[0])
    assert all(size <= 4096 for seq, _, size in stored if seq != 1)
    assert stored[0][1].counters == {"outbox.evicted": 7}, "the counters it was sealed with"
    assert all(p.counters is None for p in firsts[1:])
    assert all(p.priority == PRIORITY_HIGH for p in outbox.pending(1000))
    assert outbox.counters()["committed"] == 2 + parts - 1 == outbox.pending_count()
    outbox.close()
