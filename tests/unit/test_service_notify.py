"""The systemd notify protocol, against sockets the tests bind (a path and an abstract name)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_agent.cli import main
from firmware_agent.service.notify import Notifier, NotifySocketError


def _received(sock: socket.socket) -> list[dict[str, str]]:
    messages = []
    sock.settimeout(0.2)
    while True:
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            return messages
        messages.append(dict(line.split("=", 1) for line in data.split("\n")))


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    yield str(tmp_path / "notify"), sock
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"firmware-agent-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    yield "@" + name, sock
    sock.close()


@pytest.mark.parametrize("which", ["path_socket", "abstract_socket"])
def test_ready_status_reloading_stopping_reach_the_socket(which: str, request: pytest.FixtureRequest) -> None:
    address, sock = request.getfixturevalue(which)
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": address})
    assert notifier is not None
    notifier.ready("started: 2 sources\nsecond line")
    notifier.status("ok: 10 frames")
    notifier.reloading()
    notifier.stopping()
    messages = _received(sock)
    assert messages[0] == {"READY": "1", "STATUS": "started: 2 sources second line"}  # one line, never two
    assert messages[1] == {"STATUS": "ok: 10 frames"}
    assert messages[2]["RELOADING"] == "1" and int(messages[2]["MONOTONIC_USEC"]) > 0
    assert messages[3]["STOPPING"] == "1"


def test_watchdog_only_when_asked_for_this_process_and_rate_limited(
    path_socket: tuple[str, socket.socket],
) -> None:
    address, sock = path_socket
    other_pid = Notifier.from_environment(
        {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}
    )
    assert other_pid is not None and other_pid.watchdog_usec is None
    other_pid.watchdog()
    assert _received(sock) == []
    mine = Notifier.from_environment(
        {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert mine is not None and mine.watchdog_interval == 2.0
    for _ in range(5):  # one heartbeat loop turn after another: at most one ping per second here
        mine.watchdog()
    assert _received(sock) == [{"WATCHDOG": "1"}]


def test_no_notify_socket_means_no_notifier() -> None:
    assert Notifier.from_environment({}) is None


@pytest.mark.parametrize(
    "address", ["/nonexistent/notify", "@firmware-agent-nobody-listens", "relative/path"]
)
def test_a_notify_socket_pointing_nowhere_is_one_error_line(address: str) -> None:
    with pytest.raises(NotifySocketError, match=r"NOTIFY_SOCKET="):
        Notifier.from_environment({"NOTIFY_SOCKET": address})


def test_run_with_a_notify_socket_pointing_nowhere_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "missing"))
    status = main(
        [
            "run",
            "--source",
            "virtual:x",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--vehicle-id",
            "v1",
            "--state-dir",
            str(tmp_path / "state"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err == [
        f"firmware-agent run: error: NOTIFY_SOCKET={tmp_path / 'missing'}: cannot reach the "
        "service manager's socket: No such file or directory"
    ]
    assert not (tmp_path / "state").exists()  # refused before anything was created


def test_a_send_that_fails_later_is_counted_not_raised(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    notifier = Notifier(address)
    sock.close()
    Path(address).unlink()
    notifier.status("x")
    notifier.status("y")
    assert notifier.send_errors == 2
