"""`firmware-agent install-service`: idempotent, never overwrites a configuration, undone by --uninstall."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_agent.cli import main


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "install-service",
        "--no-systemctl",
        "--unit-dir",
        str(tmp_path / "units"),
        "--config-dir",
        str(tmp_path / "etc"),
        *extra,
    ]


def test_install_twice_changes_nothing_the_second_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(tmp_path, "--can", "can0", "--can", "can1")) == 0
    first = capsys.readouterr().out
    unit = (tmp_path / "units" / "firmware-agent.service").read_text()
    assert "ExecStart=" in unit and "/bin/firmware-agent run --config /etc/firmware-agent/agent.toml" in unit
    assert "/opt/firmware-agent/bin/firmware-agent" not in unit or Path("/opt/firmware-agent").exists()
    dropin = (tmp_path / "units" / "firmware-agent.service.d" / "10-can.conf").read_text()
    assert "After=sys-subsystem-net-devices-can0.device sys-subsystem-net-devices-can1.device" in dropin
    assert "edit " in first and (tmp_path / "etc" / "agent.toml").exists()
    assert main(_args(tmp_path, "--can", "can0", "--can", "can1")) == 0
    assert "nothing to do, already installed" in capsys.readouterr().out


def test_an_existing_configuration_is_kept(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "agent.toml").write_text('vehicle_id = "mine"\n')
    assert main(_args(tmp_path)) == 0
    assert (tmp_path / "etc" / "agent.toml").read_text() == 'vehicle_id = "mine"\n'
    assert not (tmp_path / "units" / "firmware-agent.service.d").exists()  # can0 only: no drop-in


def test_uninstall_removes_the_unit_and_keeps_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(_args(tmp_path, "--can", "vcan0"))
    capsys.readouterr()
    assert main([*_args(tmp_path), "--uninstall"]) == 0
    assert not (tmp_path / "units" / "firmware-agent.service").exists()
    assert not (tmp_path / "units" / "firmware-agent.service.d").exists()
    assert (tmp_path / "etc" / "agent.toml").exists()
    capsys.readouterr()
    assert main([*_args(tmp_path), "--uninstall"]) == 0
    assert "nothing to do, already removed" in capsys.readouterr().out


def test_a_bad_interface_name_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args(tmp_path, "--can", "can0; rm -rf /")) == 2
    assert capsys.readouterr().err.strip() == (
        "firmware-agent install-service: error: --can 'can0; rm -rf /': not a network interface name"
    )


def test_the_reference_configuration_is_a_valid_start(tmp_path: Path) -> None:
    from firmware_agent.service.config import Overrides, load_config

    main(_args(tmp_path))
    config = load_config(tmp_path / "etc" / "agent.toml", Overrides(state_dir=str(tmp_path / "state")))
    assert config.vehicle_id == "CHANGE-ME" and config.broker.url.startswith("mqtts://")
