"""A full outbox end to end: eviction while offline, then the backend sees the gaps and the counters."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.telemetry.cose import Signer
from firmware_agent.telemetry.outbox import Outbox
from firmware_agent.telemetry.sealer import BatchSealer
from firmware_agent.telemetry.subscriber import Subscriber
from firmware_agent.telemetry.uploader import Uploader, UploaderConfig
from firmware_agent.telemetry.verify import Problem, TelemetryVerifier
from firmware_agent.values import PRIORITY_HIGH, PRIORITY_NORMAL, Batch, Sample
from tests.integration.mosquitto import Mosquitto, backend_broker, vehicle_broker


def test_evictions_show_up_as_counted_gaps_at_the_backend(tmp_path: Path, mosquitto: Mosquitto) -> None:
    key = Ed25519PrivateKey.generate()
    signer = Signer(key)
    holder: list[Outbox] = []
    sealer = BatchSealer("veh-0001", signer, counters=lambda: holder[0].counters())
    outbox = Outbox(tmp_path / "outbox.db", sealer, max_bytes=256 * 1024)
    holder.append(outbox)
    # Offline for a while: 120 batches of ~4 KiB do not fit in 256 KiB; every 10th batch is high priority.
    for i in range(120):
        batch = Batch(priority=PRIORITY_HIGH if i % 10 == 0 else PRIORITY_NORMAL)
        for j in range(400):
            batch.add(Sample(1.7e9 + i + j / 400, "Vehicle.Speed", i * 1000.0 + j + 0.1))
        outbox.commit(batch)
    evicted = outbox.counters()["evicted"]
    assert evicted > 0 and outbox.counters()["disk_full"] > 0
    # A heartbeat carries the final counters.
    outbox.commit(Batch())
    pending = outbox.pending_count()

    verifier = TelemetryVerifier({signer.kid: key.public_key()})
    uploader = Uploader(UploaderConfig(vehicle_broker(mosquitto, "veh-0001"), "veh-0001"), outbox)
    with Subscriber(backend_broker(mosquitto), ["vehicles/+/telemetry"]) as backend:
        uploader.start()
        assert uploader.stop(timeout=30)
        received = [
            verifier.check(topic, message) for topic, message in backend.messages(count=pending, timeout=30)
        ]
    assert not [r for r in received if isinstance(r, Problem)]
    gaps = verifier.finish()
    assert gaps and verifier.missing == evicted, f"gaps {gaps} do not add up to {evicted} evicted batches"
    heartbeat = received[-1].payload  # type: ignore[union-attr]
    assert heartbeat.counters is not None and heartbeat.counters["evicted"] == evicted
    seqs = [r.payload.seq for r in received if not isinstance(r, Problem)]
    assert [seq for seq in seqs if seq < 120 and seq % 10 == 0] == list(range(0, 120, 10)), (
        "high-priority batches are never evicted for normal ones"
    )
