"""One ingest worker: MQTT 5 shared subscription in, verified batches into PostgreSQL, acks after the commit.

    broker ── $share/GROUP/vehicles/+/telemetry (QoS 1, persistent session, manual ack)
       └─> paho network thread: queue the message (never ack here)
    main thread: take what is queued (a group) ─ verify each (TelemetryVerifier, keys from the registry)
                 ─ FleetStore.store(group) in one transaction ─ commit ─ PUBACK each, in arrival order

Nothing is acknowledged before it is durable: a worker killed with `kill -9` leaves its unacknowledged
messages in its broker session, which re-delivers them when it reconnects with the same client id (or,
on brokers that re-dispatch shared-subscription messages, to another worker); what was committed but not
acknowledged comes back as a byte-identical duplicate and is counted, not stored twice. While PostgreSQL
is down the worker keeps the group, reconnects with a back-off and stores it then; the broker stops sending
once `receive_maximum` messages are unacknowledged, which bounds the worker's memory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from firmware_agent.errors import UserError
from firmware_agent.fleet.store import FleetStore, KeyRecord, Quarantined, StoreResult, Verified, load_keys
from firmware_agent.telemetry.broker import BrokerConfig, make_client
from firmware_agent.telemetry.cose import message_kid
from firmware_agent.telemetry.verify import Problem, TelemetryVerifier

log = logging.getLogger(__name__)

TELEMETRY_FILTER = "vehicles/+/telemetry"


def shared_filter(group: str) -> str:
    """The MQTT 5 shared subscription of an ingest group."""
    if not group or any(c in group for c in "/+#"):
        raise UserError(f"share group {group!r}: must be non-empty, without '/', '+' or '#'")
    return f"$share/{group}/{TELEMETRY_FILTER}"


@dataclass
class IngestSettings:
    """How a worker connects and how big its groups are."""

    group: str = "fleet-ingest"
    client_id: str = "fleet-ingest-0"
    session_expiry: int = 86400  #: seconds the broker keeps the session (and its messages) while away
    receive_maximum: int = 1000  #: unacknowledged messages the broker may send (bounds memory)
    max_group: int = 500  #: messages per transaction at most
    key_refresh: float = 10.0  #: seconds between key registry reloads (revocations take effect)
    maintenance_interval: float = 3600.0  #: partitions ahead and retention
    connect_timeout: float = 15.0


@dataclass
class IngestCounters:
    """What the worker did since it started."""

    received: int = 0
    stored: int = 0
    samples: int = 0
    duplicates: int = 0
    quarantined: int = 0
    db_retries: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def add(self, result: StoreResult) -> None:
        self.stored += result.stored
        self.samples += result.samples
        self.duplicates += result.duplicates
        self.quarantined += result.quarantined
        for kind, count in result.kinds.items():
            self.kinds[kind] = self.kinds.get(kind, 0) + count

    def line(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items()))
        return (
            f"{self.received} received, {self.stored} stored ({self.samples} samples), "
            f"{self.duplicates} duplicates, {self.quarantined} quarantined"
            + (f" ({kinds})" if kinds else "")
            + (f", {self.db_retries} database retries" if self.db_retries else "")
        )


@dataclass
class _Delivery:
    topic: str
    message: bytes
    mid: int
    qos: int
    received_at: float


class KeyRegistry:
    """The registry's keys as a verifier: usable keys by kid, their owners, and why a kid is refused."""

    def __init__(self, records: list[KeyRecord], now: dt.datetime) -> None:
        usable = [r for r in records if r.usable_at(now)]
        keys: dict[bytes, Ed25519PublicKey] = {r.kid: r.public_key for r in usable}
        owners = {r.kid: r.vehicle for r in records}
        self.verifier = TelemetryVerifier(keys, allow_duplicates=True, owners=owners, track_seq=False)
        self.unusable = {r.kid: r for r in records if not r.usable_at(now)}

    def refusal(self, kid: bytes | None) -> tuple[str, str] | None:
        """`(kind, reason)` for a kid the registry knows but may not use now."""
        record = self.unusable.get(kid or b"")
        if record is None:
            return None
        if record.revoked_at is not None:
            why = f": {record.revoke_reason}" if record.revoke_reason else ""
            return (
                "revoked_key",
                f"kid {record.kid.hex()} of {record.vehicle} revoked at {record.revoked_at}{why}",
            )
        return "key_not_valid", (
            f"kid {record.kid.hex()} of {record.vehicle} is valid from {record.valid_from} "
            f"until {record.valid_until or 'revoked'}"
        )


