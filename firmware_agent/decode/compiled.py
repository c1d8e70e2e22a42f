"""Per-frame decoding for the daemon's live path: each cantools message compiled once to Python code.

`Message.decode()` walks cantools' codec objects and runs two bitstruct unpacks on every call. Here each
message is turned once into a small generated function that reads the payload as one integer and takes
every signal out with a shift and a mask, then applies the conversion with the same Python operations
cantools uses, so the result is the same dict (same keys in the same order, same int/float types,
cantools' own `NamedSignalValue` objects for value-table entries).

Public API (stable; the agent pipeline builds on it):

- `compile_message(message, decode_choices=True) -> CompiledMessage`
- `CompiledMessage.decode(data: bytes) -> dict[str, DecodedValue]`, raising `DecodeSkip` exactly where
  `message.decode(data, decode_choices=...)` raises: data shorter than the message, an undefined
  multiplexer value, a layout cantools cannot unpack, a value cantools cannot convert (NaN choice key).
- `FrameDecoder(catalog, decode_choices=True)` with `.decode(frame: can.Message)` returning
  `(cantools Message, signals)` or None; why frames were skipped is counted in `FrameDecoder.skips`.
  `.compiled_for(channel, frame_id, is_extended)` gives the cached `CompiledMessage` (or None) for
  callers that keep their own per-frame plans (the agent pipeline does).
- `compile_row(message, names) -> Callable[[bytes], tuple]`: for a message without multiplexers, a
  function giving only the values of `names`, in that order, as a tuple, value-table entries as their
  names (`str`); it raises `DecodeSkip` exactly where `message.decode(data)` raises. The agent's live path
  uses it: no dict and no `NamedSignalValue` per frame.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import can
from cantools.database.can import Message
from cantools.database.namedsignalvalue import NamedSignalValue

from firmware_agent.decode.catalog import Catalog
from firmware_agent.decode.layout import MessageLayout, NodeLayout, SignalLayout, message_layout
from firmware_agent.decode.memo import KeyMemo
from firmware_agent.values import SignalValue

#: A signal value as `Message.decode` gives it: a number, or cantools' `NamedSignalValue` for a
#: value-table entry (with `decode_choices`); `compile_row` gives the entry's name (`str`) instead.
DecodedValue = int | float | str | NamedSignalValue

#: Skip reasons, shared with the vectorised decoder and the summary.
SKIP_UNKNOWN_ID = "unknown id"
SKIP_TOO_SHORT = "too short"
SKIP_UNDEFINED_MUX = "undefined multiplexer value"
SKIP_UNPACK = "signals do not fit the message"
SKIP_INVALID_VALUE = "value cannot be converted"
SKIP_REMOTE = "remote frame"
SKIP_ERROR_FRAME = "error frame"
#: AUTOSAR container PDUs (ARXML): cantools' `Message.decode` refuses them; the contained PDUs are not
#: decoded (docs/decode.md)
SKIP_CONTAINER = "container message"


class DecodeSkip(Exception):
    """A frame that cantools would refuse to decode; `reason` is one of the `SKIP_*` strings."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_FLOAT_UNPACKERS = {bits: struct.Struct(code).unpack for bits, code in ((16, ">e"), (32, ">f"), (64, ">d"))}


class CompiledMessage:
    """A cantools message compiled to one function; `decode(data)` gives what `message.decode` gives."""

    def __init__(self, message: Message, decode_choices: bool = True) -> None:
        self.message = message
        self.decode_choices = decode_choices
        self.layout = message_layout(message)
        self._function = _compile(self.layout, decode_choices)

    def decode(self, data: bytes | bytearray) -> dict[str, DecodedValue]:
        """Decode one payload; raises `DecodeSkip` where cantools raises."""
        try:
            return self._function(data)
        except (ValueError, OverflowError):
            # int() of a NaN/inf float used as a value-table key or multiplexer number: cantools fails too
            raise DecodeSkip(SKIP_INVALID_VALUE) from None


def compile_message(message: Message, decode_choices: bool = True) -> CompiledMessage:
    """Compile `message` once; decoding with the result is several times faster than `message.decode`."""
    return CompiledMessage(message, decode_choices)


def compile_row(
    message: Message, names: Sequence[str]
) -> Callable[[bytes | bytearray], tuple[SignalValue, ...]]:
    """The values of signals `names` of `message` (not multiplexed) as a tuple; see the module docstring."""
    layout = message_layout(message)
    if layout.root.muxes:
        raise ValueError(f"{message.name}: compile_row takes messages without multiplexers")
    generator = _Generator(layout, decode_choices=True)
    source = generator.row_source(names)
    namespace = dict(generator.constants)
    exec(compile(source, f"<row decoder {layout.name}>", "exec"), namespace)
    function: Callable[[bytes | bytearray], tuple[SignalValue, ...]] = namespace["row"]
    return function


