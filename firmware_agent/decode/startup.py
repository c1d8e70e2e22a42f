"""Keeping `firmware-agent decode` quick to start.

cantools imports python-can (for `cantools.tester`), and python-can imports asammdf (and with it
pandas) for its MF4 reader whenever it is installed: 0.7 s of a 1.5 s decode on a small machine.

- `import_python_can(need_mf4=False)` imports python-can with asammdf hidden. MF4 captures are read
  without asammdf (`io/mf4.py`); `convert` to MF4 reloads python-can's MF4 module for its writer.
- `defer_python_can()` is for candump and MF4 input, which our own readers parse: python-can (about 0.1 s
  even without asammdf) is then not imported at all unless something uses it. `can` and
  `cantools.tester` get stand-in modules that import the real one (asammdf hidden) on first
  attribute access, so `import can` and `cantools`' own `from . import tester` cost nothing.

(The parquet writer builds its arrow arrays from buffers for the same reason: `pyarrow.array()`
imports pandas on first use.)
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

#: Modules that get a stand-in: python-can, and the one cantools module that imports it.
_DEFERRED = ("can", "cantools.tester")


def import_python_can(need_mf4: bool) -> None:
    """Import python-can (and so cantools' dependencies) without asammdf unless `need_mf4`."""
    loaded = sys.modules.get("can")
    if need_mf4 or (loaded is not None and not isinstance(loaded, _Deferred)):
        return
    _import_without_asammdf("can")


def defer_python_can() -> None:
    """Put stand-ins for python-can and `cantools.tester` that import them on first use."""
    for name in _DEFERRED:
        if name not in sys.modules:
            sys.modules[name] = _Deferred(name)


class _Deferred(types.ModuleType):
    """A module not imported yet: the first attribute looked up imports it and is read from it."""

    def __getattr__(self, attribute: str) -> Any:
        module = sys.modules.get(self.__name__)
        if module is self or module is None:
            module = _import_without_asammdf(self.__name__)
        return getattr(module, attribute)


def _import_without_asammdf(name: str) -> types.ModuleType:
    for deferred in _DEFERRED:
        if isinstance(sys.modules.get(deferred), _Deferred):
            del sys.modules[deferred]
    hide = "asammdf" not in sys.modules
    if hide:
        sys.modules["asammdf"] = None  # type: ignore[assignment]  # makes `import asammdf` fail fast
    try:
        return importlib.import_module(name)
    finally:
        if hide:
            del sys.modules["asammdf"]
