"""Keeping `firmware-agent decode` quick to start.

cantools imports python-can, and python-can imports asammdf (and with it pandas) for its MF4 reader
whenever it is installed: 0.7 s of a 1.5 s decode on a small machine. When no MF4 file is being read,
python-can is imported with asammdf hidden; the MF4 reader reloads python-can's MF4 module if it is
needed after all. (The parquet writer builds its arrow arrays from buffers for the same reason:
`pyarrow.array()` imports pandas on first use.)
"""

from __future__ import annotations

import sys


def import_python_can(need_mf4: bool) -> None:
    """Import python-can (and so cantools' dependencies) without asammdf unless `need_mf4`."""
    if need_mf4 or "can" in sys.modules or "asammdf" in sys.modules:
        return
    sys.modules["asammdf"] = None  # type: ignore[assignment]  # makes `import asammdf` fail fast
    try:
        import can  # noqa: F401
    finally:
        del sys.modules["asammdf"]
