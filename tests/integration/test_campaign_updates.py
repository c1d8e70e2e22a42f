"""Signed campaign updates pushed by the backend through mosquitto (TLS, ACL) to a running uploader."""

from __future__ import annotations

import queue
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from firmware_agent.telemetry.broker import make_client
from firmware_agent.telemetry.campaign_updates import CampaignUpdate, CampaignUpdates, encode_campaign_update
from firmware_agent.telemetry.cose import Signer
from firmware_agent.telemetry.keys import kid_of
from firmware_agent.values import Event
from tests.integration.mosquitto import Mosquitto, backend_broker, vehicle_broker
from tests.integration.telemetry_helpers import make_vehicle

TOPIC = "vehicles/veh-0001/campaigns"
CAMPAIGN_TOML = """
name = "brakes"
[[signals]]
name = "Vehicle.Chassis.Brake.PedalPosition"
period_ms = 100
"""


def _pycose_sign(key: Ed25519PrivateKey, payload: bytes, topic: str) -> bytes:
    """Sign as the backend would, with pycose (independent of the agent's COSE code)."""
    d = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    x = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    msg = Sign1Message(phdr={Algorithm: EdDSA, KID: kid_of(key.public_key())}, payload=payload)
    msg.external_aad = topic.encode()  # type: ignore[misc]  # settable at run time
    msg.key = OKPKey(crv=Ed25519, d=d, x=x)
    return bytes(msg.encode())


def test_signed_update_is_applied_and_anything_else_rejected(
    tmp_path: Path, mosquitto_tls: Mosquitto
) -> None:
    backend_key, rogue_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    applied: queue.Queue[CampaignUpdate] = queue.Queue()
    events: queue.Queue[Event] = queue.Queue()
    updates = CampaignUpdates(
        "veh-0001", {kid_of(backend_key.public_key()): backend_key.public_key()}, applied.put, events.put
    )
    vehicle = make_vehicle(
        tmp_path, "veh-0001", vehicle_broker(mosquitto_tls, "veh-0001"), on_campaign=updates.handle
    )
    backend = make_client(backend_broker(mosquitto_tls), "backend")
    backend.connect(*backend_broker(mosquitto_tls).address())
    backend.loop_start()
    try:
        vehicle.uploader.start()
        assert vehicle.uploader.wait_connected(10)

        def push(message: bytes, retain: bool = False) -> None:
            backend.publish(TOPIC, message, qos=1, retain=retain).wait_for_publish(10)

        # A good update (TOML text), signed by the backend key with pycose; retained, as a backend would, so
        # that the vehicle gets it whenever its subscription lands.
        push(_pycose_sign(backend_key, encode_campaign_update(5, CAMPAIGN_TOML), TOPIC), retain=True)
        update = applied.get(timeout=10)
        assert (update.serial, update.document["name"]) == (5, "brakes")
        assert update.document["signals"][0]["period_ms"] == 100

        bad = {
            "unsigned": encode_campaign_update(6, {"name": "x"}),
            "wrong key": _pycose_sign(rogue_key, encode_campaign_update(6, {"name": "x"}), TOPIC),
            "other vehicle's topic": _pycose_sign(
                backend_key, encode_campaign_update(6, {"name": "x"}), "vehicles/veh-0002/campaigns"
            ),
            "tampered": _tamper(_pycose_sign(backend_key, encode_campaign_update(6, {"name": "x"}), TOPIC)),
            "replayed older serial": Signer(backend_key).sign(
                encode_campaign_update(4, {"name": "old"}), TOPIC
            ),
        }
        reasons = {}
        for what, message in bad.items():
            push(message)
            event = events.get(timeout=10)
            assert event.kind == "campaign_rejected"
            reasons[what] = event.detail["reason"]
        assert "not a tagged COSE_Sign1" in reasons["unsigned"]
        assert "unknown kid" in reasons["wrong key"]
        assert "bad signature" in reasons["other vehicle's topic"]
        assert "bad signature" in reasons["tampered"]
        assert "replayed" in reasons["replayed older serial"]
        assert applied.empty()
        counters = updates.counters()
        assert (counters["applied"], counters["rejected"]) == (1, 5)
        assert vehicle.uploader.counters()["callback_errors"] == 0
    finally:
        backend.disconnect()
        backend.loop_stop()
        vehicle.uploader.stop(timeout=5)


def _tamper(message: bytes) -> bytes:
    tag = cbor2.loads(message)
    body = cbor2.loads(tag.value[2])
    body["campaign"]["name"] = "evil"
    tag.value[2] = cbor2.dumps(body)
    return bytes(cbor2.dumps(tag))


def test_campaign_update_rejections_without_a_broker() -> None:
    key = Ed25519PrivateKey.generate()
    updates = CampaignUpdates("veh-0001", {kid_of(key.public_key()): key.public_key()}, lambda update: None)
    signer = Signer(key)
    assert updates.handle(TOPIC, signer.sign(encode_campaign_update(1, {"a": 1}), TOPIC)) is not None
    assert updates.handle(TOPIC, signer.sign(encode_campaign_update(1, {"a": 1}), TOPIC)) is None
    assert updates.counters()["duplicates"] == 1, "a retained update re-delivered on reconnect is ignored"
    wrong = "vehicles/veh-0002/campaigns"
    assert updates.handle(wrong, signer.sign(encode_campaign_update(2, {"a": 1}), wrong)) is None
    assert updates.handle(TOPIC, signer.sign(cbor2.dumps({"v": 1, "serial": 3}), TOPIC)) is None
    assert updates.handle(TOPIC, signer.sign(encode_campaign_update(3, "not = [toml"), TOPIC)) is None
    assert updates.counters()["rejected"] == 3


def test_an_update_the_agent_cannot_apply_is_reported() -> None:
    key = Ed25519PrivateKey.generate()
    events: list[Event] = []

    def refuse(update: CampaignUpdate) -> None:
        raise ValueError("unknown signal Vehicle.Nope")

    updates = CampaignUpdates("veh-0001", {kid_of(key.public_key()): key.public_key()}, refuse, events.append)
    assert updates.handle(TOPIC, Signer(key).sign(encode_campaign_update(1, {"a": 1}), TOPIC)) is None
    assert events[0].kind == "campaign_apply_failed" and "Vehicle.Nope" in events[0].detail["reason"]
    assert updates.last_serial == -1, "a failed update is not recorded as applied"


def test_last_applied_serial_survives_a_restart(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    keys = {kid_of(key.public_key()): key.public_key()}
    state = tmp_path / "campaign-serial"
    signer = Signer(key)
    first = CampaignUpdates("veh-0001", keys, lambda update: None, state_file=state)
    assert first.handle(TOPIC, signer.sign(encode_campaign_update(7, {"a": 1}), TOPIC)) is not None
    again = CampaignUpdates("veh-0001", keys, lambda update: None, state_file=state)
    assert again.last_serial == 7
    assert again.handle(TOPIC, signer.sign(encode_campaign_update(6, {"a": 0}), TOPIC)) is None
    assert again.counters()["rejected"] == 1
