"""The agent as a systemd service, under a real systemd (PID 1 of the VM that `make test-systemd` boots).

The VM is a minimal Debian (debootstrap) with vcan0/vcan1 brought up by systemd-networkd, mosquitto on
127.0.0.1:1883, and the package installed the documented way into /opt/firmware-agent. The tests run in
order and share one service: install, start (READY), telemetry from the simulator on vcan verifies,
reload (good and bad), watchdog kill and restart without losing committed batches, stop flushes, status.
Self-contained (no conftest): the VM's test venv has pytest only; everything else is the installed CLI.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.systemd

AGENT = Path("/opt/firmware-agent/bin/firmware-agent")
UNIT = "firmware-agent.service"
CONFIG_DIR = Path("/etc/firmware-agent")
STATE_DIR = Path("/var/lib/firmware-agent")
HEALTH = Path("/run/firmware-agent/health.json")
WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "systemd-tests"
#: Bounded waits so a broken feature fails instead of hanging (emulated CPU: Python starts in ~20-40 s).
START_TIMEOUT = 240.0

CONFIG = """\
vehicle_id = "vm-0001"
sources = ["powertrain=socketcan:vcan0?fd=1", "chassis=socketcan:vcan1?fd=1"]
collect = "campaigns.toml"

[broker]
url = "mqtt://127.0.0.1:1883"

[pipeline]
stats_interval = 5
shutdown_timeout = 10
"""
CAMPAIGN = """\
[[campaign]]
name = "{name}"
mode = "periodic"
period_ms = 500
batch_interval_s = 2
signals = ["Vehicle.Speed", "Vehicle.Chassis.Accelerator.PedalPosition"]
"""
#: The VM is slow: more time to start, a shorter watchdog so the hang test is quick.
DROPIN = """\
[Service]
TimeoutStartSec=300
WatchdogSec=15s
TimeoutAbortSec=5s
RestartSec=1s
"""


def run(*args: str | Path, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {result.returncode}: {result.stderr}{result.stdout}"
        )
    return result


def show(prop: str) -> str:
    return run("systemctl", "show", "-P", prop, UNIT).stdout.strip()


def journal() -> str:
    return run("journalctl", "-u", UNIT, "-o", "cat", "--no-pager").stdout


def wait_for(what: str, condition: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; journal:\n{journal()[-4000:]}")


def health() -> dict:
    try:
        return json.loads(HEALTH.read_text())
    except (OSError, ValueError):
        return {}


def next_seq() -> int:
    """The outbox's next sequence number: every seq below it is committed (durable)."""
    db = sqlite3.connect(f"file:{STATE_DIR / 'outbox.sqlite3'}?mode=ro", uri=True, timeout=5)
    try:
        return int(db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0])
    finally:
        db.close()


@pytest.fixture(scope="module")
def backend() -> subprocess.Popen[str]:
    """mosquitto_sub saving every telemetry message (topic and hex payload), from before the agent starts."""
    WORK.mkdir(parents=True, exist_ok=True)
    out = (WORK / "received.txt").open("w")
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-t", "vehicles/+/telemetry", "-q", "1", "-F", "%t %x"],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield sub
    sub.terminate()
    sub.wait(10)


@pytest.fixture(scope="module")
def simulator() -> subprocess.Popen[str]:
    """The simulated vehicle on vcan0 (powertrain) and vcan1 (the other buses), in real time."""
    WORK.mkdir(parents=True, exist_ok=True)
    command = [str(AGENT), "sim", "--bus", "socketcan", "--duration", "1800", "--speed", "1"]
    for bus, interface in (
        ("powertrain", "vcan0"),
        ("chassis", "vcan1"),
        ("body", "vcan1"),
        ("infotainment", "vcan1"),
    ):
        command += ["--map", f"{bus}={interface}"]
    sim = subprocess.Popen(
        [*command, "--driver", "anna", "--scenario", "city", "--seed", "3"],
        stdout=subprocess.DEVNULL,
        stderr=(WORK / "sim.log").open("w"),
        text=True,
    )
    yield sim
    sim.terminate()
    sim.wait(20)


