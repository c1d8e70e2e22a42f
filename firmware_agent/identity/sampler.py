"""From CAN frames to what the identity stage reasons on: a 1 Hz grid of behavioural channels, the explicit
identity in force, and the ignition's on/off edges.

The sampler decodes frames itself (through the shared catalog, raw numbers rather than value-table
labels), so it needs nothing from the campaigns and the private identity signals never have to reach the
collector. It decodes a message at most once per grid period: the first frame of each message after a
grid tick gives that second's value (a snapshot, as an OBD logger at 1 Hz takes it), and every other frame
costs one dict lookup and one comparison. That keeps the stage cheap at any bus load.

A value older than `HOLD_SECONDS` counts as missing (NaN) in a row. A silence longer than that (a bus lost,
the capture paused) is a `gap`: the rows before and after it do not form one window. Time running back
(the next capture of `profile learn`, a clock stepped back) starts the sampler afresh.

The explicit identity is reported once it has *settled*: `HOLD_SECONDS` after the first frame (or after a
restart), when every explicit signal's message has had the chance to arrive, so a weaker signal seen first
(the seat slot before the key) does not flash up as a driver for a moment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import can
import numpy as np
from cantools.database.can import Message

from firmware_agent.decode.catalog import Catalog
from firmware_agent.decode.compiled import CompiledMessage, DecodeSkip, FrameDecoder
from firmware_agent.decode.memo import KeyMemo
from firmware_agent.errors import UserError
from firmware_agent.identity.features import CHANNELS, RATE_HZ
from firmware_agent.identity.settings import IdentitySettings
from firmware_agent.vss import VssMap

#: A channel's last value is held this long; older, it is missing from the row.
HOLD_SECONDS = 2.0

_BEHAVIOUR, _EXPLICIT, _IGNITION = 0, 1, 2


class SamplerListener(Protocol):
    """What the sampler reports, in time order."""

    def on_row(self, timestamp: float, row: np.ndarray) -> None:
        """One grid row (len(CHANNELS) floats, NaN = missing) while the ignition is on."""

    def on_gap(self, timestamp: float) -> None:
        """The data paused for longer than `HOLD_SECONDS` while the ignition was on."""

    def on_rewind(self, timestamp: float) -> None:
        """Time ran back: whatever drive was in progress is over (the sampler starts afresh)."""

    def on_explicit(self, timestamp: float, identity: str | None) -> None:
        """The explicit identity changed (`MESSAGE.Signal=value` of the strongest signal present, or None)."""

    def on_ignition(self, timestamp: float, on: bool) -> None:
        """The ignition turned on (a drive starts) or off (it ends)."""


@dataclass
class _MessagePlan:
    compiled: CompiledMessage
    outputs: tuple[tuple[str, int, int], ...]  # (signal, kind, index)
    due: float = -math.inf


@dataclass(frozen=True)
class SignalRef:
    """A configured signal resolved against the catalog."""

    message: Message
    signal: str

    @property
    def key(self) -> str:
        """`MESSAGE.Signal`."""
        return f"{self.message.name}.{self.signal}"


def resolve_signal(catalog: Catalog, vss: VssMap, name: str, setting: str) -> SignalRef | None:
    """The message and signal a configured name (`MESSAGE.Signal` or VSS path) refers to, else None."""
    key = vss.resolve(name)
    message_name, _, signal_name = key.partition(".")
    for _, message in catalog.all_messages():
        if message.name == message_name and any(s.name == signal_name for s in message.signals):
            return SignalRef(message, signal_name)
    return None


class FrameSampler:
    """Feeds frames in, reports rows, gaps, explicit identity and ignition edges to a `SamplerListener`."""

    def __init__(
        self, settings: IdentitySettings, catalog: Catalog, vss: VssMap, listener: SamplerListener
    ) -> None:
        self.listener = listener
        self.settings = settings
        self._decoder = FrameDecoder(catalog, decode_choices=False)
        self._period = 1.0 / RATE_HZ
        self._rewind = HOLD_SECONDS + self._period
        wanted: dict[int, tuple[Message, list[tuple[str, int, int]]]] = {}

        def want(ref: SignalRef, kind: int, index: int) -> None:
            wanted.setdefault(id(ref.message), (ref.message, []))[1].append((ref.signal, kind, index))

        def resolve(name: str, setting: str) -> SignalRef | None:
            ref = resolve_signal(catalog, vss, name, setting)
            if ref is None and setting.split("[")[0] in settings.given:
                raise UserError(f"identity.{setting}: no loaded database defines the signal {name!r}")
            return ref

        self.channels: list[str] = []
        for column, channel in enumerate(CHANNELS):
            name = settings.behaviour.get(channel)
            ref = resolve(name, f"behaviour.{channel}") if name else None
            if ref is not None:
                want(ref, _BEHAVIOUR, column)
                self.channels.append(channel)
        found = [resolve(name, "explicit") for name in settings.explicit]
        self.explicit_refs = [ref for ref in found if ref is not None]
        for index, ref in enumerate(self.explicit_refs):
            want(ref, _EXPLICIT, index)
        self._ignition_on: frozenset[float] = frozenset()
        ignition = resolve(settings.ignition, "ignition") if settings.ignition else None
        if ignition is not None:
            want(ignition, _IGNITION, 0)
            self._ignition_on = _on_values(ignition, settings.ignition_on)
        self.has_ignition = ignition is not None
        self._wanted = {key: (message, tuple(outputs)) for key, (message, outputs) in wanted.items()}
        self._plans: KeyMemo[tuple[Any, int, bool], _MessagePlan | None] = KeyMemo()
        self._plans_by_message: dict[int, _MessagePlan] = {}
        self._none = frozenset(settings.none_values)
        self._latest = np.full(len(CHANNELS), np.nan)
        self._updated = np.full(len(CHANNELS), -math.inf)
        self._explicit: list[float | None] = [None] * len(self.explicit_refs)
        self._identity: str | None = None
        self._settled_at = math.inf
        self.ignition_on = not self.has_ignition  # without an ignition signal the data is one drive
        self._next_tick = math.nan
        self._last_time = -math.inf
        self.frames_decoded = 0

    def signal_keys(self) -> frozenset[str]:
        """`MESSAGE.Signal` of every signal the sampler reads (for kernel filters)."""
        return frozenset(
            f"{message.name}.{signal}"
            for message, outputs in self._wanted.values()
            for signal, _, _ in outputs
        )

    def feed(self, frames: Iterable[can.Message]) -> None:
        """Take frames in time order (a chunk from the pipeline or a capture)."""
        plans = self._plans
        missing = _MISSING
        for frame in frames:
            key = (frame.channel, frame.arbitration_id, frame.is_extended_id)
            plan = plans.get(key, missing)
            if plan is missing:
                plan = self._plan_for(key)
            timestamp = frame.timestamp
            if not self._next_tick - self._rewind <= timestamp < self._next_tick:  # (NaN: the first frame)
                self._advance(timestamp)
            if plan is None or timestamp < plan.due or frame.is_error_frame or frame.is_remote_frame:
                continue
            try:
                values = plan.compiled.decode(frame.data)
            except DecodeSkip:
                continue
            self.frames_decoded += 1
            if self._take(timestamp, plan.outputs, values):
                plan.due = (math.floor(timestamp * RATE_HZ) + 1) * self._period

    def _plan_for(self, key: tuple[Any, int, bool]) -> _MessagePlan | None:
        compiled = self._decoder.compiled_for(*key)
        plan = None
        if compiled is not None and id(compiled.message) in self._wanted:
            plan = self._plans_by_message.get(id(compiled.message))
            if plan is None:
                outputs = self._wanted[id(compiled.message)][1]
                plan = self._plans_by_message[id(compiled.message)] = _MessagePlan(compiled, outputs)
        self._plans.remember(key, plan)  # bounded: see decode.memo
        return plan

    def _take(self, timestamp: float, outputs: tuple[tuple[str, int, int], ...], values: dict) -> bool:
        """Store a decoded frame's wanted values; False when none was present (another multiplexer page)."""
        took = False
        explicit_changed = False
        for signal, kind, index in outputs:
            value = values.get(signal)
            if value is None:
                continue
            took = True
            number = float(value)
            if kind == _BEHAVIOUR:
                self._latest[index] = number
                self._updated[index] = timestamp
            elif kind == _EXPLICIT:
                known = None if number in self._none or not math.isfinite(number) else number
                if known != self._explicit[index]:
                    self._explicit[index] = known
                    explicit_changed = True
            else:
                on = number in self._ignition_on
                if on != self.ignition_on:
                    self.ignition_on = on
                    self.listener.on_ignition(timestamp, on)
        if explicit_changed and timestamp >= self._settled_at:
            self._report_identity(timestamp)
        return took

    def _report_identity(self, timestamp: float) -> None:
        identity = self._strongest()
        if identity != self._identity:
            self._identity = identity
            self.listener.on_explicit(timestamp, identity)

    def _strongest(self) -> str | None:
        for ref, value in zip(self.explicit_refs, self._explicit, strict=True):
            if value is not None:
                text = str(int(value)) if value.is_integer() else repr(value)
                return f"{ref.key}={text}"
        return None

    @property
    def explicit_identity(self) -> str | None:
        """The explicit identity in force now (strongest signal present), or None."""
        return self._identity

    def _advance(self, timestamp: float) -> None:
        """Emit the rows of every grid tick up to `timestamp` (or report a gap if the data paused)."""
        if self._next_tick != self._next_tick:  # first frame
            self._restart(timestamp)
            return
        if timestamp < self._next_tick - self._rewind:  # time ran back: a new capture or a stepped clock
            self.listener.on_rewind(timestamp)
            self.ignition_on = not self.has_ignition
            self._restart(timestamp)
            return
        if timestamp - self._last_time > HOLD_SECONDS:
            if self.ignition_on:
                self.listener.on_gap(timestamp)
            self._next_tick = (math.floor(timestamp * RATE_HZ) + 1) * self._period
            self._last_time = timestamp
            return
        if timestamp >= self._settled_at and self._settled_at > self._last_time:
            self._report_identity(timestamp)
        while timestamp >= self._next_tick:
            tick = self._next_tick
            if self.ignition_on:
                row = np.where(tick - self._updated <= HOLD_SECONDS, self._latest, np.nan)
                self.listener.on_row(tick, row)
            self._next_tick = tick + self._period
        self._last_time = timestamp

    def _restart(self, timestamp: float) -> None:
        """Start afresh at `timestamp`: no value held, every message due, the identity to settle again."""
        self._next_tick = (math.floor(timestamp * RATE_HZ) + 1) * self._period
        self._last_time = timestamp
        self._updated[:] = -math.inf
        self._explicit = [None] * len(self.explicit_refs)
        self._settled_at = timestamp + HOLD_SECONDS
        for plan in self._plans_by_message.values():
            plan.due = -math.inf


_MISSING: Any = object()


def _on_values(ref: SignalRef, labels: Iterable[str | float]) -> frozenset[float]:
    """The raw values of the ignition signal that mean "on" (labels looked up in its value table)."""
    signal = next(s for s in ref.message.signals if s.name == ref.signal)
    choices = {str(name): float(raw) for raw, name in (signal.choices or {}).items()}
    values = set()
    for label in labels:
        if isinstance(label, str):
            if label not in choices:
                known = ", ".join(sorted(choices)) or "none: give numbers"
                raise UserError(f"identity.ignition_on: {ref.key} has no value {label!r} (known: {known})")
            values.add(choices[label])
        else:
            values.add(float(label))
    return frozenset(values)