class FrameDecoder:
    """Decode python-can frames through a `Catalog`, compiling each message the first time it is seen."""

    def __init__(self, catalog: Catalog, decode_choices: bool = True) -> None:
        self.catalog = catalog
        self.decode_choices = decode_choices
        self.skips: Counter[str] = Counter()
        self._by_key: KeyMemo[tuple[Any, int, bool], CompiledMessage | None] = KeyMemo()
        self._by_message: dict[int, CompiledMessage] = {}

    def compiled_for(self, channel: Any, frame_id: int, is_extended: bool) -> CompiledMessage | None:
        """The compiled message for a frame's channel and identifier, or None when none is defined."""
        key = (channel, frame_id, is_extended)
        try:
            return self._by_key[key]
        except KeyError:
            pass
        message = self.catalog.lookup(None if channel is None else str(channel), frame_id, is_extended)
        compiled = None
        if message is not None:
            compiled = self._by_message.get(id(message))
            if compiled is None:
                compiled = self._by_message[id(message)] = CompiledMessage(message, self.decode_choices)
        self._by_key.remember(key, compiled)  # bounded: see decode.memo
        return compiled

    def decode(self, frame: can.Message) -> tuple[Message, dict[str, DecodedValue]] | None:
        """Decode one frame; None (and a count in `skips`) when it is unknown or cantools would refuse it."""
        if frame.is_error_frame or frame.is_remote_frame:
            self.skips[SKIP_ERROR_FRAME if frame.is_error_frame else SKIP_REMOTE] += 1
            return None
        compiled = self._by_key.get((frame.channel, frame.arbitration_id, frame.is_extended_id), _UNSEEN)
        if compiled is _UNSEEN:
            compiled = self.compiled_for(frame.channel, frame.arbitration_id, frame.is_extended_id)
        if compiled is None:
            self.skips[SKIP_UNKNOWN_ID] += 1
            return None
        try:
            return compiled.message, compiled._function(frame.data)
        except DecodeSkip as skip:
            self.skips[skip.reason] += 1
        except (ValueError, OverflowError):
            self.skips[SKIP_INVALID_VALUE] += 1
        return None


_UNSEEN: Any = object()


