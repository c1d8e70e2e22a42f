"""`campaign publish`: sign a campaign file for each vehicle's campaigns topic and publish it retained.

The message is what `telemetry.campaign_updates` verifies on the car: a COSE_Sign1 by a backend key over
`{"v": 1, "serial": N, "toml": TEXT}`, bound to `vehicles/{id}/campaigns`. The car applies an update only if
its serial is above the last one it applied, ignores the same serial (the retained message again) and
rejects a lower one, so the publisher refuses a serial that is not above the last one it published to the
vehicle (recorded in `fleet_campaigns` when a database is given).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.collect.campaign import loads_campaigns
from firmware_agent.errors import UserError
from firmware_agent.telemetry.broker import BrokerConfig, make_client
from firmware_agent.telemetry.campaign_updates import encode_campaign_update
from firmware_agent.telemetry.cose import Signer
from firmware_agent.telemetry.topics import campaigns_topic


@dataclass(frozen=True)
class Published:
    """How many updates the broker acknowledged."""

    vehicles: int
    serial: int
    kid: bytes


def check_campaign_text(text: str, source: str) -> None:
    """Parse the campaign as the agent will (signal names are checked on the car against its DBCs)."""
    loads_campaigns(text, source)


def last_serials(conn: psycopg.Connection[Any], vehicles: Sequence[str]) -> dict[str, int]:
    """The highest serial published to each of `vehicles`, from `fleet_campaigns`."""
    rows = conn.execute(
        "SELECT vehicle, max(serial) FROM fleet_campaigns WHERE vehicle = ANY(%s) GROUP BY vehicle",
        (list(vehicles),),
    ).fetchall()
    conn.commit()
    return {vehicle: int(serial) for vehicle, serial in rows}


def registered_vehicles(conn: psycopg.Connection[Any]) -> list[str]:
    """Every vehicle with a usable key in the registry (the fleet `--all` publishes to)."""
    rows = conn.execute(
        "SELECT DISTINCT vehicle FROM fleet_keys WHERE revoked_at IS NULL ORDER BY vehicle"
    ).fetchall()
    conn.commit()
    return [row[0] for row in rows]


def record_published(conn: psycopg.Connection[Any], vehicles: Sequence[str], serial: int, kid: bytes) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO fleet_campaigns (vehicle, serial, kid) SELECT unnest(%s::text[]), %s, %s",
            (list(vehicles), serial, kid),
        )


def publish_campaign(
    broker: BrokerConfig,
    key: Ed25519PrivateKey,
    serial: int,
    vehicles: Sequence[str],
    text: str,
    timeout: float = 30.0,
) -> Published:
    """Sign `text` for each vehicle's campaigns topic, publish it retained (QoS 1), wait for the acks."""
    if serial < 0:
        raise UserError(f"--serial {serial}: must be 0 or more")
    signer = Signer(key)
    payload = encode_campaign_update(serial, text)
    client = make_client(broker, "")
    connected = threading.Event()
    failure: list[str] = []

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            failure.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    host, port = broker.address()
    client.connect_async(host, port, keepalive=broker.keepalive)
    client.loop_start()
    try:
        if not connected.wait(timeout) or failure:
            raise UserError(f"{broker.url}: {'; '.join(failure) or 'no connection within the timeout'}")
        infos = []
        for vehicle in vehicles:
            topic = campaigns_topic(vehicle)
            infos.append(client.publish(topic, signer.sign(payload, topic), qos=1, retain=True))
        for vehicle, info in zip(vehicles, infos, strict=True):
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise UserError(
                    f"{broker.url}: the update for {vehicle} was not acknowledged within {timeout} s"
                )
    finally:
        client.disconnect()
        client.loop_stop()
    return Published(len(vehicles), serial, signer.kid)