class IngestWorker:
    """`IngestWorker(broker, db_uri, settings).run(stop)`: ingest until `stop` is set."""

    def __init__(
        self,
        broker: BrokerConfig,
        db_uri: str,
        settings: IngestSettings | None = None,
        on_group: Callable[[StoreResult], None] | None = None,
    ) -> None:
        self.broker = broker
        self.settings = settings or IngestSettings()
        self.topic = shared_filter(self.settings.group)
        self.counters = IngestCounters()
        self.store = FleetStore(db_uri)
        self._on_group = on_group
        self._queue: queue.Queue[_Delivery] = queue.Queue()
        self._ready = threading.Event()
        self._error: str | None = None
        self._registry = self._load_registry()
        self._keys_loaded = time.monotonic()
        self._client = make_client(broker, self.settings.client_id)
        self._client.manual_ack_set(True)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_connect_fail = self._on_connect_fail

    # -- MQTT (paho's network thread: record and hand over only; never raise, never ack)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._error = f"connection refused: {reason}"
            self._ready.set()
            return
        log.info("connected to %s (session present: %s)", self.broker.url, flags.session_present)
        client.subscribe(self.topic, options=SubscribeOptions(qos=1))

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            self._error = f"subscription to {self.topic} refused: {', '.join(refused)}"
        self._ready.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._ready.is_set():
            self._error = "cannot connect (broker down, TLS handshake or certificate refused)"
            self._ready.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._queue.put(
            _Delivery(message.topic, bytes(message.payload), message.mid, message.qos, time.time())
        )

    def connect(self) -> None:
        """Connect with a persistent session and wait until the shared subscription is granted."""
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.settings.session_expiry
        properties.ReceiveMaximum = self.settings.receive_maximum
        host, port = self.broker.address()
        self._client.connect_async(
            host, port, keepalive=self.broker.keepalive, clean_start=False, properties=properties
        )
        self._client.loop_start()
        if not self._ready.wait(self.settings.connect_timeout) or self._error:
            self.close()
            raise UserError(f"{self.broker.url}: {self._error or 'no connection within the timeout'}")

    def wait_ready(self, timeout: float) -> bool:
        """Wait until `run` has its subscription granted; False on a timeout or a refused connection."""
        return self._ready.wait(timeout) and self._error is None

    def close(self) -> None:
        """Disconnect (the session stays on the broker) and close the database connection."""
        self._client.disconnect()
        self._client.loop_stop()
        self.store.close()

    # -- the main loop

    def run(self, stop: threading.Event, report_every: float = 0.0) -> IngestCounters:
        """Ingest until `stop` is set; the group in hand is stored and acknowledged before returning."""
        self.connect()
        log.info("ingest: subscribed to %s as %s", self.topic, self.settings.client_id)
        last_maintenance = last_report = time.monotonic()
        try:
            while not stop.is_set():
                group = self._take_group(0.2)
                now = time.monotonic()
                if now - self._keys_loaded > self.settings.key_refresh:
                    self._refresh_keys()
                if now - last_maintenance > self.settings.maintenance_interval:
                    self._with_database(stop, self.store.maintain)
                    last_maintenance = now
                if report_every and now - last_report > report_every:
                    log.info("ingest: %s", self.counters.line())
                    last_report = now
                if group:
                    self.process(group, stop)
        finally:
            self.close()
        return self.counters

    def _take_group(self, timeout: float) -> list[_Delivery]:
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        group = [first]
        while len(group) < self.settings.max_group:
            try:
                group.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return group

    def process(self, group: list[_Delivery], stop: threading.Event) -> None:
        """Verify, store in one transaction, then acknowledge every message of `group` in order."""
        self.counters.received += len(group)
        verified: list[Verified] = []
        quarantined: list[Quarantined] = []
        for delivery in group:
            item = self._classify(delivery)
            (verified if isinstance(item, Verified) else quarantined).append(item)  # type: ignore[arg-type]
        result = self._with_database(stop, lambda: self._store(verified, quarantined))
        if result is None:
            return  # stopping while the database is down: not acknowledged, the broker re-delivers
        self.counters.add(result)
        if self._on_group is not None:
            self._on_group(result)
        for delivery in group:
            self._client.ack(delivery.mid, delivery.qos)

    def _store(self, verified: list[Verified], quarantined: list[Quarantined]) -> StoreResult:
        try:
            return self.store.store(verified, quarantined)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except psycopg.Error as exc:
            # Something in the group the database refuses (a NUL in a text, say): find it, quarantine it,
            # store the rest. Connection errors are not this: they are retried as a whole.
            log.warning("ingest: a group of %d failed to store (%s); storing one by one", len(verified), exc)
            self._rollback()
            total = StoreResult()
            refused: list[Quarantined] = list(quarantined)
            for item in verified:
                try:
                    one = self.store.store([item], [])
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    raise
                except psycopg.Error as error:
                    self._rollback()
                    refused.append(
                        Quarantined(
                            item.topic,
                            item.message,
                            "store_failed",
                            f"database refused it: {error}",
                            item.received_at,
                            item.mid,
                            item.qos,
                        )
                    )
                    continue
                total.stored += one.stored
                total.samples += one.samples
                total.duplicates += one.duplicates
                for kind, count in one.kinds.items():
                    total.kinds[kind] = total.kinds.get(kind, 0) + count
                total.quarantined += one.quarantined
            last = self.store.store([], refused)
            total.quarantined += last.quarantined
            for kind, count in last.kinds.items():
                total.kinds[kind] = total.kinds.get(kind, 0) + count
            return total

    def _rollback(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.store.conn.rollback()

    def _with_database(self, stop: threading.Event, action: Callable[[], Any]) -> Any:
        """Run `action`; while the database is unreachable, reconnect with a back-off and run it again."""
        delay = 0.2
        while True:
            try:
                return action()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.counters.db_retries += 1
                log.warning("ingest: database unavailable (%s); retrying in %.1f s", str(exc).strip(), delay)
            while not stop.is_set():
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
                try:
                    self.store.reconnect()
                    break
                except psycopg.Error:
                    continue
            if stop.is_set():
                return None

    # -- verification

    def _load_registry(self) -> KeyRegistry:
        return KeyRegistry(load_keys(self.store.conn), dt.datetime.now(dt.timezone.utc))

    def _refresh_keys(self) -> None:
        try:
            self._registry = self._load_registry()
        except psycopg.Error as exc:  # the store loop reconnects; keep the keys we have meanwhile
            log.warning("ingest: cannot reload the key registry: %s", exc)
            self._rollback()
        self._keys_loaded = time.monotonic()

    def _classify(self, delivery: _Delivery) -> Verified | Quarantined:
        try:
            return self._verify(delivery)
        except Exception as exc:  # a bug must not stop the stream; the message is kept for a look
            log.exception("ingest: unexpected error verifying a message on %s", delivery.topic)
            return self._quarantine(delivery, "internal_error", f"{type(exc).__name__}: {exc}")

    def _verify(self, delivery: _Delivery) -> Verified | Quarantined:
        result = self._registry.verifier.check(delivery.topic, delivery.message)
        if isinstance(result, Problem) and result.kind == "unknown_kid" and self._keys_may_reload():
            self._refresh_keys()  # a key added a moment ago
            result = self._registry.verifier.check(delivery.topic, delivery.message)
        self._registry.verifier.problems.clear()
        if isinstance(result, Problem):
            kind, reason = result.kind, result.detail
            if kind == "unknown_kid":
                try:
                    kid = message_kid(delivery.message)
                except Exception:
                    kid = None
                kind, reason = self._registry.refusal(kid) or (kind, reason)
            return self._quarantine(delivery, kind, reason)
        problem = self.store.time_problem(result.payload, delivery.received_at)
        if problem is not None:
            return self._quarantine(delivery, *problem)
        return Verified(
            delivery.topic,
            delivery.message,
            result.payload,
            result.kid,
            delivery.received_at,
            delivery.mid,
            delivery.qos,
        )

    def _keys_may_reload(self) -> bool:
        return time.monotonic() - self._keys_loaded > 1.0

    @staticmethod
    def _quarantine(delivery: _Delivery, kind: str, reason: str) -> Quarantined:
        return Quarantined(
            delivery.topic, delivery.message, kind, reason, delivery.received_at, delivery.mid, delivery.qos
        )