class _Generator:
    """Writes the source of one message's decode function, one nested function per multiplexer node."""

    def __init__(self, layout: MessageLayout, decode_choices: bool) -> None:
        self.layout = layout
        self.decode_choices = decode_choices
        self.constants: dict[str, Any] = {
            "DecodeSkip": DecodeSkip,
            "SKIP_TOO_SHORT": SKIP_TOO_SHORT,
            "SKIP_UNDEFINED_MUX": SKIP_UNDEFINED_MUX,
            "SKIP_UNPACK": SKIP_UNPACK,
            "from_bytes": int.from_bytes,
        }
        self.functions: list[str] = []
        #: constants holding {multiplexer value: function name}, resolved to functions after exec
        self.dispatch_tables: list[str] = []

    def constant(self, value: Any) -> str:
        name = f"c{len(self.constants)}"
        self.constants[name] = value
        return name

    def node(self, node: NodeLayout) -> str:
        """Emit a function `nX(le, be)` returning the dict of `node` (and its children); return its name."""
        name = f"n{len(self.functions)}"
        self.functions.append("")  # reserve the slot so children get later numbers
        body = self.node_body(node)
        self.functions[int(name[1:])] = "\n".join([f"def {name}(le, be):", *body, "    return out"])
        return name

    def node_body(self, node: NodeLayout) -> list[str]:
        """Statements that leave `node`'s signals (then its children's) in `out`, in cantools' order."""
        if node.unpack_fails:
            return ["    raise DecodeSkip(SKIP_UNPACK)"]
        lines: list[str] = []
        values: list[str] = []
        raws: dict[str, str] = {}
        for index, signal in enumerate(node.signals):
            raw = f"r{index}"
            raws[signal.name] = raw
            lines.append(f"    {raw} = {self.raw(signal)}")
            values.append(f"{signal.name!r}: {self.value(signal, raw)}")
        lines.append(f"    out = {{{', '.join(values)}}}")
        for mux in node.muxes:
            signal = next(s for s in node.signals if s.name == mux.signal)
            raw = raws[mux.signal]
            children = {value: self.node(child) for value, child in mux.nodes.items()}
            table = self.constant(children)
            self.dispatch_tables.append(table)
            number = f"int({self.scaled(signal, raw)})"
            if self.decode_choices and mux.choice_numbers:
                numbers = self.constant(dict(mux.choice_numbers))
                key = raw if signal.kind != "f" else f"int({raw})"
                lines.append(f"    m = {numbers}.get({key})")
                lines.append(f"    if m is None: m = {number}")
            else:
                lines.append(f"    m = {number}")
            lines.append(f"    child = {table}.get(m)")
            lines.append("    if child is None: raise DecodeSkip(SKIP_UNDEFINED_MUX)")
            lines.append("    out.update(child(le, be))")
        return lines

    def raw(self, signal: SignalLayout) -> str:
        """The expression of a signal's raw number: bits, then two's complement or IEEE float."""
        source = "le" if signal.integer == "le" else "be"
        shifted = f"({source} >> {signal.shift})" if signal.shift else source
        bits = f"({shifted} & {signal.mask:#x})"
        if signal.kind == "s":
            sign = 1 << (signal.length - 1)
            return f"(({bits} ^ {sign:#x}) - {sign:#x})"  # sign extension without a branch
        if signal.kind == "f":
            unpack = self.constant(_FLOAT_UNPACKERS[signal.length])
            return f"{unpack}({bits}.to_bytes({signal.length // 8}, 'big'))[0]"
        return bits

    def value(self, signal: SignalLayout, raw: str) -> str:
        """The expression cantools' conversion gives: a value-table entry, else the scaled number."""
        scaled = self.scaled(signal, raw)
        if self.decode_choices and signal.choices:
            key = raw if signal.kind != "f" else f"int({raw})"
            return f"{self.constant(signal.choices)}.get({key}, {scaled})"
        return scaled

    def scaled(self, signal: SignalLayout, raw: str) -> str:
        if signal.conversion == "identity":
            return raw
        return f"{raw} * {self.constant(signal.scale)} + {self.constant(signal.offset)}"

    def row_source(self, names: Sequence[str]) -> str:
        """Source of `row(data)`: the tuple of `names`' values, value-table entries as `str` names.

        Signals that are not asked for but whose conversion can fail (a float used as a value-table key)
        are still evaluated, so the function refuses exactly the payloads cantools refuses.
        """
        node = self.layout.root
        by_name = {signal.name: signal for signal in node.signals}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise ValueError(f"{self.layout.name}: no signal {missing[0]!r}")
        lines = self.prologue("row", _uses(node, "le"), _uses(node, "be"))
        if node.unpack_fails:
            lines.append("    raise DecodeSkip(SKIP_UNPACK)")
            return "\n".join(lines) + "\n"
        body: list[str] = []
        for signal in node.signals:
            if signal.kind == "f" and signal.choices and signal.name not in names:
                body.append(f"int({self.raw(signal)})  # raises where cantools' choice lookup raises")
        values = []
        for index, name in enumerate(names):
            signal = by_name[name]
            raw = f"r{index}"
            body.append(f"{raw} = {self.raw(signal)}")
            values.append(self.named_value(signal, raw))
        body.append(f"return ({''.join(value + ', ' for value in values)})")
        if any(signal.kind == "f" and signal.choices for signal in node.signals):
            # int() of a NaN/inf float used as a value-table key: cantools fails too
            self.constants["SKIP_INVALID_VALUE"] = SKIP_INVALID_VALUE
            body = ["try:", *(f"    {line}" for line in body)]
            body.append("except (ValueError, OverflowError):")
            body.append("    raise DecodeSkip(SKIP_INVALID_VALUE) from None")
        lines.extend(f"    {line}" for line in body)
        return "\n".join(lines) + "\n"

    def named_value(self, signal: SignalLayout, raw: str) -> str:
        """Like `value`, but a value-table entry is its name (`str`), as samples carry it."""
        if not signal.choices:
            return self.scaled(signal, raw)
        names = {
            number: str(choice.name) if type(choice) is NamedSignalValue else choice
            for number, choice in signal.choices.items()
        }
        key = raw if signal.kind != "f" else f"int({raw})"
        return f"{self.constant(names)}.get({key}, {self.scaled(signal, raw)})"

    def prologue(self, function: str, needs_le: bool, needs_be: bool) -> list[str]:
        """`def function(data):`, the length check and the payload's integer views."""
        length = self.layout.length
        return [
            f"def {function}(data):",
            f"    if len(data) != {length}:",
            f"        if len(data) < {length}: raise DecodeSkip(SKIP_TOO_SHORT)",
            f"        data = data[:{length}]",
            "    le = from_bytes(data, 'little')" if needs_le else "    le = 0",
            "    be = from_bytes(data, 'big')" if needs_be else "    be = 0",
        ]

    def source(self) -> str:
        root = self.layout.root
        body = [
            *self.prologue("decode", _uses(root, "le"), _uses(root, "be")),
            *self.node_body(root),
            "    return out",
        ]
        return "\n\n".join([*self.functions, "\n".join(body)]) + "\n"


def _uses(node: NodeLayout, integer: str) -> bool:
    return any(s.integer == integer for s in node.signals) or any(
        _uses(child, integer) for mux in node.muxes for child in mux.nodes.values()
    )


def _refuse_container(data: bytes | bytearray) -> dict[str, DecodedValue]:
    raise DecodeSkip(SKIP_CONTAINER)


def _compile(
    layout: MessageLayout, decode_choices: bool
) -> Callable[[bytes | bytearray], dict[str, DecodedValue]]:
    if layout.container:
        return _refuse_container
    generator = _Generator(layout, decode_choices)
    source = generator.source()
    namespace = dict(generator.constants)
    exec(compile(source, f"<decoder {layout.name}>", "exec"), namespace)
    for table in generator.dispatch_tables:
        namespace[table] = {value: namespace[function] for value, function in namespace[table].items()}
    function: Callable[[bytes | bytearray], dict[str, DecodedValue]] = namespace["decode"]
    return function
