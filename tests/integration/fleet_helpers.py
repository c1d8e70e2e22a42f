"""A simulated fleet for ingest tests and the benchmark: signed batches made ahead, published over MQTT."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.telemetry.broker import BrokerConfig, make_client
from firmware_agent.telemetry.cose import Signer
from firmware_agent.telemetry.sealer import BatchSealer
from firmware_agent.values import Batch, Event

#: Signals of every test batch: three numeric series, one with value-table names.
SIGNALS = ("Vehicle.Speed", "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed", "Vehicle.Gear")


@dataclass
class FleetVehicle:
    """One vehicle of a test fleet: its id, key and sealer."""

    vehicle_id: str
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def __post_init__(self) -> None:
        self.sealer = BatchSealer(self.vehicle_id, Signer(self.key))

    @property
    def topic(self) -> str:
        return self.sealer.topic


def make_batch(seq: int, t0: float, samples_per_signal: int = 10, with_event: bool = False) -> Batch:
    """A batch of `len(SIGNALS) * samples_per_signal` samples starting at `t0`, 10 Hz."""
    batch = Batch(
        campaign="drive", driver={"profile": "p-0123456789abcdef", "source": "explicit", "confidence": 1.0}
    )
    for i in range(samples_per_signal):
        t = t0 + i / 10
        batch.samples.setdefault(SIGNALS[0], ([], []))
        batch.samples[SIGNALS[0]][0].append(t)
        batch.samples[SIGNALS[0]][1].append(50.0 + i + seq % 7)
        batch.samples.setdefault(SIGNALS[1], ([], []))
        batch.samples[SIGNALS[1]][0].append(t)
        batch.samples[SIGNALS[1]][1].append(80 - seq % 50)
        batch.samples.setdefault(SIGNALS[2], ([], []))
        batch.samples[SIGNALS[2]][0].append(t)
        batch.samples[SIGNALS[2]][1].append("D" if i % 2 else "N")
    if with_event:
        batch.events.append(Event(t0 + 0.05, "hard_braking", {"decel": 9.1}))
    batch.counters = {"outbox.evicted": 0}
    return batch


def seal_fleet(
    vehicles: Sequence[FleetVehicle], batches_each: int, t0: float, samples_per_signal: int = 10
) -> list[tuple[str, bytes]]:
    """Every vehicle's batches 0..batches_each-1, interleaved as a fleet sends them: (topic, message)."""
    messages = []
    for seq in range(batches_each):
        for vehicle in vehicles:
            batch = make_batch(seq, t0 + seq, samples_per_signal, with_event=seq % 10 == 3)
            messages.append((vehicle.topic, vehicle.sealer(batch, seq)))
    return messages


class Publisher:
    """Publishes (topic, message) pairs with QoS 1, `rate` messages/s (0: as fast as acks come back)."""

    def __init__(self, broker: BrokerConfig, client_id: str = "", max_inflight: int = 200) -> None:
        self._client = make_client(broker, client_id)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        connected = threading.Event()
        self._client.on_connect = lambda *args: connected.set()
        host, port = broker.address()
        self._client.connect(host, port)
        self._client.loop_start()
        if not connected.wait(10):
            raise RuntimeError("publisher: no connection")
        self.sent_at: list[float] = []

    def publish(self, messages: Sequence[tuple[str, bytes]], rate: float = 0.0, timeout: float = 120) -> None:
        """Publish all and wait until the broker acknowledged each."""
        infos = []
        started = time.monotonic()
        for n, (topic, message) in enumerate(messages):
            if rate:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.sent_at.append(time.time())
            infos.append(self._client.publish(topic, message, qos=1))
        for info in infos:
            info.wait_for_publish(timeout)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
