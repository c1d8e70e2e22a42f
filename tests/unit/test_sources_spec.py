"""Source spec strings: `[BUS=]KIND:ARG[?opts]`, and the sources they create."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_agent.errors import UserError
from firmware_agent.sources import open_source
from firmware_agent.sources.replay import ReplaySource
from firmware_agent.sources.sim import SimSource
from firmware_agent.sources.slcan import SlcanSource
from firmware_agent.sources.socketcan import SocketcanSource
from firmware_agent.sources.spec import SourceSpec
from firmware_agent.sources.virtual import VirtualSource


def test_plain_spec() -> None:
    spec = SourceSpec.parse("socketcan:can0")
    assert (spec.kind, spec.arg, spec.bus, spec.options) == ("socketcan", "can0", None, {})


def test_bus_name_and_options() -> None:
    spec = SourceSpec.parse("powertrain=socketcan:can0?fd=1")
    assert (spec.kind, spec.arg, spec.bus, spec.options) == ("socketcan", "can0", "powertrain", {"fd": "1"})
    assert spec.flag("fd")


def test_replay_options_and_path_with_colon_free_name(tmp_path: Path) -> None:
    capture = tmp_path / "drive.log"
    capture.write_text("(1.0) can0 123#00\n")
    source = open_source(f"replay:{capture}?speed=2.5&loop=3")
    assert isinstance(source, ReplaySource)
    assert (source.speed, source.loops, source.live) == (2.5, 3, False)


def test_sim_options_after_colon() -> None:
    source = open_source("sim:driver=anna,scenario=city,seed=7,duration=30,fault=bad-crc@5+1:chassis")
    assert isinstance(source, SimSource)
    assert source.options == {"seed": 7, "duration": 30.0, "driver": "anna", "scenario": "city"}
    assert source.faults == ["bad-crc@5+1:chassis"]
    assert open_source("sim:[seed=3]").options["seed"] == 3


def test_slcan_device_and_bitrate() -> None:
    source = open_source("slcan:/dev/ttyACM0@500000")
    assert isinstance(source, SlcanSource)
    assert (source.device, source.bitrate, source.name) == ("/dev/ttyACM0", 500000, "/dev/ttyACM0")


def test_virtual_channel_naming() -> None:
    assert isinstance(open_source("virtual:bench"), VirtualSource)
    assert open_source("virtual:bench").channel == "bench"
    assert open_source("chassis=virtual:bench").channel == "chassis"


def test_socketcan_interface_that_does_not_exist_is_unavailable() -> None:
    source = open_source("socketcan:nosuchcan9")
    assert isinstance(source, SocketcanSource)
    assert not source.available()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("can0", "expected KIND:ARG"),
        ("udp:can0", "expected KIND:ARG"),
        ("socketcan:", "needs an argument"),
        ("bad/name=socketcan:can0", "bus name"),
        ("socketcan:can0?speed=2", "unknown option 'speed'"),
        ("slcan:/dev/ttyACM0", "DEVICE@BITRATE"),
        ("replay:/no/such/file.log", "no such file"),
        ("sim:seed=x", "seed"),
        ("sim:duration=-1", "duration"),
        ("sim:duration=inf", "duration='inf' must be a positive number"),
        ("socketcan:can0?fd=yes please", "fd='yes please' must be 1 or 0"),
        ("slcan:/dev/ttyACM0@500000?tty_baudrate=9600.5", "must be a whole number"),
        ("sim:driver", "KEY=VALUE"),
        ("sim:driver=nobody", "unknown driver"),
        ("sim:scenario=moon", "unknown scenario"),
        ("sim:fault=melt@3", "unknown fault"),
    ],
)
def test_bad_specs_name_the_problem(text: str, needle: str) -> None:
    with pytest.raises(UserError) as error:
        open_source(text)
    assert needle in str(error.value)
    assert text in str(error.value)


@pytest.mark.parametrize(("loop", "needle"), [("inf", "must be a positive number"), ("1.5", "whole number")])
def test_replay_loop_must_be_a_finite_whole_number(tmp_path: Path, loop: str, needle: str) -> None:
    capture = tmp_path / "drive.log"
    capture.write_text("(1767225600.000000) can0 123#00\n")
    with pytest.raises(UserError, match=needle):
        open_source(f"replay:{capture}?loop={loop}")
