"""`decode --summary` bus load: each channel at its DBC's declared bitrate, CAN FD data phases too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from firmware_agent.cli import main
from firmware_agent.decode.catalog import BusBitrate, Catalog
from firmware_agent.io.candump_log import parse_line
from firmware_agent.vehicle import default_dbc_specs

FD_DBC = """\
VERSION ""
BS_:
BU_: ECU
BO_ 1024 Media: 16 ECU
 SG_ Volume : 0|8@1+ (1,0) [0|255] "" Vector__XXX
BA_DEF_ "Baudrate" INT 0 10000000;
BA_DEF_ "BaudrateCANFD" INT 0 10000000;
BA_DEF_DEF_ "Baudrate" 500000;
BA_DEF_DEF_ "BaudrateCANFD" 2000000;
BA_ "Baudrate" 250000;
"""


def _bus_load(out: str) -> dict[str, tuple[float, str]]:
    """channel -> (load %, the 'at ...' text) from the summary's bus-load lines."""
    lines = re.findall(r"^  (\S+) +[\d,]+ frames over +[\d.]+ s +([\d.]+) %  at (.*)$", out, re.M)
    return {channel: (float(load), rate) for channel, load, rate in lines}


@pytest.fixture(scope="module")
def vehicle_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "drive.log"
    assert main(["sim", "--duration", "20", "--out", str(path)]) == 0
    return path


def test_vehicle_buses_use_their_dbc_bitrates(
    capsys: pytest.CaptureFixture[str], vehicle_capture: Path
) -> None:
    capsys.readouterr()
    assert main(["decode", str(vehicle_capture), "--summary"]) == 0
    loads = _bus_load(capsys.readouterr().out)
    assert loads["body"][1] == "125 kbit/s (DBC)"
    assert loads["infotainment"][1] == "500 kbit/s, data 2000 kbit/s (DBC)"
    assert loads["powertrain"][1] == "500 kbit/s (DBC)"

    # body: every frame's nominal bits at 125 kbit/s over the channel's span, recomputed here
    frames = [
        f for f in map(parse_line, vehicle_capture.read_bytes().splitlines()) if f and f.channel == "body"
    ]
    bits = sum((67 if f.is_extended else 47) + 8 * len(f.data) for f in frames)
    duration = frames[-1].timestamp - frames[0].timestamp
    assert loads["body"][0] == pytest.approx(100 * bits / 125_000 / duration, abs=0.051)


def test_channels_whose_dbc_declares_no_bitrate_use_500_kbit(
    capsys: pytest.CaptureFixture[str], vehicle_capture: Path, test_data: Path
) -> None:
    capsys.readouterr()
    motohawk = test_data / "dbc" / "cantools__motohawk.dbc"  # declares no Baudrate
    assert main(["decode", str(vehicle_capture), "--summary", "--dbc", str(motohawk)]) == 0
    loads = _bus_load(capsys.readouterr().out)
    assert set(loads) == {"body", "chassis", "infotainment", "powertrain"}
    assert {rate for _, rate in loads.values()} == {"500 kbit/s (default)"}


def test_bitrate_option_overrides_every_channel(
    capsys: pytest.CaptureFixture[str], vehicle_capture: Path
) -> None:
    capsys.readouterr()
    assert main(["decode", str(vehicle_capture), "--summary"]) == 0
    declared = _bus_load(capsys.readouterr().out)
    assert main(["decode", str(vehicle_capture), "--summary", "--bitrate", "250000"]) == 0
    forced = _bus_load(capsys.readouterr().out)
    assert {rate for _, rate in forced.values()} == {"250 kbit/s (--bitrate)"}
    assert forced["body"][0] == pytest.approx(declared["body"][0] / 2, abs=0.06)
    assert forced["powertrain"][0] == pytest.approx(declared["powertrain"][0] * 2, abs=0.11)


def test_switched_fd_payloads_count_at_the_data_bitrate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dbc = tmp_path / "media.dbc"
    dbc.write_text(FD_DBC)
    # one second, 11 frames of 16 bytes each: 0 flags (no BRS) on can0, 1 (BRS) on can1
    lines = [
        f"({1700000000 + i / 10:.6f}) {ch} 400##{flag}{'11' * 16}"
        for i in range(11)
        for ch, flag in (("can0", 0), ("can1", 1))
    ]
    capture = tmp_path / "fd.log"
    capture.write_text("\n".join(lines) + "\n")
    assert main(["decode", str(capture), "--dbc", str(dbc), "--summary"]) == 0
    loads = _bus_load(capsys.readouterr().out)
    bits = 47 + 8 * 16
    assert loads["can0"] == (
        pytest.approx(100 * 11 * bits / 250_000, abs=0.051),
        "250 kbit/s, data 2000 kbit/s (DBC)",
    )
    switched = 11 * (47 / 250_000 + 128 / 2_000_000)
    assert loads["can1"][0] == pytest.approx(100 * switched, abs=0.051)


def test_catalog_bitrate_per_channel_falls_back_to_every_channel_databases(tmp_path: Path) -> None:
    catalog = Catalog.from_specs(default_dbc_specs(), warn_stream=None)
    assert catalog.bitrate("body") == BusBitrate(125_000)
    assert catalog.bitrate("infotainment") == BusBitrate(500_000, 2_000_000)
    assert catalog.bitrate("powertrain") == BusBitrate(500_000)
    assert catalog.bitrate("can9") is None  # no database for that channel
    dbc = tmp_path / "media.dbc"
    dbc.write_text(FD_DBC)
    catalog = Catalog.from_specs([*default_dbc_specs(), str(dbc)], warn_stream=None)
    assert catalog.bitrate("can9") == BusBitrate(250_000, 2_000_000)  # the every-channel database's
    assert catalog.bitrate("body") == BusBitrate(125_000)  # a channel's own database comes first
