"""The uploader: publishes outbox batches over MQTT v5 with QoS 1 and deletes them on PUBACK.

Threads: paho's network thread (`loop_start`) runs the callbacks; one worker thread owns the outbox side.
Callbacks only record what happened (connected, PUBACK for a message id, an incoming message) and wake the
worker, because paho calls `on_publish` while holding its own lock (so a callback must never wait for a
lock held around `publish()`), `on_publish` can fire before `publish()` returns, and an exception escaping a
callback kills paho's network thread. The worker maps message ids to sequence numbers right after
`publish()` returns and resolves acknowledgements on its next turn, so ordering never matters.

Flow control: at most `min(max_inflight, broker's Receive Maximum from CONNACK - 1)` batches are
unacknowledged at once (one slot is left for the status message). After a disconnect paho re-sends the
unacknowledged ones itself (DUP flag) and reconnects with exponential backoff (`reconnect_min_delay` ..
`reconnect_max_delay`); the worker then continues after the last sequence number it handed over. PUBACK
reason codes >= 0x80 (e.g. 0x87 Not authorized) are final: the batch is dead-lettered, never retried.

Message size: the broker's Maximum Packet Size from CONNACK (paho: `properties.MaximumPacketSize`, absent
when the broker states none) becomes the outbox's message limit before anything is published on that
connection (`telemetry/sizing.py`), so batches are split to fit instead of being refused with a
disconnect; a pending batch stored before the limit was known is split (`Outbox.refit`) before it goes out.

Status: `vehicles/{id}/status` carries a retained `online` (birth, sent on every connect) and `offline`
(the last will, and sent on a clean `stop()`). Once `set_status(summary)` was called, the first line stays
`online`/`offline` and the summary follows as JSON on the second line (`docs/telemetry-format.md`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from firmware_agent.telemetry.broker import BrokerConfig, make_client
from firmware_agent.telemetry.outbox import Outbox, OutboxFullError
from firmware_agent.telemetry.sizing import message_limit
from firmware_agent.telemetry.topics import (
    campaigns_topic,
    status_topic,
    telemetry_topic,
    validate_vehicle_id,
)

log = logging.getLogger(__name__)

#: Receive Maximum a v5 broker implies when CONNACK does not state one.
DEFAULT_RECEIVE_MAXIMUM = 65535

#: Counters reported by `Uploader.counters()`.
UPLOADER_COUNTERS = (
    "connects",
    "connect_failures",
    "disconnects",
    "published",
    "acknowledged",
    "dead_lettered",
    "publish_errors",
    "callback_errors",
    "worker_errors",
    "outbox_full_errors",
    "messages_received",
    "subscribe_failures",
)


@dataclass(frozen=True)
class UploaderConfig:
    """What the uploader needs besides the outbox. `vehicle_id` is validated (see `topics`)."""

    broker: BrokerConfig
    vehicle_id: str
    client_id: str | None = None
    max_inflight: int = 20
    reconnect_min_delay: int = 1
    reconnect_max_delay: int = 60

    def __post_init__(self) -> None:
        validate_vehicle_id(self.vehicle_id)
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")


#: `handler(topic, payload)` for messages on the campaigns topic; see `CampaignUpdates.handle`.
MessageHandler = Callable[[str, bytes], object]


class Uploader:
    """Publishes `outbox` to the broker in `config`; `start()`, `notify()` after commits, `stop()`."""

    def __init__(
        self, config: UploaderConfig, outbox: Outbox, on_campaign: MessageHandler | None = None
    ) -> None:
        self.config = config
        self.topic = telemetry_topic(config.vehicle_id)
        self.status_topic = status_topic(config.vehicle_id)
        self.campaigns_topic = campaigns_topic(config.vehicle_id)
        self._outbox = outbox
        self._on_campaign = on_campaign
        self._counters = dict.fromkeys(UPLOADER_COUNTERS, 0)
        self._counter_lock = threading.Lock()
        # Written by paho callbacks, read by the worker: deque append/popleft are atomic.
        self._completions: deque[tuple[int, ReasonCode]] = deque()
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stopping = False
        self._inflight_limit = config.max_inflight
        # (known, limit): the broker's message limit from the last CONNACK, for the worker to apply
        self._message_limit: tuple[bool, int | None] = (False, None)
        self._logged_disconnect: str | None = None
        self.last_error: str | None = None
        self._status_summary: str | None = None  # JSON, the second line of status messages
        # Worker-only state.
        self._inflight: dict[int, int] = {}  # paho mid -> seq
        self._cursor = -1  # highest seq handed to paho
        self.max_inflight_seen = 0
        self._outbox_problem: str | None = None
        # Flush bookkeeping: iteration numbers of the worker loop.
        self._progress = threading.Condition()
        self._iteration = 0
        self._idle_at = -1
        self._client = make_client(config.broker, config.client_id or f"firmware-agent-{config.vehicle_id}")
        self._client.will_set(self.status_topic, "offline", qos=1, retain=True)
        # paho's own window (it cannot change once connected); the worker keeps to the broker's, if lower.
        self._client.max_inflight_messages_set(config.max_inflight + 2)  # + birth and offline status
        self._client.reconnect_delay_set(config.reconnect_min_delay, config.reconnect_max_delay)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._worker = threading.Thread(target=self._run, name="uploader", daemon=True)

    # --- public API ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying with backoff) and start publishing."""
        host, port = self.config.broker.address()
        self._client.connect_async(host, port, keepalive=self.config.broker.keepalive, clean_start=True)
        self._client.loop_start()
        self._worker.start()

    def notify(self) -> None:
        """Tell the uploader a batch was committed, so it publishes now rather than on its next poll."""
        self._wake.set()

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the next disconnect."""
        return self._connected.is_set()

    @property
    def inflight_limit(self) -> int:
        """Unacknowledged batches allowed at once: `max_inflight`, kept below the broker's Receive Maximum."""
        return self._inflight_limit

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a connection; True if connected."""
        return self._connected.wait(timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until every batch committed before this call is acknowledged or dead-lettered."""
        with self._progress:
            target = self._iteration + 1
            self._wake.set()
            return self._progress.wait_for(lambda: self._idle_at >= target, timeout)

    def stop(self, timeout: float = 5.0) -> bool:
        """Flush for up to `timeout` seconds, publish `offline`, disconnect; True if all was flushed."""
        flushed = self.flush(timeout) if self._worker.is_alive() else False
        self._stopping = True
        self._wake.set()
        if self._worker.is_alive():
            self._worker.join()
        if self._connected.is_set():
            info = self._client.publish(
                self.status_topic, self._status_payload("offline"), qos=1, retain=True
            )
            # If the connection went away meanwhile, the last will says offline instead.
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=1.0)
        self._client.disconnect()
        self._client.loop_stop()
        return flushed

    def set_status(self, summary: Mapping[str, Any]) -> None:
        """Publish `online` + `summary` retained now (when connected); later status messages carry it too."""
        self._status_summary = json.dumps(summary, sort_keys=True, separators=(",", ":"), default=str)
        if self._connected.is_set() and not self._stopping:
            self._client.publish(self.status_topic, self._status_payload("online"), qos=1, retain=True)

    def _status_payload(self, state: str) -> str:
        return state if self._status_summary is None else f"{state}\n{self._status_summary}"

    def counters(self) -> dict[str, int]:
        """Connection and publishing counters (see `UPLOADER_COUNTERS`), since `start()`."""
        with self._counter_lock:
            return dict(self._counters)

    def _count(self, key: str, delta: int = 1) -> None:
        with self._counter_lock:
            self._counters[key] += delta

    # --- paho callbacks (network thread): record, count, wake; never raise --------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        try:
            if reason.is_failure:
                self.last_error = f"connection refused: {reason}"
                self._count("connect_failures")
                return
            receive_maximum = int(getattr(properties, "ReceiveMaximum", DEFAULT_RECEIVE_MAXIMUM))
            # One slot stays free for the status message, which counts against the same window.
            self._inflight_limit = max(1, min(self.config.max_inflight, receive_maximum - 1))
            maximum = getattr(properties, "MaximumPacketSize", None)
            self._message_limit = (True, message_limit(int(maximum), self.topic) if maximum else None)
            client.publish(self.status_topic, self._status_payload("online"), qos=1, retain=True)
            if self._on_campaign is not None:
                client.subscribe(self.campaigns_topic, qos=1)
            self.last_error = None
            self._count("connects")
            self._connected.set()
            self._wake.set()
        except Exception:
            self._callback_failed("on_connect")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        try:
            self.last_error = "cannot connect to the broker"
            self._count("connect_failures")
        except Exception:
            self._callback_failed("on_connect_fail")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        try:
            if self._connected.is_set():
                self._count("disconnects")
            self._connected.clear()
            if reason.is_failure:
                self.last_error = f"disconnected: {reason}"
                if self.last_error != self._logged_disconnect:  # one line per kind, not per reconnect
                    # debug: the operator's line comes from service.lifecycle, which sees every change
                    log.debug("uploader: %s (reconnecting)", self.last_error)
                    self._logged_disconnect = self.last_error
            self._wake.set()
        except Exception:
            self._callback_failed("on_disconnect")

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        try:
            self._completions.append((mid, reason))
            self._wake.set()
        except Exception:
            self._callback_failed("on_publish")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._count("messages_received")
            if self._on_campaign is not None and message.topic == self.campaigns_topic:
                self._on_campaign(message.topic, bytes(message.payload))
        except Exception:
            self._callback_failed("on_message")

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any
    ) -> None:
        try:
            if any(reason.is_failure for reason in reasons):
                self.last_error = f"subscription to {self.campaigns_topic} refused: {reasons[0]}"
                self._count("subscribe_failures")
                log.warning("uploader: %s", self.last_error)
        except Exception:
            self._callback_failed("on_subscribe")

    def _callback_failed(self, name: str) -> None:
        with self._counter_lock:
            self._counters["callback_errors"] += 1
        log.exception("uploader: error in paho callback %s (counted, network thread kept alive)", name)

    # --- worker thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            # Cleared before the work, not after the wait: a wake-up set while this turn runs (a commit, a
            # PUBACK, `flush()`, `stop()`) then ends the wait at once instead of being lost for a second.
            self._wake.clear()
            with self._progress:
                self._iteration += 1
                iteration = self._iteration
            try:
                self._resolve_completions()
                if self._connected.is_set():
                    self._publish_pending()
                idle = not self._inflight and self._outbox.pending_count() == 0
                self._outbox_full(None)
            except OutboxFullError as exc:
                # Not a bug: the acknowledgements stay queued and are recorded once there is room.
                self._outbox_full(str(exc))
                idle = False
            except Exception:
                self._count("worker_errors")
                log.exception("uploader: worker error (counted; retrying on the next turn)")
                idle = False
            if idle:
                with self._progress:
                    self._idle_at = iteration
                    self._progress.notify_all()
            self._wake.wait(timeout=1.0)

    def _outbox_full(self, problem: str | None) -> None:
        """One log line when acknowledgements start failing for lack of disk space, one when they recover."""
        if problem == self._outbox_problem:
            return
        if problem is not None:
            self._count("outbox_full_errors")
            log.warning("uploader: %s (kept in memory, retried every turn)", problem)
        else:
            log.info("uploader: acknowledgements are recorded again")
        self._outbox_problem = problem

    def _resolve_completions(self) -> None:
        """Apply the PUBACKs paho reported. A completion leaves the queue and `_inflight` only once the
        outbox has recorded it: if the outbox raises (e.g. the database is locked), the rest stay queued
        and the worker retries them on its next turn, rather than forgetting batches still in the outbox."""
        acknowledged: list[tuple[int, ReasonCode]] = []
        try:
            while self._completions:
                mid, reason = self._completions[0]  # only this thread pops: it stays the head
                seq = self._inflight.get(mid)
                if seq is not None and reason.is_failure:
                    self._outbox.dead_letter(seq, f"PUBACK 0x{reason.value:02x} {reason}")
                    del self._inflight[mid]
                    self._count("dead_lettered")
                    log.warning("uploader: broker refused batch %d for good: %s", seq, reason)
                elif seq is not None:
                    acknowledged.append((mid, reason))
                # seq None: a status message
                self._completions.popleft()
            if acknowledged:  # one transaction (one fsync) for every PUBACK of this turn
                self._outbox.acknowledge_many([self._inflight[mid] for mid, _ in acknowledged])
        except Exception:
            self._completions.extendleft(reversed(acknowledged))
            raise
        for mid, _ in acknowledged:
            del self._inflight[mid]
        if acknowledged:
            self._count("acknowledged", len(acknowledged))

    def _publish_pending(self) -> None:
        known, limit = self._message_limit
        if known:
            self._outbox.set_message_limit(limit)
        limit = self._outbox.message_limit
        room = self._inflight_limit - len(self._inflight)
        if room <= 0:
            return
        for row in self._outbox.pending(room, after_seq=self._cursor):
            if limit is not None and len(row.data) > limit:
                # stored before the limit was known: split now (the parts come back on the next turn)
                self._outbox.refit(row.seq)
                self._wake.set()
                break
            info = self._client.publish(self.topic, row.data, qos=1)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                self._count("publish_errors")
                log.warning("uploader: publish of batch %d failed: %s", row.seq, mqtt.error_string(info.rc))
                return
            # NO_CONN: paho keeps QoS 1 messages and sends them after reconnecting.
            self._inflight[info.mid] = row.seq
            self._outbox.published(row.seq)
            self._cursor = row.seq
            self._count("published")
        self.max_inflight_seen = max(self.max_inflight_seen, len(self._inflight))
