"""mTLS and the per-vehicle ACL on a real mosquitto: who may connect, who may publish where."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_agent.telemetry.broker import BrokerConfig
from firmware_agent.telemetry.subscriber import SubscribeError, Subscriber
from firmware_agent.telemetry.topics import InvalidVehicleIdError
from firmware_agent.telemetry.uploader import UploaderConfig
from tests.integration.mosquitto import Mosquitto, backend_broker, vehicle_broker
from tests.integration.pki import Pki
from tests.integration.telemetry_helpers import make_vehicle, pycose_verify


def test_vehicle_publishes_over_mutual_tls(tmp_path: Path, mosquitto_tls: Mosquitto) -> None:
    vehicle = make_vehicle(tmp_path, "veh-0001", vehicle_broker(mosquitto_tls, "veh-0001"))
    with Subscriber(backend_broker(mosquitto_tls), ["vehicles/+/telemetry"]) as backend:
        vehicle.uploader.start()
        vehicle.commit(3)
        received = list(backend.messages(count=3, timeout=20))
        assert vehicle.uploader.stop(timeout=20)
    assert [pycose_verify(m, t, vehicle.key).seq for t, m in received] == [0, 1, 2]


def test_certificate_of_vehicle_a_is_refused_on_vehicle_bs_topic(
    tmp_path: Path, mosquitto_tls: Mosquitto
) -> None:
    # Vehicle B's outbox and topic, but vehicle A's certificate: the ACL denies it, MQTT 5 says 0x87.
    stolen = vehicle_broker(mosquitto_tls, "veh-000A")
    vehicle = make_vehicle(tmp_path, "veh-000B", stolen)
    with Subscriber(backend_broker(mosquitto_tls), ["vehicles/+/telemetry"]) as backend:
        vehicle.uploader.start()
        vehicle.commit(3)
        assert vehicle.uploader.stop(timeout=20), "dead-lettered batches count as resolved"
        assert backend.get(timeout=0.5) is None, "the broker must not forward a denied publish"
    assert vehicle.outbox.pending_count() == 0
    assert vehicle.outbox.counters()["dead_lettered"] == 3
    assert vehicle.uploader.counters()["dead_lettered"] == 3
    reasons = {letter.reason for letter in vehicle.outbox.dead_letters()}
    assert reasons == {"PUBACK 0x87 Not authorized"}


def test_anonymous_client_is_refused(mosquitto_tls: Mosquitto, pki: Pki) -> None:
    with (
        pytest.raises(SubscribeError, match=r"cannot connect|disconnected"),
        Subscriber(BrokerConfig(mosquitto_tls.url, ca_file=pki.ca), ["#"]),
    ):
        pass
    plain = BrokerConfig(mosquitto_tls.url.replace("mqtts://", "mqtt://"))
    with pytest.raises(SubscribeError), Subscriber(plain, ["#"], connect_timeout=5):
        pass


def test_client_certificate_from_another_ca_is_refused(
    tmp_path: Path, mosquitto_tls: Mosquitto, pki: Pki
) -> None:
    rogue = Pki(tmp_path / "rogue-ca").issue_vehicle("veh-0001")
    config = BrokerConfig(mosquitto_tls.url, ca_file=pki.ca, cert_file=rogue.cert, key_file=rogue.key)
    with pytest.raises(SubscribeError), Subscriber(config, ["vehicles/veh-0001/campaigns"]):
        pass


@pytest.mark.parametrize("bad_id", ["veh-0002/evil", "veh+", "#", "", "veh 1", "../x"])
def test_ids_that_would_escape_the_acl_are_refused_at_issue_and_at_start(
    bad_id: str, pki: Pki, mosquitto_tls: Mosquitto
) -> None:
    with pytest.raises(InvalidVehicleIdError):
        pki.issue_vehicle(bad_id)
    with pytest.raises(InvalidVehicleIdError):
        UploaderConfig(BrokerConfig(mosquitto_tls.url, ca_file=pki.ca), bad_id)
