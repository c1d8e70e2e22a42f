"""Installing the agent as a systemd service (`firmware-agent install-service`), idempotently, and undoing it.

What it does, each step only when something differs (so a second run changes nothing and says so):
1. the unit `firmware-agent.service` into `/etc/systemd/system/`, its `ExecStart=` pointing at the
   `firmware-agent` of the environment running the installer (the venv under `/opt/firmware-agent`);
2. a drop-in `firmware-agent.service.d/10-can.conf` ordering the unit after the CAN interfaces given with
   `--can` (when they are not just can0, which the unit names itself);
3. the commented reference configuration as `/etc/firmware-agent/agent.toml`, only when there is none
   (an operator's configuration is never overwritten);
4. `systemctl daemon-reload` and `systemctl enable` (`--now`: also start or restart it).

`--uninstall` stops and disables the service and removes the unit and drop-in; the configuration folder
and the state directory (outbox, signing key) stay unless `--purge` is given.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from firmware_agent.atomic import write_atomic
from firmware_agent.errors import UserError

UNIT_NAME = "firmware-agent.service"
STATE_DIRS = (Path("/var/lib/firmware-agent"), Path("/var/lib/private/firmware-agent"))
_IFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def packaged_systemd_dir() -> Path:
    """The shipped `systemd/` folder: the checkout's, or the copy inside a wheel (`_systemd`)."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir.parent / "systemd", package_dir / "_systemd"):
        if (candidate / UNIT_NAME).is_file():
            return candidate
    raise UserError(f"{UNIT_NAME} is not installed with this package (no systemd/ folder next to it)")


@dataclass
class InstallPlan:
    """Where things go; the defaults are the real system's, tests point them into a temporary root."""

    unit_dir: Path = Path("/etc/systemd/system")
    config_dir: Path = Path("/etc/firmware-agent")
    executable: Path = field(default_factory=lambda: Path(sys.prefix) / "bin" / "firmware-agent")
    can_interfaces: tuple[str, ...] = ("can0",)
    systemctl: bool = True
    enable: bool = True
    start: bool = False

    @property
    def unit_path(self) -> Path:
        return self.unit_dir / UNIT_NAME

    @property
    def dropin_path(self) -> Path:
        return self.unit_dir / f"{UNIT_NAME}.d" / "10-can.conf"


def unit_text(plan: InstallPlan) -> str:
    """The shipped unit with `ExecStart=`'s program replaced by `plan.executable`."""
    text = (packaged_systemd_dir() / UNIT_NAME).read_text()
    return text.replace("/opt/firmware-agent/bin/firmware-agent", str(plan.executable), 1)


def dropin_text(interfaces: tuple[str, ...]) -> str | None:
    """Ordering after the CAN interfaces other than can0 (which the unit names), or None if none."""
    for name in interfaces:
        if not _IFACE.fullmatch(name):
            raise UserError(f"--can {name!r}: not a network interface name")
    devices = [f"sys-subsystem-net-devices-{name}.device" for name in interfaces]
    if list(interfaces) == ["can0"]:
        return None
    lines = [
        "# Written by `firmware-agent install-service --can ...`: the CAN interfaces the agent reads.",
        "[Unit]",
    ]
    lines.append("After=" + " ".join(devices))
    lines.append("Wants=" + " ".join(devices))
    return "\n".join(lines) + "\n"


def _write_if_changed(path: Path, text: str, mode: int, changes: list[str]) -> None:
    try:
        if path.read_text() == text:
            return
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode(), mode)
    changes.append(f"wrote {path}")


def _systemctl(*args: str) -> None:
    try:
        result = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise UserError("systemctl not found: this system does not run systemd (use --no-systemctl)") from exc
    if result.returncode != 0:
        message = " ".join((result.stderr or result.stdout).split()) or f"exit status {result.returncode}"
        raise UserError(f"systemctl {' '.join(args)}: {message}")


def install(plan: InstallPlan) -> list[str]:
    """Install (or bring up to date); returns what changed, one line each (empty: nothing to do)."""
    if not plan.executable.exists():
        raise UserError(f"{plan.executable}: not found; install the package into that environment first")
    changes: list[str] = []
    _write_if_changed(plan.unit_path, unit_text(plan), 0o644, changes)
    dropin = dropin_text(plan.can_interfaces)
    if dropin is not None:
        _write_if_changed(plan.dropin_path, dropin, 0o644, changes)
    elif plan.dropin_path.exists():
        plan.dropin_path.unlink()
        changes.append(f"removed {plan.dropin_path}")
    config = plan.config_dir / "agent.toml"
    if not config.exists():
        _write_if_changed(config, (packaged_systemd_dir() / "agent.toml").read_text(), 0o644, changes)
        changes.append(f"edit {config} (vehicle_id, sources, [broker]) before starting the service")
    if plan.systemctl:
        if changes:
            _systemctl("daemon-reload")
        if plan.enable:
            _systemctl("enable", "--quiet", UNIT_NAME)
        if plan.start:
            _systemctl("restart" if changes else "start", UNIT_NAME)
    return changes


def uninstall(plan: InstallPlan, purge: bool = False) -> list[str]:
    """Stop, disable and remove the unit (and drop-in); with `purge` also the configuration and state."""
    changes: list[str] = []
    if plan.systemctl and plan.unit_path.exists():
        _systemctl("disable", "--now", "--quiet", UNIT_NAME)
        changes.append(f"stopped and disabled {UNIT_NAME}")
    for path in (plan.dropin_path, plan.unit_path):
        if path.exists():
            path.unlink()
            changes.append(f"removed {path}")
    with_dropins = plan.dropin_path.parent
    if with_dropins.is_dir() and not any(with_dropins.iterdir()):
        with_dropins.rmdir()
    if purge:
        for folder in (plan.config_dir, *STATE_DIRS):
            if folder.is_symlink():
                folder.unlink()
                changes.append(f"removed {folder}")
            elif folder.exists():
                shutil.rmtree(folder)
                changes.append(f"removed {folder}")
    if plan.systemctl and changes:
        _systemctl("daemon-reload")
    return changes
