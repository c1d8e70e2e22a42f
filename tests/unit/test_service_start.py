"""Start-up under systemd: the signing key made on first start, and the bad inputs that must be one line
with exit status 2 (which the unit's RestartPreventExitStatus=2 keeps from a restart loop)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from firmware_agent.cli import main
from firmware_agent.service.config import Overrides, load_config
from firmware_agent.service.lifecycle import ensure_signing_key
from firmware_agent.telemetry.keys import generate_private_key, load_private_key

RUN = ["run", "--source", "virtual:start-test", "--broker", "mqtt://127.0.0.1:1", "--vehicle-id", "v1"]


def _error(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error" in line]


def test_first_service_start_creates_the_default_key_once_and_logs_its_public_half(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(
        None,
        Overrides(
            sources=["virtual:x"], broker="mqtt://h", vehicle_id="v1", state_dir=str(tmp_path / "state")
        ),
    )
    ensure_signing_key(config, {})  # run by hand: never made up
    assert not (tmp_path / "state" / "signing-key.pem").exists()
    ensure_signing_key(config, {"STATE_DIRECTORY": str(tmp_path / "state")})  # systemd's StateDirectory=
    key = load_private_key(tmp_path / "state" / "signing-key.pem")
    assert (tmp_path / "state" / "signing-key.pem").stat().st_mode & 0o077 == 0
    assert "BEGIN PUBLIC KEY" in (tmp_path / "state" / "signing-key.pub.pem").read_text()
    assert any("first start: new signing key" in r.getMessage() for r in caplog.records)
    ensure_signing_key(config, {"STATE_DIRECTORY": str(tmp_path / "state")})  # never replaced
    assert (
        load_private_key(tmp_path / "state" / "signing-key.pem").private_bytes_raw()
        == key.private_bytes_raw()
    )


def test_a_missing_configured_key_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main([*RUN, "--state-dir", str(tmp_path / "s"), "--signing-key", str(tmp_path / "nope.pem")])
    assert status == 2
    assert _error(capsys) == [
        f"firmware-agent run: error: {tmp_path / 'nope.pem'}: no signing key; create one "
        f"with `firmware-agent keys generate --out {tmp_path / 'nope.pem'}`"
    ]
    assert not (tmp_path / "nope.pem").exists()


def test_a_world_readable_key_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate_private_key(tmp_path / "key.pem")
    (tmp_path / "key.pem").chmod(0o644)
    assert main([*RUN, "--state-dir", str(tmp_path / "s"), "--signing-key", str(tmp_path / "key.pem")]) == 2
    (line,) = _error(capsys)
    assert str(tmp_path / "key.pem") in line


def test_a_state_directory_that_cannot_be_written_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate_private_key(tmp_path / "key.pem")
    (tmp_path / "file").write_text("")
    status = main(
        [*RUN, "--state-dir", str(tmp_path / "file" / "state"), "--signing-key", str(tmp_path / "key.pem")]
    )
    assert status == 2
    (line,) = _error(capsys)
    assert line.startswith(f"firmware-agent run: error: {tmp_path / 'file' / 'state'}: cannot create")


def test_sigterm_path_sends_stopping_once(tmp_path: Path) -> None:
    import signal
    import socket

    from firmware_agent.service.lifecycle import ServiceLink
    from firmware_agent.service.notify import Notifier

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "n"))
    link = ServiceLink(Notifier(str(tmp_path / "n")), None, Overrides())
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        link.install_signals(stop)
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert stop.is_set()
    sock.settimeout(0.2)
    assert sock.recv(4096).startswith(b"STOPPING=1")
    with pytest.raises(TimeoutError):
        sock.recv(4096)
    sock.close()
