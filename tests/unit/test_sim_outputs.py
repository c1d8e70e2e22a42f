"""`firmware-agent sim`: captures in three formats, determinism, python-can virtual buses, CLI errors."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import can
import pytest

from firmware_agent.cli import main
from firmware_agent.vehicle import BUS_NAMES
from sim import Simulation
from sim.faults import Fault
from sim.vehicle import SimulationError


def _sim(tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    assert main(["sim", "--duration", "20", "--driver", "dev", "--out", str(out), *args]) == 0
    return out


def test_same_seed_gives_byte_identical_captures_and_another_seed_does_not(tmp_path):
    for suffix in ("log", "blf"):
        first = _sim(tmp_path, f"a.{suffix}", "--seed", "5").read_bytes()
        again = _sim(tmp_path, f"b.{suffix}", "--seed", "5").read_bytes()
        other = _sim(tmp_path, f"c.{suffix}", "--seed", "6").read_bytes()
        assert first == again, suffix
        assert first != other, suffix


@pytest.mark.parametrize("suffix", ["log", "asc", "blf"])
def test_each_capture_format_reads_back_with_python_can(tmp_path, suffix):
    expected = list(Simulation("dev", "city", seed=0, duration=20.0).frames())
    path = _sim(tmp_path, f"drive.{suffix}", "--fault", "error-frame@5:chassis")
    frames = list(can.LogReader(str(path)))
    assert len(frames) == len(expected) + 1
    data_frames = [f for f in frames if not f.is_error_frame]
    assert [f.arbitration_id for f in data_frames] == [f.arbitration_id for f in expected]
    assert [bytes(f.data) for f in data_frames] == [bytes(f.data) for f in expected]
    assert sum(f.is_error_frame for f in frames) == 1
    hu_status = [f for f in data_frames if f.arbitration_id == 0x400]
    assert hu_status and all(f.is_fd and f.bitrate_switch and len(f.data) == 16 for f in hu_status)
    assert any(f.is_extended_id and f.arbitration_id == 0x18FF4040 for f in data_frames)
    channels = Counter(f.channel for f in data_frames)
    if suffix == "log":
        assert set(channels) == set(BUS_NAMES)  # candump keeps the bus names
    else:
        assert set(channels) == {0, 1, 2, 3}  # numbered channels: body, powertrain, chassis, infotainment
        speed_channel = {f.channel for f in data_frames if f.arbitration_id == 0x100}
        assert speed_channel == {BUS_NAMES.index("powertrain")}


def test_map_renames_a_bus_channel_in_captures(tmp_path):
    path = _sim(tmp_path, "mapped.log", "--map", "powertrain=vcan0")
    channels = {(f.channel, f.arbitration_id) for f in can.LogReader(str(path))}
    assert ("vcan0", 0x100) in channels and ("powertrain", 0x100) not in channels
    assert ("chassis", 0x200) in channels


def test_sending_on_virtual_buses_keeps_the_bus_names(capsys):
    expected = Counter(f.channel for f in Simulation("anna", "city", seed=2, duration=6.0).frames())
    receivers = {bus: can.Bus(interface="virtual", channel=bus) for bus in BUS_NAMES}
    try:
        args = [
            "sim",
            "--duration",
            "6",
            "--driver",
            "anna",
            "--seed",
            "2",
            "--bus",
            "virtual",
            "--speed",
            "0",
        ]
        assert main(args) == 0
        received: Counter[str] = Counter()
        for bus, receiver in receivers.items():
            while (frame := receiver.recv(timeout=0)) is not None:
                assert frame.channel == bus
                received[bus] += 1
    finally:
        for receiver in receivers.values():
            receiver.shutdown()
    assert received == expected
    assert "virtual:powertrain" in capsys.readouterr().err


def test_one_interface_carries_the_whole_vehicle():
    receiver = can.Bus(interface="virtual", channel="one-bus")
    try:
        assert main(["sim", "--duration", "3", "--bus", "virtual:one-bus", "--speed", "0"]) == 0
        ids = set()
        while (frame := receiver.recv(timeout=0)) is not None:
            ids.add(frame.arbitration_id)
    finally:
        receiver.shutdown()
    assert {0x100, 0x200, 0x3A0, 0x400} <= ids  # one message of each bus


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--driver", "zoe", "--out", "x.log"], "--driver: unknown driver 'zoe'"),
        (["--scenario", "moon", "--out", "x.log"], "--scenario: unknown scenario 'moon'"),
        (["--key-of", "9", "--out", "x.log"], "--key-of: unknown driver '9'"),
        (["--fault", "meteor", "--out", "x.log"], "--fault meteor: unknown fault"),
        (["--map", "powertrain", "--out", "x.log"], "--map powertrain: expected BUS=CHANNEL"),
        (["--map", "engine=vcan0", "--out", "x.log"], "unknown bus 'engine'"),
        (["--out", "x.csv"], "unknown capture format"),
        (["--out", "/no/such/dir/x.log"], "does not exist"),
        (["--bus", "nosuch:can0"], "unknown python-can interface"),
        (["--bus", "virtual:a", "--bus", "virtual:b"], "no vehicle bus is mapped to 'a'"),
        (["--duration", "0", "--out", "x.log"], "--duration 0"),
        (["--hard-brake", "-1", "--out", "x.log"], "--hard-brake -1"),
        ([], "give --out FILE or --bus"),
    ],
)
def test_cli_errors_exit_2_with_one_line(capsys, tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    assert main(["sim", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("firmware-agent sim: error: ")
    assert words in err


def test_list_shows_personas_scenarios_and_faults(capsys):
    assert main(["sim", "--list"]) == 0
    out = capsys.readouterr().out
    for word in ("anna", "ben", "chloe", "dev", "borrowed-key", "parking", "link-down", "flood"):
        assert word in out


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"duration": float("nan")}, "duration nan: must be a positive number of seconds"),
        ({"duration": 0}, "duration 0: must be a positive"),
        ({"driver": "zoe"}, "driver: unknown driver 'zoe'"),
        ({"scenario": "moon"}, "scenario: unknown scenario 'moon'"),
        ({"seed": -1}, "seed -1: must be a whole number"),
        ({"hard_brakes": [float("inf")]}, "hard_brakes inf"),
        ({"faults": [Fault("melt")]}, "unknown fault"),
        ({"faults": [Fault("flood", bus="engine")]}, "unknown bus 'engine'"),
    ],
)
def test_simulation_checks_its_own_arguments(arguments: dict, words: str) -> None:
    # validation lives in the core, so every front door (CLI, sim: source, embedders) gets it
    with pytest.raises(SimulationError, match=re.escape(words)):
        Simulation(**arguments)
