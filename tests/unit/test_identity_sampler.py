"""The identity sampler on frames encoded with cantools from the reference vehicle's DBCs, and the
`[identity]` settings it is configured by."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import can
import numpy as np
import pytest

from firmware_agent.decode.catalog import Catalog
from firmware_agent.errors import UserError
from firmware_agent.identity.features import CHANNELS
from firmware_agent.identity.sampler import FrameSampler
from firmware_agent.identity.settings import IdentitySettings
from firmware_agent.service.config import Overrides, load_config
from firmware_agent.vehicle import default_dbc_dir, default_dbc_specs
from firmware_agent.vss import VssMap

T0 = 1_767_225_600.0
ON, OFF = 3, 1
KEY_ID = 0x1A2B3C01


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_specs(default_dbc_specs(), warn_stream=None)


@pytest.fixture(scope="module")
def vss() -> VssMap:
    return VssMap.load(default_dbc_dir() / "vss.toml")


class Recorder:
    """A `SamplerListener` that keeps what it was told."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, np.ndarray]] = []
        self.calls: list[tuple[str, float, Any]] = []

    def on_row(self, timestamp: float, row: np.ndarray) -> None:
        self.rows.append((timestamp, row))

    def on_gap(self, timestamp: float) -> None:
        self.calls.append(("gap", timestamp, None))

    def on_rewind(self, timestamp: float) -> None:
        self.calls.append(("rewind", timestamp, None))

    def on_explicit(self, timestamp: float, identity: str | None) -> None:
        self.calls.append(("explicit", timestamp, identity))

    def on_ignition(self, timestamp: float, on: bool) -> None:
        self.calls.append(("ignition", timestamp, on))


def frame(catalog: Catalog, name: str, timestamp: float, **signals: float) -> can.Message:
    channel, message = next((c, m) for c, m in catalog.all_messages() if m.name == name)
    values = {signal.name: 0 for signal in message.signals}
    values.update(signals)
    return can.Message(
        timestamp=timestamp,
        channel=channel,
        arbitration_id=message.frame_id,
        is_extended_id=message.is_extended_frame,
        is_fd=message.length > 8,
        data=message.encode(values, strict=False),
    )


def drive_frames(catalog: Catalog, seconds: float, ignition_on_at: float, off_at: float) -> list[can.Message]:
    """10 Hz speed and ignition, 1 Hz key; speed = 10 * t km/h."""
    frames = []
    for step in range(int(seconds * 10)):
        t = T0 + step / 10
        since = t - T0
        ignition = ON if ignition_on_at <= since < off_at else OFF
        frames.append(frame(catalog, "IGNITION_STATUS", t + 0.001, IgnitionState=ignition))
        frames.append(frame(catalog, "VEHICLE_SPEED", t + 0.002, VehicleSpeed=min(600.0, since * 10)))
        if step % 10 == 0:
            frames.append(frame(catalog, "KEY_STATUS", t + 0.003, KeyPresent=1, KeyId=KEY_ID, KeySlot=1))
            frames.append(frame(catalog, "SEAT_MEMORY", t + 0.004, SeatPage=1, SeatPosition=30))
            frames.append(frame(catalog, "SEAT_MEMORY", t + 0.005, SeatPage=0, MemorySlot=2))
    return frames


def test_rows_at_1_hz_only_while_the_ignition_is_on(catalog: Catalog, vss: VssMap) -> None:
    recorder = Recorder()
    sampler = FrameSampler(IdentitySettings(), catalog, vss, recorder)
    sampler.feed(drive_frames(catalog, seconds=20, ignition_on_at=5, off_at=15))
    ignition = [(t - T0, on) for kind, t, on in recorder.calls if kind == "ignition"]
    assert [on for _, on in ignition] == [True, False]
    assert 5 <= ignition[0][0] < 6.1 and 15 <= ignition[1][0] < 16.1  # decoded once a second at most
    times = [t - T0 for t, _ in recorder.rows]
    assert times == [float(s) for s in range(6, 16)]  # the row at tick k holds the second before it
    speed = CHANNELS.index("speed")
    # each row holds the value of the first frame after the previous tick (a 1 Hz snapshot)
    for t, row in recorder.rows:
        assert row[speed] == pytest.approx((t - T0 - 1) * 10, abs=0.05)
        assert np.isnan(row[CHANNELS.index("pedal")])  # never sent: missing, not zero
    # frames decoded: a few per second, not every frame
    assert sampler.frames_decoded < len(drive_frames(catalog, 20, 5, 15)) / 3


