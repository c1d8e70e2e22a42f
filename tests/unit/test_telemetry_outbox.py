"""The SQLite outbox: seq never reused, acknowledgement, dead letters, eviction on a full database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.telemetry.cose import Signer, unverified_payload
from firmware_agent.telemetry.outbox import BatchRejectedError, Outbox, OutboxError
from firmware_agent.telemetry.payload import decode_payload
from firmware_agent.telemetry.sealer import BatchSealer
from firmware_agent.values import PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_NORMAL, Batch, Sample


def _seal(batch: Batch, seq: int) -> bytes:
    """A stand-in for `BatchSealer`: the seq plus a payload as large as the batch asks."""
    return cbor2.dumps({"seq": seq, "pad": b"x" * int(batch.samples["size"][1][0])})


def _batch(size: int = 100, priority: int = PRIORITY_NORMAL) -> Batch:
    batch = Batch(priority=priority)
    batch.add(Sample(0.0, "size", size))
    return batch


def _seq_of(data: bytes) -> int:
    return int(cbor2.loads(data)["seq"])


def test_seq_continues_across_reopen_after_everything_is_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, _seal) as outbox:
        assert [outbox.commit(_batch()) for _ in range(3)] == [0, 1, 2]
        assert [p.seq for p in outbox.pending(10)] == [0, 1, 2]
        assert [p.seq for p in outbox.pending(1, after_seq=0)] == [1]
        assert all(_seq_of(p.data) == p.seq for p in outbox.pending(10))
        assert outbox.acknowledge(0) and outbox.acknowledge(1) and outbox.acknowledge(2)
        assert not outbox.acknowledge(2)
        assert outbox.pending_count() == 0
    with Outbox(path, _seal) as outbox:
        assert outbox.commit(_batch()) == 3
        assert outbox.counters()["committed"] == 4 and outbox.counters()["acknowledged"] == 3
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_dead_letter_moves_the_row_and_counts(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", _seal) as outbox:
        seq = outbox.commit(_batch())
        assert outbox.dead_letter(seq, "PUBACK 0x87 Not authorized")
        assert outbox.pending_count() == 0
        (letter,) = outbox.dead_letters()
        assert (letter.seq, letter.reason, _seq_of(letter.data)) == (seq, "PUBACK 0x87 Not authorized", seq)
        assert outbox.counters()["dead_lettered"] == 1
        assert not outbox.dead_letter(seq, "again")


def test_seal_failure_consumes_no_seq(tmp_path: Path) -> None:
    def failing(batch: Batch, seq: int) -> bytes:
        raise RuntimeError("signer broke")

    with Outbox(tmp_path / "o.db", failing) as outbox, pytest.raises(RuntimeError):
        outbox.commit(_batch())
    with Outbox(tmp_path / "o.db", _seal) as outbox:
        assert outbox.commit(_batch()) == 0


def test_full_database_evicts_low_then_normal_never_high_for_them(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, _seal, max_bytes=256 * 1024) as outbox:
        high = [outbox.commit(_batch(3000, PRIORITY_HIGH)) for _ in range(10)]
        low = [outbox.commit(_batch(3000, PRIORITY_LOW)) for _ in range(20)]
        normal = [outbox.commit(_batch(3000, PRIORITY_NORMAL)) for _ in range(200)]
        kept = {p.seq for p in outbox.pending(1000)}
        counters = outbox.counters()
        assert counters["disk_full"] > 0 and counters["evicted"] > 0
        assert counters["evicted_bytes"] >= 3000 * counters["evicted"]
        assert set(high) <= kept, "high-priority batches were evicted for normal ones"
        assert not set(low) & kept, "low-priority batches must go first"
        assert normal[-1] in kept and normal[0] not in kept, "oldest normal batches go next"
        assert counters["committed"] == 230 == len(kept) + counters["evicted"]
        # A low-priority batch finding only high and normal rows is refused, not stored over them.
        before = {p.seq for p in outbox.pending(1000)}
        with pytest.raises(BatchRejectedError):
            outbox.commit(_batch(100_000, PRIORITY_LOW))
        assert {p.seq for p in outbox.pending(1000)} == before
        assert outbox.counters()["evicted"] == counters["evicted"]
        assert outbox.counters()["rejected"] == 1
    with Outbox(path, _seal, max_bytes=256 * 1024) as outbox:
        assert outbox.counters()["rejected"] == 1, "counters are persisted"


def test_batch_larger_than_the_bound_is_rejected_without_consuming_seq(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", _seal, max_bytes=128 * 1024) as outbox:
        outbox.commit(_batch())
        with pytest.raises(BatchRejectedError, match="does not fit"):
            outbox.commit(_batch(512 * 1024, PRIORITY_HIGH))
        assert outbox.commit(_batch()) == 1
        assert outbox.counters()["rejected"] == 1
        assert outbox.counters()["evicted"] == 0, "nothing is evicted for a batch that can never fit"


def test_eviction_counters_ride_in_the_next_payload(tmp_path: Path) -> None:
    holder: list[Outbox] = []
    sealer = BatchSealer(
        "veh-0001", Signer(Ed25519PrivateKey.generate()), counters=lambda: holder[0].counters()
    )
    with Outbox(tmp_path / "o.db", sealer, max_bytes=128 * 1024) as outbox:
        holder.append(outbox)
        for i in range(100):
            batch = Batch()
            for j in range(100):
                batch.add(Sample(1.7e9 + i + j / 100, "Vehicle.Speed", float(i * j)))
            outbox.commit(batch)
        latest = outbox.pending(1, after_seq=outbox.next_seq() - 2)[0]
        counters = decode_payload(unverified_payload(latest.data)).counters
        assert counters is not None and counters["evicted"] > 0 and counters["disk_full"] > 0
        assert counters["committed"] == 99, "the counters as of the commit before this one"


def test_unusable_outbox_path_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(OutboxError, match="not-a-db: cannot open the outbox"):
        Outbox(tmp_path / "not-a-db", _seal)
