"""The assembled agent's own duties that need no broker."""

from __future__ import annotations

import threading
from pathlib import Path

from firmware_agent.service.agent import Agent
from firmware_agent.service.config import Overrides, load_config
from firmware_agent.telemetry.keys import generate_private_key


def test_a_health_file_that_cannot_be_written_is_counted_not_fatal(tmp_path: Path) -> None:
    generate_private_key(tmp_path / "key.pem")
    (tmp_path / "agent.toml").write_text("[pipeline]\nshutdown_timeout = 0\n")
    (tmp_path / "state" / "health.json" / "in-the-way").mkdir(parents=True)  # the rename cannot replace it
    config = load_config(
        tmp_path / "agent.toml",
        Overrides(
            sources=["virtual:health-test"],
            broker="mqtt://127.0.0.1:1",
            vehicle_id="v1",
            signing_key=str(tmp_path / "key.pem"),
            state_dir=str(tmp_path / "state"),
        ),
    )
    agent = Agent(config)
    stop = threading.Event()
    stop.set()
    assert agent.run(stop) == 0
    assert agent.counters()["agent.health_write_errors"] >= 1
    assert (tmp_path / "state" / "health.json").is_dir()
    assert not list((tmp_path / "state").glob(".health.json.*"))  # no temporary file left behind
