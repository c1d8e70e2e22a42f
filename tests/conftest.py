"""Fixtures shared by every test: where the real test data and the project's DBCs are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real-world test data (DBCs, captures, driving data), read-only, beside the checkout as ../shared/data.
SHARED_DATA = (REPO_ROOT.parent / "shared" / "data").resolve()
DBC_DIR = REPO_ROOT / "dbc"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The `../shared/data` folder; its absence is an error, never a silent skip."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"test data folder {SHARED_DATA} is missing (it lies beside the checkout in CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def rav4_capture(shared_data: Path) -> Path:
    """The real 60 s RAV4 capture (candump -L, two buses)."""
    return shared_data / "captures" / "rav4" / "rav4_2018-08-02_seg40.log"


@pytest.fixture(scope="session")
def rav4_dbc_specs(shared_data: Path) -> list[str]:
    """`--dbc` specs that decode the RAV4 capture."""
    dbc = shared_data / "dbc"
    return [
        f"can0={dbc / 'opendbc__toyota_new_mc_pt_generated.dbc'}",
        f"can1={dbc / 'opendbc__toyota_adas.dbc'}",
    ]
