"""The retained status summary on `vehicles/{id}/status`: the first line stays online/offline."""

from __future__ import annotations

import json
from pathlib import Path

from firmware_agent.telemetry.subscriber import Subscriber
from tests.integration.mosquitto import Mosquitto, backend_broker, vehicle_broker
from tests.integration.telemetry_helpers import make_vehicle


def test_summary_follows_the_online_line_and_rides_on_the_clean_offline(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    vehicle = make_vehicle(tmp_path, "veh-0001", vehicle_broker(mosquitto, "veh-0001"))
    vehicle.uploader.start()
    assert vehicle.uploader.wait_connected(10)
    vehicle.uploader.set_status({"status": "ok", "batches_committed": 3})
    assert vehicle.uploader.flush(10)
    with Subscriber(backend_broker(mosquitto), ["vehicles/+/status"]) as watcher:
        topic, payload = watcher.get(10)  # retained: the latest one
        first, summary = payload.decode().split("\n")
        assert (topic, first) == ("vehicles/veh-0001/status", "online")
        assert json.loads(summary) == {"status": "ok", "batches_committed": 3}
        vehicle.uploader.stop(timeout=5)
        _, payload = watcher.get(10)
        assert payload.decode().split("\n")[0] == "offline"
