"""Where frames come from: python-can buses (SocketCAN, slcan, virtual), capture replay, the simulator.

One module per kind, each a small `Source` subclass (python-can's `BusABC` style); `open_source(spec)`
turns a spec string (`[BUS=]KIND:ARG[?options]`, see `spec.py`) into one. `reader.py` runs each source in
its own thread and hands frames to the pipeline through a bounded queue.
"""

from __future__ import annotations

import importlib

from firmware_agent.sources.base import EndOfSource, KernelFilter, Source
from firmware_agent.sources.spec import KINDS, SOURCE_CLASSES, SourceSpec


def open_source(spec: str | SourceSpec) -> Source:
    """Create (not yet open) the source a spec names; `UserError` for a bad spec."""
    parsed = spec if isinstance(spec, SourceSpec) else SourceSpec.parse(spec)
    module = importlib.import_module(f"firmware_agent.sources.{parsed.kind}")
    cls: type[Source] = getattr(module, SOURCE_CLASSES[parsed.kind])
    return cls(parsed)


__all__ = ["KINDS", "EndOfSource", "KernelFilter", "Source", "SourceSpec", "open_source"]
