"""The retained status summary on `vehicles/{id}/status`: the first line stays online/offline."""

from __future__ import annotations

import json
import time
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
        # The retained message is the latest: the bare birth "online" if the summary's publish is still
        # on its way (set_status is asynchronous), which then follows live.
        lines: list[str] = []
        deadline = time.monotonic() + 10
        while len(lines) < 2 and time.monotonic() < deadline:
            item = watcher.get(max(0.1, deadline - time.monotonic()))
            assert item is not None, "no status message"
            topic, payload = item
            lines = payload.decode().split("\n")
            assert (topic, lines[0]) == ("vehicles/veh-0001/status", "online")
        assert json.loads(lines[1]) == {"status": "ok", "batches_committed": 3}
        vehicle.uploader.stop(timeout=5)
        _, payload = watcher.get(10)
        assert payload.decode().split("\n")[0] == "offline"
