"""Absurd frame times (issue 12): refused and counted at the pipeline's door, never looped on, the stop flag
(what SIGTERM sets) always reachable; the simulator refuses to start where its clock cannot go."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import can
import pytest

from firmware_agent.errors import UserError
from firmware_agent.pipeline.frame_times import FrameTimeGuard, plausible_time
from firmware_agent.service.agent import Agent
from firmware_agent.service.config import Overrides, load_config
from firmware_agent.sources import open_source
from firmware_agent.telemetry.keys import generate_private_key
from firmware_agent.values import MAX_FRAME_TIME
from sim import Simulation
from sim.outputs import write_capture

CAMPAIGNS = """\
[[campaign]]
name = "speed-10hz"
mode = "periodic"
period_ms = 100
signals = ["Vehicle.Speed"]

[[campaign]]
name = "everything"
mode = "all"
"""


def _frame(timestamp: float) -> can.Message:
    return can.Message(timestamp=timestamp, arbitration_id=0x100, channel="can0", data=b"\x00")


def test_the_guard_refuses_what_is_not_a_time_in_range_and_reports_once() -> None:
    assert plausible_time(0.0) and plausible_time(1.7e9) and plausible_time(MAX_FRAME_TIME)
    for bad in (-1.0, MAX_FRAME_TIME + 1, 1.7e15, 2e17, 1e300, float("nan"), float("inf"), -float("inf")):
        assert not plausible_time(bad)
    lines: list[str] = []
    guard = FrameTimeGuard(lines.append)
    good = [_frame(1.7e9 + i) for i in range(3)]
    assert guard.filter(good) is good, "the common case costs no copy"
    kept = guard.filter([_frame(1.7e9), _frame(2e17), _frame(float("nan")), _frame(1.7e9 + 1)])
    assert [f.timestamp for f in kept] == [1.7e9, 1.7e9 + 1]
    assert guard.filter([_frame(1.7e15)]) == []
    assert guard.refused == 3
    assert len(lines) == 1 and "t=2e+17 on can0 refused" in lines[0] and "decode.bad_time" in lines[0]


@pytest.fixture(scope="module")
def drive() -> list[can.Message]:
    return list(Simulation(duration=4, seed=3).frames())


def _run_agent(tmp_path: Path, capture: Path) -> tuple[Agent, float, str]:
    """Replay `capture` through the agent (no broker: nothing can leave), then set the stop flag."""
    generate_private_key(tmp_path / "key.pem")
    (tmp_path / "campaigns.toml").write_text(CAMPAIGNS)
    (tmp_path / "agent.toml").write_text("[pipeline]\nshutdown_timeout = 0\n[identity]\nenabled = false\n")
    config = load_config(
        tmp_path / "agent.toml",
        Overrides(
            sources=[f"replay:{capture}"],
            collect=str(tmp_path / "campaigns.toml"),
            broker="mqtt://127.0.0.1:1",
            vehicle_id="v1",
            signing_key=str(tmp_path / "key.pem"),
            state_dir=str(tmp_path / "state"),
        ),
    )
    log_path = tmp_path / "agent.log"
    with log_path.open("w") as log:
        handler = logging.StreamHandler(log)  # the agent speaks through logging, as under systemd
        logging.getLogger("firmware_agent").addHandler(handler)
        agent = Agent(config, log=log, sources=[open_source(f"replay:{capture}")])
        stop = threading.Event()
        statuses: list[int] = []
        worker = threading.Thread(target=lambda: statuses.append(agent.run(stop)), daemon=True)
        worker.start()
        deadline = time.monotonic() + 30
        while not (agent.readers and all(r.done.is_set() for r in agent.readers) and agent.frames.empty()):
            assert worker.is_alive() and time.monotonic() < deadline, "the agent stopped reading"
            time.sleep(0.05)
        time.sleep(0.3)  # a few more turns with the data clock where the last frame left it
        started = time.monotonic()
        stop.set()  # what SIGTERM does
        worker.join(timeout=15)
        assert not worker.is_alive(), "the stop flag was not reached: the pipeline thread spins"
        assert statuses == [0]
        logging.getLogger("firmware_agent").removeHandler(handler)
    return agent, time.monotonic() - started, log_path.read_text()


@pytest.mark.parametrize("case", ["microseconds", "one line at 2e17", "nan and inf"])
def test_agent_refuses_absurd_frame_times_counts_them_and_stops(
    tmp_path: Path, drive: list[can.Message], case: str
) -> None:
    frames = [f.__copy__() for f in drive]
    if case == "microseconds":  # a logger writing microseconds since the epoch
        for frame in frames:
            frame.timestamp *= 1e6
        refused = len(frames)
    elif case == "one line at 2e17":
        frames[len(frames) // 2].timestamp = 2e17
        refused = 1
    else:
        frames[10].timestamp = float("inf")
        frames[20].timestamp = float("nan")
        refused = 2
    capture = tmp_path / "drive.log"
    write_capture(frames, capture)
    agent, stop_seconds, log = _run_agent(tmp_path, capture)
    counters = agent.counters()
    assert counters["decode.bad_time"] == refused
    assert counters["decode.frames"] == len(frames) - refused
    assert stop_seconds < 10
    assert log.count("refused") == 1, log
    assert "Traceback" not in log
    if refused < len(frames):
        assert counters["collect.samples_collected"] > 0
        assert counters["collect.clock_rewinds"] == 0, "the data clock never jumped to the absurd time"


def test_the_simulator_will_not_start_where_its_clock_cannot_go(tmp_path: Path) -> None:
    for start in (1e300, 2e17, -1.0, float("nan")):
        with pytest.raises(UserError, match="between 0 and 4102444800"):
            Simulation(duration=1, start_time=start)
    with pytest.raises(UserError, match=r"sim:start=1e300.*between 0 and 4102444800"):
        open_source("sim:start=1e300,duration=2")
    with pytest.raises(UserError, match="between 0 and 4102444800"):
        open_source("sim:duration=1e300")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware_agent",
            "sim",
            "--start-time",
            "1e300",
            "--out",
            str(tmp_path / "x.log"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