def test_explicit_identity_is_the_strongest_signal_once_settled(catalog: Catalog, vss: VssMap) -> None:
    recorder = Recorder()
    sampler = FrameSampler(IdentitySettings(), catalog, vss, recorder)
    frames = drive_frames(catalog, seconds=6, ignition_on_at=1, off_at=99)
    sampler.feed(frames)
    explicit = [(t - T0, identity) for kind, t, identity in recorder.calls if kind == "explicit"]
    # the seat slot (weaker) is never reported on its own: the key arrives within the settling time
    assert [identity for _, identity in explicit] == [f"KEY_STATUS.KeyId={KEY_ID}"]
    assert explicit[0][0] >= 2.0
    assert sampler.signal_keys() >= {
        "KEY_STATUS.KeyId",
        "SEAT_MEMORY.MemorySlot",
        "IGNITION_STATUS.IgnitionState",
    }

    # the key leaves: the seat-memory slot (multiplexed page 0) is what is left
    later = [frame(catalog, "KEY_STATUS", T0 + 6 + i, KeyPresent=0, KeyId=0) for i in range(3)]
    later += [frame(catalog, "SEAT_MEMORY", T0 + 6.5 + i, SeatPage=0, MemorySlot=2) for i in range(3)]
    sampler.feed(sorted(later, key=lambda f: f.timestamp))
    assert recorder.calls[-1][0] == "explicit" and recorder.calls[-1][2] == "SEAT_MEMORY.MemorySlot=2"


def test_a_pause_is_a_gap_and_time_running_back_a_rewind(catalog: Catalog, vss: VssMap) -> None:
    recorder = Recorder()
    sampler = FrameSampler(IdentitySettings(ignition=""), catalog, vss, recorder)  # no ignition: all a drive
    first = drive_frames(catalog, seconds=5, ignition_on_at=0, off_at=99)
    later = [
        f for f in drive_frames(catalog, seconds=20, ignition_on_at=0, off_at=99) if f.timestamp > T0 + 15
    ]
    sampler.feed(first + later)
    assert [kind for kind, _, _ in recorder.calls].count("gap") == 1
    rows_before = len(recorder.rows)
    sampler.feed(first)  # the next capture, back at T0
    assert [kind for kind, _, _ in recorder.calls].count("rewind") == 1
    assert len(recorder.rows) > rows_before  # the sampler started afresh instead of waiting for T0 + 20


def test_signals_are_configuration(catalog: Catalog, vss: VssMap, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'vehicle_id = "v1"\nsources = ["virtual:x"]\n[broker]\nurl = "mqtt://127.0.0.1"\n'
        '[identity]\nexplicit = ["Vehicle.Cabin.Infotainment.Media.Volume"]\nignition = ""\n'
        'activation_minutes = 1\n[identity.behaviour]\nthrottle = ""\nspeed = "WHEEL_SPEEDS.WheelSpeedFL"\n'
    )
    settings = load_config(config, Overrides()).identity
    assert settings.explicit == ("Vehicle.Cabin.Infotainment.Media.Volume",)
    assert "throttle" not in settings.behaviour and settings.behaviour["speed"] == "WHEEL_SPEEDS.WheelSpeedFL"
    sampler = FrameSampler(settings, catalog, vss, Recorder())
    assert sampler.explicit_refs[0].key == "HU_STATUS.Volume"  # a VSS name resolves to its signal
    assert sampler.ignition_on  # no ignition signal: the data is one drive


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"colour": 1}, "identity.colour: unknown key"),
        ({"enabled": "yes"}, "identity.enabled: expected true or false"),
        ({"behaviour": {"wiper": "A.B"}}, "identity.behaviour.wiper: unknown channel"),
        ({"window_seconds": 600}, "identity.window_seconds: expected a number between 10 and 60"),
        ({"step_seconds": 30, "window_seconds": 20}, "identity.step_seconds: must not exceed window_seconds"),
        ({"mismatch_confidence": math.nan}, "identity.mismatch_confidence: expected a number"),
        ({"explicit": "KEY_STATUS.KeyId"}, "identity.explicit: expected a list of signal names"),
        ({"ignition_on": []}, "identity.ignition_on: expected a non-empty list"),
    ],
)
def test_bad_settings_name_the_key(table: dict[str, Any], problem: str) -> None:
    with pytest.raises(UserError, match=problem):
        IdentitySettings.from_table(table, "agent.toml")


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"explicit": ["KEY_STATUS.KeyColour"]}, "identity.explicit: no loaded database"),
        ({"behaviour": {"speed": "NOPE.Speed"}}, "identity.behaviour.speed: no loaded database"),
        ({"ignition": "IGNITION_STATUS.Ignition"}, "identity.ignition: no loaded database"),
        ({"ignition_on": ["RUNNING"]}, "IgnitionState has no value 'RUNNING'"),
    ],
)
def test_configured_signals_unknown_to_the_databases_are_refused(
    catalog: Catalog, vss: VssMap, table: dict[str, Any], problem: str
) -> None:
    settings = IdentitySettings.from_table(table, "agent.toml")
    with pytest.raises(UserError, match=problem):
        FrameSampler(settings, catalog, vss, Recorder())


def test_default_signals_another_vehicle_lacks_are_left_out(vss: VssMap, rav4_dbc_specs: list[str]) -> None:
    sampler = FrameSampler(
        IdentitySettings(), Catalog.from_specs(rav4_dbc_specs, warn_stream=None), vss, Recorder()
    )
    assert (sampler.channels, sampler.explicit_refs, sampler.has_ignition) == ([], [], False)
