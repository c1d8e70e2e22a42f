"""The uploader against a real mosquitto: delivery verified by pycose, broker restarts, flow control."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

from firmware_agent.telemetry.broker import make_client
from firmware_agent.telemetry.subscriber import Subscriber
from firmware_agent.values import Batch, Sample
from tests.integration.mosquitto import BrokerFactory, Mosquitto, backend_broker, vehicle_broker
from tests.integration.telemetry_helpers import make_vehicle, pycose_verify


def test_batches_arrive_signed_and_verify_with_pycose(tmp_path: Path, mosquitto: Mosquitto) -> None:
    vehicle = make_vehicle(tmp_path, "veh-0001", vehicle_broker(mosquitto, "veh-0001"))
    with Subscriber(backend_broker(mosquitto), ["vehicles/+/telemetry"]) as backend:
        vehicle.uploader.start()
        seqs = vehicle.commit(5)
        received = list(backend.messages(count=5, timeout=20))
        assert vehicle.uploader.stop(timeout=20)
    assert [topic for topic, _ in received] == ["vehicles/veh-0001/telemetry"] * 5
    payloads = [pycose_verify(message, topic, vehicle.key) for topic, message in received]
    assert [p.seq for p in payloads] == seqs == [0, 1, 2, 3, 4]
    assert all(p.vehicle == "veh-0001" and p.sample_count() == 10 for p in payloads)
    assert payloads[-1].counters is not None and payloads[-1].counters["committed"] == 4
    assert vehicle.outbox.pending_count() == 0
    assert vehicle.outbox.counters()["acknowledged"] == 5
    counters = vehicle.uploader.counters()
    assert (counters["published"], counters["acknowledged"], counters["callback_errors"]) == (5, 5, 0)


def test_status_topic_has_retained_birth_and_offline_on_stop(tmp_path: Path, mosquitto: Mosquitto) -> None:
    vehicle = make_vehicle(tmp_path, "veh-0001", vehicle_broker(mosquitto, "veh-0001"))
    vehicle.uploader.start()
    assert vehicle.uploader.wait_connected(10)
    assert vehicle.uploader.flush(10)
    with Subscriber(backend_broker(mosquitto), ["vehicles/+/status"]) as watcher:
        assert watcher.get(10) == ("vehicles/veh-0001/status", b"online")  # retained
        vehicle.uploader.stop(timeout=5)
        assert watcher.get(10) == ("vehicles/veh-0001/status", b"offline")


def test_broker_restart_loses_nothing_and_seq_stays_contiguous(
    tmp_path: Path, mosquitto_persistent: Mosquitto
) -> None:
    broker = mosquitto_persistent
    vehicle = make_vehicle(tmp_path, "veh-0001", vehicle_broker(broker, "veh-0001"))
    backend = Subscriber(
        backend_broker(broker),
        ["vehicles/+/telemetry"],
        client_id="backend",
        session_expiry=3600,
    )
    with backend:
        vehicle.uploader.start()
        vehicle.commit(10)
        assert vehicle.uploader.flush(20)
        broker.stop()
        vehicle.commit(10)  # while the broker is down: kept in the outbox
        assert vehicle.outbox.pending_count() == 10
        broker.start()
        vehicle.commit(5)
        assert vehicle.uploader.flush(30), f"not flushed after restart: {vehicle.uploader.counters()}"
        # QoS 1 is at-least-once: the broker may re-deliver to the backend what it had in flight when it
        # stopped. Collect until every seq arrived; duplicates must be byte-identical re-deliveries.
        by_seq: dict[int, bytes] = {}
        for topic, message in backend.messages(timeout=30):
            seq = pycose_verify(message, topic, vehicle.key).seq
            assert by_seq.setdefault(seq, message) == message, f"two different batches with seq {seq}"
            if len(by_seq) == 25:
                break
    vehicle.uploader.stop(timeout=5)
    assert sorted(by_seq) == list(range(25)), f"lost or extra batches: {sorted(by_seq)}"
    assert vehicle.outbox.pending_count() == 0
    assert vehicle.uploader.counters()["disconnects"] >= 1 and vehicle.uploader.counters()["connects"] >= 2


def test_inflight_stays_within_the_brokers_receive_maximum(
    tmp_path: Path, mosquitto_factory: BrokerFactory
) -> None:
    broker = mosquitto_factory(max_inflight=3)
    vehicle = make_vehicle(tmp_path, "veh-0001", vehicle_broker(broker, "veh-0001"), max_inflight=20)
    vehicle.uploader.start()
    assert vehicle.uploader.wait_connected(10)
    vehicle.commit(40, samples=1)
    assert vehicle.uploader.stop(timeout=30)
    assert vehicle.uploader.inflight_limit == 2, "Receive Maximum 3, one slot kept for the status message"
    assert 1 <= vehicle.uploader.max_inflight_seen <= 2
    assert vehicle.outbox.counters()["acknowledged"] == 40


def test_a_failing_message_handler_is_counted_and_does_not_stop_uploads(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    handled = threading.Event()

    def broken_handler(topic: str, payload: bytes) -> None:
        handled.set()
        raise RuntimeError("bug in the campaign handler")

    vehicle = make_vehicle(
        tmp_path, "veh-0001", vehicle_broker(mosquitto, "veh-0001"), on_campaign=broken_handler
    )
    backend = make_client(backend_broker(mosquitto), "backend")
    backend.connect(*backend_broker(mosquitto).address())
    backend.loop_start()
    try:
        vehicle.uploader.start()
        backend.publish("vehicles/veh-0001/campaigns", b"x", qos=1, retain=True).wait_for_publish(10)
        assert handled.wait(10)
        vehicle.commit(3)
        assert vehicle.uploader.flush(20), "paho's network thread died with the handler's exception"
    finally:
        backend.disconnect()
        backend.loop_stop()
        vehicle.uploader.stop(timeout=5)
    assert vehicle.uploader.counters()["callback_errors"] == 1
    assert vehicle.outbox.counters()["acknowledged"] == 3


def test_agent_started_before_the_broker_connects_when_it_comes_up(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    mosquitto.stop()
    vehicle = make_vehicle(tmp_path, "veh-0001", vehicle_broker(mosquitto, "veh-0001"))
    vehicle.uploader.start()
    vehicle.commit(2)
    assert vehicle.outbox.pending_count() == 2
    mosquitto.start()
    assert vehicle.uploader.stop(timeout=30)
    assert vehicle.outbox.counters()["acknowledged"] == 2


def test_acknowledgement_the_outbox_cannot_record_yet_is_retried(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A PUBACK whose delete fails (another process holds the outbox's write lock) is applied on a later
    turn, not forgotten while its batch stays in the outbox."""
    vehicle = make_vehicle(tmp_path, "veh-0001", vehicle_broker(mosquitto, "veh-0001"))
    vehicle.commit(2)
    with contextlib.closing(sqlite3.connect(vehicle.outbox.path, isolation_level=None, timeout=0)) as other:
        other.execute("BEGIN IMMEDIATE")  # sqlite's 5 s busy timeout, then "database is locked"
        vehicle.uploader.start()
        deadline = time.monotonic() + 30
        while vehicle.uploader.counters()["worker_errors"] == 0:
            assert time.monotonic() < deadline, "the locked outbox never made the worker fail"
            time.sleep(0.05)
        other.execute("ROLLBACK")
    assert vehicle.uploader.flush(20)
    assert vehicle.outbox.pending_count() == 0
    assert vehicle.uploader.counters()["acknowledged"] == 2
    vehicle.uploader.stop(timeout=5)


