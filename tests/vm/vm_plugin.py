"""pytest plugin that only the VM's job loads, before any conftest (`-p tests.vm.vm_plugin` in .ci/vm/run.sh).

python-can imports its MF4 support (asammdf, and with it pandas and numpy) whenever asammdf is installed:
about 16 s of emulated Python before the first test. No VM test reads MF4 files, so asammdf is hidden
here; an accidental use fails loudly with ModuleNotFoundError instead of passing unnoticed.
"""

import sys

sys.modules.setdefault("asammdf", None)  # type: ignore[arg-type]
