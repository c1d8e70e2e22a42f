"""Sealing: turn a batch and its sequence number into the signed message the outbox stores."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from firmware_agent.telemetry.cose import Signer
from firmware_agent.telemetry.payload import encode_payload
from firmware_agent.telemetry.payload_v2 import ScaleHints, encode_payload_v2
from firmware_agent.telemetry.topics import telemetry_topic
from firmware_agent.values import Batch


class BatchSealer:
    """`seal(batch, seq) -> bytes`: encode the payload and sign it for the vehicle's telemetry topic.

    `counters`, when given, is called on every seal and its result rides in the payload's `counters` map
    (e.g. the outbox's and the uploader's counters, so that the backend sees losses), unless the batch
    brings its own (`Batch.counters`: a batch split after sealing keeps the counters it was sealed with).
    `payload_version` 2 (the default) writes the compact format of `payload_v2`, where `scales` (sample name
    -> DBC scale and offset, `payload_v2.scale_hints`) lets numbers travel as raw integers; 1 writes the
    format receivers that predate version 2 read.
    """

    def __init__(
        self,
        vehicle_id: str,
        signer: Signer,
        counters: Callable[[], Mapping[str, int]] | None = None,
        payload_version: int = 2,
        scales: ScaleHints | None = None,
    ) -> None:
        if payload_version not in (1, 2):
            raise ValueError(f"payload version {payload_version} is not 1 or 2")
        self.vehicle_id = vehicle_id
        self.payload_version = payload_version
        self._scales = scales
        self.topic = telemetry_topic(vehicle_id)  # validates the id
        self._signer = signer
        self._counters = counters

    def __call__(self, batch: Batch, seq: int) -> bytes:
        """The COSE_Sign1 message of `batch` as number `seq`, signed for this vehicle's topic."""
        if batch.counters is not None:
            counters: Mapping[str, int] | None = batch.counters
        else:
            counters = self._counters() if self._counters else None
        if self.payload_version == 2:
            payload = encode_payload_v2(batch, self.vehicle_id, seq, counters, self._scales)
        else:
            payload = encode_payload(batch, self.vehicle_id, seq, counters)
        return self._signer.sign(payload, self.topic)
