"""`firmware-agent verify --broker` as a subprocess against mosquitto with mTLS, then on its saved dump."""

from __future__ import annotations

import base64
import csv
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.telemetry.keys import public_key_pem
from tests.integration.mosquitto import Mosquitto, backend_broker, vehicle_broker
from tests.integration.telemetry_helpers import make_vehicle


def _verify(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "firmware_agent", "verify", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_verify_subscribes_over_mtls_saves_and_rejects_a_doctored_dump(
    tmp_path: Path, mosquitto_tls: Mosquitto
) -> None:
    vehicle = make_vehicle(tmp_path, "veh-0001", vehicle_broker(mosquitto_tls, "veh-0001"))
    pub = tmp_path / "veh-0001.pub"
    pub.write_text(public_key_pem(vehicle.key.public_key()))
    backend = backend_broker(mosquitto_tls)
    assert backend.ca_file and backend.cert_file and backend.key_file
    dump, samples = tmp_path / "saved.dump", tmp_path / "samples.csv"
    proc = _verify(
        "--broker", backend.url, "--ca", str(backend.ca_file), "--cert", str(backend.cert_file),
        "--key", str(backend.key_file), "--count", "4", "--timeout", "30", "--public-key", str(pub),
        "--save", str(dump), "--format", "csv", "-o", str(samples),
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        ready = proc.stderr.readline()
        assert ready.startswith("verify: subscribed to vehicles/+/telemetry"), ready + proc.stderr.read()
        vehicle.uploader.start()
        vehicle.commit(4, samples=3)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        vehicle.uploader.stop(timeout=5)
    assert proc.returncode == 0, err
    assert "4 messages, 4 verified, 0 problems" in err
    rows = list(csv.DictReader(samples.open()))
    assert len(rows) == 12 and {r["seq"] for r in rows} == {"0", "1", "2", "3"}

    # The saved dump verifies again offline; doctored copies do not.
    assert _verify(str(dump), "--public-key", str(pub), "--format", "none").wait(timeout=30) == 0
    lines = dump.read_text().splitlines()
    topic, encoded = lines[1].split("\t")
    message = bytearray(base64.b64decode(encoded))
    message[-1] ^= 0x01  # flip a bit of the signature
    doctored = [
        lines[0],
        f"{topic}\t{base64.b64encode(bytes(message)).decode()}",
        lines[2].replace("veh-0001", "veh-0002", 1),
        lines[0],
    ]
    (tmp_path / "doctored.dump").write_text("\n".join(doctored) + "\n")
    proc = _verify(str(tmp_path / "doctored.dump"), "--public-key", str(pub), "--format", "none")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    kinds = [line.split(": ")[1] for line in err.splitlines() if line.startswith(str(tmp_path))]
    assert kinds == ["bad_signature", "wrong_topic", "replay"], err


def test_verify_bad_topic_filter_and_count_are_one_line_errors(tmp_path: Path, mosquitto: Mosquitto) -> None:
    pub = tmp_path / "v.pub"
    pub.write_text(public_key_pem(Ed25519PrivateKey.generate().public_key()))
    for extra, needle in (
        (["--topic", "vehicles/#/telemetry", "--timeout", "5"], "cannot subscribe to vehicles/#/telemetry"),
        (["--count", "0"], "--count 0: must be at least 1"),
    ):
        _, err = _verify("--broker", mosquitto.url, "--public-key", str(pub), *extra).communicate(timeout=30)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], err
