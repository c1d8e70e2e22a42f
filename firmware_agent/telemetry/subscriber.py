"""A subscribing MQTT client that hands messages to the caller through a bounded queue.

Used by `firmware-agent verify --broker` (and by tests as the backend). Messages beyond `max_queue` are
dropped and counted in `dropped`, never buffered without bound.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_agent.errors import UserError
from firmware_agent.telemetry.broker import BrokerConfig, make_client


class SubscribeError(UserError):
    """The broker could not be reached, refused the connection, or refused the subscription."""


class Subscriber:
    """`with Subscriber(broker, ["vehicles/+/telemetry"]) as sub: sub.get(timeout)`.

    Entering connects and waits until the broker has granted every subscription (or raises
    `SubscribeError`), so nothing published after that is missed. With a `client_id` and `session_expiry`
    (seconds) the broker keeps the session while the subscriber is away (and, with persistence, across a
    broker restart) and delivers what was published meanwhile after paho reconnects.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        topics: Sequence[str],
        client_id: str = "",
        max_queue: int = 100_000,
        connect_timeout: float = 10.0,
        session_expiry: int = 0,
    ) -> None:
        self.broker = broker
        self.topics = list(topics)
        self.dropped = 0
        self._connect_timeout = connect_timeout
        self._session_expiry = session_expiry
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=max_queue)
        self._ready = threading.Event()
        self._error: str | None = None
        self._client = make_client(broker, client_id)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect

    def __enter__(self) -> Subscriber:
        host, port = self.broker.address()
        properties = None
        if self._session_expiry:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self._session_expiry
        self._client.connect_async(
            host,
            port,
            keepalive=self.broker.keepalive,
            clean_start=not self._session_expiry,
            properties=properties,
        )
        self._client.loop_start()
        if not self._ready.wait(self._connect_timeout) or self._error:
            self.close()
            raise SubscribeError(f"{self.broker.url}: {self._error or 'no connection within the timeout'}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def get(self, timeout: float | None) -> tuple[str, bytes] | None:
        """The next (topic, payload), or None if none arrives within `timeout` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def messages(self, count: int | None = None, timeout: float | None = None) -> Iterator[tuple[str, bytes]]:
        """Yield messages until `count` arrived or `timeout` seconds (in total) passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        received = 0
        while count is None or received < count:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            item = self.get(remaining)
            if item is None:
                return
            received += 1
            yield item

    # paho callbacks: record and signal only; never raise.

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._error = f"connection refused: {reason}"
            self._ready.set()
            return
        try:
            client.subscribe([(topic, 1) for topic in self.topics])
        except (
            ValueError
        ) as exc:  # paho checks the filters here (e.g. `a/#/b`); raising would kill its thread
            self._error = f"cannot subscribe to {', '.join(self.topics)}: {exc}"
            self._ready.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._error = "cannot connect (broker down, TLS handshake or certificate refused)"
        self._ready.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if not self._ready.is_set():  # e.g. the broker refused the client certificate after the handshake
            self._error = f"disconnected before subscribing: {reason}"
            self._ready.set()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        refused = [f"{t}: {r}" for t, r in zip(self.topics, reasons, strict=False) if r.is_failure]
        if refused:
            self._error = "subscription refused: " + "; ".join(refused)
        self._ready.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._queue.put_nowait((message.topic, bytes(message.payload)))
        except queue.Full:
            self.dropped += 1
