"""The DBC-to-VSS mapping (`dbc/vss.toml`): telemetry names a signal by its VSS path where one exists."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from firmware_agent.errors import UserError
from firmware_agent.tomlfile import parse_toml


@dataclass(frozen=True)
class VssMap:
    """Maps `MESSAGE.Signal` to a VSS path and back; unmapped signals keep their `MESSAGE.Signal` name."""

    to_vss: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> VssMap:
        """Read a mapping file with a `[signals]` table of `"MESSAGE.Signal" = "Vehicle.Path"` entries."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise UserError(f"{path}: no such file") from exc
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not a UTF-8 text file (a VSS mapping is TOML)") from exc
        except OSError as exc:
            raise UserError(f"{path}: {exc.strerror or exc}") from exc
        document = parse_toml(text, str(path))  # the one TOML reader: errors with line and column
        table = document.get("signals")
        if not isinstance(table, dict):
            raise UserError(f"{path}: missing [signals] table")
        for key, value in table.items():
            if not isinstance(value, str) or not value.startswith("Vehicle.") or key.count(".") != 1:
                raise UserError(f'{path}: signals.{key!r}: expected "MESSAGE.Signal" = "Vehicle...."')
        return cls(dict(table))

    def name_for(self, message: str, signal: str) -> str:
        """The telemetry name of a signal: its VSS path, else `MESSAGE.Signal`."""
        key = f"{message}.{signal}"
        return self.to_vss.get(key, key)

    def resolve(self, name: str) -> str:
        """Accept a VSS path or `MESSAGE.Signal` and return the `MESSAGE.Signal` key it refers to."""
        for key, path in self.to_vss.items():
            if path == name:
                return key
        return name
