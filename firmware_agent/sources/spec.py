"""Source spec strings: `[BUS=]KIND:ARG[?KEY=VALUE&KEY=VALUE...]`.

Examples::

    socketcan:can0                      kernel SocketCAN interface can0; frames carry channel "can0"
    powertrain=socketcan:can0?fd=1      same, CAN FD enabled, frames carry channel "powertrain"
    slcan:/dev/ttyACM0@500000           serial-line CAN adapter at 500 kbit/s
    chassis=virtual:test-bus            python-can virtual bus "test-bus", frames carry "chassis"
    replay:drive.log?speed=2&loop=3     a capture, at twice real time, three times
    sim:driver=alice,scenario=city,seed=7,duration=60

`BUS` names the channel the frames carry, which is what `--dbc CHANNEL=FILE` binds to. Without it a live
bus is named after its interface (`can0`), a replay keeps the capture's channel names and the simulator
uses the vehicle's bus names. For `sim:` the ARG itself is a comma-separated list of options.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from firmware_agent.errors import UserError

#: The one list of source kinds: each kind is implemented by the module of the same name in this package,
#: by the `Source` subclass named here (`open_source` imports it only when a spec names the kind).
SOURCE_CLASSES: dict[str, str] = {
    "socketcan": "SocketcanSource",
    "slcan": "SlcanSource",
    "virtual": "VirtualSource",
    "replay": "ReplaySource",
    "sim": "SimSource",
}
#: Every source kind, in the order the help texts list them.
KINDS: tuple[str, ...] = tuple(SOURCE_CLASSES)

_BUS_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec; `text` is the original string, used in messages and reports."""

    text: str
    kind: str
    arg: str
    bus: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """Parse a spec string; raise `UserError` naming the problem."""
        body = text.strip()
        bus: str | None = None
        head = body.split(":", 1)[0]
        if "=" in head:
            bus, _, body = body.partition("=")
            if not _BUS_NAME.fullmatch(bus):
                raise UserError(f"source {text!r}: bus name {bus!r} must be letters, digits, '_', '-', '.'")
        kind, colon, rest = body.partition(":")
        if not colon or kind not in KINDS:
            raise UserError(f"source {text!r}: expected KIND:ARG with KIND one of {', '.join(KINDS)}")
        arg, _, query = rest.partition("?")
        options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
        if kind == "sim":
            options = {**_comma_options(text, arg), **options}
            arg = ""
        elif not arg:
            raise UserError(f"source {text!r}: {kind} needs an argument after ':'")
        return cls(text=text, kind=kind, arg=arg, bus=bus, options=options)

    def option(self, key: str, default: str | None = None) -> str | None:
        """An option's text value, or `default`."""
        return self.options.get(key, default)

    def number(self, key: str, default: float) -> float:
        """An option as a positive number; `UserError` naming the option otherwise."""
        raw = self.options.get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not (value > 0 and math.isfinite(value)):
            raise UserError(f"source {self.text!r}: option {key}={raw!r} must be a positive number")
        return value

    def integer(self, key: str, default: int) -> int:
        """An option as a positive whole number; `UserError` naming the option otherwise."""
        value = self.number(key, default)
        if value != int(value):
            raise UserError(
                f"source {self.text!r}: option {key}={self.options[key]!r} must be a whole number"
            )
        return int(value)

    def flag(self, key: str) -> bool:
        """An on/off option: `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`; `UserError` otherwise."""
        raw = self.options.get(key, "0")
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise UserError(f"source {self.text!r}: option {key}={raw!r} must be 1 or 0 (on or off)")

    def check_options(self, allowed: tuple[str, ...]) -> None:
        """Refuse options this kind does not know (a typo should not be silently ignored)."""
        for key in self.options:
            if key not in allowed:
                known = ", ".join(allowed) or "none"
                raise UserError(f"source {self.text!r}: unknown option {key!r} (known: {known})")


def _comma_options(text: str, arg: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in arg.strip("[]").split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise UserError(f"source {text!r}: expected KEY=VALUE, got {item!r}")
        options[key] = value
    return options
