"""Bounded memo tables for per-frame-key state (channel, identifier, extended flag).

The decode stages remember what they worked out for each key the first time they saw it (the catalog's
lookup, the compiled decoder, the pipeline's plan, the identity sampler's plan), so that every later frame
costs one dict lookup. Keys come from the bus, not from the DBC: slcan has no kernel filter, and 3 million
distinct unknown 29-bit identifiers grew these tables to 1.2 GB (issue 12). Policy: each table remembers at
most `MAX_FRAME_KEYS` keys, first come first kept (the vehicle's real traffic is seen first and is stable;
a flood of new identifiers is what must not grow memory); a key beyond that is resolved again on every
frame (a few dict lookups, about a microsecond for an unknown identifier) and the pipeline counts those
frames (`decode.frames_uncached`). 16,384 keys cover every 11-bit identifier of eight buses and cost about
2 MB per table.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

#: Keys each table remembers (see the module docstring).
MAX_FRAME_KEYS = 16_384


class KeyMemo(dict[K, V]):
    """A dict that stops growing at `limit` entries; reads are plain dict reads (C speed)."""

    def __init__(self, limit: int = MAX_FRAME_KEYS) -> None:
        super().__init__()
        self.limit = limit

    def remember(self, key: K, value: V) -> bool:
        """Store `key` while there is room; False when the table is full (nothing stored)."""
        if len(self) >= self.limit and key not in self:
            return False
        self[key] = value
        return True
