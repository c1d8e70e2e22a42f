"""A real mosquitto broker for tests: plain, or TLS with client certificates and a per-vehicle ACL.

Facts (mosquitto 2.0.11): started as root it drops to user `mosquitto` before reading its TLS key, so the
config says `user root`; the listener is up within tens of milliseconds, so `start()` waits for the port.
Use MQTT v5 clients: over 3.1.1 an ACL-denied publish still gets a normal PUBACK.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from firmware_agent.telemetry.broker import BrokerConfig
from tests.integration.pki import BACKEND_CN, Pki

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

#: The per-vehicle ACL of the TLS broker: each vehicle (username = certificate CN) writes its telemetry and
#: status and reads its campaigns; the backend reads and writes everything under `vehicles/`.
VEHICLE_ACL = f"""\
pattern write vehicles/%u/telemetry
pattern write vehicles/%u/status
pattern read vehicles/%u/campaigns

user {BACKEND_CN}
topic readwrite vehicles/#
"""

#: The `mosquitto_factory` fixture: `make(pki=None, max_inflight=None, persistent=False,
#: max_packet_size=None) -> Mosquitto`.
BrokerFactory = Callable[..., "Mosquitto"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """One mosquitto process on 127.0.0.1 with its config, log and a fixed port across restarts.

    `Mosquitto(workdir)` is a plain broker allowing anonymous clients; `Mosquitto(workdir, pki=pki)`
    listens with TLS, requires a client certificate issued by `pki`, takes the username from its CN and
    applies `VEHICLE_ACL`. `max_inflight` sets `max_inflight_messages`, which mosquitto announces to v5
    clients as Receive Maximum. `persistent` keeps sessions and queued messages across `restart()`.
    `max_packet_size` sets mosquitto's `max_packet_size`, announced to v5 clients as Maximum Packet Size
    (a larger packet makes the broker close the connection).
    """

    def __init__(
        self,
        workdir: Path,
        pki: Pki | None = None,
        max_inflight: int | None = None,
        persistent: bool = False,
        max_packet_size: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.port = free_port()
        self.host = "127.0.0.1"
        self.log_path = self.workdir / "mosquitto.log"
        self.config_path = self.workdir / "mosquitto.conf"
        self.config_path.write_text(self._config(max_inflight, persistent, max_packet_size))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`mqtt://127.0.0.1:PORT` or `mqtts://127.0.0.1:PORT`."""
        return f"{'mqtts' if self.pki else 'mqtt'}://{self.host}:{self.port}"

    def _config(self, max_inflight: int | None, persistent: bool, max_packet_size: int | None) -> str:
        lines = ["user root", "per_listener_settings false", f"log_dest file {self.log_path}"]
        if max_packet_size is not None:
            lines.append(f"max_packet_size {max_packet_size}")
        if persistent:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        else:
            lines.append("persistence false")
        lines += ["log_type error", "log_type warning", "log_type notice", "log_type information"]
        lines.append(f"listener {self.port} {self.host}")
        if max_inflight is not None:
            lines.append(f"max_inflight_messages {max_inflight}")
        if self.pki is None:
            lines.append("allow_anonymous true")
        else:
            acl = self.workdir / "acl"
            acl.write_text(VEHICLE_ACL)
            lines += [
                f"cafile {self.pki.ca}",
                f"certfile {self.pki.server.cert}",
                f"keyfile {self.pki.server.key}",
                "require_certificate true",
                "use_identity_as_username true",
                "allow_anonymous false",
                f"acl_file {acl}",
            ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and return once its port accepts connections."""
        assert self._proc is None, "already running"
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                self._proc = None
                raise RuntimeError(f"mosquitto exited at start: {err.strip()} {self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"mosquitto did not listen on {self.port} within {timeout} s"
                    ) from None
                time.sleep(0.005)  # the port is up in ~25 ms; there is no event to wait for

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and wait for it to exit."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port; sessions survive only with `persistent`."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        """The broker's log so far (for assertion messages)."""
        return self.log_path.read_text() if self.log_path.exists() else ""


def vehicle_broker(broker: Mosquitto, vehicle_id: str) -> BrokerConfig:
    """How vehicle `vehicle_id` connects to `broker` (on TLS: a certificate with CN = the vehicle id)."""
    pki = broker.pki
    if pki is None:
        return BrokerConfig(broker.url)
    files = pki.issue_vehicle(vehicle_id)
    return BrokerConfig(broker.url, ca_file=pki.ca, cert_file=files.cert, key_file=files.key)


def backend_broker(broker: Mosquitto) -> BrokerConfig:
    """How the backend connects to `broker`: on TLS, may read and write everything under `vehicles/`."""
    pki = broker.pki
    if pki is None:
        return BrokerConfig(broker.url)
    files = pki.issue_unchecked(BACKEND_CN, "backend")
    return BrokerConfig(broker.url, ca_file=pki.ca, cert_file=files.cert, key_file=files.key)