def test_batches_are_sized_to_the_brokers_maximum_packet_size(
    tmp_path: Path, mosquitto_factory: BrokerFactory
) -> None:
    """Batches stored before the first CONNACK are split once the limit is known; later ones before they
    are stored; one that cannot be split is dead-lettered and counted. Nothing loops, everything arrives."""
    broker = mosquitto_factory(max_packet_size=8192)
    # payload version 1: these regular samples (and the 9000 x's) compress far below 8 KiB in version 2,
    # whose splitting tests/unit/test_telemetry_sizing.py and test_run_e2e.py cover
    vehicle = make_vehicle(tmp_path, "veh-0001", vehicle_broker(broker, "veh-0001"), payload_version=1)
    early = vehicle.commit(3, samples=2000)  # ~20 KB each, the limit unknown yet
    huge = Batch()
    huge.add(Sample(1_785_000_100.0, "Infotainment.Text", "x" * 9000))
    with Subscriber(backend_broker(broker), ["vehicles/+/telemetry"]) as backend:
        vehicle.uploader.start()
        assert vehicle.uploader.wait_connected(10)
        assert vehicle.uploader.flush(20)
        assert vehicle.outbox.message_limit is not None and vehicle.outbox.message_limit < 8192
        late = vehicle.commit(2, samples=2000)
        vehicle.outbox.commit(huge)
        vehicle.uploader.notify()
        assert vehicle.uploader.flush(20)
        received = []
        while (item := backend.get(2.0)) is not None:
            received.append(item)
        uploader = vehicle.uploader.counters()
        assert uploader["connects"] == 1 and uploader["disconnects"] == 0, "no connect/disconnect loop"
        assert vehicle.uploader.stop(timeout=10)
    payloads = {p.seq: p for p in (pycose_verify(m, t, vehicle.key) for t, m in received)}
    counters = vehicle.outbox.counters()
    assert counters["oversize"] == 1 and counters["dead_lettered"] == 1
    assert len(payloads) == counters["committed"] - 1 == counters["acknowledged"]
    assert set(early) | set(late) <= set(payloads)
    assert sum(p.sample_count() for p in payloads.values()) == 5 * 2000, "every sample arrived once"
    assert max(len(m) for _, m in received) <= vehicle.outbox.message_limit
