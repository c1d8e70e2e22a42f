"""The outbox survives `kill -9` mid-commit: no corruption, no seq reused, every committed batch present."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.telemetry.cose import Signer, unverified_payload, verify_sign1
from firmware_agent.telemetry.outbox import Outbox
from firmware_agent.telemetry.payload import decode_payload
from firmware_agent.telemetry.sealer import BatchSealer
from firmware_agent.telemetry.topics import telemetry_topic
from firmware_agent.values import Batch, Sample

# Commits batches forever and prints each seq once `commit()` has returned (i.e. once it is durable).
_WRITER = """
import sys
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from firmware_agent.telemetry.cose import Signer
from firmware_agent.telemetry.outbox import Outbox
from firmware_agent.telemetry.sealer import BatchSealer
from firmware_agent.values import Batch, Sample

outbox = Outbox(Path(sys.argv[1]), BatchSealer("veh-0001", Signer(Ed25519PrivateKey.generate())))
i = 0
while True:
    batch = Batch()
    batch.add(Sample(1.7e9 + i, "Vehicle.Speed", float(i)))
    seq = outbox.commit(batch)
    if seq % 3 == 0:
        outbox.acknowledge(seq)  # acknowledged rows are deleted: seq must not come from max(rowid)
    print(seq, flush=True)
    i += 1
"""


def _kill_writer_after(path: Path, lines: int) -> list[int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert proc.stdout is not None
    durable = [int(proc.stdout.readline()) for _ in range(lines)]
    proc.send_signal(signal.SIGKILL)
    durable.extend(int(line) for line in proc.stdout.read().split())  # printed before the kill landed
    proc.wait()
    return durable


def test_kill_9_loses_nothing_and_reuses_no_seq(tmp_path: Path) -> None:
    path = tmp_path / "state" / "outbox.db"
    first = _kill_writer_after(path, 40)
    second = _kill_writer_after(path, 40)
    assert first == list(range(len(first)))
    assert second[0] >= first[-1] + 1, "a seq was reused after kill -9"
    assert second == list(range(second[0], second[0] + len(second)))

    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    key = Ed25519PrivateKey.generate()
    signer = Signer(key)
    with Outbox(path, BatchSealer("veh-0001", signer)) as outbox:
        stored = {p.seq: p.data for p in outbox.pending(10_000)}
        for seq in first + second:
            assert seq % 3 == 0 or seq in stored, f"committed batch {seq} is missing"
        for seq, data in stored.items():  # the writers' keys are gone: check the seq inside the payload
            assert decode_payload(unverified_payload(data)).seq == seq
        batch = Batch()
        batch.add(Sample(1.7e9, "Vehicle.Speed", 1.0))
        seq = outbox.commit(batch)
        assert seq > max(first + second)
        data = outbox.pending(1, after_seq=seq - 1)[0].data
        payload = verify_sign1(data, telemetry_topic("veh-0001"), {signer.kid: key.public_key()})
        assert decode_payload(payload).seq == seq
