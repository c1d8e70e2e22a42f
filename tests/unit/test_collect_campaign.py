"""Campaign files: schema, defaults, name resolution and one-line errors naming file, line, campaign, key."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_agent.collect.campaign import (
    CampaignError,
    builtin_all,
    campaigns_for_option,
    load_campaigns,
    loads_campaigns,
    needed_signals,
    parse_campaigns,
)
from firmware_agent.collect.names import SignalNames
from firmware_agent.decode.catalog import Catalog
from firmware_agent.values import PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_NORMAL
from firmware_agent.vehicle import default_dbc_dir, default_dbc_specs
from firmware_agent.vss import VssMap

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "campaigns"


@pytest.fixture(scope="module")
def names() -> SignalNames:
    """The names of our reference vehicle, as the agent builds them."""
    catalog = Catalog.from_specs(default_dbc_specs(), warn_stream=None)
    return SignalNames.from_catalog(catalog, VssMap.load(default_dbc_dir() / "vss.toml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "campaigns.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error(path: Path, names: SignalNames | None = None) -> str:
    with pytest.raises(CampaignError) as caught:
        load_campaigns(path, names)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_every_mode_with_its_defaults(names: SignalNames) -> None:
    campaigns = loads_campaigns(
        """
        [[campaign]]
        name = "drive"
        mode = "periodic"
        period_ms = 500
        signals = ["Vehicle.Speed", "MOTOR_STATUS.MotorSpeed"]

        [[campaign]]
        name = "doors"
        mode = "on_change"
        priority = "low"
        deadband = 0.5
        deadband_relative = 0.01
        min_interval_ms = 100
        signals = ["DOOR_STATUS.*"]

        [[campaign]]
        name = "brakes"
        mode = "triggered"
        condition = "BRAKE_STATUS.BrakePedalPos > 80"
        signals = ["Vehicle.Speed"]

        [[campaign]]
        name = "everything"
        mode = "all"
        """,
        "inline.toml",
        names,
    )
    drive, doors, brakes, everything = campaigns
    # MESSAGE.Signal of a mapped signal resolves to the VSS path samples carry.
    assert drive.signals == ("Vehicle.Speed", "Vehicle.Powertrain.ElectricMotor.Speed")
    assert (drive.period_ms, drive.batch_interval_s, drive.max_batch_samples) == (500.0, 10.0, 10_000)
    assert drive.priority == PRIORITY_NORMAL
    # A wildcard expands to every signal of the message, whichever way each is named.
    assert set(doors.signals) == {
        "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen",
        "Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen",
        "Vehicle.Cabin.Door.Row2.DriverSide.IsOpen",
        "Vehicle.Cabin.Door.Row2.PassengerSide.IsOpen",
        "Vehicle.Body.Trunk.Rear.IsOpen",
        "DOOR_STATUS.CentralLock",
    }
    assert (doors.deadband, doors.deadband_relative, doors.min_interval_ms) == (0.5, 0.01, 100.0)
    assert doors.priority == PRIORITY_LOW
    assert brakes.priority == PRIORITY_HIGH  # triggered captures default to high
    assert (brakes.pre_trigger_s, brakes.post_trigger_s, brakes.cooldown_s) == (10.0, 5.0, 0.0)
    assert brakes.condition is not None
    assert brakes.condition.signals == {"Vehicle.Chassis.Brake.PedalPosition"}
    assert brakes.needed_signals() == {"Vehicle.Speed", "Vehicle.Chassis.Brake.PedalPosition"}
    assert everything.takes_every_signal
    assert needed_signals(campaigns) is None
    assert needed_signals(campaigns[:3]) == {*drive.signals, *doors.signals, *brakes.needed_signals()}  # type: ignore[misc]


def test_collect_all_is_a_builtin_campaign(tmp_path: Path) -> None:
    (campaign,) = campaigns_for_option("all")
    assert campaign == builtin_all()
    assert campaign.takes_every_signal
    path = write(tmp_path, '[[campaign]]\nname = "x"\nmode = "all"\nsignals = ["A.b"]\n')
    assert campaigns_for_option(str(path))[0].signals == ("A.b",)


def test_a_dict_document_parses_like_toml() -> None:
    # Campaign updates arrive over MQTT as a document, not as a file.
    document = {"campaign": [{"name": "x", "mode": "on_change", "signals": ["A.b"], "deadband": 2}]}
    (campaign,) = parse_campaigns(document, "mqtt campaign update")
    assert campaign.deadband == 2.0
    with pytest.raises(CampaignError, match=r"^mqtt campaign update: campaign 'x': deadband: must be >= 0"):
        parse_campaigns({"campaign": [{**document["campaign"][0], "deadband": -1}]}, "mqtt campaign update")


def test_example_campaigns_load_against_the_vehicle(names: SignalNames) -> None:
    for path in ("all.toml", "brakes.toml", "demo.toml"):
        assert load_campaigns(EXAMPLES / path, names)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[campaign]]\nname = "b"\nmode = "triggered"\n'
            'condition = "Vehicle.Chassis.Brake.PedalPosition > 80)"\nsignals = ["Vehicle.Speed"]\n',
            "{path}:4: campaign 'b': condition: unexpected ')' at column 41",
        ),
        (
            '[[campaign]]\nname = "b"\nmode = "on_change"\nsignals = [\n  "Vehicle.Speed",\n'
            '  "Vehicle.Chasis.Brake.PedalPosition",\n]\n',
            "{path}:6: campaign 'b': signals: unknown signal 'Vehicle.Chasis.Brake.PedalPosition' "
            "(did you mean 'Vehicle.Chassis.Brake.PedalPosition' or "
            "'Vehicle.Chassis.Accelerator.PedalPosition'?)",
        ),
        (
            '[[campaign]]\nname = "b"\nmode = "triggered"\n'
            'condition = "Vehicle.Sped > 80"\nsignals = ["Vehicle.Speed"]\n',
            "{path}:4: campaign 'b': condition: unknown signal 'Vehicle.Sped' "
            "(did you mean 'Vehicle.Speed'?) at column 1",
        ),
        (
            '[[campaign]]\nname = "a"\nmode = "all"\n\n[[campaign]]\nname = "b"\nmode = "periodic"\n'
            'signals = ["Vehicle.Speed"]\nperiod_ms = 0\n',
            "{path}:9: campaign 'b': period_ms: must be >= 1 and <= 3.6e+06 (got 0)",
        ),
        (
            '[[campaign]]\nname = "b"\nmode = "periodic"\nsignals = ["Vehicle.Speed"]\ndeadband = 1\n',
            "{path}:5: campaign 'b': deadband: does not apply to mode 'periodic'",
        ),
        (
            '[[campaign]]\nname = "b"\nmode = "all"\nbatch_intervall_s = 1\n',
            "{path}:4: campaign 'b': batch_intervall_s: unknown key (known: batch_interval_s, condition, "
            "cooldown_s, deadband, deadband_relative, max_batch_samples, max_pre_trigger_samples, "
            "min_interval_ms, mode, name, period_ms, post_trigger_s, pre_trigger_s, priority, signals)",
        ),
        (
            '[[campaign]]\nname = "b"\nmode = "sometimes"\n',
            "{path}:3: campaign 'b': mode: required, one of periodic, on_change, triggered, all "
            "(got 'sometimes')",
        ),
        (
            '[[campaign]]\nmode = "all"\n',
            "{path}:1: campaign #1: name: required: 1 to 64 letters, digits, '_', '-' or '.'",
        ),
        (
            '[[campaign]]\nname = "b"\nmode = "all"\n[[campaign]]\nname = "b"\nmode = "all"\n',
            "{path}:5: campaign 'b': name: campaign name 'b' is used twice",
        ),
        (
            '[[campaign]]\nname = "b"\nmode = "triggered"\nsignals = ["Vehicle.Speed"]\n',
            '{path}:1: campaign \'b\': condition: required for mode "triggered", e.g. "Vehicle.Speed > 120"',
        ),
        (
            '[[campaign]]\nname = "b"\nmode = "all"\nmax_batch_samples = 1.5\n',
            "{path}:4: campaign 'b': max_batch_samples: expected an integer, got 1.5",
        ),
        (
            '[[campaign]]\nname = "b"\nmode = "all"\npriority = "urgent"\n',
            "{path}:4: campaign 'b': priority: one of low, normal, high (got 'urgent')",
        ),
        (
            '[[campaign]]\nname = "b"\nmode = "periodic"\n',
            "{path}:1: campaign 'b': signals: required: a list of VSS paths or MESSAGE.Signal names",
        ),
        (
            '[[campaign]]\nname = "b"\nmode = "periodic"\nsignals = "Vehicle.Speed"\n',
            "{path}:4: campaign 'b': signals: expected a non-empty list of signal names",
        ),
        (
            '[[campaign]]\nname = "b"\nmode = "all"\nsignals = ["NOPE.*"]\n',
            "{path}:4: campaign 'b': signals: 'NOPE.*' matches no signal",
        ),
        ('[[campaign]]\nname = "b"\nmode = \n', "{path}:3:8: TOML syntax error: Invalid value"),
        ("name = 'b'\n", "{path}: unknown top-level key 'name' (expected [[campaign]] tables)"),
        ("", "{path}: no [[campaign]] tables"),
    ],
)
def test_errors_are_one_line_naming_file_line_campaign_and_key(
    tmp_path: Path, names: SignalNames, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    assert error(path, names) == expected.format(path=path)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    assert error(tmp_path / "nope.toml") == f"{tmp_path / 'nope.toml'}: no such file"


def test_without_known_names_any_name_is_accepted_but_wildcards_are_not(tmp_path: Path) -> None:
    path = write(tmp_path, '[[campaign]]\nname = "b"\nmode = "all"\nsignals = ["Anything.Goes", "X.*"]\n')
    assert error(path) == f"{path}:4: campaign 'b': signals: 'X.*': a wildcard needs the vehicle's databases"


def triggered(condition: str) -> str:
    header = '[[campaign]]\nname = "t"\nmode = "triggered"\n'
    return header + f'condition = "{condition}"\nsignals = ["Vehicle.Speed"]\n'


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        (
            "Vehicle.ADAS.ABS.IsEngaged == 1",
            "'Vehicle.ADAS.ABS.IsEngaged' always decodes to a name: compare with one, e.g. == 'active' "
            "at column 31",
        ),
        (
            "Vehicle.Powertrain.Transmission.SelectedGear == 'X'",
            "'X' is not a named value of 'Vehicle.Powertrain.Transmission.SelectedGear' "
            "(named values: B, D, N, P, R, invalid) at column 49",
        ),
        ("'fast' != Vehicle.Speed", "'Vehicle.Speed' has no named values to compare with at column 1"),
    ],
)
def test_conditions_are_checked_against_value_tables(
    names: SignalNames, condition: str, problem: str
) -> None:
    text = triggered(condition)
    with pytest.raises(CampaignError) as caught:
        loads_campaigns(text, "c.toml", names)
    assert str(caught.value) == f"c.toml:4: campaign 't': condition: {problem}"


def test_numbers_stay_allowed_for_partly_named_signals(names: SignalNames) -> None:
    # GearSelected names 0-4 and 15 only: raw values 5-14 decode as numbers.
    condition = "GEAR_STATUS.GearSelected == 'D' or GEAR_STATUS.GearSelected > 4"
    text = triggered(condition)
    (campaign,) = loads_campaigns(text, "c.toml", names)
    assert campaign.condition is not None
    assert campaign.condition.signals == {"Vehicle.Powertrain.Transmission.SelectedGear"}
