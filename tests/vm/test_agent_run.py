"""The whole agent on real SocketCAN: vcan, kernel filters and timestamps, decode, COSE signing, MQTT.

The agent runs in this process (as `firmware-agent run` would, minus argument parsing) against a mosquitto
started inside the VM on 127.0.0.1; payloads are verified with pycose, independently of our COSE code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import can
import pytest

from firmware_agent.decode.catalog import Catalog
from firmware_agent.e2e_protection import profile_for
from firmware_agent.service.agent import Agent
from firmware_agent.service.config import AgentConfig
from firmware_agent.sources import SourceSpec
from firmware_agent.telemetry.broker import BrokerConfig
from firmware_agent.telemetry.keys import generate_private_key
from firmware_agent.telemetry.payload import Payload
from firmware_agent.telemetry.subscriber import Subscriber
from firmware_agent.vehicle import default_dbc_specs
from tests.integration.mosquitto import Mosquitto, backend_broker
from tests.integration.telemetry_helpers import pycose_verify
from tests.vm.helpers import ip_link, kernel_receivers, open_bus, wait_for

pytestmark = pytest.mark.vcan

VEHICLE = "veh-vcan"
FRAMES = 300


def speed_frames(count: int) -> list[can.Message]:
    """Powertrain 0x100 frames with speeds 0, 1, 2, ... and valid E2E counters and CRCs."""
    message = Catalog.from_specs(default_dbc_specs(), warn_stream=None).lookup("powertrain", 0x100, False)
    assert message is not None
    profile = profile_for(message)
    assert profile is not None
    frames = []
    for i in range(count):
        speed = {"VehicleSpeed": float(i), "SpeedValid": 1, "Odometer": 1e3, "SpeedCrc": 0, "SpeedCounter": 0}
        data = bytearray(message.encode(speed))
        profile.protect(data, i)
        frames.append(can.Message(arbitration_id=0x100, data=bytes(data), is_extended_id=False))
    return frames


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """mosquitto (from the host root, like every other program here) on the VM's loopback."""
    mosquitto = Mosquitto(tmp_path / "mosquitto")
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


def test_agent_publishes_socketcan_frames_across_a_link_bounce(
    scratch_interface: str, broker: Mosquitto, tmp_path: Path
) -> None:
    key = generate_private_key(tmp_path / "key.pem")
    config = AgentConfig(
        vehicle_id=VEHICLE,
        sources=(SourceSpec.parse(f"powertrain=socketcan:{scratch_interface}"),),
        broker=BrokerConfig(url=broker.url),
        signing_key=tmp_path / "key.pem",
        state_dir=tmp_path / "state",
        collect="all",
        stats_interval=0,
    )
    ready = threading.Event()
    agent = Agent(config, on_ready=ready.set)
    reader = agent.readers[0]
    stop = threading.Event()
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(agent.run(stop)), name="agent")
    frames = speed_frames(FRAMES)
    half = FRAMES // 2
    payloads: list[Payload] = []

    started = time.time()
    with Subscriber(backend_broker(broker), ["vehicles/+/telemetry"]) as subscriber:
        runner.start()
        try:
            wait_for(ready.is_set, "the agent to start")
            wait_for(lambda: kernel_receivers(scratch_interface) > 0, "the agent's socket on the interface")
            with open_bus(scratch_interface) as sender:
                for frame in frames[:half]:
                    sender.send(frame)
            wait_for(lambda: agent.decoder.counts["frames"] >= half, "the first half to be decoded")

            # The link bounces; the agent's socket reports ENETDOWN and is reopened once the link is up.
            ip_link("set", scratch_interface, "down")
            ip_link("set", scratch_interface, "up")
            wait_for(lambda: reader.reconnects >= 1, "the agent to reopen its socket")
            with open_bus(scratch_interface) as sender:
                for frame in frames[half:]:
                    sender.send(frame)
            wait_for(lambda: agent.decoder.counts["frames"] >= FRAMES, "every frame to be decoded")
        finally:
            stop.set()  # what SIGTERM does
            runner.join(60)
        while (item := subscriber.get(2.0)) is not None:
            payloads.append(pycose_verify(item[1], item[0], key))
    finished = time.time()

    assert status == [0]
    speeds = [value for p in payloads for value in p.signals.get("Vehicle.Speed", ([], []))[1]]
    assert speeds == [float(i) for i in range(FRAMES)], "every speed, in order, signed and delivered"
    times = [t for p in payloads for t in p.signals.get("Vehicle.Speed", ([], []))[0]]
    assert all(started <= t <= finished for t in times), "sample times are the kernel's receive times"
    gaps = [event for p in payloads for event in p.events if event.kind == "bus_gap"]
    assert len(gaps) == 1, gaps
    assert gaps[0].detail["bus"] == "powertrain"
    last = max(payloads, key=lambda p: p.seq)
    assert last.counters is not None
    assert last.counters["bus.powertrain.frames_in"] == FRAMES
    assert last.counters["bus.powertrain.frames_dropped"] == 0
