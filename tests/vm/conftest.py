"""Fixtures of the VM suite: SocketCAN must work (else every test fails), and scratch interfaces."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.vm.helpers import WAIT_S, ip_link


@pytest.fixture(scope="session", autouse=True)
def socketcan_available() -> None:
    """A raw CAN socket bound to vcan0 must work; anything else fails every test here with the reason."""
    try:
        with socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW) as sock:
            sock.bind(("vcan0",))
    except OSError as error:
        pytest.fail(
            f"no usable SocketCAN vcan0 here ({error}); these tests run inside the VM: make test-vcan",
            pytrace=False,
        )


@pytest.fixture
def scratch_interface() -> Iterator[str]:
    """A vcan interface of the test's own, so taking it down or deleting it cannot disturb other tests."""
    name = "vcantest"
    ip_link("add", name, "type", "vcan")
    ip_link("set", name, "up")
    yield name
    subprocess.run(["ip", "link", "del", name], check=False, capture_output=True, timeout=WAIT_S)
