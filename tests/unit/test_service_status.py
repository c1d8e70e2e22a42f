"""`firmware-agent status`: exit 0 ok, 1 degraded, 3 not running/stopped/stale; health.json written by a
real agent; the JSON and the table views."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from firmware_agent.cli import main
from firmware_agent.service.agent import Agent
from firmware_agent.service.config import Overrides, load_config
from firmware_agent.telemetry.keys import generate_private_key


def _health(folder: Path, **fields: object) -> None:
    """A health.json in `folder`; a negative `updated` is that many seconds before now."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(fields.get("updated"), int | float) and float(fields["updated"]) < 0:  # type: ignore[arg-type]
        fields["updated"] = time.time() + float(fields["updated"])  # type: ignore[arg-type]
    document = {
        "status": "ok",
        "vehicle_id": "v1",
        "updated": time.time(),
        "heartbeat_interval": 1.0,
        "state_dir": str(folder),
        "buses": {
            "powertrain": {"frames_in": 1234, "frames_dropped": 0, "gaps": 0, "lost": False, "done": False}
        },
        "broker_connected": True,
        **fields,
    }
    (folder / "health.json").write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("fields", "code", "first_line"),
    [
        ({}, 0, "firmware-agent: ok"),
        (
            {
                "status": "degraded",
                "degraded_because": ["broker not connected (connection refused: Not authorized)"],
            },
            1,
            "firmware-agent: degraded (broker not connected (connection refused: Not authorized))",
        ),
        ({"status": "stopped"}, 3, "firmware-agent: stopped (stopped cleanly)"),
        ({"updated": -60}, 3, "firmware-agent: stale (health.json not updated for 60 s"),  # 60 s ago
    ],
)
def test_exit_status_follows_the_health_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fields: dict, code: int, first_line: str
) -> None:
    _health(tmp_path / "state", **fields)
    assert (
        main(["status", "--state-dir", str(tmp_path / "state"), "--runtime-dir", str(tmp_path / "run")])
        == code
    )
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(first_line)
    assert "powertrain" in out and "1,234" in out


def test_no_health_file_means_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["status", "--state-dir", str(tmp_path), "--runtime-dir", str(tmp_path / "run"), "--json"]) == 3
    )
    report = json.loads(capsys.readouterr().out)
    assert report["state"] == "not running" and report["exit_code"] == 3


def test_the_runtime_directory_wins_over_the_state_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _health(tmp_path / "state", status="stopped", updated=-3600)
    _health(tmp_path / "run", state_dir=str(tmp_path / "state"))  # newer, the same agent
    _health(tmp_path / "other", state_dir="/somewhere/else")
    assert (
        main(["status", "--state-dir", str(tmp_path / "state"), "--runtime-dir", str(tmp_path / "run")]) == 0
    )
    assert (
        main(["status", "--state-dir", str(tmp_path / "state"), "--runtime-dir", str(tmp_path / "other")])
        == 3
    )


def test_a_real_agent_writes_what_status_reads_and_says_stopped_after_a_clean_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    generate_private_key(tmp_path / "key.pem")
    (tmp_path / "agent.toml").write_text("[pipeline]\nshutdown_timeout = 0\n")
    config = load_config(
        tmp_path / "agent.toml",
        Overrides(
            sources=["virtual:status-test"],
            broker="mqtt://127.0.0.1:1",
            vehicle_id="v1",
            signing_key=str(tmp_path / "key.pem"),
            state_dir=str(tmp_path / "state"),
        ),
    )
    seen: list[dict] = []
    stop = threading.Event()

    def heartbeat(summary: dict) -> None:
        seen.append(dict(summary))
        stop.set()

    agent = Agent(config, on_heartbeat=heartbeat)
    assert agent.run(stop) == 0
    assert seen[0]["status"] == "degraded"  # no broker on port 1
    assert "broker not connected" in seen[0]["degraded_because"][0]
    assert not (tmp_path / "state" / "health.json").exists()  # RAM, not the SD card
    assert main(["status", "--state-dir", str(tmp_path / "state"), "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["state"] == "stopped" and report["health_file"] == str(tmp_path / "run" / "health.json")
    assert report["outbox"]["exists"] and report["outbox"]["pending"] == 1  # the final batch, unsent
    assert report["health"]["buses"]["status-test"]["frames_in"] == 0


def test_a_relative_state_dir_with_an_outbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from firmware_agent.telemetry.outbox import Outbox

    _health(tmp_path / "state")
    Outbox(tmp_path / "state" / "outbox.sqlite3", lambda batch, seq: b"x" * 10, 1 << 20).close()
    monkeypatch.chdir(tmp_path)
    assert main(["status", "--state-dir", "state", "--runtime-dir", "run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outbox"]["exists"] and report["outbox"]["pending"] == 0
