"""Hostile or broken input gives one clear line and the right exit status, never a traceback (issue 12)."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.collect.campaign import CampaignError, loads_campaigns, parse_campaigns
from firmware_agent.collect.conditions import (
    MAX_NESTING,
    MAX_TOKENS,
    ConditionError,
    Evaluator,
    parse_condition,
)
from firmware_agent.errors import UserError
from firmware_agent.telemetry.campaign_updates import CampaignUpdate, CampaignUpdates, encode_campaign_update
from firmware_agent.telemetry.cose import Signer
from firmware_agent.telemetry.keys import generate_private_key, kid_of
from firmware_agent.values import Event, Sample
from firmware_agent.vss import VssMap

AGENT = [sys.executable, "-m", "firmware_agent"]
TOPIC = "vehicles/veh-0001/campaigns"
CAPTURE = """\
(1700000000.000000) body 3A0#0000000000000000
(1700000000.010000) body 3A0#0100000000000000
(1700000000.020000) body 3A0#0200000000000000
(1700000000.030000) body 3A0#0300000000000000
"""


def _deep(depth: int) -> str:
    return "(" * depth + "Vehicle.Speed > 1" + ")" * depth


def _campaign_toml(condition: str) -> str:
    return (
        f'[[campaign]]\nname = "deep"\nmode = "triggered"\ncondition = "{condition}"\n'
        'signals = ["Vehicle.Speed"]\n'
    )


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=120)


def _one_line(done: subprocess.CompletedProcess[str], status: int = 2) -> str:
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_decode_a_truncated_gz(tmp_path: Path) -> None:
    whole = gzip.compress(CAPTURE.encode() * 2000)
    capture = tmp_path / "drive.log.gz"
    capture.write_bytes(whole[: len(whole) // 2])
    line = _one_line(_run("decode", str(capture)))
    assert line.startswith(f"firmware-agent decode: error: {capture}: broken gzip file")


def test_decode_a_line_with_32_kb_of_data(tmp_path: Path) -> None:
    capture = tmp_path / "drive.log"
    lines = CAPTURE.splitlines()
    lines.insert(2, f"(1700000000.015000) body 3A0#{'00' * 32768}")
    capture.write_text("\n".join(lines) + "\n")
    done = _run("decode", str(capture), "--format", "csv")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"{capture}: skipped 1 malformed line(s) (line 3)" in done.stderr
    strict = _one_line(_run("decode", str(capture), "--strict"))
    assert strict.startswith(f"firmware-agent decode: error: {capture}:3: malformed candump line")


def test_conditions_nested_too_deep_or_too_long_are_one_line() -> None:
    with pytest.raises(ConditionError, match=f"nested more than {MAX_NESTING} levels deep"):
        parse_condition(_deep(85))
    for deep in (
        "not " * 85 + "Vehicle.Speed > 1",
        "-" * 85 + "Vehicle.Speed > 1",
        "abs(" * 40 + "1" + ")" * 40,
    ):
        with pytest.raises(ConditionError):
            parse_condition(deep)
    with pytest.raises(ConditionError, match=f"longer than {MAX_TOKENS}"):
        parse_condition(" and ".join(["Vehicle.Speed > 1"] * 100))
    with pytest.raises(CampaignError, match=r"^deep.toml:4: campaign 'deep': condition: nested more than"):
        loads_campaigns(_campaign_toml(_deep(85)), "deep.toml")
    # what the limits allow still evaluates (the evaluator recurses over the same tree)
    for allowed in (
        _deep(MAX_NESTING - 1),
        " and ".join(["Vehicle.Speed > 1"] * (MAX_TOKENS // 4)),
        "not " * (MAX_NESTING - 1) + "Vehicle.Speed > 1",
    ):
        evaluator = Evaluator(parse_condition(allowed))
        evaluator.update(Sample(1.0, "Vehicle.Speed", 5.0))


def test_run_with_a_deeply_nested_condition_exits_2_in_one_line(tmp_path: Path) -> None:
    campaigns = tmp_path / "deep.toml"
    campaigns.write_text(_campaign_toml(_deep(85)))
    generate_private_key(tmp_path / "key.pem")
    done = _run(
        "run",
        *("--collect", str(campaigns), "--source", "sim:duration=1", "--broker", "mqtt://127.0.0.1:1"),
        *(
            "--vehicle-id",
            "v1",
            "--signing-key",
            str(tmp_path / "key.pem"),
            "--state-dir",
            str(tmp_path / "s"),
        ),
    )
    assert _one_line(done).endswith("nested more than 32 levels deep at column 33")


def test_vss_pointing_at_a_binary_file_or_a_folder(tmp_path: Path) -> None:
    binary = tmp_path / "vss.toml"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserError, match=r"vss.toml: not a UTF-8 text file"):
        VssMap.load(binary)
    with pytest.raises(UserError, match="Is a directory"):
        VssMap.load(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text(f'vss = "{binary}"\n')
    generate_private_key(tmp_path / "key.pem")
    done = _run(
        "run",
        *("--config", str(config), "--source", "sim:duration=1", "--broker", "mqtt://127.0.0.1:1"),
        *(
            "--vehicle-id",
            "v1",
            "--signing-key",
            str(tmp_path / "key.pem"),
            "--state-dir",
            str(tmp_path / "s"),
        ),
    )
    assert (
        _one_line(done)
        == f"firmware-agent run: error: {binary}: not a UTF-8 text file (a VSS mapping is TOML)"
    )


def test_hostile_signed_campaign_updates_are_rejected_once_with_an_event() -> None:
    """Signed by the backend's key but unusable: an 85-deep condition (retained, so it came back on every
    reconnect with a traceback) and a 200,000-deep TOML (a callback traceback, no event)."""
    backend = Ed25519PrivateKey.generate()
    signer = Signer(backend)
    events: list[Event] = []
    applied: list[CampaignUpdate] = []

    def apply(update: CampaignUpdate) -> None:  # what the agent does on paho's thread
        parse_campaigns(update.document, f"campaign update {update.serial}")
        applied.append(update)

    updates = CampaignUpdates(
        "veh-0001", {kid_of(backend.public_key()): backend.public_key()}, apply, events.append
    )
    deep_condition = signer.sign(encode_campaign_update(1, _campaign_toml(_deep(85))), TOPIC)
    deep_toml = signer.sign(encode_campaign_update(2, "x = " + "[" * 200_000 + "]" * 200_000 + "\n"), TOPIC)
    for _ in range(3):  # three reconnects: the retained message each time
        assert updates.handle(TOPIC, deep_condition) is None
    assert updates.handle(TOPIC, deep_toml) is None
    assert [event.kind for event in events] == ["campaign_rejected", "campaign_rejected"]
    assert "nested more than 32 levels deep" in events[0].detail["reason"]
    assert events[1].detail["reason"] == "campaign TOML is nested too deeply"
    counters = updates.counters()
    assert (counters["rejected"], counters["duplicates"], counters["apply_failed"]) == (2, 2, 0)
    good = signer.sign(encode_campaign_update(3, _campaign_toml("Vehicle.Speed > 1")), TOPIC)
    assert updates.handle(TOPIC, good) is not None and len(applied) == 1


def test_a_configuration_nested_too_deeply(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    done = _run("run", "--config", str(config))
    assert _one_line(done) == f"firmware-agent run: error: {config}: TOML nested too deeply"