def received_dump() -> Path:
    """The backend's messages in `verify`'s dump format (TOPIC<TAB>BASE64)."""
    lines = []
    for line in (WORK / "received.txt").read_text().splitlines():
        topic, _, payload = line.partition(" ")
        if topic.startswith("vehicles/") and payload:
            lines.append(f"{topic}\t{base64.b64encode(bytes.fromhex(payload)).decode()}")
    dump = WORK / "telemetry.dump"
    dump.write_text("\n".join(lines) + "\n")
    return dump


def test_install_service_is_idempotent_and_starts_only_when_ready(backend, simulator) -> None:
    CONFIG_DIR.mkdir(exist_ok=True)
    (CONFIG_DIR / "agent.toml").write_text(CONFIG)
    (CONFIG_DIR / "campaigns.toml").write_text(CAMPAIGN.format(name="speed-before-reload"))
    first = run(AGENT, "install-service", "--can", "vcan0", "--can", "vcan1")
    assert "wrote /etc/systemd/system/firmware-agent.service" in first.stdout
    assert "agent.toml" not in first.stdout  # an existing configuration is never replaced
    again = run(AGENT, "install-service", "--can", "vcan0", "--can", "vcan1")
    assert "nothing to do" in again.stdout
    assert run("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"
    unit = Path("/etc/systemd/system/firmware-agent.service").read_text()
    assert f"ExecStart={AGENT} run --config /etc/firmware-agent/agent.toml" in unit
    dropin = Path("/etc/systemd/system/firmware-agent.service.d/50-vm.conf")
    dropin.write_text(DROPIN)
    run("systemctl", "daemon-reload")
    # Type=notify: `activating` until the agent sends READY=1, then `active (running)`.
    run("systemctl", "start", "--no-block", UNIT)
    states = set()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        states.add((show("ActiveState"), show("SubState")))
        if ("active", "running") in states:
            break
        time.sleep(0.2)
    assert ("activating", "start") in states, states
    assert ("active", "running") in states, f"{states}\n{journal()}"
    log = journal()
    assert "started: vehicle vm-0001" in log
    assert "first start: new signing key" in log  # generated on first start, its public half logged
    assert (STATE_DIR / "signing-key.pub.pem").exists()


def test_telemetry_from_the_simulator_on_vcan_reaches_the_broker_and_verifies() -> None:
    wait_for("acknowledged batches", lambda: health().get("batches_acknowledged", 0) >= 3)
    wait_for(
        "'broker connected' in the journal", lambda: "broker connected: mqtt://127.0.0.1:1883" in journal()
    )
    status = run(AGENT, "status", "--json", check=False)
    report = json.loads(status.stdout)
    assert status.returncode == 0, report
    assert report["state"] == "ok"
    assert report["health"]["buses"]["powertrain"]["frames_in"] > 0
    assert report["health_file"] == str(HEALTH)  # RuntimeDirectory=, not the SD card
    assert not (STATE_DIR / "health.json").exists()
    verify = run(
        AGENT,
        "verify",
        received_dump(),
        "--public-key",
        f"vm-0001={STATE_DIR / 'signing-key.pub.pem'}",
        "--allow-duplicates",
        "-o",
        WORK / "samples.jsonl",
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    signals = {json.loads(line)["signal"] for line in (WORK / "samples.jsonl").read_text().splitlines()}
    assert "Vehicle.Speed" in signals
    status_text = show("StatusText")
    assert status_text.startswith("ok:"), status_text


def test_reload_applies_a_campaign_change_and_refuses_a_bad_configuration() -> None:
    pid = show("MainPID")
    (CONFIG_DIR / "campaigns.toml").write_text(CAMPAIGN.format(name="speed-after-reload"))
    run("systemctl", "reload", UNIT)
    wait_for("the new campaign", lambda: health().get("campaigns") == ["speed-after-reload"], timeout=60)
    assert show("MainPID") == pid  # reloaded in place, not restarted
    assert "reloaded /etc/firmware-agent/agent.toml: campaigns speed-after-reload" in journal()
    # A bad configuration: refused with one line, the running one kept, the service still running.
    good = (CONFIG_DIR / "agent.toml").read_text()
    (CONFIG_DIR / "agent.toml").write_text(good + "\nbogus_key = 1\n")
    try:
        run("systemctl", "reload", UNIT)
        wait_for("the refusal", lambda: "reload refused" in journal(), timeout=60)
    finally:
        (CONFIG_DIR / "agent.toml").write_text(good)
    refusal = [line for line in journal().splitlines() if "reload refused" in line]
    assert len(refusal) == 1 and "bogus_key: unknown key" in refusal[0], refusal
    assert show("ActiveState") == "active" and show("MainPID") == pid
    assert health().get("campaigns") == ["speed-after-reload"]


def test_a_hung_agent_is_killed_by_the_watchdog_and_restarted_without_losing_committed_batches() -> None:
    pid = int(show("MainPID"))
    restarts = int(show("NRestarts"))
    committed_before = next_seq()
    os.kill(pid, signal.SIGSTOP)
    wait_for(
        "a restart by systemd",
        lambda: int(show("NRestarts")) > restarts and show("MainPID") not in ("0", str(pid)),
    )
    assert "Watchdog timeout" in run("journalctl", "-u", UNIT, "--no-pager").stdout
    wait_for(
        "the restarted agent to be ready",
        lambda: show("ActiveState") == "active" and show("SubState") == "running",
    )
    # The restarted agent sends what the hung one had committed but not yet had acknowledged.
    wait_for("new batches after the restart", lambda: next_seq() > committed_before + 2)
    wait_for(
        "every committed batch acknowledged", lambda: health().get("outbox_pending", 1) == 0, timeout=120
    )
    seqs = set()
    verify = run(
        AGENT,
        "verify",
        received_dump(),
        "--public-key",
        f"vm-0001={STATE_DIR / 'signing-key.pub.pem'}",
        "--allow-duplicates",
        "-o",
        WORK / "samples.jsonl",
        check=False,
    )
    assert verify.returncode == 0, verify.stderr  # signatures good, no gap in seq
    for line in (WORK / "samples.jsonl").read_text().splitlines():
        seqs.add(json.loads(line)["seq"])
    missing = [seq for seq in range(min(seqs), committed_before) if seq not in seqs]
    assert not missing, f"committed before the hang but never received: {missing}"


def test_stop_flushes_and_status_reports_it() -> None:
    wait_for("a batch to be open", lambda: health().get("batches_committed", 0) > 0, timeout=30)
    run("systemctl", "stop", UNIT)
    assert show("ActiveState") == "inactive"
    assert show("Result") == "success"
    final = health()
    assert final["status"] == "stopped"
    assert final["outbox_pending"] == 0  # everything committed was acknowledged before exit
    status = run(AGENT, "status", check=False)
    assert status.returncode == 3, status.stdout
    assert "stopped" in status.stdout.splitlines()[0]
    log = journal()
    assert "SIGTERM: stopping" in log


def test_a_missing_configured_key_fails_once_with_exit_status_2_and_no_restart_loop() -> None:
    good = (CONFIG_DIR / "agent.toml").read_text()
    (CONFIG_DIR / "agent.toml").write_text('signing_key = "/etc/firmware-agent/missing.pem"\n' + good)
    try:
        run("systemctl", "start", UNIT, check=False)  # a manual start resets NRestarts to 0
        wait_for("the failure", lambda: show("ActiveState") == "failed", timeout=START_TIMEOUT)
        assert show("ExecMainStatus") == "2"
        assert int(show("NRestarts")) == 0  # RestartPreventExitStatus=2: no restart loop
        assert "missing.pem: no signing key" in journal()
    finally:
        (CONFIG_DIR / "agent.toml").write_text(good)
        run("systemctl", "reset-failed", UNIT, check=False)


def test_uninstall_keeps_the_state_directory() -> None:
    removed = run(AGENT, "install-service", "--uninstall")
    assert "removed /etc/systemd/system/firmware-agent.service" in removed.stdout
    assert not Path("/etc/systemd/system/firmware-agent.service").exists()
    assert (STATE_DIR / "outbox.sqlite3").exists()
    assert "nothing to do" in run(AGENT, "install-service", "--uninstall").stdout
