"""The decode-to-samples stage: frames in, samples named by VSS path (or `MESSAGE.Signal`) out.

Only what the campaigns want is decoded. The first frame of each (channel, identifier) builds a *plan*:
the compiled decoder of its message, its E2E guard, and the (signal, sample name) pairs wanted from it. A
frame whose message nobody wants, or that no database knows, costs one dict lookup and is counted; this is
where the speed of the live path comes from, together with the kernel filters built by
`kernel_filters()`.

The live path takes one `FrameRecord` per frame (`values.py`: timestamp, the `SignalGroup` of the
wanted names, the tuple of values) rather than a `Sample` per value; for a message without multiplexers
the tuple comes straight from a `compile_row` decoder that computes only the wanted signals.

E2E checks apply to the protected messages the pipeline uses; a frame they drop is not decoded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

import can
from cantools.database.can import Message
from cantools.database.namedsignalvalue import NamedSignalValue

from firmware_agent.decode.catalog import Catalog, is_j1939
from firmware_agent.decode.compiled import DecodeSkip, FrameDecoder, compile_row
from firmware_agent.decode.memo import KeyMemo
from firmware_agent.e2e_protection import profile_for
from firmware_agent.pipeline.e2e_check import E2EChecker, E2EGuard
from firmware_agent.sources.base import KernelFilter
from firmware_agent.values import FrameRecord, Sample, SignalGroup, SignalValue, samples_of
from firmware_agent.vss import VssMap

_STANDARD_MASK = 0x7FF
_EXTENDED_MASK = 0x1FFFFFFF
_J1939_PDU2_MASK = 0x03FFFF00
_J1939_PDU1_MASK = 0x03FF0000


class _Plan:
    """What to do with one (channel, identifier): check, decode, and which samples to emit.

    A message without multiplexers has a `row` decoder giving exactly the wanted values, in the order of
    its one `group`. A multiplexed message is decoded whole (`decode`) and the signals present in the
    frame's branch are picked from `outputs`, their group looked up per frame.
    """

    __slots__ = ("decode", "group", "guard", "outputs")

    def __init__(
        self,
        decode: Callable[[bytes | bytearray], Any],
        guard: E2EGuard | None,
        group: SignalGroup | None,
        outputs: tuple[tuple[str, str, bool], ...],
    ) -> None:
        self.decode = decode
        self.guard = guard
        self.group = group
        self.outputs = outputs  # (signal, sample name, has a value table)


class SampleDecoder:
    """Turns frames into samples, decoding only the wanted signals.

    `wanted`: sample names (VSS paths or `MESSAGE.Signal`, either spelling of a mapped signal) or None for
    every signal. `withheld`: names never emitted, whatever `wanted` says (the identity stage's private
    signals: a key id must not reach telemetry). `process_records(frames)` gives one `FrameRecord` per
    decoded frame (the live path); `process(frames)` the same as `Sample`s. Counters: `frames`,
    `samples`, `skipped` (no database knows the frame, no campaign wants its message, or it is an
    error/remote frame), `frames_uncached` (frames of keys beyond the plan table's bound, `decode.memo`),
    and the decode skips by reason under `decode_*`.
    """

    def __init__(
        self,
        catalog: Catalog,
        vss: VssMap,
        wanted: Collection[str] | None,
        checker: E2EChecker,
        withheld: Collection[str] = (),
    ) -> None:
        self.catalog = catalog
        self.vss = vss
        self.wanted = None if wanted is None else frozenset(wanted)
        self.withheld = frozenset(withheld)
        self.checker = checker
        self.counts: Counter[str] = Counter(dict.fromkeys(("frames", "skipped", "samples"), 0))
        self._frame_decoder = FrameDecoder(catalog, decode_choices=True)
        self._plans: KeyMemo[tuple[object, int, bool], _Plan | None] = KeyMemo()
        self._groups: dict[tuple[str, ...], SignalGroup] = {}
        self._rows: dict[int, tuple[Callable[[bytes | bytearray], Any], SignalGroup]] = {}

    def outputs_of(self, message: Message) -> tuple[tuple[str, str, bool], ...]:
        """The (signal, sample name, has choices) triples wanted from `message`."""
        outputs = []
        for signal in message.signals:
            key = f"{message.name}.{signal.name}"
            name = self.vss.name_for(message.name, signal.name)
            if name in self.withheld or key in self.withheld:
                continue
            if self.wanted is None or name in self.wanted or key in self.wanted:
                outputs.append((signal.name, name, bool(signal.choices)))
        return tuple(outputs)

    def group(self, names: tuple[str, ...]) -> SignalGroup:
        """The one `SignalGroup` of this decoder for `names`."""
        group = self._groups.get(names)
        if group is None:
            group = self._groups[names] = SignalGroup(names)
        return group

    def _plan_for(self, channel: object, frame_id: int, is_extended: bool) -> _Plan | None:
        compiled = self._frame_decoder.compiled_for(channel, frame_id, is_extended)
        plan = None
        if compiled is not None:
            message = compiled.message
            outputs = self.outputs_of(message)
            if outputs:
                profile = profile_for(message)
                guard = None
                if profile is not None:
                    guard = self.checker.guard(str(channel), frame_id, profile)
                if message.is_multiplexed():
                    plan = _Plan(compiled.decode, guard, None, outputs)
                else:
                    row = self._rows.get(id(message))
                    if row is None:
                        function = compile_row(message, [signal for signal, _, _ in outputs])
                        group = self.group(tuple(name for _, name, _ in outputs))
                        row = self._rows[id(message)] = (function, group)
                    plan = _Plan(row[0], guard, row[1], outputs)
        if not self._plans.remember((channel, frame_id, is_extended), plan):
            self.counts["frames_uncached"] += 1  # the table is full: see decode.memo
        return plan

    def process_records(self, frames: list[can.Message]) -> list[FrameRecord]:
        """Decode a chunk of frames: one record per frame that yields wanted samples, in frame order."""
        plans, counts = self._plans, self.counts
        missing = _MISSING
        skipped = samples = 0
        records: list[FrameRecord] = []
        emit = records.append
        for frame in frames:
            key = (frame.channel, frame.arbitration_id, frame.is_extended_id)
            plan = plans.get(key, missing)
            if plan is missing:
                plan = self._plan_for(*key)
            if plan is None or frame.is_error_frame or frame.is_remote_frame:
                skipped += 1
                continue
            timestamp = frame.timestamp
            guard = plan.guard
            if guard is not None and not guard.accept(timestamp, frame.data):
                continue
            try:
                values = plan.decode(frame.data)
            except DecodeSkip as skip:
                counts[f"decode_{skip.reason.replace(' ', '_')}"] += 1
                continue
            group = plan.group
            if group is None:
                group, values = self._select(plan, values)
                if not values:
                    continue
            emit((timestamp, group, values))
            samples += len(values)
        counts["frames"] += len(frames)
        counts["skipped"] += skipped
        counts["samples"] += samples
        return records

    def process(self, frames: list[can.Message]) -> list[Sample]:
        """Decode a chunk of frames; the wanted samples, in frame order."""
        return samples_of(self.process_records(frames))

    def _select(
        self, plan: _Plan, decoded: dict[str, SignalValue]
    ) -> tuple[SignalGroup, tuple[SignalValue, ...]]:
        """A multiplexed frame: the wanted signals present in its branch, value-table entries as names."""
        names = []
        values = []
        for signal, name, has_choices in plan.outputs:
            value = decoded.get(signal)
            if value is None:
                continue  # not in this multiplexer branch
            if has_choices and type(value) is NamedSignalValue:
                value = str(value.name)
            names.append(name)
            values.append(value)
        return self.group(tuple(names)), tuple(values)

    def reset_bus(self, bus: str) -> None:
        """After a bus gap: restart the E2E counter checks of that channel."""
        self.checker.reset_bus(bus)

    def kernel_filters(self, channel: str) -> list[KernelFilter]:
        """SocketCAN filters passing exactly the frames whose messages are wanted on `channel`."""
        filters: list[KernelFilter] = []
        for message in self.catalog.messages(channel):
            if not self.outputs_of(message):
                continue
            if is_j1939(message):
                pdu_format = (message.frame_id >> 16) & 0xFF
                mask = _J1939_PDU1_MASK if pdu_format < 240 else _J1939_PDU2_MASK
                filters.append({"can_id": message.frame_id & mask, "can_mask": mask, "extended": True})
            elif message.is_extended_frame:
                filters.append({"can_id": message.frame_id, "can_mask": _EXTENDED_MASK, "extended": True})
            else:
                filters.append({"can_id": message.frame_id, "can_mask": _STANDARD_MASK, "extended": False})
        return filters


_MISSING = _Plan.__new__(_Plan)
