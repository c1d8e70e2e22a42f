"""Fixtures shared by every test: where the test data and the project's DBCs are.

Everything the suite needs lives in `tests/data/` (see its MANIFEST.md), so a fresh clone tests alone. The
one exception is the driving data, which may not be redistributed: tests marked `driving_data` read it from
`../shared/data/driving` beside the checkout and are skipped, with a banner at the end of the run, when it
is absent (a failure instead when FIRMWARE_AGENT_REQUIRE_DRIVING_DATA=1, as in CI).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real-world test data shipped with the repository (tests/data/MANIFEST.md: sources and licences).
TEST_DATA = REPO_ROOT / "tests" / "data"
#: Real driving data that must not be redistributed: only beside the checkout, as ../shared/data/driving.
DRIVING_DATA = (REPO_ROOT.parent / "shared" / "data" / "driving").resolve()
DBC_DIR = REPO_ROOT / "dbc"

_missing_driving_data: list[str] = []


def data_files(folder: str, pattern: str = "*") -> list[Path]:
    """The files of `tests/data/FOLDER` matching `pattern`; an empty list is an error, never an empty
    parametrisation (which pytest would collect silently as zero tests)."""
    found = sorted(path for path in (TEST_DATA / folder).glob(pattern) if path.is_file())
    if not found:
        where = TEST_DATA / folder / pattern
        raise RuntimeError(f"no test data matches {where} (see tests/data/MANIFEST.md)")
    return found


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The `tests/data` folder."""
    return TEST_DATA


@pytest.fixture(scope="session")
def rav4_capture() -> Path:
    """The real 60 s RAV4 capture (candump -L, two buses)."""
    return TEST_DATA / "captures" / "rav4" / "rav4_2018-08-02_seg40.log"


@pytest.fixture(scope="session")
def rav4_dbc_specs() -> list[str]:
    """`--dbc` specs that decode the RAV4 capture."""
    dbc = TEST_DATA / "dbc"
    return [
        f"can0={dbc / 'opendbc__toyota_new_mc_pt_generated.dbc'}",
        f"can1={dbc / 'opendbc__toyota_adas.dbc'}",
    ]


@pytest.fixture(scope="session")
def driving_data() -> Path:
    """The `../shared/data/driving` folder (not redistributable); skips loudly when it is absent."""
    if not DRIVING_DATA.is_dir():
        reason = (
            f"driving data not found at {DRIVING_DATA} (not redistributable: it lies beside the checkout)"
        )
        if os.environ.get("FIRMWARE_AGENT_REQUIRE_DRIVING_DATA") == "1":
            pytest.fail(reason + " and FIRMWARE_AGENT_REQUIRE_DRIVING_DATA=1")
        _missing_driving_data.append(reason)
        pytest.skip(reason)
    return DRIVING_DATA


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that asks for the driving data carries the `driving_data` marker (`-m driving_data`)."""
    for item in items:
        if "driving_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.driving_data)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _missing_driving_data:
        terminalreporter.write_sep("!", "TESTS SKIPPED FOR MISSING DATA", red=True, bold=True)
        terminalreporter.write_line(
            f"{len(_missing_driving_data)} test(s) did not run: {_missing_driving_data[0]}", red=True
        )
