"""`firmware-agent run` end to end: a real capture through the whole agent to a real mosquitto.

Every batch is verified with pycose (an independent COSE implementation) and the samples are compared
with a direct cantools decode of the same capture. The agent runs as a subprocess, exactly as the CLI
contract says, so that it can be killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import can
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.decode.catalog import Catalog
from firmware_agent.telemetry.keys import generate_private_key
from firmware_agent.telemetry.payload import Payload
from firmware_agent.telemetry.subscriber import Subscriber
from tests.integration.mosquitto import BrokerFactory, Mosquitto, backend_broker, vehicle_broker
from tests.integration.pki import Pki
from tests.integration.telemetry_helpers import pycose_verify

VEHICLE = "veh-0001"
AGENT = [sys.executable, "-m", "firmware_agent"]

#: (timestamp rounded to the microsecond, value) per signal name.
Series = dict[str, list[tuple[float, object]]]


@pytest.fixture(scope="module")
def rav4_expected(rav4_capture: Path, rav4_dbc_specs: list[str]) -> Series:
    """What the agent must deliver for the RAV4 capture with `--collect all`: cantools, frame by frame."""
    catalog = Catalog.from_specs(rav4_dbc_specs, warn_stream=None)
    series: Series = defaultdict(list)
    for frame in can.LogReader(str(rav4_capture)):
        message = catalog.lookup(str(frame.channel), frame.arbitration_id, frame.is_extended_id)
        if message is None:
            continue
        try:
            decoded = message.decode(frame.data, decode_choices=True)
        except Exception:
            continue  # cantools refuses it: the agent skips it too
        for signal_name, value in decoded.items():
            plain = str(value.name) if hasattr(value, "name") else value
            series[f"{message.name}.{signal_name}"].append((round(frame.timestamp, 6), plain))
    return {name: sorted(points, key=lambda p: p[0]) for name, points in series.items()}


def agent_command(
    broker_url: str, key: Path, state: Path, source: str, dbc: list[str], *extra: str
) -> list[str]:
    command = [*AGENT, "run", "--source", source, "--collect", "all", "--broker", broker_url]
    command += ["--vehicle-id", VEHICLE, "--signing-key", str(key), "--state-dir", str(state)]
    for spec in dbc:
        command += ["--dbc", spec]
    return command + list(extra)


def receive_all(subscriber: Subscriber, key: Ed25519PrivateKey, quiet: float = 2.0) -> Iterator[Payload]:
    """Every message until none arrives for `quiet` seconds, verified with pycose."""
    while (item := subscriber.get(quiet)) is not None:
        topic, message = item
        assert topic == f"vehicles/{VEHICLE}/telemetry"
        yield pycose_verify(message, topic, key)


def series_of(payloads: list[Payload]) -> Series:
    """Samples per signal from payloads, each batch counted once (QoS 1 may deliver a batch twice)."""
    by_seq = {payload.seq: payload for payload in payloads}
    series: Series = defaultdict(list)
    for payload in by_seq.values():
        for sample in payload.samples():
            series[sample.name].append((round(sample.timestamp, 6), sample.value))
    return {name: sorted(points, key=lambda p: p[0]) for name, points in series.items()}


def committed_seq_bound(state_dir: Path) -> int:
    """The outbox's next sequence number, read straight from its SQLite file (the agent is dead)."""
    with contextlib.closing(sqlite3.connect(f"file:{state_dir / 'outbox.sqlite3'}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0])


def assert_same_payload_per_seq(payloads: list[Payload]) -> None:
    """A sequence number is never reused: two deliveries of one seq carry the same batch."""
    seen: dict[int, Payload] = {}
    for payload in payloads:
        first = seen.setdefault(payload.seq, payload)
        assert (first.t0, first.signals) == (payload.t0, payload.signals), f"seq {payload.seq} reused"


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey]:
    path = tmp_path / "signing-key.pem"
    return path, generate_private_key(path)


def test_rav4_capture_end_to_end(
    mosquitto: Mosquitto,
    tmp_path: Path,
    key: tuple[Path, Ed25519PrivateKey],
    rav4_capture: Path,
    rav4_dbc_specs: list[str],
    rav4_expected: Series,
) -> None:
    key_path, private = key
    command = agent_command(
        mosquitto.url, key_path, tmp_path / "state", f"replay:{rav4_capture}", rav4_dbc_specs, "--exit-at-end"
    )
    with Subscriber(backend_broker(mosquitto), ["vehicles/+/telemetry"]) as subscriber:
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
        messages = []
        while (item := subscriber.get(2.0)) is not None:
            messages.append(item)
    payloads = [pycose_verify(message, topic, private) for topic, message in messages]
    assert sorted(p.seq for p in payloads) == list(range(len(payloads)))
    got = series_of(payloads)
    assert got.keys() == rav4_expected.keys()
    for name, points in rav4_expected.items():
        assert got[name] == points, name
    total = sum(len(points) for points in rav4_expected.values())
    # the default payload (version 2, docs/telemetry-format.md): issue 11 asks for 2.5 bytes per sample
    assert {p.version for p in payloads} == {2}
    assert sum(len(message) for _, message in messages) / total < 2.5
    last = max(payloads, key=lambda p: p.seq)
    assert last.counters is not None
    assert last.counters["decode.samples"] == total
    assert last.counters[f"bus.{rav4_capture.name}.frames_in"] == 135468
    assert last.counters[f"bus.{rav4_capture.name}.frames_dropped"] == 0
    # The health file the agent keeps for operators.
    assert '"outbox_pending": 0' in (tmp_path / "state" / "health.json").read_text()


@pytest.mark.parametrize("version", [1, 2])
def test_rav4_to_a_broker_with_a_small_packet_limit_delivers_every_sample(
    mosquitto_factory: BrokerFactory,
    tmp_path: Path,
    key: tuple[Path, Ed25519PrivateKey],
    rav4_capture: Path,
    rav4_dbc_specs: list[str],
    rav4_expected: Series,
    version: int,
) -> None:
    """Issue 12: 1 s batches of every RAV4 signal (~80 KB signed), `max_packet_size 65536`: 0 of 54 came.

    Payload version 1 against 64 KiB; version 2 (~12 KB a batch) against 8 KiB, so that it splits too.
    """
    limit = 65536 if version == 1 else 8192
    broker = mosquitto_factory(max_packet_size=limit)
    key_path, private = key
    config = tmp_path / "agent.toml"
    config.write_text(f"[telemetry]\npayload_version = {version}\n")
    command = agent_command(
        broker.url, key_path, tmp_path / "state", f"replay:{rav4_capture}", rav4_dbc_specs, "--exit-at-end",
        "--config", str(config),
    )  # fmt: skip
    with Subscriber(backend_broker(broker), ["vehicles/+/telemetry"]) as subscriber:
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
        messages = []
        while (item := subscriber.get(2.0)) is not None:
            messages.append(item)
    assert "Traceback" not in done.stderr
    payloads = [pycose_verify(message, topic, private) for topic, message in messages]
    assert max(len(message) for _, message in messages) <= limit - 10 - len(messages[0][0])
    assert {p.version for p in payloads} == {version}
    assert sorted(p.seq for p in payloads) == list(range(len(payloads))), "every batch once, no gap"
    got = series_of(payloads)
    assert got == rav4_expected, "every sample delivered, exactly as cantools decodes it"
    last = max(payloads, key=lambda p: p.seq)
    assert last.counters is not None
    assert last.counters["outbox.split"] > 0 and last.counters["outbox.oversize"] == 0
    assert last.counters["outbox.dead_lettered"] == 0 and last.counters["uploader.disconnects"] == 0
    print(
        f"{limit} B packets, payload v{version}: {len(payloads)} messages "
        f"(largest {max(len(m) for _, m in messages)} bytes), "
        f"{last.counters['outbox.split']} splits, {sum(p.sample_count() for p in payloads)} samples"
    )


def test_broker_restart_mid_run_loses_nothing(
    mosquitto_persistent: Mosquitto,
    tmp_path: Path,
    key: tuple[Path, Ed25519PrivateKey],
    rav4_capture: Path,
    rav4_dbc_specs: list[str],
    rav4_expected: Series,
) -> None:
    key_path, private = key
    broker = mosquitto_persistent
    source = f"replay:{rav4_capture}?speed=15"  # 60 s of driving in about 4 s
    command = agent_command(broker.url, key_path, tmp_path / "state", source, rav4_dbc_specs, "--exit-at-end")
    with Subscriber(backend_broker(broker), ["vehicles/+/telemetry"], "backend", session_expiry=600) as sub:
        agent = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        try:
            first = next(receive_all(sub, private, quiet=30.0))  # the agent is publishing
            broker.stop()
            time.sleep(2.0)
            broker.start()
            _, stderr = agent.communicate(timeout=240)
        finally:
            agent.kill()
        assert agent.returncode == 0, stderr
        payloads = [first, *receive_all(sub, private, quiet=5.0)]
    assert_same_payload_per_seq(payloads)
    seqs = {p.seq for p in payloads}
    assert seqs == set(range(max(seqs) + 1)), "seq not contiguous"
    assert series_of(payloads) == rav4_expected


def test_kill_9_and_restart_loses_nothing_and_reuses_no_seq(
    mosquitto_persistent: Mosquitto,
    tmp_path: Path,
    key: tuple[Path, Ed25519PrivateKey],
    rav4_capture: Path,
    rav4_dbc_specs: list[str],
    rav4_expected: Series,
) -> None:
    key_path, private = key
    broker = mosquitto_persistent
    state = tmp_path / "state"
    with Subscriber(backend_broker(broker), ["vehicles/+/telemetry"], "backend", session_expiry=600) as sub:
        slow = agent_command(broker.url, key_path, state, f"replay:{rav4_capture}?speed=10", rav4_dbc_specs)
        agent = subprocess.Popen(slow, stderr=subprocess.DEVNULL)
        try:
            first = next(receive_all(sub, private, quiet=30.0))
            time.sleep(1.0)
        finally:
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait()
        before_restart = [first, *receive_all(sub, private, quiet=1.0)]
        # Everything the killed agent committed, published or not, has a seq below the outbox's next one.
        killed_run_next_seq = committed_seq_bound(state)
        fast = agent_command(
            broker.url, key_path, state, f"replay:{rav4_capture}", rav4_dbc_specs, "--exit-at-end"
        )
        done = subprocess.run(fast, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
        after_restart = list(receive_all(sub, private))
    payloads = before_restart + after_restart
    assert_same_payload_per_seq(payloads)
    seqs = {p.seq for p in payloads}
    assert seqs == set(range(max(seqs) + 1)), "a committed batch was lost or a seq skipped"
    assert max(p.seq for p in before_restart) < killed_run_next_seq
    # The restarted agent first delivers what the killed one had committed, then replays the whole capture
    # again under new sequence numbers.
    second_run = [p for p in after_restart if p.seq >= killed_run_next_seq]
    assert series_of(second_run) == rav4_expected


def test_tls_client_certificate_and_config_file(
    mosquitto_tls: Mosquitto,
    pki: Pki,
    tmp_path: Path,
    key: tuple[Path, Ed25519PrivateKey],
    rav4_capture: Path,
    rav4_dbc_specs: list[str],
) -> None:
    key_path, private = key
    files = vehicle_broker(mosquitto_tls, VEHICLE)
    campaign = tmp_path / "campaign.toml"
    campaign.write_text(
        '[[campaign]]\nname = "speed"\nmode = "all"\nsignals = ["WHEEL_SPEEDS.WHEEL_SPEED_FL"]\n'
    )
    config = tmp_path / "agent.toml"
    dbc = ", ".join(f'"{spec}"' for spec in rav4_dbc_specs)
    config.write_text(
        f'vehicle_id = "{VEHICLE}"\n'
        f'sources = ["replay:{rav4_capture}"]\n'
        f"dbc = [{dbc}]\n"
        f'collect = "{campaign}"\n'
        f'signing_key = "{key_path}"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[broker]\nurl = "{mosquitto_tls.url}"\n'
        f'ca_file = "{files.ca_file}"\ncert_file = "{files.cert_file}"\nkey_file = "{files.key_file}"\n'
    )
    with Subscriber(backend_broker(mosquitto_tls), ["vehicles/+/telemetry"]) as subscriber:
        command = [*AGENT, "run", "--config", str(config), "--exit-at-end"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
        payloads = list(receive_all(subscriber, private))
    names = {name for payload in payloads for name in payload.signals}
    assert names == {"WHEEL_SPEEDS.WHEEL_SPEED_FL"}
    assert all(p.campaign == "speed" for p in payloads if p.signals)


def test_simulated_drive_with_crc_faults(
    mosquitto: Mosquitto, tmp_path: Path, key: tuple[Path, Ed25519PrivateKey]
) -> None:
    """Our own vehicle (default DBCs, VSS names) from the in-process simulator, with a burst of bad CRCs."""
    from sim import Simulation, parse_fault

    key_path, private = key
    drive = {"driver": "2", "scenario": "city", "seed": 3, "duration": 20.0}
    fault = "bad-crc@5+2:powertrain"
    source = "sim:driver=2,scenario=city,seed=3,duration=20,start=1767225600,fault=" + fault
    command = [*AGENT, "run", "--source", source, "--broker", mosquitto.url, "--vehicle-id", VEHICLE]
    command += ["--signing-key", str(key_path), "--state-dir", str(tmp_path / "state"), "--exit-at-end"]
    with Subscriber(backend_broker(mosquitto), ["vehicles/+/telemetry"]) as subscriber:
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
        payloads = list(receive_all(subscriber, private))
    assert sorted(p.seq for p in payloads) == list(range(len(payloads)))
    got = series_of(payloads)
    assert "Vehicle.Speed" in got and "Vehicle.Chassis.Brake.PedalPosition" in got
    events = [event for payload in payloads for event in payload.events]
    faults = [event for event in events if event.kind == "e2e_fault"]
    assert faults and {e.detail["bus"] for e in faults} == {"powertrain"}
    assert all(e.detail["reasons"].get("crc") for e in faults)
    counters = max(payloads, key=lambda p: p.seq).counters
    assert counters is not None and counters["e2e.e2e_crc_errors"] > 0
    # Every protected powertrain frame became a sample unless the E2E check dropped it.
    simulation = Simulation(start_time=1767225600, faults=[parse_fault(fault)], **drive)  # type: ignore[arg-type]
    protected = sum(
        1 for f in simulation.frames() if f.channel == "powertrain" and f.arbitration_id in (0x100, 0x110)
    )
    delivered = len(got["Vehicle.Speed"]) + len(got["Vehicle.Chassis.Accelerator.PedalPosition"])
    assert delivered == protected - counters["e2e.e2e_dropped"]


def publish_retained(broker: Mosquitto, topic: str, message: bytes) -> None:
    """Publish as the backend, retained, QoS 1, and wait for the broker's acknowledgement."""
    from firmware_agent.telemetry.broker import make_client

    config = backend_broker(broker)
    client = make_client(config, "backend-publisher")
    client.connect(*config.address())
    client.loop_start()
    try:
        client.publish(topic, message, qos=1, retain=True).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_signed_campaign_update_is_applied_and_a_forged_one_rejected(
    mosquitto: Mosquitto, tmp_path: Path, key: tuple[Path, Ed25519PrivateKey]
) -> None:
    from firmware_agent.telemetry.campaign_updates import encode_campaign_update
    from firmware_agent.telemetry.cose import Signer
    from firmware_agent.telemetry.keys import public_key_pem
    from firmware_agent.telemetry.topics import campaigns_topic

    key_path, private = key
    backend = Ed25519PrivateKey.generate()
    (tmp_path / "backend.pub.pem").write_text(public_key_pem(backend.public_key()))
    config = tmp_path / "agent.toml"
    config.write_text(
        f'vehicle_id = "{VEHICLE}"\nsources = ["sim:driver=1,seed=5,duration=600,speed=4"]\n'
        f'collect = "all"\ncampaign_keys = ["backend.pub.pem"]\nsigning_key = "{key_path}"\n'
        f'state_dir = "state"\n[broker]\nurl = "{mosquitto.url}"\n'
    )
    topic = campaigns_topic(VEHICLE)
    only_speed = '[[campaign]]\nname = "speed-only"\nmode = "all"\nsignals = ["Vehicle.Speed"]\n'
    agent = subprocess.Popen([*AGENT, "run", "--config", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        with Subscriber(backend_broker(mosquitto), ["vehicles/+/telemetry"]) as subscriber:
            batches = receive_all(subscriber, private, quiet=30.0)
            assert len(next(batches).signals) > 1  # collecting everything
            forged = Signer(Ed25519PrivateKey.generate()).sign(encode_campaign_update(1, only_speed), topic)
            publish_retained(mosquitto, topic, forged)
            genuine = Signer(backend).sign(encode_campaign_update(2, only_speed), topic)
            publish_retained(mosquitto, topic, genuine)
            seen: list[Payload] = []
            for payload in batches:
                seen.append(payload)
                if payload.campaign == "speed-only":
                    break
            events = [event for payload in seen for event in payload.events]
            assert "campaign_rejected" in {event.kind for event in events}
            assert "campaign_applied" in {event.kind for event in events}
            assert set(seen[-1].signals) == {"Vehicle.Speed"}
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
    # The update outlives a restart: the agent comes back with the pushed campaign.
    assert (tmp_path / "state" / "campaign-update.cbor").exists()
    assert (tmp_path / "state" / "campaign-serial").read_text().strip() == "2"


def test_mf4_replay_is_recognised_by_content_like_decode(
    mosquitto: Mosquitto, tmp_path: Path, key: tuple[Path, Ed25519PrivateKey], test_data: Path
) -> None:
    # An MF4 capture named .dat: `decode` reads it by content, and so must `run` (issue 9: it failed with
    # "reading MF4 needs asammdf" because run decided from the file name).
    capture = tmp_path / "drive.dat"
    capture.write_bytes(
        (
            test_data / "captures" / "css_mf4" / "other_matlab-basics_LOG_11111111_00000012_00000001.MF4"
        ).read_bytes()
    )
    gps = f"2={test_data / 'dbc' / 'css__canmod-gps.dbc'}"
    decoded = subprocess.run(
        [*AGENT, "decode", str(capture), "--dbc", gps, "--summary"], capture_output=True, text=True
    )
    assert decoded.returncode == 0, decoded.stderr
    key_path, _ = key
    command = agent_command(
        mosquitto.url, key_path, tmp_path / "state", f"replay:{capture}", [gps], "--exit-at-end"
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "asammdf" not in done.stderr
    summary = re.search(r"run: ([\d,]+) frames from 1 source\(s\).* ([\d,]+) samples decoded", done.stderr)
    assert summary is not None, done.stderr
    frames, samples = (int(group.replace(",", "")) for group in summary.groups())
    assert frames > 10_000 and samples > 1000, done.stderr
