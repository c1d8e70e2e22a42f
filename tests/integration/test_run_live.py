"""The agent in-process on live python-can virtual buses: identity hooks, clean stop, counters."""

from __future__ import annotations

import gc
import threading
import time
import uuid
from pathlib import Path

import can

from firmware_agent.decode.catalog import Catalog
from firmware_agent.e2e_protection import profile_for
from firmware_agent.service.agent import Agent
from firmware_agent.service.config import AgentConfig
from firmware_agent.sources import SourceSpec
from firmware_agent.telemetry.broker import BrokerConfig
from firmware_agent.telemetry.keys import generate_private_key
from firmware_agent.telemetry.payload import Payload
from firmware_agent.telemetry.subscriber import Subscriber
from firmware_agent.values import Batch, Sample
from firmware_agent.vehicle import default_dbc_specs
from tests.integration.mosquitto import Mosquitto, backend_broker
from tests.integration.telemetry_helpers import pycose_verify

VEHICLE = "veh-0007"
DRIVER = {"profile": "p-00000000000000aa", "source": "explicit", "confidence": 0.9}


class CountingObserver:
    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def observe(self, sample: Sample) -> None:
        self.samples.append(sample)


class DriverAnnotator:
    def __init__(self) -> None:
        self.batches = 0

    def annotate(self, batch: Batch) -> None:
        self.batches += 1
        batch.driver = DRIVER


def speed_frames(count: int) -> list[can.Message]:
    message = Catalog.from_specs(default_dbc_specs()).lookup("powertrain", 0x100, False)
    assert message is not None
    profile = profile_for(message)
    assert profile is not None
    frames = []
    for i in range(count):
        data = bytearray(message.encode({"SpeedCrc": 0, "SpeedCounter": 0, "SpeedValid": 1,
                                         "VehicleSpeed": float(i % 200), "Odometer": 1000.0}))  # fmt: skip
        profile.protect(data, i)
        frames.append(can.Message(arbitration_id=0x100, data=bytes(data), is_extended_id=False))
    return frames


def test_live_virtual_bus_with_identity_hooks_and_clean_stop(mosquitto: Mosquitto, tmp_path: Path) -> None:
    channel = f"pt-{uuid.uuid4().hex[:8]}"
    key = generate_private_key(tmp_path / "key.pem")
    config = AgentConfig(
        vehicle_id=VEHICLE,
        sources=(SourceSpec.parse(f"powertrain=virtual:{channel}"),),
        broker=BrokerConfig(url=mosquitto.url),
        signing_key=tmp_path / "key.pem",
        state_dir=tmp_path / "state",
        collect="all",
        stats_interval=0,
    )
    observer, annotator = CountingObserver(), DriverAnnotator()
    ready = threading.Event()
    heartbeats: list[dict] = []
    agent = Agent(
        config,
        observers=[observer],
        annotators=[annotator],
        on_ready=ready.set,
        on_heartbeat=heartbeats.append,
    )
    stop = threading.Event()
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(agent.run(stop)))
    frames = speed_frames(300)
    gc_thresholds = gc.get_threshold()
    with Subscriber(backend_broker(mosquitto), ["vehicles/+/telemetry"]) as subscriber:
        runner.start()
        assert ready.wait(10)
        with can.Bus(interface="virtual", channel=channel) as sender:
            deadline = time.monotonic() + 10
            while agent.readers[0].source._bus is None and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.01)
            for frame in frames:
                sender.send(frame)
        deadline = time.monotonic() + 10
        while agent.decoder.counts["frames"] < 300 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()  # what SIGTERM does
        runner.join(30)
        payloads: list[Payload] = []
        while (item := subscriber.get(2.0)) is not None:
            payloads.append(pycose_verify(item[1], item[0], key))
    assert status == [0]
    assert gc.get_threshold() == gc_thresholds  # raised only while the agent ran
    speeds = [s.value for s in observer.samples if s.name == "Vehicle.Speed"]
    assert speeds == [float(i % 200) for i in range(300)]
    sent = [v for p in payloads for v in p.signals.get("Vehicle.Speed", ([], []))[1]]
    assert sent == speeds  # the clean stop flushed and delivered everything
    assert all(p.driver == DRIVER for p in payloads)  # an embedder's annotator runs after the identity stage
    assert annotator.batches == len(payloads)
    last = max(payloads, key=lambda p: p.seq)
    assert last.counters is not None
    assert last.counters["bus.powertrain.frames_in"] == 300
    assert last.counters["bus.powertrain.frames_dropped"] == 0
    assert last.counters["e2e.e2e_dropped"] == 0
    assert heartbeats and heartbeats[-1]["buses"]["powertrain"]["frames_in"] == 300
    assert heartbeats[-1]["outbox_pending"] == 0


def test_replayed_batches_leave_while_the_replay_runs(
    mosquitto: Mosquitto, tmp_path: Path, rav4_capture: Path, rav4_dbc_specs: list[str]
) -> None:
    """Batches are cut on the capture's clock (2018) as it goes, not all at the end of the replay."""
    generate_private_key(tmp_path / "key.pem")
    config = AgentConfig(
        vehicle_id=VEHICLE,
        sources=(SourceSpec.parse(f"replay:{rav4_capture}?speed=10"),),  # 60 s of driving in 6 s
        broker=BrokerConfig(url=mosquitto.url),
        signing_key=tmp_path / "key.pem",
        state_dir=tmp_path / "state",
        dbc=tuple(rav4_dbc_specs),
        collect="all",
        exit_at_end=True,
    )
    agent = Agent(config)
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(agent.run(threading.Event())))
    runner.start()
    deadline = time.monotonic() + 30
    while agent.uploader.counters()["acknowledged"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent.uploader.counters()["acknowledged"] > 0
    assert not agent.readers[0].done.is_set(), "the first batch was only sent after the whole replay"
    runner.join(60)
    assert status == [0]
