"""Sealing: turn a batch and its sequence number into the signed message the outbox stores."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from firmware_agent.telemetry.cose import Signer
from firmware_agent.telemetry.payload import encode_payload
from firmware_agent.telemetry.topics import telemetry_topic
from firmware_agent.values import Batch


class BatchSealer:
    """`seal(batch, seq) -> bytes`: encode the payload and sign it for the vehicle's telemetry topic.

    `counters`, when given, is called on every seal and its result rides in the payload's `counters` map
    (e.g. the outbox's and the uploader's counters, so that the backend sees losses), unless the batch
    brings its own (`Batch.counters`: a batch split after sealing keeps the counters it was sealed with).
    """

    def __init__(
        self,
        vehicle_id: str,
        signer: Signer,
        counters: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.vehicle_id = vehicle_id
        self.topic = telemetry_topic(vehicle_id)  # validates the id
        self._signer = signer
        self._counters = counters

    def __call__(self, batch: Batch, seq: int) -> bytes:
        """The COSE_Sign1 message of `batch` as number `seq`, signed for this vehicle's topic."""
        if batch.counters is not None:
            counters: Mapping[str, int] | None = batch.counters
        else:
            counters = self._counters() if self._counters else None
        return self._signer.sign(encode_payload(batch, self.vehicle_id, seq, counters), self.topic)
