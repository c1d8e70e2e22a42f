"""The systemd notify protocol (`sd_notify(3)`), spoken directly: no libsystemd, no new dependency.

A message is a few `KEY=VALUE` lines in one datagram sent to the AF_UNIX socket named by `$NOTIFY_SOCKET`;
a name starting with `@` is in the abstract namespace (the `@` becomes a NUL byte). The agent sends
`READY=1` once its sources and uploader are started, `STATUS=` a one-line summary, `WATCHDOG=1` from the
pipeline thread's heartbeat (so a hung pipeline stops the pings and systemd's `WatchdogSec=` kills it),
`RELOADING=1` (with `MONOTONIC_USEC=`, which systemd >= 253 wants) and `READY=1` around a `SIGHUP`
reload, and `STOPPING=1` when it starts to shut down.

Outside systemd (`$NOTIFY_SOCKET` unset) every call is a no-op. A `$NOTIFY_SOCKET` that is set but points
nowhere is refused at start with one line (`NotifySocketError`, exit status 2): under `Type=notify` the
service could never become ready, and outside systemd the variable is a mistake.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from firmware_agent.errors import UserError

log = logging.getLogger(__name__)


class NotifySocketError(UserError):
    """`$NOTIFY_SOCKET` is set but no service manager listens there."""


def socket_address(name: str) -> str | bytes:
    """The `sendto` address of a `$NOTIFY_SOCKET` value: a path, or `@name` as an abstract address."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


class Notifier:
    """Sends notify messages to one socket; `Notifier.from_environment()` for the service manager's.

    Sending never raises after the start-up check: a failed send is logged once and counted in
    `send_errors`, because a notification must not stop the pipeline that it reports on.
    """

    def __init__(self, address: str, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.send_errors = 0
        self.sent: list[str] = []  # the last few messages, for `status` and tests
        self._address = socket_address(address)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            # A connect() on a throw-away socket checks that the socket is there now, so a wrong path
            # fails at start, not silently. Messages go out with sendto(), as sd_notify does, so a
            # service manager that re-created its socket (daemon-reexec) still gets them.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as probe:
                probe.connect(self._address)
        except OSError as exc:
            self._socket.close()
            raise NotifySocketError(
                f"NOTIFY_SOCKET={address}: cannot reach the service manager's socket: {exc.strerror or exc}"
            ) from exc
        self._last_watchdog = 0.0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """The notifier systemd asked for, or None when not started by a service manager.

        `WATCHDOG_USEC` is honoured only when `WATCHDOG_PID` is unset or names this process (as
        `sd_watchdog_enabled(3)` does), so a child started by the agent never pings for it.
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        if not address.startswith(("/", "@")):
            raise NotifySocketError(
                f"NOTIFY_SOCKET={address}: not supported (an absolute path or an @abstract name expected)"
            )
        watchdog = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(address, watchdog)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings systemd expects at the latest (half its timeout), or None."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def send(self, **fields: str | int) -> bool:
        """Send `KEY=VALUE` lines (keys upper-cased); True if the datagram went out."""
        message = "\n".join(f"{key.upper()}={_one_line(str(value))}" for key, value in fields.items())
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            self.send_errors += 1
            if self.send_errors == 1:
                log.warning("systemd notify: cannot send to %s: %s", self.address, exc.strerror or exc)
            return False
        self.sent = [*self.sent[-15:], message]
        return True

    def ready(self, status: str) -> None:
        """Start-up (or a reload) is complete."""
        self.send(ready=1, status=status)

    def status(self, status: str) -> None:
        """A one-line summary `systemctl status` shows."""
        self.send(status=status)

    def watchdog(self) -> None:
        """Keep-alive from the pipeline thread; sent at most four times per watchdog timeout."""
        if self.watchdog_usec is None:
            return
        now = time.monotonic()
        if now - self._last_watchdog < self.watchdog_usec / 4e6:
            return
        self._last_watchdog = now
        self.send(watchdog=1)

    def reloading(self) -> None:
        """A reload starts; `ready()` ends it."""
        self.send(reloading=1, monotonic_usec=time.monotonic_ns() // 1000, status="reloading")

    def stopping(self) -> None:
        """Shutdown starts: flushing, committing, waiting for acknowledgements."""
        self.send(stopping=1, status="stopping: flushing the collector and waiting for the broker")

    def close(self) -> None:
        self._socket.close()


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE assignment in the datagram.
    return " ".join(text.split())
