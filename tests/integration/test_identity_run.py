"""Driver identification end to end: profiles learned from simulated drives with `profile learn`, then
`firmware-agent run` replays an owner's drive and a borrowed-key drive to a real mosquitto, and the verified
telemetry (pycose) says who drove.

Activation is lowered to 5 minutes so that one 7-minute drive per persona activates its profile.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.cli import main
from firmware_agent.identity.model import DriverModel
from firmware_agent.identity.registry import ProfileRegistry
from firmware_agent.telemetry.keys import generate_private_key
from firmware_agent.telemetry.payload import Payload
from firmware_agent.telemetry.subscriber import Subscriber
from sim.personas import find_persona
from tests.integration.mosquitto import Mosquitto, backend_broker
from tests.integration.telemetry_helpers import pycose_verify

VEHICLE = "veh-id-0001"
AGENT = [sys.executable, "-m", "firmware_agent"]
DRIVE_SECONDS = 420
PERSONAS = ("anna", "ben", "chloe", "dev")


def simulate(out: Path, driver: str, seed: int, scenario: str = "city", key_of: str | None = None) -> Path:
    argv = ["sim", "--driver", driver, "--scenario", scenario, "--seed", str(seed)]
    argv += ["--duration", str(DRIVE_SECONDS), "--out", str(out)]
    if key_of is not None:
        argv += ["--key-of", key_of]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory whose registry learned one city drive of each persona (model active for all)."""
    folder = tmp_path_factory.mktemp("identity")
    config = folder / "agent.toml"
    config.write_text("[identity]\nactivation_minutes = 5\n")
    captures = [str(simulate(folder / f"{name}.log", name, seed=11)) for name in PERSONAS]
    assert (
        main(["profile", "learn", "--config", str(config), "--state-dir", str(folder / "state"), *captures])
        == 0
    )
    return folder


def profile_of(state: Path, persona: str) -> str:
    """The pseudonymous profile the registry derives for a persona's key."""
    key_id = find_persona(persona).identity.key_id
    return ProfileRegistry(state).profile_id(f"KEY_STATUS.KeyId={key_id}")


def copy_learned(learned: Path, folder: Path) -> Path:
    """A copy of the learned state directory and configuration in `folder` (tests must not share one)."""
    shutil.copytree(learned / "state", folder / "state")
    shutil.copy(learned / "agent.toml", folder / "agent.toml")
    return folder / "state"


def run_agent(mosquitto: Mosquitto, folder: Path, state: Path, capture: Path) -> tuple[list[Payload], str]:
    """Replay `capture` through `firmware-agent run` and return every verified batch and stderr."""
    key_path = folder / "signing-key.pem"
    private: Ed25519PrivateKey = generate_private_key(key_path)
    command = [*AGENT, "run", "--config", str(folder / "agent.toml"), "--source", f"replay:{capture}"]
    command += ["--broker", mosquitto.url, "--vehicle-id", VEHICLE, "--signing-key", str(key_path)]
    command += ["--state-dir", str(state), "--exit-at-end"]
    payloads = []
    with Subscriber(backend_broker(mosquitto), ["vehicles/+/telemetry"]) as subscriber:
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
        while (item := subscriber.get(2.0)) is not None:
            topic, message = item
            payloads.append(pycose_verify(message, topic, private))
    return payloads, done.stderr


def events_of(payloads: list[Payload], kind: str) -> list[dict]:
    return [event.detail for payload in payloads for event in payload.events if event.kind == kind]


def test_profile_list_shows_four_active_profiles(learned: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(learned / "agent.toml")
    assert main(["profile", "list", "--config", config, "--state-dir", str(learned / "state"), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    profiles = {row["profile"]: row for row in listing["profiles"]}
    assert set(profiles) == {profile_of(learned / "state", name) for name in PERSONAS}
    assert all(row["active"] and row["minutes"] >= 5 and row["drives"] == 1 for row in profiles.values())


def test_borrowed_key_raises_a_mismatch_in_verified_telemetry(
    mosquitto: Mosquitto, learned: Path, tmp_path: Path
) -> None:
    state = copy_learned(learned, tmp_path)
    capture = simulate(tmp_path / "borrowed.log", "ben", seed=23, scenario="borrowed-key", key_of="anna")
    payloads, stderr = run_agent(mosquitto, tmp_path, state, capture)

    anna, ben = profile_of(state, "anna"), profile_of(state, "ben")
    mismatches = events_of(payloads, "driver_mismatch")
    assert len(mismatches) == 1, stderr
    assert mismatches[0]["explicit"] == anna and mismatches[0]["behaviour"] == ben
    assert mismatches[0]["confidence"] >= 0.95 and mismatches[0]["seconds"] >= 120
    # Behaviour never replaces the key's profile in the batches; it marks the mismatch.
    drives = [p.driver for p in payloads if p.driver and p.driver["profile"] is not None]
    assert drives and all(driver["profile"] == anna and driver["source"] == "explicit" for driver in drives)
    assert any(driver.get("mismatch") for driver in drives)
    # The raw key id never leaves the car, only the pseudonymous profile.
    key_id = find_persona("anna").identity.key_id
    assert all("Vehicle.Driver.Identifier.Subject" not in p.signals for p in payloads)
    assert all(str(key_id) not in json.dumps(p.driver) for p in payloads if p.driver)
    # The borrowed drive was not learned: anna's profile still holds her one drive.
    assert ProfileRegistry(state).profiles[anna].drives == 1


def test_owner_drive_is_identified_without_mismatch(
    mosquitto: Mosquitto, learned: Path, tmp_path: Path
) -> None:
    state = copy_learned(learned, tmp_path)
    capture = simulate(tmp_path / "owner.log", "anna", seed=29)
    payloads, stderr = run_agent(mosquitto, tmp_path, state, capture)

    anna = profile_of(state, "anna")
    identified = events_of(payloads, "driver_identified")
    assert len(identified) == 1, stderr
    assert identified[0]["profile"] == anna and identified[0]["confirmed"] is True
    assert identified[0]["confidence"] >= 0.95
    assert events_of(payloads, "driver_mismatch") == []
    confidences = [p.driver["confidence"] for p in payloads if p.driver and p.driver["profile"] == anna]
    assert confidences and max(confidences) >= 0.95
    # A finished owner's drive is learned: a second drive for anna.
    assert ProfileRegistry(state).profiles[anna].drives == 2


def test_profile_forget_erases_a_profile_and_the_model_forgets_it(
    learned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = copy_learned(learned, tmp_path)
    chloe = profile_of(state, "chloe")
    config = str(tmp_path / "agent.toml")
    assert main(["profile", "forget", "--config", config, "--state-dir", str(state), chloe]) == 0
    assert f"forgot {chloe}" in capsys.readouterr().out
    assert main(["profile", "list", "--config", config, "--state-dir", str(state), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert chloe not in {row["profile"] for row in listing["profiles"]} and len(listing["profiles"]) == 3
    assert not (state / "identity" / "windows" / f"{chloe}.npy").exists()
    model = DriverModel.load(state / "identity" / "model.npz")
    assert chloe not in model.labels and len(model.labels) == 3
