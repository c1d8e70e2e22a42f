"""Small helpers shared by the VM tests: buses on vcan, `ip link`, bounded waits."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import can
import pytest
from can.interfaces.socketcan import SocketcanBus

#: Generous bound for anything that should happen "soon": emulated (TCG) Python is 10-20x slower.
WAIT_S = 30.0
#: Not exported by Python's socket module (linux/asm-generic/socket.h); root may exceed rmem_max with it.
SO_RCVBUFFORCE = 33

Frame = tuple[int, bool, bytes]
"""(arbitration id, extended id, data): what must survive the trip through the kernel unchanged."""


def frame_of(msg: can.Message) -> Frame:
    return (msg.arbitration_id, msg.is_extended_id, bytes(msg.data))


def open_bus(channel: str, **kwargs: Any) -> SocketcanBus:
    return SocketcanBus(channel=channel, **kwargs)


def hold_everything(bus: SocketcanBus) -> None:
    """A socket's receive queue drops frames when it is full: make it hold a whole replay."""
    bus.socket.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 256 * 1024 * 1024)


def ip_link(*args: str) -> None:
    """`ip link ...` with iproute2 (busybox ip cannot create vcan links)."""
    result = subprocess.run(["ip", "link", *args], capture_output=True, text=True, timeout=WAIT_S)
    if result.returncode != 0:
        pytest.fail(f"ip link {' '.join(args)}: {result.stderr.strip()}")


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after WAIT_S (a hang guard, not a timing test)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT_S:.0f}s waiting for {what}")
        time.sleep(0.02)


def drain(bus: can.BusABC, idle_s: float = 2.0) -> list[can.Message]:
    """Every message queued on `bus`, until none arrives for `idle_s`."""
    received: list[can.Message] = []
    while (msg := bus.recv(timeout=idle_s)) is not None:
        received.append(msg)
    return received


def kernel_receivers(interface: str) -> int:
    """How many CAN receive-list entries the kernel holds for `interface` (one per filter of each bound
    socket; /proc/net/can/rcvlist_*): a socket is bound and listening once this is above zero."""
    return sum(
        1
        for path in Path("/proc/net/can").glob("rcvlist_*")
        for line in path.read_text().splitlines()
        if line.split()[:1] == [interface]
    )
