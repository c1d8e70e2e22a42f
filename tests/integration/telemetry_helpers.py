"""Building blocks for telemetry tests: a vehicle (key, outbox, uploader) and pycose verification."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from firmware_agent.telemetry.broker import BrokerConfig
from firmware_agent.telemetry.cose import Signer
from firmware_agent.telemetry.outbox import Outbox
from firmware_agent.telemetry.payload import Payload, decode_payload
from firmware_agent.telemetry.sealer import BatchSealer
from firmware_agent.telemetry.uploader import MessageHandler, Uploader, UploaderConfig
from firmware_agent.values import Batch, Sample

T0 = 1_785_000_000.0


@dataclass
class Vehicle:
    """One agent's telemetry half: signing key, outbox, uploader (not started)."""

    vehicle_id: str
    key: Ed25519PrivateKey
    outbox: Outbox
    uploader: Uploader

    def commit(self, n: int, samples: int = 10) -> list[int]:
        """Commit `n` batches of `samples` speed samples each and wake the uploader; their seqs."""
        seqs = []
        for _ in range(n):
            seq_base = self.outbox.next_seq()
            batch = Batch()
            for i in range(samples):
                batch.add(Sample(T0 + seq_base + i / 100, "Vehicle.Speed", float(i)))
            seqs.append(self.outbox.commit(batch))
        self.uploader.notify()
        return seqs


def make_vehicle(
    tmp_path: Path,
    vehicle_id: str,
    broker: BrokerConfig,
    on_campaign: MessageHandler | None = None,
    max_inflight: int = 20,
    payload_version: int = 2,
) -> Vehicle:
    """A vehicle with a fresh key and an outbox under `tmp_path/vehicle_id`, publishing to `broker`."""
    key = Ed25519PrivateKey.generate()
    holder: list[Outbox] = []
    sealer = BatchSealer(
        vehicle_id, Signer(key), lambda: holder[0].counters(), payload_version=payload_version
    )
    outbox = Outbox(tmp_path / vehicle_id / "outbox.db", sealer)
    holder.append(outbox)
    config = UploaderConfig(broker, vehicle_id, max_inflight=max_inflight, reconnect_max_delay=2)
    return Vehicle(vehicle_id, key, outbox, Uploader(config, outbox, on_campaign=on_campaign))


def pycose_verify(message: bytes, topic: str, key: Ed25519PrivateKey) -> Payload:
    """Verify with pycose (independent of our COSE code) and decode; fails the test when invalid."""
    decoded = Sign1Message.decode(message)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    decoded.key = OKPKey(crv=Ed25519, x=raw)
    decoded.external_aad = topic.encode()  # type: ignore[misc]  # settable at run time
    assert decoded.verify_signature(), f"pycose: bad signature on {topic}"
    assert decoded.payload is not None
    return decode_payload(decoded.payload)
