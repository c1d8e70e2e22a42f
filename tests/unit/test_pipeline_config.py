"""The agent's configuration: file keys, flag overrides, defaults and one-line errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from firmware_agent.cli import main
from firmware_agent.errors import UserError
from firmware_agent.service.config import Overrides, load_config
from firmware_agent.vehicle import default_dbc_specs

GOOD = """
vehicle_id = "veh-0001"
sources = ["powertrain=socketcan:can0", "chassis=socketcan:can1"]
dbc = ["powertrain=dbc/powertrain.dbc"]
collect = "campaigns.toml"
state_dir = "state"

[broker]
url = "mqtts://broker.example:8883"
ca_file = "pki/ca.pem"
max_inflight = 10

[e2e]
burst_count = 3
burst_seconds = 0.5

[pipeline]
queue_frames = 4096
stats_interval = 30
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pki").mkdir(exist_ok=True)
    (tmp_path / "pki" / "ca.pem").write_text("a CA certificate\n")
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_file_values_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), Overrides())
    assert config.vehicle_id == "veh-0001"
    assert [s.text for s in config.sources] == ["powertrain=socketcan:can0", "chassis=socketcan:can1"]
    assert config.dbc == (f"powertrain={tmp_path / 'dbc/powertrain.dbc'}",)
    assert config.collect == str(tmp_path / "campaigns.toml")
    assert config.state_dir == tmp_path / "state"
    assert config.signing_key == tmp_path / "state" / "signing-key.pem"
    assert config.broker.ca_file == tmp_path / "pki" / "ca.pem"
    assert config.max_inflight == 10
    assert (config.e2e.burst_count, config.e2e.burst_seconds, config.e2e.max_jump) == (3, 0.5, 3)
    assert config.reader.max_frames == 4096 and config.stats_interval == 30
    assert config.payload_version == 2, "the compact payload unless told"
    assert (
        load_config(write(tmp_path, GOOD + "[telemetry]\npayload_version = 1\n"), Overrides()).payload_version
        == 1
    )


def test_flags_override_the_file(tmp_path: Path) -> None:
    overrides = Overrides(
        sources=["virtual:x"],
        dbc=["a.dbc"],
        collect="all",
        broker="mqtt://127.0.0.1:1883",
        vehicle_id="veh-0002",
        signing_key="k.pem",
        state_dir="/tmp/s",
        exit_at_end=True,
    )
    config = load_config(write(tmp_path, GOOD), overrides)
    assert [s.text for s in config.sources] == ["virtual:x"]
    assert config.dbc == ("a.dbc",) and config.collect == "all"
    assert config.broker.url == "mqtt://127.0.0.1:1883" and config.vehicle_id == "veh-0002"
    assert config.signing_key == Path("k.pem") and config.state_dir == Path("/tmp/s") and config.exit_at_end


def test_defaults_without_a_file() -> None:
    config = load_config(
        None, Overrides(sources=["virtual:x"], broker="mqtt://localhost", vehicle_id="v1", state_dir="/tmp/s")
    )
    assert config.dbc == tuple(default_dbc_specs()) and config.collect == "all"
    assert config.signing_key == Path("/tmp/s/signing-key.pem")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (GOOD.replace('"veh-0001"', '"veh/0001"'), "vehicle_id: 'veh/0001' not allowed"),
        (GOOD.replace('"veh-0001"', '"veh+"'), "vehicle_id: 'veh+' not allowed"),
        (GOOD.replace('vehicle_id = "veh-0001"', ""), "vehicle_id: missing"),
        (GOOD.replace("max_inflight = 10", "max_inflight = 0"), "broker.max_inflight: expected an integer"),
        (GOOD.replace("burst_count = 3", 'burst_count = "many"'), "e2e.burst_count: expected an integer"),
        (GOOD.replace("queue_frames = 4096", "queue_frame = 4096"), "pipeline.queue_frame: unknown key"),
        (GOOD + "\nbogus = 1\n", "bogus: unknown key"),
        (GOOD.replace('"chassis=socketcan:can1"', '"chassis=can:can1"'), "sources: source"),
        (GOOD.replace('url = "mqtts://broker.example:8883"', ""), "broker.url: missing"),
        (GOOD.replace("[broker]", "[broker\n"), "TOML syntax error"),
        (GOOD.replace('ca_file = "pki/ca.pem"', 'ca_file = "pki/nope.pem"'), "broker: "),
        (
            GOOD.replace('ca_file = "pki/ca.pem"', 'cert_file = "pki/ca.pem"'),
            "broker: client certificate and key",
        ),
        (GOOD.replace("mqtts://broker.example:8883", "http://x"), "broker: broker URL 'http://x'"),
        (GOOD.replace("max_inflight = 10", "keepalive = 70000"), "broker.keepalive: expected an integer"),
        (GOOD.replace("mqtts://broker.example:8883", "mqtt://h:0"), "port 0 is not a port"),
        (GOOD.replace("mqtts://broker.example:8883", "mqtt://[::1"), "Invalid IPv6 URL"),
        (GOOD.replace("mqtts://broker.example:8883", "mqtt://u:hunter2@h"), "passwords are not supported"),
        (GOOD + "shutdown_timeout = inf\n", "pipeline.shutdown_timeout: expected a number"),
        (GOOD + "shutdown_timeout = nan\n", "pipeline.shutdown_timeout: expected a number"),
        (GOOD.replace("burst_seconds = 0.5", "burst_seconds = inf"), "e2e.burst_seconds: expected a number"),
        (
            GOOD + "[telemetry]\npayload_version = 3\n",
            "telemetry.payload_version: expected an integer from 1 to 2",
        ),
    ],
)
def test_errors_name_the_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError) as error:
        load_config(path, Overrides())
    message = str(error.value)
    assert re.match(rf"{re.escape(str(path))}(:\d+){{0,2}}: ", message) and needle in message
    assert "\n" not in message and "hunter2" not in message, "one line, never the password"


