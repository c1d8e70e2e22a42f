"""Where the project's own vehicle definitions (`dbc/`) live, in a checkout or in an installed wheel."""

from __future__ import annotations

from pathlib import Path

#: The four buses of our vehicle, one DBC each, named after the bus.
BUS_NAMES: tuple[str, ...] = ("body", "powertrain", "chassis", "infotainment")


def default_dbc_dir() -> Path:
    """Return the folder holding the vehicle's DBCs and `vss.toml`.

    A source checkout (editable install) uses the repository's `dbc/`; a wheel carries a copy as
    `firmware_agent/_dbc`.
    """
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir.parent / "dbc", package_dir / "_dbc"):
        if (candidate / "powertrain.dbc").is_file():
            return candidate
    raise FileNotFoundError("the vehicle DBCs (dbc/powertrain.dbc) are not installed with this package")


def default_dbc_specs() -> list[str]:
    """`CHANNEL=FILE` specs binding each of our buses to its DBC, as `--dbc` takes them."""
    folder = default_dbc_dir()
    return [f"{bus}={folder / (bus + '.dbc')}" for bus in BUS_NAMES]


def default_channel_aliases() -> dict[str, str]:
    """The channel numbers python-can reads back from the simulator's ASC/BLF captures, by bus.

    ASC and BLF number their channels; `sim/outputs.py` writes the buses as channels 1-4 in `BUS_NAMES`
    order, which python-can reads back as "0" to "3".
    """
    return {str(number): bus for number, bus in enumerate(BUS_NAMES)}