def test_loose_secrets_are_refused(tmp_path: Path) -> None:
    from firmware_agent.telemetry.broker import BrokerConfig
    from firmware_agent.telemetry.keys import Keyring, load_signing_key

    ring = tmp_path / "ring"
    Keyring.create(ring)
    load_signing_key(ring)
    ring.chmod(0o777)
    with pytest.raises(UserError, match=r"keyring folder is accessible by group or others.*chmod 700"):
        load_signing_key(ring)
    ring.chmod(0o700)
    active = next(ring.glob("*.pem"))
    os.chown(active, 65534, -1)  # a key planted by another user
    with pytest.raises(UserError, match="owned by uid 65534"):
        load_signing_key(ring)
    tls_key = tmp_path / "client.key"
    tls_key.write_text("key")
    tls_key.chmod(0o644)
    (tmp_path / "c.pem").write_text("cert")
    with pytest.raises(UserError, match="TLS client key is accessible by group or others"):
        BrokerConfig("mqtts://h", tmp_path / "c.pem", tmp_path / "c.pem", tls_key)


def test_bad_vehicle_id_flag_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", "--source", "virtual:x", "--broker", "mqtt://127.0.0.1:1", "--vehicle-id", "a/b"])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--vehicle-id: 'a/b' not allowed" in err[0]


def test_missing_signing_key_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "run",
            "--source",
            "virtual:x",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--vehicle-id",
            "v1",
            "--state-dir",
            str(tmp_path),
        ]
    )
    assert status == 2
    assert "keys generate" in capsys.readouterr().err


def test_state_dir_that_is_a_file_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from firmware_agent.telemetry.keys import generate_private_key

    key = tmp_path / "key.pem"
    generate_private_key(key)
    state = tmp_path / "state"
    state.write_text("not a folder")
    argv = ["run", "--source", "virtual:x", "--broker", "mqtt://127.0.0.1:1", "--vehicle-id", "v1"]
    status = main([*argv, "--signing-key", str(key), "--state-dir", str(state)])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{state}: cannot create the state directory" in err[0]


def test_unreadable_campaign_update_in_the_state_dir_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from firmware_agent.telemetry.keys import generate_private_key, public_key_pem

    key = tmp_path / "key.pem"
    backend = tmp_path / "backend.pub.pem"
    backend.write_text(public_key_pem(generate_private_key(key).public_key()))
    state = tmp_path / "state"
    state.mkdir()
    (state / "campaign-update.cbor").write_bytes(b"\xa1\x61")  # a CBOR map cut short
    config = tmp_path / "agent.toml"
    config.write_text(f'campaign_keys = ["{backend}"]\n')
    argv = ["run", "--config", str(config), "--source", "virtual:x", "--broker", "mqtt://127.0.0.1:1"]
    status = main([*argv, "--vehicle-id", "v1", "--signing-key", str(key), "--state-dir", str(state)])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "campaign-update.cbor: cannot read the last applied campaign update" in err[0]


def test_config_errors_carry_the_line_like_campaign_errors(tmp_path: Path) -> None:
    # one TOML reader (firmware_agent/tomlfile.py) for the configuration and the campaigns
    path = write(tmp_path, GOOD.replace("max_inflight = 10", "max_inflight = 0"))
    line = GOOD.splitlines().index("max_inflight = 10") + 1
    with pytest.raises(
        UserError, match=rf"^{re.escape(str(path))}:{line}: broker.max_inflight: expected an integer"
    ):
        load_config(path, Overrides())
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:\d+:\d+: TOML syntax error"):
        load_config(write(tmp_path, GOOD.replace("[broker]", "[broker\n")), Overrides())
